//! End-to-end tests of the `taglake` command: one test binary (DataFusion
//! is linked once) with a module per capability.

mod architecture;
mod audience;
mod cli;
mod cluster;
#[cfg(feature = "distributed")]
mod distributed;
mod export;
mod ingest_generated;
mod inputs_cli;
mod inputs_sql;
mod kill;
mod nightly;
mod optimize;
mod peers;
mod repl;
mod serve;
mod serve_attacks;
mod slt;
mod snapshots_shared;
mod sql;
mod studio;
mod tag_cli;
mod tag_kill;
mod tag_reference;
mod writers_concurrency;
mod writers_kill;
mod writers_lock;
mod writers_vacuum;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The built `taglake` binary with `args`, run in `cwd`.
fn command(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_taglake"));
    c.args(args).current_dir(cwd).env_remove("TAGLAKE_WAREHOUSE");
    c
}

/// Runs the built `taglake` binary and returns its output.
pub fn taglake(args: &[&str], cwd: &Path) -> Output {
    command(args, cwd).output().expect("taglake runs")
}

/// Starts the built `taglake` binary with its output and errors piped.
pub fn start(args: &[&str], cwd: &Path) -> Child {
    command(args, cwd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("taglake runs")
}

/// Runs the built `taglake` binary with `input` on its standard input (a
/// pipe, not a terminal).
pub fn taglake_with_input(args: &[&str], cwd: &Path, input: &str) -> Output {
    let mut child = command(args, cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taglake runs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().expect("taglake finishes")
}

/// Like [`taglake`], failing the test unless the command succeeds.
pub fn taglake_ok(args: &[&str], cwd: &Path) -> String {
    let out = taglake(args, cwd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "taglake {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Starts `taglake args` in `cwd` and SIGKILLs it after `after`; returns
/// whether it had already finished, successfully (a failure fails the test).
pub fn run_and_kill(args: &[&str], cwd: &Path, after: std::time::Duration) -> bool {
    let mut child = command(args, cwd).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("taglake runs");
    let start = std::time::Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "taglake {args:?} failed on its own: {}\n{stderr}", out.status);
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

/// Moments to kill a command at, as fractions of a clean run's time: one at
/// a random point of each sixth of the run (the last reaching past its
/// end) and three near its end, where the commits happen; from a seed
/// printed so a failure can be replayed by hand.
pub fn kill_fractions(what: &str) -> Vec<f64> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut state = seed;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let slots = 6;
    let mut f: Vec<f64> = (0..slots).map(|i| (i as f64 + random()) / slots as f64 * 1.15).collect();
    f.extend((0..3).map(|_| 0.75 + 0.25 * random()));
    println!("{what}: killing at fractions {f:.2?} (seed {seed})");
    f
}

/// Reads a table back as sorted, printable rows (for comparing warehouses).
pub fn table_rows(warehouse: &Path, table: taglake_storage::Table, skip: &[&str]) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let wh = taglake_storage::Warehouse::open(warehouse).unwrap();
    let batches = rt.block_on(wh.read(table, None)).unwrap();
    let mut rows = Vec::new();
    let opts = FormatOptions::default().with_null("∅");
    for b in batches {
        let schema = b.schema();
        let cols: Vec<(String, ArrayFormatter<'_>)> = schema
            .fields()
            .iter()
            .zip(b.columns())
            .filter(|(f, _)| !skip.contains(&f.name().as_str()))
            .map(|(f, c)| (f.name().clone(), ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()))
            .collect();
        for i in 0..b.num_rows() {
            rows.push(cols.iter().map(|(n, f)| format!("{n}={}", f.value(i))).collect::<Vec<_>>().join("|"));
        }
    }
    rows.sort();
    rows
}

/// A generated, ingested and tagged warehouse (`dir/warehouse`) in a
/// temporary directory, for the read-only tests of a module.
pub struct Tagged {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

/// Generates `members` members with `seed`, ingests and tags them.
pub fn tagged(members: u64, seed: u64) -> Tagged {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    tag_reference::ingested_warehouse(&dir, members, seed, "warehouse");
    taglake_ok(&["tag"], &dir);
    Tagged { _tmp: tmp, dir }
}

/// A running `taglake SUBCOMMAND` server (`serve`, `studio`) on a free
/// loopback port unless `args` give `--listen`: the port from the one line
/// it prints (`listening on ADDR`), its standard error in a file. Killed
/// when dropped.
pub struct Listening {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Listening {
    pub fn start(subcommand: &str, cwd: &Path, args: &[&str]) -> Listening {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join(format!("{subcommand}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_taglake"))
            .arg(subcommand)
            .args(if args.contains(&"--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] })
            .args(args)
            .current_dir(cwd)
            .env_remove("TAGLAKE_WAREHOUSE")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("taglake {subcommand} starts: {e}"));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            panic!(
                "taglake {subcommand} did not start: {first}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Listening { child, port, log, _logdir: logdir }
    }

    /// What it wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a directory tree (a warehouse a test is about to change).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
