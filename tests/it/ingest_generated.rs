//! Acceptance: generated data ingests completely, and a second ingest of
//! the same files changes nothing.

use taglake_storage::Table;

use crate::{table_rows, taglake_ok};

fn count_of(line: &str, what: &str) -> u64 {
    // "..., 123 inserted, ..." → 123
    let words: Vec<&str> = line.split_whitespace().map(|w| w.trim_end_matches(',')).collect();
    let i = words.iter().position(|w| *w == what).unwrap_or_else(|| panic!("no `{what}` in {line}"));
    words[i - 1].replace(',', "").parse().unwrap()
}

#[test]
fn generate_100k_then_ingest_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = taglake_ok(&["generate", "--members", "100000", "--seed", "1", "--out", "data"], d);
    let members: u64 =
        out.split(" members").next().unwrap().rsplit(' ').next().unwrap().replace(',', "").parse().unwrap();
    assert_eq!(members, 100_000);
    let lines: u64 =
        out.split(" order lines").next().unwrap().rsplit(' ').next().unwrap().replace(',', "").parse().unwrap();
    let products: u64 =
        out.split(" products").next().unwrap().rsplit(' ').next().unwrap().replace(',', "").parse().unwrap();

    let first = [
        taglake_ok(&["ingest", "products", "data/products.parquet"], d),
        taglake_ok(&["ingest", "members", "data/members.parquet"], d),
        taglake_ok(&["ingest", "orders", "data/orders/*.parquet"], d),
    ];
    assert_eq!(count_of(&first[0], "inserted"), products);
    assert_eq!(count_of(&first[1], "inserted"), members);
    assert_eq!(count_of(&first[2], "inserted"), lines);
    for f in &first {
        assert_eq!(count_of(f, "quarantined"), 0, "{f}");
    }
    let wh = d.join("warehouse");
    let before: Vec<Vec<String>> = Table::ALL.iter().map(|t| table_rows(&wh, *t, &[])).collect();
    assert_eq!(before[1].len() as u64, members);
    assert_eq!(before[3].len() as u64, lines);
    assert_eq!(before[0].len() as u64, members, "one dictionary entry per member");

    let second = [
        taglake_ok(&["ingest", "products", "data/products.parquet"], d),
        taglake_ok(&["ingest", "members", "data/members.parquet"], d),
        taglake_ok(&["ingest", "orders", "data/orders"], d),
    ];
    for s in &second {
        assert_eq!(count_of(s, "inserted"), 0, "{s}");
        assert_eq!(count_of(s, "replaced"), 0, "{s}");
    }
    let after: Vec<Vec<String>> = Table::ALL.iter().map(|t| table_rows(&wh, *t, &[])).collect();
    assert!(before == after, "a second ingest changed the warehouse");
    let status = taglake_ok(&["status"], d);
    assert!(status.contains("orders"), "{status}");
}

#[test]
fn csv_and_jsonl_exports_ingest_like_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for fmt in ["csv", "jsonl", "parquet"] {
        taglake_ok(&["generate", "--members", "2000", "--seed", "7", "--format", fmt, "--out", fmt], d);
        let wh = format!("wh-{fmt}");
        taglake_ok(&["ingest", "products", &format!("{fmt}/products.{fmt}"), "--warehouse", &wh], d);
        taglake_ok(&["ingest", "members", &format!("{fmt}/members.{fmt}"), "--warehouse", &wh], d);
        let out = taglake_ok(&["ingest", "orders", &format!("{fmt}/orders"), "--warehouse", &wh], d);
        assert_eq!(count_of(&out, "quarantined"), 0, "{fmt}: {out}");
    }
    for t in Table::INPUTS {
        let p = table_rows(&d.join("wh-parquet"), t, &[]);
        assert_eq!(table_rows(&d.join("wh-csv"), t, &[]), p, "{t} from CSV");
        assert_eq!(table_rows(&d.join("wh-jsonl"), t, &[]), p, "{t} from JSON lines");
    }
}
