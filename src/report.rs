//! Progress bars and summary lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Peak resident memory of this process so far, in bytes (Linux; `None`
/// elsewhere).
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts a new peak for [`peak_memory`] (Linux: `clear_refs` 5 resets
/// the high-water mark), so a step of a longer command reports its own.
///
/// First the memory the allocator holds free is given back to the system
/// (glibc keeps what a step freed in its per-thread arenas, and the next
/// step's threads allocate from other arenas): without it, the step after
/// the tag refresh in `nightly` started from the refresh's ~10 GiB at 42 M
/// members and its peak was the refresh's.
pub fn reset_peak_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only returns free pages to the kernel; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Where summary lines go: stdout, unless a command prints a document
/// there (`nightly --format json`) and sends them to stderr.
static HUMAN_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends the summary lines of [`say!`] to stderr from now on.
pub fn human_to_stderr() {
    HUMAN_TO_STDERR.store(true, Ordering::Relaxed);
}

/// True once [`human_to_stderr`] was called.
pub fn humans_on_stderr() -> bool {
    HUMAN_TO_STDERR.load(Ordering::Relaxed)
}

/// `println!` for a command's summary lines (see [`human_to_stderr`]).
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::report::humans_on_stderr() { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}
pub(crate) use say;

/// `1.2 GiB`, `340 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `12,345,678`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.62 M rows/s`.
pub fn rate(n: u64, seconds: f64) -> String {
    let r = n as f64 / seconds.max(1e-9);
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// The tail every summary line ends with: seconds, rate, peak memory.
pub fn timing(rows: u64, seconds: f64) -> String {
    timing_of(rows, "rows", seconds)
}

/// [`timing`] counting something other than rows (`member-tags`).
pub fn timing_of(n: u64, what: &str, seconds: f64) -> String {
    let mem = peak_memory().map(bytes).unwrap_or_else(|| "n/a".into());
    format!("{seconds:.2} s · {} {what}/s · peak memory {mem}", rate(n, seconds))
}

/// A row counter on stderr when it is a terminal; invisible otherwise.
pub fn spinner(label: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {human_pos} rows · {per_sec} · {elapsed} {wide_msg}")
            .expect("valid template"),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Ingest progress forwarded to a spinner.
pub struct IngestBar(pub ProgressBar);

impl taglake_ingest::Progress for IngestBar {
    fn file(&self, path: &std::path::Path, index: usize, total: usize) {
        self.0.set_message(format!("[{}/{}] {}", index + 1, total, path.display()));
    }
    fn rows(&self, n: u64) {
        self.0.inc(n);
    }
}

impl IngestBar {
    pub fn new(label: &str) -> (Arc<Self>, ProgressBar) {
        let pb = spinner(label);
        (Arc::new(IngestBar(pb.clone())), pb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(rate(2_000_000, 1.0), "2.00 M");
        assert!(peak_memory().unwrap_or(1) > 0);
    }
}
