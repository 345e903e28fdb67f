//! In-process throughput of generation and CSV conversion.
//!
//! `cargo bench -p taglake-benches [-- MEMBERS]` (default 100,000 members,
//! one year ≈ 1 M order lines). No peer here: the side-by-side figures come
//! from `benches/ingest_vs_duckdb.sh`.

use taglake_benches::{median_time, peak_rss};
use taglake_datasets::{Format, GenerateConfig};
use taglake_ingest::CheckedMapping;
use taglake_ingest::convert::ConvertedFile;
use taglake_ingest::source::{self, ReadOptions};
use taglake_storage::Table;

fn main() {
    let members: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    for format in [Format::Parquet, Format::Csv] {
        let out = dir.path().join(format.extension());
        let cfg =
            GenerateConfig::builder().members(members).years(1).format(format).out(&out).build().expect("valid config");
        let (secs, summary) = median_time(3, || taglake_datasets::generate(&cfg, &|_| {}).expect("generate"));
        println!(
            "generate {:<8} {:>12} lines  median {:>7.3} s  {:>6.2} M lines/s",
            format.extension(),
            summary.order_lines,
            secs,
            summary.order_lines as f64 / secs / 1e6
        );
    }
    let files =
        source::expand_inputs(&[dir.path().join("csv/orders").to_string_lossy().to_string()]).expect("csv parts");
    let mapping = CheckedMapping::canonical(Table::Orders);
    let (secs, rows) = median_time(3, || {
        let mut rows = 0u64;
        for f in &files {
            for batch in ConvertedFile::open(f, &mapping, &ReadOptions::default()).expect("open") {
                rows += batch.expect("convert").1.batch.num_rows() as u64;
            }
        }
        rows
    });
    println!("read+validate csv {rows:>12} lines  median {secs:>7.3} s  {:>6.2} M lines/s", rows as f64 / secs / 1e6);
    println!("peak memory {:.0} MiB", peak_rss().unwrap_or(0) as f64 / 1048576.0);
}
