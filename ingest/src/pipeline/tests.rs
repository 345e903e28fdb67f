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
    // Batches of 3 rows: several batches even for tiny files.
    let opts = IngestOptions::builder(mapping).create_members(create).batch_rows(3).build().unwrap();
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

/// Options that force every bounded-memory path on a few rows: chunks of 7
/// lines, 5 line keys held in memory, incoming members spilled after a
/// few hundred bytes, files of 4 rows.
fn tiny(table: Table, create: bool) -> IngestOptions {
    IngestOptions::builder(CheckedMapping::canonical(table))
        .create_members(create)
        .batch_rows(3)
        .limits(Limits { chunk_rows: 7, line_keys: 5, incoming_bytes: 300, rows_per_file: 4 })
        .build()
        .unwrap()
}

/// The default options for a table with the canonical layout.
fn canonical(table: Table) -> IngestOptions {
    IngestOptions::builder(CheckedMapping::canonical(table)).build().unwrap()
}

/// The error as a program shows it: parameters named by its flags.
fn shown(e: Error) -> String {
    match e {
        Error::Parameter(m) => m.render(|p| format!("--{}", p.replace('_', "-"))),
        other => other.to_string(),
    }
}

#[test]
fn every_bad_option_is_refused_naming_its_parameter() {
    let b = |table| IngestOptions::builder(CheckedMapping::canonical(table));
    let e = b(Table::Orders).memory(MIN_MEMORY - 1).build().unwrap_err();
    assert_eq!(e.to_string(), format!("`memory`: {} bytes is below the smallest budget, 64 MiB", MIN_MEMORY - 1));
    assert!(matches!(&e, Error::Parameter(m) if m.parameter() == Some("memory")), "{e:?}");
    assert!(shown(e).starts_with("--memory: "));
    let e = b(Table::Orders).batch_rows(0).build().unwrap_err();
    assert_eq!(e.to_string(), "`batch_rows` must be at least 1");
    assert_eq!(shown(e), "--batch-rows must be at least 1");
    for table in [Table::Quarantine, Table::Features, Table::MemberIds] {
        let e = b(table).build().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("`mapping`: table `{}` is written by taglake itself, not ingested", table.name())
        );
        assert!(matches!(&e, Error::Parameter(m) if m.parameter() == Some("mapping")), "{e:?}");
    }
}

#[test]
fn good_options_read_back_as_built() {
    let o = IngestOptions::builder(CheckedMapping::canonical(Table::Members)).build().unwrap();
    assert_eq!(
        (o.mapping().table(), o.create_members(), o.batch_rows(), o.memory()),
        (Table::Members, false, 65_536, DEFAULT_MEMORY)
    );
    let o = IngestOptions::builder(CheckedMapping::canonical(Table::Orders))
        .create_members(true)
        .batch_rows(1)
        .memory(MIN_MEMORY)
        .build()
        .unwrap();
    assert_eq!(
        (o.mapping().table(), o.create_members(), o.batch_rows(), o.memory()),
        (Table::Orders, true, 1, MIN_MEMORY)
    );
    assert!(o.limits.is_none());
    assert_eq!(o.rows_per_file(), sink::ROWS_PER_FILE);
}

async fn run_with(wh: &Warehouse, files: &[PathBuf], opts: &IngestOptions) -> IngestSummary {
    ingest(wh, files, opts, Arc::new(NoProgress)).await.unwrap()
}

/// Every row of a table as text (minus `skip`), sorted.
async fn rows(wh: &Warehouse, table: Table, skip: &[&str]) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for b in wh.read(table, None).await.unwrap() {
        let schema = b.schema();
        let cols: Vec<(String, ArrayFormatter<'_>)> = schema
            .fields()
            .iter()
            .zip(b.columns())
            .filter(|(f, _)| !skip.contains(&f.name().as_str()))
            .map(|(f, c)| (f.name().clone(), ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()))
            .collect();
        for i in 0..b.num_rows() {
            out.push(cols.iter().map(|(n, f)| format!("{n}={}", f.value(i))).collect::<Vec<_>>().join("|"));
        }
    }
    out.sort();
    out
}

