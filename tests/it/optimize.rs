//! `taglake optimize`: orders exported in time order (every file spans every
//! member) are rewritten in member_key order; the rows, the tags and the
//! SQL answers stay the same, and the row groups no longer overlap.

use std::fs::File;
use std::path::Path;

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::runtime;
use crate::{taglake, taglake_ok};

/// The generated orders, sorted by time and written as three files, each a
/// third of the history over the whole member base.
fn orders_by_time(data: &Path, out: &Path) {
    let mut batches = Vec::new();
    let mut schema = None;
    for entry in std::fs::read_dir(data.join("orders")).unwrap() {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(entry.unwrap().path()).unwrap())
            .unwrap()
            .build()
            .unwrap();
        schema.get_or_insert(reader.schema());
        batches.extend(reader.map(Result::unwrap));
    }
    let schema = schema.unwrap();
    let all = concat_batches(&schema, &batches).unwrap();
    let by = |name: &str| SortColumn { values: all.column(schema.index_of(name).unwrap()).clone(), options: None };
    let order = lexsort_to_indices(&[by("ordered_at"), by("order_id"), by("line_no")], None).unwrap();
    let sorted = take_record_batch(&all, &order).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let third = sorted.num_rows().div_ceil(3);
    for i in 0..3 {
        let start = (i * third).min(sorted.num_rows());
        let part: RecordBatch = sorted.slice(start, third.min(sorted.num_rows() - start));
        let mut w =
            ArrowWriter::try_new(File::create(out.join(format!("part-{i}.parquet"))).unwrap(), schema.clone(), None)
                .unwrap();
        w.write(&part).unwrap();
        w.close().unwrap();
    }
}

/// `member_key` (min, max) of every row group of the current orders files.
fn key_bands(warehouse: &Path) -> Vec<(i64, i64)> {
    let wh = Warehouse::open(warehouse).unwrap();
    let files = runtime().block_on(taglake_storage::scan::table_files(&wh, Table::Orders)).unwrap();
    let mut bands: Vec<(i64, i64)> = taglake_storage::scan::member_key_bands(Table::Orders, &files)
        .unwrap()
        .into_iter()
        .map(|(lo, hi, _)| (lo, hi))
        .collect();
    bands.sort();
    bands
}

fn newest_bitmaps(warehouse: &Path) -> Vec<(String, Vec<u8>)> {
    let wh = Warehouse::open(warehouse).unwrap();
    let (_, tags) = runtime().block_on(snapshot::bitmaps(&wh, None, None)).unwrap();
    tags.into_iter()
        .map(|(name, b)| {
            let mut bytes = Vec::new();
            b.serialize_into(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn sorting_time_ordered_orders_by_member_keeps_rows_tags_and_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    taglake_ok(&["generate", "--members", "8000", "--seed", "5", "--out", "data"], dir);
    orders_by_time(&dir.join("data"), &dir.join("by-time"));
    for (table, files) in
        [("products", "data/products.parquet"), ("members", "data/members.parquet"), ("orders", "by-time")]
    {
        taglake_ok(&["ingest", table, files], dir);
    }
    let wh = dir.join("warehouse");
    let spread = || {
        let files =
            runtime().block_on(taglake_storage::scan::table_files(&Warehouse::open(&wh).unwrap(), Table::Orders));
        taglake_storage::scan::member_key_spread(Table::Orders, &files.unwrap()).unwrap().unwrap().spread
    };
    assert!(spread() > 0.9, "{}", spread());
    let before = key_bands(&wh);
    assert!(before.iter().all(|&(lo, hi)| hi - lo > 6_000), "time-ordered files should span the base: {before:?}");
    let question =
        "SELECT count(*), sum(quantity), count(DISTINCT order_id), min(member_key), max(member_key) FROM orders";
    let answer = taglake_ok(&["sql", question], dir);
    taglake_ok(&["tag", "--as-of", "2026-06-01"], dir);
    let tags = newest_bitmaps(&wh);

    let line = taglake_ok(&["optimize", "orders", "--memory", "64MiB"], dir);
    assert!(line.starts_with("optimize orders: ") && line.contains(" rows sorted by member_key into "), "{line}");
    // Two row groups of 128k and ~40k rows, each its own band: (128 × 0.76 + 40 × 0.24) / 168.
    assert!(spread() < 0.7, "{}", spread());
    let after = key_bands(&wh);
    assert!(after.len() > 1, "{after:?}");
    for w in after.windows(2) {
        assert!(w[0].1 <= w[1].0, "row groups still overlap after the sort: {w:?}");
    }
    assert_eq!(taglake_ok(&["sql", question], dir), answer);
    taglake_ok(&["tag", "--as-of", "2026-06-01"], dir);
    assert_eq!(newest_bitmaps(&wh), tags, "the tags changed with the layout");

    // A second run rewrites the sorted files again and changes nothing.
    let again = taglake_ok(&["optimize"], dir);
    assert!(again.starts_with("optimize orders: "), "{again}");
    assert_eq!(taglake_ok(&["sql", question], dir), answer);

    // Errors: a table without members, a size that is not one, an empty warehouse.
    let out = taglake(&["optimize", "products"], dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: orders, members"));
    for size in ["lots", "1MiB"] {
        let out = taglake(&["optimize", "orders", "--memory", size], dir);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--memory {size:?}")) && err.contains("at least 16MiB"), "{err}");
    }
    let line = taglake_ok(&["optimize", "members", "--warehouse", "empty"], dir);
    assert_eq!(line.trim(), "optimize members: the table has no rows yet; nothing to do");
}
