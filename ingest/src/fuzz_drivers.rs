//! The stable drivers of the ingest fuzz targets (`fuzz/`: `mapping`,
//! `csv`, `jsonl`); see `taglake_storage::fuzzing` for why they exist.
//!
//! The file drivers do more than look for panics. Most files they write
//! are well formed, with rows whose every value is known to be valid and
//! rows with exactly one value known to be invalid; for those files the
//! driver knows the answer: every good row is converted (under its line
//! number), every bad row is quarantined naming the column it broke, and
//! nothing else happens. The other files get broken bytes put in (stray
//! quotes, cut lines, garbage, a BOM, an empty header) and must still end
//! in converted rows, quarantined rows or an error naming the file, with
//! every row read accounted for.

use std::cell::Cell;
use std::path::Path;

use arrow::array::{ArrayRef, StringArray};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use taglake_storage::{ColumnType, Table};

use crate::convert::{ConvertedFile, Converter, input_schema};
use crate::mapping::{CheckedMapping, Mapping};
use crate::source::{RawBatch, ReadOptions};

/// A column a row may leave empty: not required, or filled with its
/// documented default (`discount` 0, `coupon_used` false).
fn may_be_empty(name: &str, required: bool) -> bool {
    !required || matches!(name, "discount" | "coupon_used")
}

/// Values every column of `ty` accepts (`required` columns never get an
/// empty one). None holds a newline, so a row is a line.
fn good_values(name: &str, ty: ColumnType, required: bool) -> Vec<&'static str> {
    let mut v = match (name, ty) {
        ("line_no", _) => vec!["1", "2", "3", "17"],
        ("quantity", _) => vec!["1", "2", "10"],
        ("amount" | "discount", _) => vec!["0", "9.99", "120.5", "3"],
        (_, ColumnType::Int32 | ColumnType::Int64) => vec!["0", "100", "2147483647"],
        (_, ColumnType::Float64) => vec!["0", "1.5", "-2"],
        (_, ColumnType::Bool) => vec!["true", "false", "0", "1"],
        (_, ColumnType::Timestamp) => {
            vec!["2026-03-01T10:15:00Z", "2026-03-01 10:15:00", "2025-12-31", "2024-02-29T23:59:59+08:00"]
        }
        (_, ColumnType::Date) => vec!["1990-02-28", "2000-01-01", "1975-12-31"],
        _ => vec!["m1", "O'Brien", "Zürich", "a,b", "say \"hi\"", "x;y|z", "😀", "S0001"],
    };
    if may_be_empty(name, required) {
        v.push("");
    }
    v
}

/// Values every column of `ty` refuses.
fn bad_values(name: &str, ty: ColumnType, required: bool) -> Vec<&'static str> {
    let mut v = match (name, ty) {
        ("quantity", _) => vec!["x", "-3", "99999999999999999999", "1.5.1"],
        ("amount", _) => vec!["abc", "-5", "1e308"],
        (_, ColumnType::Int32 | ColumnType::Int64) => vec!["x", "99999999999999999999", "1.5.1"],
        (_, ColumnType::Float64) => vec!["abc", "1..2"],
        (_, ColumnType::Bool) => vec!["maybe", "2x"],
        (_, ColumnType::Timestamp) => vec!["yesterday", "2026-02-30 10:00:00", "1969-12-31T00:00:00Z", "2026-13-01"],
        (_, ColumnType::Date) => vec!["x", "2026-13-01", "1850-05-01"],
        _ => vec![],
    };
    if !may_be_empty(name, required) {
        v.push("");
    }
    v
}

/// One data row: its values in header order and, for a bad row, the
/// canonical column it breaks.
#[derive(Debug, Clone)]
struct Row {
    values: Vec<String>,
    breaks: Option<&'static str>,
}

/// A file's content before it is written: headers and rows.
#[derive(Debug, Clone)]
struct Sheet {
    table: Table,
    headers: Vec<String>,
    rows: Vec<Row>,
}

