//! Progress bars and summary lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taglake_storage::ParamMessage;

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
    release_free_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Gives the pages the allocator holds free back to the system (glibc on
/// Linux; elsewhere nothing), so what a step allocates next does not come
/// on top of what the step before it freed.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only returns free pages to the kernel; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations of this size or more get their own mapping from the
/// kernel (glibc's `M_MMAP_THRESHOLD`) once [`fix_mmap_threshold`] ran.
///
/// glibc's own threshold moves: it starts at 128 KiB and rises to the
/// size of every mapped block freed, up to 32 MiB. In `nightly`, after the
/// ingests have freed their large buffers, the tag refresh's per-shard
/// arrays of 1–3 MiB came from the per-thread arenas instead, and what
/// they left free there stayed resident: the refresh in `nightly` peaked
/// 10–16 % above the same refresh run alone (2.95 against 2.6 GiB at 10 M
/// members, 11.8–12.1 against 10.1 GiB at 42 M).
///
/// At 1 MiB the long-lived per-shard arrays are mapped (and unmapped whole
/// when freed) and the per-chunk feature columns of 512 KiB, made and
/// dropped thousands of times a run, are reused from the arenas: the
/// nightly's refresh at 10 M peaked at 2.57 GiB (128 KiB: 2.19 GiB but
/// 35.6 s instead of 22.5 s; 4 MiB: 2.93 GiB). It costs time, mapping and
/// faulting in every shard array afresh: at 42 M a refresh run alone took
/// 149.5 s (35 s system time) with it against 140.9–143.5 s (23–27 s) with
/// glibc's own threshold, so only `nightly` fixes it, for its refresh.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Fixes the allocator's mapping threshold at [`MMAP_THRESHOLD`] for the
/// rest of the process (glibc on Linux; elsewhere nothing).
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes the allocator's parameters, under the
    // main arena's lock; `nightly` calls it between steps, when no other
    // thread is allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
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

/// An error as the command prints it: the message and its causes joined
/// by ": " (anyhow's `{:#}`), with two differences. A cause whose text an
/// earlier message already shows is left out: library errors show their
/// source's text and keep the source too (and DataFusion shows some in
/// their `Debug` form). And the parameters a library names
/// ([`ParamMessage`]) are shown as this command's flags ([`flag`]).
pub fn error_text(e: &anyhow::Error) -> String {
    let chain: Vec<&(dyn std::error::Error + 'static)> = e.chain().collect();
    let mut shown = String::new();
    let mut parts = Vec::new();
    for (i, cause) in chain.iter().enumerate() {
        let mut text = cause.to_string();
        let already = |t: &str| !t.trim().is_empty() && shown.contains(t.trim());
        if i > 0 && (already(&text) || already(&format!("{cause:?}"))) {
            continue;
        }
        shown.push_str(&text);
        shown.push('\n');
        for message in chain[i..].iter().filter_map(|c| c.downcast_ref::<ParamMessage>()) {
            text = text.replace(&message.to_string(), &message.render(flag));
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// The flag of a library parameter: `--` and the name in kebab case,
/// unless the flag is named otherwise.
pub fn flag(parameter: &'static str) -> String {
    const RENAMED: &[(&str, &str)] = &[("holdout_share", "--holdout")];
    match RENAMED.iter().find(|(p, _)| *p == parameter) {
        Some((_, flag)) => flag.to_string(),
        None => format!("--{}", parameter.replace('_', "-")),
    }
}

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

    /// An error that shows its source's text and keeps it as its source,
    /// as the library errors do.
    #[derive(Debug)]
    struct Wrapped<E>(&'static str, E);

    impl<E: std::fmt::Display> std::fmt::Display for Wrapped<E> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.0, self.1)
        }
    }

    impl<E: std::error::Error + 'static> std::error::Error for Wrapped<E> {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn errors_show_each_cause_once_and_parameters_as_flags() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::from(Wrapped("reading a.csv", io())).context("ingest orders");
        assert_eq!(error_text(&e), "ingest orders: reading a.csv: no such file");
        let e = anyhow::Error::from(io()).context("reading b.csv");
        assert_eq!(error_text(&e), "reading b.csv: no such file", "a context keeps its cause");
        let m = ParamMessage::param("holdout_share").then_text(" must be below 100 %, or use ").then_param("split");
        let e = anyhow::Error::from(Wrapped("plan", m)).context("nightly step `export`");
        assert_eq!(error_text(&e), "nightly step `export`: plan: --holdout must be below 100 %, or use --split");
    }
}
