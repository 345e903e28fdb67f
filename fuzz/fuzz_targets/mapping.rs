//! Mapping files: any text is a mapping or an error; a mapping that checks
//! against a table binds to a file's columns or says why not, and converts
//! a batch of rows into good rows and quarantined ones, never a panic.
#![no_main]

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use libfuzzer_sys::fuzz_target;
use taglake_ingest::convert::Converter;
use taglake_ingest::source::RawBatch;
use taglake_ingest::Mapping;
use taglake_storage::Table;

/// A few rows under the columns mapping files usually name, with the
/// values exports really hold (blanks, negatives, odd dates, stray text).
fn raw() -> RawBatch {
    let headers = [
        "household_key", "BASKET_ID", "DAY", "TRANS_TIME", "PRODUCT_ID", "QUANTITY", "SALES_VALUE", "RETAIL_DISC",
        "COUPON_DISC", "member_id", "order_id", "line_no", "ordered_at", "channel", "sku", "quantity", "amount",
        "category", "registered_at", "birthday", "points_balance",
    ];
    let rows = [
        ["1", "b1", "1", "0930", "p1", "2", "3.5", "-0.5", "0", "m1", "o1", "1", "2026-01-02T03:04:05", "app", "s1", "1", "9.99", "beauty", "2024-01-01", "1990-02-28", "100"],
        ["", "b1", "711", "2400", "p2", "-1", "x", "", "1.0", "", "o1", "two", "2026-13-01", "", "", "0", "-3", "", "yesterday", "1850-01-01", "9e99"],
        ["3", "b2", "-5", "9", "p3", "1e3", "1e308", "nan", "0", "m3", "o2", "2147483648", "1700000000", "store", "s2", "2", "inf", "toys", "2024-02-30", "", "-7"],
    ];
    let columns: Vec<ArrayRef> = (0..headers.len())
        .map(|c| Arc::new(StringArray::from_iter(rows.iter().map(|r| Some(r[c]).filter(|v| !v.is_empty())))) as ArrayRef)
        .collect();
    RawBatch {
        headers: Arc::new(headers.iter().map(|h| h.to_string()).collect()),
        columns,
        rows: (1..=rows.len() as u64).collect(),
        rejects: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mapping) = Mapping::parse(text) else { return };
    let raw = raw();
    for table in [Table::Orders, Table::Members, Table::Products] {
        let Ok(checked) = mapping.check(table) else { continue };
        let Ok(bindings) = checked.bind(&raw.headers) else { continue };
        let _ = Converter::new(&checked).convert(&raw, &bindings);
    }
});