/// Well-formed sheets for one of the three tables: every input column in
/// some order (plus a column no mapping names), rows good or broken in one
/// known column.
fn sheet() -> impl Strategy<Value = Sheet> {
    select(vec![Table::Orders, Table::Members, Table::Products]).prop_flat_map(|table| {
        let columns: Vec<_> = table.input_columns().collect();
        let row = prop::collection::vec(any::<Index>(), columns.len() + 2).prop_map({
            let columns = columns.clone();
            move |picks| {
                let broken = picks[columns.len()].index(columns.len() + 3);
                let mut breaks = None;
                let mut values: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let bad = bad_values(c.name, c.ty, c.required);
                        if i == broken && !bad.is_empty() {
                            breaks = Some(c.name);
                            bad[picks[i].index(bad.len())].to_string()
                        } else {
                            let good = good_values(c.name, c.ty, c.required);
                            good[picks[i].index(good.len())].to_string()
                        }
                    })
                    .collect();
                values.push(format!("extra{}", picks[columns.len() + 1].index(10)));
                Row { values, breaks }
            }
        });
        let mut headers: Vec<String> = columns.iter().map(|c| c.name.to_string()).collect();
        headers.push("not_a_column".into());
        (Just(headers).prop_shuffle(), prop::collection::vec(row, 0..40)).prop_map({
            move |(shuffled, rows)| {
                // Values follow the shuffled header order.
                let names: Vec<String> =
                    columns.iter().map(|c| c.name.to_string()).chain(["not_a_column".to_string()]).collect();
                let order: Vec<usize> =
                    shuffled.iter().map(|h| names.iter().position(|n| n == h).expect("a header")).collect();
                let rows = rows
                    .into_iter()
                    .map(|r| Row { values: order.iter().map(|&i| r.values[i].clone()).collect(), breaks: r.breaks })
                    .collect();
                Sheet { table, headers: shuffled, rows }
            }
        })
    })
}

/// Breakage put into a written file: at a position, some bytes.
fn noise() -> impl Strategy<Value = Vec<(Index, Vec<u8>)>> {
    let bytes = prop_oneof![
        4 => select(vec![
            "\"", "\n", "\r\n", ",", ";", "\t", "\u{feff}", "\0", "{", "}", "[", "]", ":", "\\", "\"\"\"", "\n\n\n",
            "{\"member_id\": {\"a\": 1}}", "[1,2", "null", "1e99999", "\u{ff}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..16),
        1 => (select(vec!["x", "\"", "9"]), 1usize..5000).prop_map(|(s, n)| s.repeat(n).into_bytes()),
    ];
    prop::collection::vec((any::<Index>(), bytes), 1..6)
}

fn write_csv(sheet: &Sheet, delimiter: u8, crlf: bool) -> Vec<u8> {
    let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
    let mut w = csv::WriterBuilder::new().delimiter(delimiter).terminator(terminator).from_writer(Vec::new());
    w.write_record(&sheet.headers).expect("writing to memory");
    for row in &sheet.rows {
        w.write_record(&row.values).expect("writing to memory");
    }
    w.into_inner().expect("writing to memory")
}

fn write_jsonl(sheet: &Sheet, numbers_as_numbers: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for row in &sheet.rows {
        let mut obj = serde_json::Map::new();
        for (h, v) in sheet.headers.iter().zip(&row.values) {
            // An empty optional value is a missing key; an empty required
            // one an explicit "" (a required key no line of a batch carries
            // fails the file, as a CSV without the column does).
            if v.is_empty() && row.breaks.is_none_or(|c| c != h.as_str()) {
                continue;
            }
            let value = match v.parse::<f64>() {
                Ok(n) if numbers_as_numbers && n.is_finite() && v.len() < 15 => {
                    serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()))
                }
                _ => serde_json::Value::String(v.clone()),
            };
            obj.insert(h.clone(), value);
        }
        out.extend(serde_json::to_vec(&obj).expect("a JSON object"));
        out.push(b'\n');
    }
    out
}

/// What a file gave: rows read, good row numbers, quarantined rows with
/// the column they name, or the file's error.
struct Outcome {
    read: u64,
    good: Vec<u64>,
    rejected: Vec<(u64, Option<String>)>,
    error: Option<String>,
}

