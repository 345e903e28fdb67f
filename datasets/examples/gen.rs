//! Measures generation throughput.
//!
//! ```text
//! cargo run --release -p taglake-datasets --example gen -- [MEMBERS] [FORMAT] [OUT_DIR]
//! ```
//!
//! Generates `MEMBERS` members (default 200,000) in `FORMAT` (default
//! parquet) into `OUT_DIR` (default: a temporary directory, removed at the
//! end) and prints the summary with order lines per second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use taglake_datasets::{Format, GenerateConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let members: u64 = match args.next() {
        Some(m) => m.replace('_', "").parse()?,
        None => 200_000,
    };
    let format: Format = match args.next() {
        Some(f) => f.parse()?,
        None => Format::Parquet,
    };
    let temp;
    let out: PathBuf = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };

    let cfg = GenerateConfig::builder().members(members).format(format).out(&out).build()?;
    let written = AtomicU64::new(0);
    let summary = generate(&cfg, &|n| {
        written.fetch_add(n, Ordering::Relaxed);
    })?;
    let bytes: u64 = summary.files.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    println!(
        "{} members, {} orders, {} order lines ({} products, {} stores) as {format} in {} files, {:.1} MiB",
        summary.members,
        summary.orders,
        summary.order_lines,
        summary.products,
        summary.stores,
        summary.files.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "{:.2} s, {:.0} order lines/s on {} threads",
        summary.seconds,
        summary.lines_per_second(),
        rayon::current_num_threads()
    );
    Ok(())
}