/// 60 lines over 6 members where some lines repeat far apart (beyond the
/// 5-entry key map) with other content: the first one must win.
fn orders_csv(dir: &Path, name: &str, salt: u32) -> PathBuf {
    let mut csv = String::from("order_id,line_no,member_id,ordered_at,channel,sku,quantity,amount\n");
    for i in 0..60u32 {
        // Lines 40.. repeat lines 0..20 with another amount.
        let (order, amount) = if i >= 40 { (i - 40, 1000 + i + salt) } else { (i, i + salt) };
        csv.push_str(&format!(
            "o{order},{},M{},2025-06-0{}T10:00:00Z,store,S{},1,{amount}\n",
            1 + order % 2,
            order % 6,
            1 + order % 9,
            order % 4
        ));
    }
    write(dir, name, csv.as_bytes())
}

fn members_csv(dir: &Path, name: &str, n: u32, city: &str) -> PathBuf {
    let mut csv = String::from("member_id,registered_at,city\n");
    for i in 0..n {
        csv.push_str(&format!("M{i},2024-01-01T08:00:00Z,{city}{}\n", i % 3));
    }
    write(dir, name, csv.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn bounded_paths_give_what_one_pass_in_memory_gives() {
    let dir = tempfile::tempdir().unwrap();
    let m = members_csv(dir.path(), "m.csv", 6, "Lyon");
    let o = orders_csv(dir.path(), "o.csv", 0);
    // The same input through the default (everything fits) and the tiny
    // limits (chunks, spilled key map, spilled members, many files).
    let plain = Warehouse::open(dir.path().join("plain")).unwrap();
    run(&plain, Table::Members, std::slice::from_ref(&m), None, false).await;
    let s = run(&plain, Table::Orders, std::slice::from_ref(&o), None, false).await;
    assert_eq!((s.inserted, s.unchanged), (40, 20), "{s:?}");
    let small = Warehouse::open(dir.path().join("small")).unwrap();
    run_with(&small, std::slice::from_ref(&m), &tiny(Table::Members, false)).await;
    let s = run_with(&small, std::slice::from_ref(&o), &tiny(Table::Orders, false)).await;
    assert_eq!((s.inserted, s.unchanged), (40, 20), "{s:?}");
    // (Spilled members get their keys part by part: compare without them.)
    for t in [Table::MemberIds, Table::Members, Table::Orders] {
        assert_eq!(rows(&plain, t, &["member_key"]).await, rows(&small, t, &["member_key"]).await, "{t}");
    }
    // The first of each repeated line was kept.
    let amount = |r: &String| -> f64 { r.split('|').find_map(|f| f.strip_prefix("amount=")).unwrap().parse().unwrap() };
    assert!(rows(&small, Table::Orders, &[]).await.iter().all(|r| amount(r) < 1000.0), "a later copy won");
    assert!(small.files(Table::Orders).await.unwrap().len() > 2, "small files");
    // Again, in both ways: nothing changes.
    for opts in [tiny(Table::Orders, false), canonical(Table::Orders)] {
        let s = run_with(&small, std::slice::from_ref(&o), &opts).await;
        assert_eq!((s.inserted, s.unchanged, s.quarantined), (0, 60, 0), "{s:?}");
    }
    // A second day: new lines and some of day one's, in another file.
    let day2 = orders_csv(dir.path(), "day2.csv", 7);
    let mut text = std::fs::read_to_string(&day2).unwrap().replace("\no", "\nx");
    text.push_str("o3,2,M3,2025-06-04T10:00:00Z,store,S3,1,999\n");
    std::fs::write(&day2, text).unwrap();
    let s = run_with(&small, std::slice::from_ref(&day2), &tiny(Table::Orders, false)).await;
    assert_eq!((s.inserted, s.unchanged), (40, 21), "{s:?}");
    let s = run(&plain, Table::Orders, std::slice::from_ref(&day2), None, false).await;
    assert_eq!((s.inserted, s.unchanged), (40, 21), "{s:?}");
    assert_eq!(rows(&plain, Table::Orders, &["member_key"]).await, rows(&small, Table::Orders, &["member_key"]).await);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    /// Orders checked a chunk at a time, in chunks and batches of any
    /// sizes (so chunks of every size follow one another in the buffers
    /// they share, and the reader runs ahead by as many pieces), keep
    /// exactly the first occurrence of each line of a known member, as one
    /// naive pass over the lines says.
    #[test]
    fn chunked_orders_keep_the_first_of_each_known_line_at_any_size(
        lines in proptest::collection::vec((0u32..25, 1u32..3, 0u32..8), 1..80),
        chunk_rows in 1usize..20,
        batch_rows in 1usize..8,
        line_keys in 1usize..10,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (got, inserted) = rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let wh = Warehouse::open(dir.path().join("wh")).unwrap();
            // Members M0..M5 are known; M6 and M7 are not.
            let m = members_csv(dir.path(), "m.csv", 6, "Lyon");
            run(&wh, Table::Members, &[m], None, false).await;
            let mut csv = String::from("order_id,line_no,member_id,ordered_at,channel,sku,quantity,amount\n");
            for (i, (order, line, member)) in lines.iter().enumerate() {
                csv.push_str(&format!("o{order},{line},M{member},2025-06-01T10:00:00Z,store,S1,1,{i}\n"));
            }
            let o = write(dir.path(), "o.csv", csv.as_bytes());
            let opts = IngestOptions::builder(CheckedMapping::canonical(Table::Orders))
                .batch_rows(batch_rows)
                .limits(Limits { chunk_rows, line_keys, incoming_bytes: 300, rows_per_file: 4 })
                .build()
                .unwrap();
            let s = run_with(&wh, &[o], &opts).await;
            let mut got = Vec::new();
            for b in wh.read(Table::Orders, Some(&["order_id", "line_no", "amount"])).await.unwrap() {
                let (id, line) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<arrow::datatypes::Int32Type>());
                let amount = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
                for r in 0..b.num_rows() {
                    got.push(format!("{}/{}/{}", id.value(r), line.value(r), amount.value(r)));
                }
            }
            got.sort();
            (got, s.inserted)
        });
        let mut seen = std::collections::HashSet::new();
        let mut want = Vec::new();
        for (i, (order, line, member)) in lines.iter().enumerate() {
            if *member < 6 && seen.insert((order, line)) {
                want.push(format!("o{order}/{line}/{i}"));
            }
        }
        want.sort();
        proptest::prop_assert_eq!(inserted as usize, want.len());
        proptest::prop_assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn member_upserts_spilled_by_key_hash_keep_keys_dense_and_rows_exact() {
    let dir = tempfile::tempdir().unwrap();
    let first = members_csv(dir.path(), "m1.csv", 300, "Lyon");
    // The next export: 100 changed, 200 unchanged, 50 new, one repeated.
    let mut next = String::from("member_id,registered_at,city\n");
    for i in 0..350u32 {
        let city = if (100..300).contains(&i) { "Lyon" } else { "Paris" };
        next.push_str(&format!("M{i},2024-01-01T08:00:00Z,{city}{}\n", i % 3));
    }
    next.push_str("M5,2024-01-01T08:00:00Z,Nice\n");
    let next = write(dir.path(), "m2.csv", next.as_bytes());
    let plain = Warehouse::open(dir.path().join("plain")).unwrap();
    let small = Warehouse::open(dir.path().join("small")).unwrap();
    for (wh, opts) in [(&plain, canonical(Table::Members)), (&small, tiny(Table::Members, false))] {
        let s = run_with(wh, std::slice::from_ref(&first), &opts).await;
        assert_eq!((s.inserted, s.replaced, s.unchanged, s.new_members), (300, 0, 0, 300), "{s:?}");
        let s = run_with(wh, std::slice::from_ref(&next), &opts).await;
        assert_eq!((s.inserted, s.replaced, s.unchanged, s.new_members), (50, 100, 201, 50), "{s:?}");
        let s = run_with(wh, std::slice::from_ref(&next), &opts).await;
        assert_eq!((s.inserted, s.replaced, s.unchanged), (0, 0, 351), "{s:?}");
    }
    // Same rows; keys may be handed out in another order when spilled, but
    // they stay dense, unique and agree with the dictionary.
    assert_eq!(
        rows(&plain, Table::Members, &["member_key"]).await,
        rows(&small, Table::Members, &["member_key"]).await
    );
    for wh in [&plain, &small] {
        let members = rows(wh, Table::Members, &[]).await;
        assert_eq!(members.len(), 350);
        assert!(members.iter().any(|r| r.contains("member_id=M5|") && r.contains("city=Nice")));
        let dict = rows(wh, Table::MemberIds, &[]).await;
        let mut keys: Vec<i64> = dict.iter().map(|r| r.rsplit('=').next().unwrap().parse().unwrap()).collect();
        keys.sort();
        assert_eq!(keys, (0..350).collect::<Vec<_>>());
        for r in &members {
            let id = r.split('|').find_map(|f| f.strip_prefix("member_id=")).unwrap();
            let key = r.split('|').find_map(|f| f.strip_prefix("member_key=")).unwrap();
            assert!(dict.contains(&format!("member_id={id}|member_key={key}")), "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_file_with_new_bad_rows_at_old_positions_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    let path = write(dir.path(), "daily.csv", b"member_id,registered_at\nM1,2024-01-01\nM2,yesterday\n");
    let s = run(&wh, Table::Members, std::slice::from_ref(&path), None, false).await;
    assert_eq!(s.quarantined, 1);
    let s = run(&wh, Table::Members, std::slice::from_ref(&path), None, false).await;
    assert_eq!(s.quarantined, 0, "the same bad row is recorded once");
    // Tomorrow's export, same name, another bad row on line 3.
    std::fs::write(&path, b"member_id,registered_at\nM3,2024-01-02\nM4,today\n").unwrap();
    let s = run(&wh, Table::Members, std::slice::from_ref(&path), None, false).await;
    assert_eq!(s.quarantined, 1, "{s:?}");
    let q = quarantined(&wh, &path).await;
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|(row, col, _)| *row == 3 && col == "registered_at"), "{q:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_or_stale_key_index_is_rebuilt_or_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    let m = members_csv(dir.path(), "m.csv", 6, "Lyon");
    run(&wh, Table::Members, &[m], None, false).await;
    let day1 = orders_csv(dir.path(), "o1.csv", 0);
    run(&wh, Table::Orders, std::slice::from_ref(&day1), None, false).await;
    let index = dir.path().join("wh/_taglake/index/orders");
    let day1_manifest = std::fs::read(index.join("manifest.json")).unwrap();
    let day1_runs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let mut text = std::fs::read_to_string(&day1).unwrap().replace("\no", "\nz");
    text.push('\n');
    let day2 = write(dir.path(), "o2.csv", text.as_bytes());
    assert_eq!(run(&wh, Table::Orders, std::slice::from_ref(&day2), None, false).await.inserted, 40);
    let before = rows(&wh, Table::Orders, &[]).await;
    // As after a kill between the orders commit and the index update: the
    // index is one ingest behind. It catches up from the Delta log.
    for (p, bytes) in &day1_runs {
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::write(index.join("manifest.json"), &day1_manifest).unwrap();
    let s = run(&wh, Table::Orders, &[day1.clone(), day2.clone()], None, false).await;
    assert_eq!((s.inserted, s.unchanged), (0, 120), "{s:?}");
    // The index is gone altogether: it is rebuilt from the table.
    std::fs::remove_dir_all(dir.path().join("wh/_taglake")).unwrap();
    let s = run(&wh, Table::Orders, &[day1, day2], None, false).await;
    assert_eq!((s.inserted, s.unchanged), (0, 120), "{s:?}");
    assert_eq!(rows(&wh, Table::Orders, &[]).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn created_members_get_rows_even_after_a_kill_between_the_commits() {
    let dir = tempfile::tempdir().unwrap();
    let o = orders_csv(dir.path(), "o.csv", 0);
    let clean = Warehouse::open(dir.path().join("clean")).unwrap();
    let s = run_with(&clean, std::slice::from_ref(&o), &tiny(Table::Orders, true)).await;
    assert_eq!((s.inserted, s.new_members), (40, 6), "{s:?}");
    // Members are registered at their first order in the input.
    let members = rows(&clean, Table::Members, &[]).await;
    assert!(members.iter().any(|r| r.contains("member_id=M0|") && r.contains("registered_at=2025-06-01T10:00:00Z")));
    // A run killed after the dictionary commit: keys exist, rows do not.
    let killed = Warehouse::open(dir.path().join("killed")).unwrap();
    crate::dictionary::MemberDictionary::open(&killed, 1 << 26).await.unwrap();
    {
        let mut dict = crate::dictionary::MemberDictionary::open(&killed, 1 << 26).await.unwrap();
        for id in ["M0", "M1", "M2", "M3", "M4", "M5"] {
            dict.assign(id, crate::keys::text_key(id)).unwrap();
        }
        dict.commit(&killed).await.unwrap();
    }
    let s = run_with(&killed, std::slice::from_ref(&o), &tiny(Table::Orders, true)).await;
    assert_eq!((s.inserted, s.new_members), (40, 0), "{s:?}");
    for t in [Table::MemberIds, Table::Members, Table::Orders] {
        assert_eq!(rows(&clean, t, &[]).await, rows(&killed, t, &[]).await, "{t}");
    }
}

/// A [`Progress`] that, at file `at`, waits until the ingest has written a
/// data file of `folder`, then panics: a reader that stops in the middle,
/// after uncommitted files exist.
struct StopAt {
    at: usize,
    folder: PathBuf,
}

impl Progress for StopAt {
    fn file(&self, _path: &Path, index: usize, _total: usize) {
        if index != self.at {
            return;
        }
        let written = || {
            std::fs::read_dir(&self.folder)
                .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "parquet")))
                .unwrap_or(false)
        };
        for _ in 0..3000 {
            if written() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("injected reader failure");
    }
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_stops_commits_nothing_and_its_files_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path().join("wh")).unwrap();
    let lock = wh.lock_writer("ingest test", taglake_storage::Wait::No).unwrap();
    let m = members_csv(dir.path(), "m.csv", 4, "Lyon");
    run(&wh, Table::Members, std::slice::from_ref(&m), None, false).await;
    let members_before = rows(&wh, Table::Members, &[]).await;
    let index_before = files_under(&wh.root().join("_taglake").join("index"));
    // Orders of known and unknown members (created), in many files and runs.
    let inputs: Vec<PathBuf> = (0..3).map(|i| orders_csv(dir.path(), &format!("o{i}.csv"), i)).collect();
    let opts = tiny(Table::Orders, true);
    let started = std::time::SystemTime::now();
    let stop = Arc::new(StopAt { at: 2, folder: wh.table_path(Table::Orders) });
    let e = ingest(&wh, &inputs, &opts, stop).await.unwrap_err();
    match &e {
        Error::ReaderStopped { path, message } => {
            assert_eq!(path, &inputs[2]);
            assert_eq!(message, "injected reader failure");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("nothing was committed"), "{e}");
    // Nothing committed, but files were written (the test means something).
    assert_eq!(wh.state(Table::Orders).await.unwrap(), None);
    let written = files_under(&wh.table_path(Table::Orders));
    assert!(written.iter().any(|p| p.extension().is_some_and(|x| x == "parquet")), "{written:?}");
    // Key runs beyond the manifests' (spilled line keys of this run).
    let new_runs = |after: Vec<PathBuf>| -> Vec<PathBuf> {
        after.into_iter().filter(|p| !index_before.contains(p) && !p.ends_with("manifest.json")).collect()
    };
    assert!(!new_runs(files_under(&wh.root().join("_taglake").join("index"))).is_empty());

    let d = discard_failed(&wh, &lock, started).await.unwrap();
    assert!(d.files >= 1 && d.bytes > 0, "{d:?}");
    assert!(files_under(&wh.table_path(Table::Orders)).is_empty());
    assert_eq!(rows(&wh, Table::Members, &[]).await, members_before);
    assert_eq!(new_runs(files_under(&wh.root().join("_taglake").join("index"))), Vec::<PathBuf>::new());
    assert_eq!(discard_failed(&wh, &lock, started).await.unwrap(), Discarded::default());

    // The same ingest again ends where one clean run ends.
    let s = run_with(&wh, &inputs, &opts).await;
    let clean = Warehouse::open(dir.path().join("clean")).unwrap();
    run(&clean, Table::Members, std::slice::from_ref(&m), None, false).await;
    let c = run_with(&clean, &inputs, &opts).await;
    assert_eq!((s.inserted, s.new_members), (c.inserted, c.new_members));
    for t in [Table::Orders, Table::Members, Table::MemberIds] {
        assert_eq!(rows(&wh, t, &[]).await, rows(&clean, t, &[]).await, "{}", t.name());
    }
}