fn convert(path: &Path, table: Table, batch_rows: usize) -> Outcome {
    let mapping = CheckedMapping::canonical(table);
    let opts = ReadOptions { batch_rows, ..ReadOptions::default() };
    let mut out = Outcome { read: 0, good: Vec::new(), rejected: Vec::new(), error: None };
    let file = match ConvertedFile::open(path, &mapping, &opts) {
        Ok(file) => file,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    for batch in file {
        match batch {
            Ok((read, converted)) => {
                assert_eq!(
                    read as usize,
                    converted.batch.num_rows() + converted.rejects.len(),
                    "every row read is converted or quarantined"
                );
                assert_eq!(converted.rows.len(), converted.batch.num_rows());
                assert_eq!(*converted.batch.schema(), *input_schema(table));
                out.read += read;
                out.good.extend(converted.rows);
                out.rejected.extend(converted.rejects.into_iter().map(|r| (r.row, r.column)));
            }
            Err(e) => {
                out.error = Some(e.to_string());
                break;
            }
        }
    }
    out
}

/// The oracle for a well-formed file whose row `i` is on line `i + first`.
fn check_known(sheet: &Sheet, got: &Outcome, first: u64) -> Result<(), TestCaseError> {
    prop_assert!(got.error.is_none(), "a well-formed file failed: {:?}", got.error);
    prop_assert_eq!(got.read, sheet.rows.len() as u64);
    let want_good: Vec<u64> =
        sheet.rows.iter().enumerate().filter(|(_, r)| r.breaks.is_none()).map(|(i, _)| i as u64 + first).collect();
    let mut good = got.good.clone();
    good.sort_unstable();
    prop_assert_eq!(good, want_good, "good rows");
    let want_bad: Vec<(u64, &str)> =
        sheet.rows.iter().enumerate().filter_map(|(i, r)| r.breaks.map(|c| (i as u64 + first, c))).collect();
    prop_assert_eq!(got.rejected.len(), want_bad.len(), "quarantined rows: {:?}", got.rejected);
    let mut rejected = got.rejected.clone();
    rejected.sort();
    for ((line, column), (want_line, want_column)) in rejected.iter().zip(&want_bad) {
        prop_assert_eq!(line, want_line);
        let column = column.as_deref().unwrap_or("");
        prop_assert!(column.contains(want_column), "line {} names `{}`, not `{}`", line, column, want_column);
    }
    Ok(())
}

/// The oracle for any file: an error names the file; rows are accounted
/// for (checked in [`convert`]) and lie inside the file.
fn check_any(got: &Outcome, name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(e) = &got.error {
        prop_assert!(e.contains(name), "the error does not name the file: {}", e);
    }
    let lines = bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u64 + 1;
    for &row in got.good.iter().chain(got.rejected.iter().map(|(r, _)| r)) {
        prop_assert!(row >= 1 && row <= lines, "row {} of a file of {} lines", row, lines);
    }
    Ok(())
}

fn put_noise(mut bytes: Vec<u8>, noise: &[(Index, Vec<u8>)]) -> Vec<u8> {
    for (at, b) in noise {
        let at = at.index(bytes.len() + 1);
        bytes.splice(at..at, b.iter().copied());
    }
    bytes
}

/// Runs the file driver for one format.
fn files_convert_or_fail_cleanly(format: &'static str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(format!("input.{format}"));
    let counts = Cell::new((0u64, 0u64, 0u64));
    let strategy = (
        sheet(),
        prop::option::weighted(0.4, noise()),
        select(vec![b',', b';', b'\t', b'|']),
        any::<bool>(),
        prop_oneof![Just(65_536usize), 1usize..5],
    );
    taglake_storage::fuzzing::run_for(format, &strategy, 64, |(sheet, noise, delimiter, flag, batch_rows)| {
        let (mut known, mut broken, mut failed) = counts.get();
        let clean = if format == "csv" { write_csv(&sheet, delimiter, flag) } else { write_jsonl(&sheet, flag) };
        let bytes = match &noise {
            None => clean,
            Some(noise) => put_noise(clean, noise),
        };
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = convert(&path, sheet.table, batch_rows);
        check_any(&got, "input.", &bytes)?;
        match noise {
            None => {
                known += 1;
                check_known(&sheet, &got, if format == "csv" { 2 } else { 1 })?;
            }
            Some(_) if got.error.is_some() => failed += 1,
            Some(_) => broken += 1,
        }
        counts.set((known, broken, failed));
        Ok(())
    });
    let (known, broken, failed) = counts.get();
    eprintln!(
        "{format}: {known} well-formed files checked row by row, {broken} broken files converted, {failed} refused"
    );
}

/// The stable driver of the `csv` fuzz target. Runs
/// `TAGLAKE_FUZZ_SECONDS` (default 20): `cargo test --workspace --lib
/// fuzz_drivers::csv_files_convert_or_fail_cleanly -- --ignored --nocapture`.
#[test]
#[ignore = "long: run with --ignored (see the README's fuzzing section)"]
fn csv_files_convert_or_fail_cleanly() {
    files_convert_or_fail_cleanly("csv");
}

/// The stable driver of the `jsonl` fuzz target. Runs
/// `TAGLAKE_FUZZ_SECONDS` (default 20): `cargo test --workspace --lib
/// fuzz_drivers::jsonl_files_convert_or_fail_cleanly -- --ignored --nocapture`.
#[test]
#[ignore = "long: run with --ignored (see the README's fuzzing section)"]
fn jsonl_files_convert_or_fail_cleanly() {
    files_convert_or_fail_cleanly("jsonl");
}

/// A few seconds of each file driver in every test run, so a change that
/// breaks the oracle (or the values it trusts) fails here and not only in
/// a long run.
#[test]
fn file_drivers_hold_on_a_fixed_sample() {
    for format in ["csv", "jsonl"] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(format!("input.{format}"));
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        runner
            .run(&(sheet(), any::<bool>()), |(sheet, flag)| {
                let bytes = if format == "csv" { write_csv(&sheet, b',', flag) } else { write_jsonl(&sheet, flag) };
                std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_known(&sheet, &convert(&path, sheet.table, 3), if format == "csv" { 2 } else { 1 })
            })
            .unwrap_or_else(|e| panic!("{format}: {e}"));
    }
}

