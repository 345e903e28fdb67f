//! Benchmarks of taglake.
//!
//! Two kinds live here:
//! - **Side by side** (`*.sh` / `*.py` next to this crate): taglake's release
//!   binary and a peer (DuckDB, ClickHouse via chdb, scikit-learn, pyroaring)
//!   on the same data in the same run, reporting medians, ratios and peak
//!   memory. These are the figures we quote.
//! - **Hot paths** (`cargo bench -p taglake-benches`): in-process throughput
//!   of single stages (generation, CSV conversion) for development, without
//!   a peer.
//!
//! This library holds the small measuring helpers both share.
#![warn(missing_docs)]

use std::time::Instant;

/// Runs `f` `runs` times and returns the median wall time in seconds with
/// the last result.
pub fn median_time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    assert!(runs > 0, "at least one run");
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(f());
        times.push(start.elapsed().as_secs_f64());
    }
    (median(&mut times), last.expect("runs > 0"))
}

/// Median of a non-empty sample (mean of the middle two for even sizes).
pub fn median(xs: &mut [f64]) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let (t, v) = median_time(3, || 7);
        assert!(t >= 0.0);
        assert_eq!(v, 7);
    }
}
