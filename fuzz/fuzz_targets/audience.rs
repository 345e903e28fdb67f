//! The audience language: any text parses or fails with an error whose
//! position lies in the text; what parses evaluates, and printing it back
//! parses to an audience with the same members.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roaring::RoaringBitmap;
use taglake_query::audience::{display, evaluate, parse};
use taglake_query::tagset::{Tag, TagSet};

fn tags() -> TagSet {
    let tag = |name: &str, f: &dyn Fn(u32) -> bool| Tag::new(name, "fuzz", (0..64).filter(|&k| f(k)).collect());
    TagSet::new(
        Some(1),
        vec![
            tag("tier_gold", &|k| k % 5 == 0),
            tag("tier_regular", &|k| k % 5 != 0),
            tag("category_lover_beauty", &|k| k % 3 == 0),
            tag("dormant_60_90", &|k| k % 7 < 2),
            tag("in_experiment", &|k| k >= 50),
            tag("home_store_s0001", &|_| false),
        ],
        (0..64).collect::<RoaringBitmap>(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let tags = tags();
    match parse(text, &tags) {
        Ok(node) => {
            let members = evaluate(&node, &tags).expect("in-memory bitmaps are readable");
            let again = parse(&display(&node, &tags), &tags).expect("a printed audience parses");
            assert_eq!(evaluate(&again, &tags).unwrap(), members, "{text:?}");
        }
        Err(e) => {
            assert!(e.position <= text.chars().count(), "{e:?}");
            let _ = e.to_string();
        }
    }
});