/// Column names of a real retailer's order export and of the canonical
/// layout: what mapping files name and raw batches hold.
const EXPORT_HEADERS: [&str; 20] = [
    "household_key",
    "BASKET_ID",
    "DAY",
    "TRANS_TIME",
    "PRODUCT_ID",
    "QUANTITY",
    "SALES_VALUE",
    "RETAIL_DISC",
    "member_id",
    "order_id",
    "line_no",
    "ordered_at",
    "channel",
    "sku",
    "quantity",
    "amount",
    "category",
    "registered_at",
    "birthday",
    "points_balance",
];

/// Mapping texts a fuzzer would write: the keys the format has, with
/// values that are right, wrong in type, or absurd.
fn mapping_text() -> impl Strategy<Value = String> {
    let source = select(EXPORT_HEADERS.iter().copied().chain(["missing"]).collect::<Vec<_>>());
    let rule = prop_oneof![
        3 => source.clone().prop_map(|s| format!("\"{s}\"")),
        1 => Just("{ sequence = true }".to_string()),
        1 => (source.clone(), source.clone(), select(vec!["days_since_epoch", "unix_s", "unix_ms", "unix_us", "excel", "%Y%m%d", "%", "%H%H%H", "", "auto"]))
            .prop_map(|(a, b, f)| format!("{{ from = [\"{a}\", \"{b}\"], format = \"{f}\", epoch = \"2023-01-01\" }}")),
        1 => (source.clone(), select(vec!["-1.0", "1e308", "0", "nan", "inf", "\"x\""]))
            .prop_map(|(s, k)| format!("{{ from = \"{s}\", scale = {k} }}")),
        1 => select(vec!["\"store\"", "\"\"", "1", "true", "\"2026-01-01\""]).prop_map(|d| format!("{{ default = {d} }}")),
        1 => (source.clone(), select(vec!["\"1\" = \"store\", \"2\" = \"app\"", "\"\" = \"x\"", "a = 1"]))
            .prop_map(|(s, v)| format!("{{ from = \"{s}\", values = {{ {v} }} }}")),
        1 => (source, select(vec!["Asia/Shanghai", "Mars/Base", "+08:00", ""]), select(vec!["-", "", "\\n"]))
            .prop_map(|(s, z, j)| format!("{{ from = [\"{s}\", \"DAY\"], timezone = \"{z}\", join = \"{j}\" }}")),
    ];
    // Mostly rules that check; now and then a key the format does not have.
    let rule = prop_oneof![19 => rule, 1 => Just("{ unknown = 1 }".to_string())].boxed();
    // Mostly the columns of one table (so that many mappings check), now
    // and then one no table has.
    let columns = select(vec![Table::Orders, Table::Members, Table::Products]).prop_flat_map(move |table| {
        let names: Vec<&'static str> = table.input_columns().map(|c| c.name).collect();
        let column = prop_oneof![12 => select(names), 1 => select(vec!["member_key", "nope", ""])];
        prop::collection::vec((column, rule.clone()), 0..8)
    });
    let head = (
        prop::option::weighted(0.2, select(vec!["orders", "members", "products", "quarantine", "x"])),
        prop::option::of(select(vec![",", ";", "\\t", ",", ";", "|", "", "ab", "\\\"", "é"])),
        prop::option::of(select(vec!["America/Chicago", "UTC", "Asia/Shanghai", "+08:00", "Nowhere/City", "+25:00"])),
        prop::option::of(select(vec!["[\"\", \"NULL\"]", "[]", "[1]", "\"NULL\""])),
        prop::option::of((any::<bool>(), select(vec!["0", "-1", "1e9", "nan"]))),
    );
    (head, columns, prop::option::weighted(0.1, ".{0,12}")).prop_map(
        |((table, delimiter, zone, nulls, options), columns, junk)| {
            let mut s = String::new();
            if let Some(t) = table {
                s += &format!("table = \"{t}\"\n");
            }
            s += "[source]\n";
            if let Some(d) = delimiter {
                s += &format!("delimiter = \"{d}\"\n");
            }
            if let Some(z) = zone {
                s += &format!("timezone = \"{z}\"\n");
            }
            if let Some(n) = nulls {
                s += &format!("null_values = {n}\n");
            }
            if let Some((returns, max)) = options {
                s += &format!("[options]\nallow_returns = {returns}\nmax_amount = {max}\n");
            }
            s += "[columns]\n";
            for (c, r) in columns {
                s += &format!("\"{c}\" = {r}\n");
            }
            if let Some(j) = junk {
                s += &j;
            }
            s
        },
    )
}

