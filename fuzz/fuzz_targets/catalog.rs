//! The catalog loader: any text is a catalog or an error, and a catalog
//! that loads expands and compiles against data (dictionaries, a date, a
//! key space) or fails with an error, never a panic or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taglake_tagger::catalog::CatalogFile;
use taglake_tagger::evaluate::Compiled;
use taglake_tagger::features::{FeatureSet, Globals};

fn globals() -> Globals {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Globals {
        members: 100,
        as_of: "2026-11-01".parse().expect("a date"),
        categories: list(&["beauty", "snacks", "toys", "IP series"]),
        channels: list(&["app", "store"]),
        stores: list(&["S0001", "S0002", "S'3"]),
        genders: list(&["f", "m"]),
        cities: list(&["Lyon", "Shanghai"]),
        register_channels: list(&["app"]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok((catalog, source)) = CatalogFile::with_user(Some((text, "fuzz.toml"))) else { return };
    let fs = FeatureSet::for_globals(&globals(), catalog.growth_per_unit());
    let _ = Compiled::new(&catalog, &source, &fs);
});
