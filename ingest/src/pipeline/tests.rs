//! Malformed inputs through the whole pipeline: every bad row is
//! quarantined with an exact reason, good rows survive, re-runs are no-ops.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use taglake_storage::{Table, Warehouse};

use super::*;
use crate::mapping::Mapping;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

async fn run(wh: &Warehouse, table: Table, files: &[PathBuf], mapping: Option<&str>, create: bool) -> IngestSummary {
    let mapping = match mapping {
        Some(m) => Mapping::parse(m).unwrap().check(table).unwrap(),
        None => CheckedMapping::canonical(table),
    };
    let mut opts = IngestOptions::new(mapping);
    opts.create_members = create;
    opts.batch_rows = 3; // several batches even for tiny files
    ingest(wh, files, &opts, Arc::new(NoProgress)).await.unwrap()
}

/// (row, column, reason) of the quarantine rows of one file.
async fn quarantined(wh: &Warehouse, file: &Path) -> Vec<(i64, String, String)> {
    let file = std::fs::canonicalize(file).unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    for b in wh.read(Table::Quarantine, None).await.unwrap() {
        let f = b.column_by_name("source_file").unwrap().as_string::<i32>();
        let r = b.column_by_name("row_number").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        let c = b.column_by_name("column_name").unwrap().as_string::<i32>();
        let why = b.column_by_name("reason").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            if f.value(i) == file {
                out.push((
                    r.value(i),
                    if c.is_null(i) { "".into() } else { c.value(i).to_string() },
                    why.value(i).to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn ids(batches: &[RecordBatch], col: &str) -> Vec<String> {
    let mut v: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(col).unwrap().as_string::<i32>();
            (0..a.len()).map(|i| a.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn malformed_members_csv() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    let mut csv = b"member_id,registered_at,birthday,city,points_balance\n".to_vec();
    csv.extend_from_slice(b"M1,2024-01-01T08:00:00Z,1990-05-01,Paris,100\n"); // 2 ok
    csv.extend_from_slice(b",2024-01-01,,Paris,1\n"); // 3 missing id
    csv.extend_from_slice(b"M3,tomorrow,,Lyon,1\n"); // 4 bad timestamp
    csv.extend_from_slice(b"M4,2024-01-01,1850-01-01,Lyon,1\n"); // 5 birthday range
    csv.extend_from_slice(b"M5,2024-01-01,,Lyon,lots\n"); // 6 not an integer
    csv.extend_from_slice(b"M6,2024-01-01,,Lyon,99999999999999999999\n"); // 7 huge
    csv.extend_from_slice(b"M7,2024-01-01,,Lyon\n"); // 8 field count
    csv.extend_from_slice(b"M8,2024-01-01,,\xffLyon,1\n"); // 9 invalid UTF-8
    csv.extend_from_slice(b"M9,2024-01-01,,\"Nice, FR\",7\n"); // 10 ok, quoted
    csv.extend_from_slice(b"M1,2024-01-01T08:00:00Z,1990-05-01,Marseille,120\n"); // 11 later M1 wins
    csv.extend_from_slice(b"M10,1969-07-20 20:17:00,,Lyon,1\n"); // 12 timestamp range
    let f = write(dir.path(), "members.csv", &csv);
    let s = run(&wh, Table::Members, std::slice::from_ref(&f), None, false).await;
    assert_eq!((s.rows_read, s.inserted, s.unchanged, s.quarantined), (11, 2, 1, 8));
    let q = quarantined(&wh, &f).await;
    let want: Vec<(i64, &str, &str)> = vec![
        (3, "member_id", "required value is missing"),
        (
            4,
            "registered_at",
            "\"tomorrow\" is not a timestamp (expected e.g. 2026-03-01T10:15:00Z or 2026-03-01 10:15:00; set a `format` in the mapping for other layouts)",
        ),
        (5, "birthday", "date 1850-01-01 is outside the accepted range 1900-01-01 to 2099-12-31"),
        (6, "points_balance", "\"lots\" is not an integer"),
        (7, "points_balance", "99999999999999999999 is out of range for a 64-bit integer"),
        (8, "", "expected 5 fields as in the header, found 4"),
        (9, "city", "value is not valid UTF-8"),
        (12, "registered_at", "timestamp 1969-07-20T20:17:00Z is outside the accepted range 1990-01-01 to 2099-12-31"),
    ];
    assert_eq!(q, want.iter().map(|(r, c, w)| (*r, c.to_string(), w.to_string())).collect::<Vec<_>>());
    let members = wh.read(Table::Members, None).await.unwrap();
    assert_eq!(ids(&members, "member_id"), ["M1", "M9"]);
    assert_eq!(ids(&members, "city"), ["Marseille", "Nice, FR"]);

    // Again: nothing changes, no quarantine repeats.
    let again = run(&wh, Table::Members, std::slice::from_ref(&f), None, false).await;
    assert_eq!((again.inserted, again.replaced, again.quarantined), (0, 0, 0));
    assert_eq!(quarantined(&wh, &f).await.len(), 8);

    // A corrected export replaces the stored row and adds the fixed ones.
    let fix = write(
        dir.path(),
        "fix.csv",
        b"member_id,registered_at,city\nM1,2024-01-01T08:00:00Z,Lille\nM3,2024-03-01,Lyon\n",
    );
    let s = run(&wh, Table::Members, &[fix], None, false).await;
    assert_eq!((s.inserted, s.replaced), (1, 1));
    let members = wh.read(Table::Members, None).await.unwrap();
    assert_eq!(ids(&members, "city"), ["Lille", "Lyon", "Nice, FR"]);
    assert_eq!(ids(&wh.read(Table::MemberIds, None).await.unwrap(), "member_id"), ["M1", "M3", "M9"]);
}

#[tokio::test]
async fn malformed_orders_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    let m = write(dir.path(), "m.csv", b"member_id,registered_at\nM1,2024-01-01\nM2,2024-01-01\n");
    run(&wh, Table::Members, &[m], None, false).await;
    let base = r#""ordered_at":"2025-06-01T10:00:00Z","channel":"store","sku":"S1","quantity":1"#;
    let lines = [
        format!(r#"{{"order_id":"o1","line_no":1,"member_id":"M1",{base},"amount":9.5}}"#), // 1 ok
        format!(r#"{{"order_id":"o1","line_no":2,"member_id":"M1",{base},"amount":-3}}"#), // 2 negative
        format!(r#"{{"order_id":"o2","line_no":1,"member_id":"M1",{base},"amount":"Infinity"}}"#), // 3 non-finite
        format!(r#"{{"order_id":"o3","line_no":1,"member_id":"M404",{base},"amount":1}}"#), // 4 unknown member
        format!(r#"{{"order_id":"o4","line_no":"1.5","member_id":"M1",{base},"amount":1}}"#), // 5 line_no
        format!(r#"{{"order_id":"o1","line_no":1,"member_id":"M1",{base},"amount":9.5}}"#), // 6 duplicate
        "not json".to_string(), // 7
        format!(r#"{{"order_id":"o5","line_no":1,"member_id":"M2",{base},"amount":1e12}}"#), // 8 huge
        format!(r#"{{"order_id":"o6","line_no":1,"member_id":"M2",{base},"amount":2,"discount":-1}}"#), // 9
        format!(r#"{{"order_id":"o7","line_no":1,"member_id":"M2",{base},"amount":2,"coupon_used":"sometimes"}}"#), // 10
        r#"{"order_id":"o8","line_no":1,"member_id":"M2","ordered_at":"2025-06-01","channel":"app","sku":"S2","quantity":2,"amount":4,"coupon_used":true}"#.to_string(), // 11 ok
        format!(r#"{{"order_id":"o9","line_no":1,"member_id":"M2",{base},"amount":2, "quantity":0}}"#), // 12 duplicate key in JSON: last wins (0)
    ];
    let f = write(dir.path(), "orders.jsonl", (lines.join("\n") + "\n").as_bytes());
    let s = run(&wh, Table::Orders, std::slice::from_ref(&f), None, false).await;
    assert_eq!((s.rows_read, s.inserted, s.unchanged), (12, 2, 1), "{s:?}");
    let q = quarantined(&wh, &f).await;
    let reasons: Vec<(i64, &str, &str)> = q.iter().map(|(r, c, w)| (*r, c.as_str(), w.as_str())).collect();
    assert_eq!(
        reasons[0],
        (2, "amount", "amount must not be negative, got -3 (returns need options.allow_returns = true)")
    );
    assert_eq!(reasons[1], (3, "amount", "Infinity is not a finite number"));
    assert_eq!(
        reasons[2],
        (4, "member_id", "unknown member_id \"M404\" (ingest members first, or pass --create-members)")
    );
    assert_eq!(reasons[3], (5, "line_no", "\"1.5\" is not an integer"));
    assert_eq!(reasons[4].0, 7);
    assert!(reasons[4].2.starts_with("invalid JSON: expected ident"), "{:?}", reasons[4]);
    assert_eq!(
        reasons[5],
        (8, "amount", "amount 1000000000000 exceeds the maximum of 1000000000 (options.max_amount)")
    );
    assert_eq!(reasons[6], (9, "discount", "discount must not be negative, got -1"));
    assert_eq!(
        reasons[7],
        (10, "coupon_used", "\"sometimes\" is not a boolean (expected true/false, yes/no or a number)")
    );
    assert_eq!(
        reasons[8],
        (12, "quantity", "quantity must be positive, got 0 (returns need options.allow_returns = true)")
    );
    assert_eq!(reasons.len(), 9);
    let orders = wh.read(Table::Orders, None).await.unwrap();
    assert_eq!(ids(&orders, "order_id"), ["o1", "o8"]);

    // With --create-members the unknown member's order is accepted and the member created.
    let s = run(&wh, Table::Orders, std::slice::from_ref(&f), None, true).await;
    assert_eq!((s.inserted, s.new_members, s.quarantined), (1, 1, 0));
    assert_eq!(ids(&wh.read(Table::Members, None).await.unwrap(), "member_id"), ["M1", "M2", "M404"]);
}

#[tokio::test]
async fn parquet_with_wrong_types_and_household_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    // A household/basket/sales_value export with its own types: numeric
    // ids, a millisecond timestamp without zone, quantity as text.
    let schema = Arc::new(Schema::new(vec![
        Field::new("household_key", DataType::Int32, true),
        Field::new("BASKET_ID", DataType::Utf8, true),
        Field::new("PRODUCT_ID", DataType::Int32, true),
        Field::new("QUANTITY", DataType::Utf8, true),
        Field::new("SALES_VALUE", DataType::Float64, true),
        Field::new("RETAIL_DISC", DataType::Float64, true),
        Field::new("TS", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    let t0 = 1_748_772_000_000i64; // 2025-06-01T10:00:00Z
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![Some(7), Some(7), Some(8), None])),
            Arc::new(StringArray::from(vec!["b1", "b1", "b2", "b3"])),
            Arc::new(Int32Array::from(vec![100, 101, 100, 100])),
            Arc::new(StringArray::from(vec!["1", "2", "x", "1"])),
            Arc::new(Float64Array::from(vec![Some(2.5), Some(f64::NAN), Some(1.0), Some(1.0)])),
            Arc::new(Float64Array::from(vec![-0.5, 0.0, 0.0, 0.0])),
            Arc::new(TimestampMillisecondArray::from(vec![t0, t0, t0, t0])),
        ],
    )
    .unwrap();
    let f = dir.path().join("trans.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&f).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let products = write(dir.path(), "p.csv", b"sku,category\n100,snacks\n101,beauty\n");
    run(&wh, Table::Products, &[products], None, false).await;
    let mapping = r#"
        [source]
        timezone = "+02:00"
        [columns]
        member_id = "household_key"
        order_id = "BASKET_ID"
        line_no = { sequence = true }
        ordered_at = "TS"
        channel = { default = "store" }
        sku = "PRODUCT_ID"
        quantity = "QUANTITY"
        amount = "SALES_VALUE"
        discount = { from = "RETAIL_DISC", scale = -1.0 }
    "#;
    let s = run(&wh, Table::Orders, std::slice::from_ref(&f), Some(mapping), true).await;
    assert_eq!((s.inserted, s.quarantined, s.new_members), (1, 3, 1), "{s:?}");
    let q = quarantined(&wh, &f).await;
    assert_eq!(
        q,
        [
            (2, "SALES_VALUE (amount)".to_string(), "NaN is not a finite number".to_string()),
            (3, "QUANTITY (quantity)".to_string(), "\"x\" is not an integer".to_string()),
            (4, "household_key (member_id)".to_string(), "required value is missing".to_string()),
        ]
    );
    let orders = wh.read(Table::Orders, None).await.unwrap();
    let b = &orders[0];
    assert_eq!(b.column_by_name("member_id").unwrap().as_string::<i32>().value(0), "7");
    assert_eq!(b.column_by_name("sku").unwrap().as_string::<i32>().value(0), "100");
    assert_eq!(b.column_by_name("category").unwrap().as_string::<i32>().value(0), "snacks", "category from products");
    assert_eq!(b.column_by_name("discount").unwrap().as_primitive::<arrow::datatypes::Float64Type>().value(0), 0.5);
    // Naive 10:00 at +02:00 is 08:00 UTC.
    let at =
        b.column_by_name("ordered_at").unwrap().as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(0);
    assert_eq!(at, (t0 - 2 * 3_600_000) * 1000);
}

#[tokio::test]
async fn unreadable_files_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    let good = write(dir.path(), "a.csv", b"sku,category\nS1,beauty\n");
    let no_cols = write(dir.path(), "b.csv", b"code,kind\nS1,beauty\n");
    let garbage = write(dir.path(), "c.parquet", b"PAR1 this is not parquet");
    let s = run(&wh, Table::Products, &[good, no_cols.clone(), garbage.clone()], None, false).await;
    assert_eq!(s.inserted, 1);
    assert!(!s.nothing_read());
    assert_eq!(s.failed_files.len(), 2);
    assert_eq!(s.failed_files[0].0, no_cols);
    assert_eq!(
        s.failed_files[0].1,
        "required column `sku` not found; the file's columns are: code, kind. Map it with a mapping file: [columns] sku = \"<source column>\""
    );
    assert!(s.failed_files[1].1.starts_with("not a readable Parquet file"), "{}", s.failed_files[1].1);
}