/// Rows under the columns mapping files usually name, with the values
/// exports hold (blanks, negatives, odd dates, stray text).
fn raw_batch() -> impl Strategy<Value = RawBatch> {
    let value = prop::option::of(select(vec![
        "1",
        "0",
        "-5",
        "711",
        "0930",
        "2400",
        "9",
        "2.5",
        "1e3",
        "1e308",
        "nan",
        "inf",
        "x",
        "m1",
        "o1",
        "app",
        "2026-01-02T03:04:05",
        "2026-13-01",
        "1700000000",
        "yesterday",
        "1850-01-01",
        "2024-02-30",
        "NULL",
        "  ",
    ]));
    prop::collection::vec(prop::collection::vec(value, EXPORT_HEADERS.len()), 0..8).prop_map(|rows| {
        let columns: Vec<ArrayRef> = (0..EXPORT_HEADERS.len())
            .map(|c| std::sync::Arc::new(StringArray::from_iter(rows.iter().map(|r| r[c]))) as ArrayRef)
            .collect();
        RawBatch {
            headers: std::sync::Arc::new(EXPORT_HEADERS.iter().map(|h| h.to_string()).collect()),
            columns,
            rows: (1..=rows.len() as u64).collect(),
            rejects: Vec::new(),
        }
    })
}

/// The stable driver of the `mapping` fuzz target: any text is a mapping
/// or an error; a mapping that checks against a table binds to a source's
/// columns or says why, and converts every row into a good row or a
/// quarantined one, never a panic. Runs `TAGLAKE_FUZZ_SECONDS` (default
/// 20): `cargo test --workspace --lib
/// fuzz_drivers::any_mapping_checks_or_fails_cleanly -- --ignored --nocapture`.
#[test]
#[ignore = "long: run with --ignored (see the README's fuzzing section)"]
fn any_mapping_checks_or_fails_cleanly() {
    let counts = Cell::new((0u64, 0u64, 0u64));
    taglake_storage::fuzzing::run_for("mapping", &(mapping_text(), raw_batch()), 256, |(text, raw)| {
        let (mut refused, mut unbound, mut converted) = counts.get();
        let mapping = match Mapping::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                prop_assert!(!e.to_string().trim().is_empty());
                counts.set((refused + 1, unbound, converted));
                return Ok(());
            }
        };
        for table in [Table::Orders, Table::Members, Table::Products] {
            let Ok(checked) = mapping.check(table) else {
                refused += 1;
                continue;
            };
            let Ok(bindings) = checked.bind(&raw.headers) else {
                unbound += 1;
                continue;
            };
            match Converter::new(&checked).convert(&raw, &bindings) {
                Ok(c) => {
                    converted += 1;
                    prop_assert_eq!(c.batch.num_rows() + c.rejects.len(), raw.len(), "{}", text);
                    prop_assert!(c.rows.iter().all(|r| raw.rows.contains(r)));
                }
                Err(e) => prop_assert!(false, "converting failed the whole batch: {} ({})", e, text),
            }
        }
        counts.set((refused, unbound, converted));
        Ok(())
    });
    let (refused, unbound, converted) = counts.get();
    eprintln!("mapping: {refused} refused, {unbound} not bound to the source, {converted} batches converted");
}
