//! The external clients some tests check taglake against: `psql`,
//! `openssl`, a Python with psycopg, or with DuckDB and pyroaring, and
//! Debian's Chromium with its ChromeDriver driven by Selenium.
//!
//! `cargo test --workspace --locked` must pass on a machine with only a
//! Rust toolchain, so a test whose client is missing is skipped with one
//! line on standard error (past the test harness's capture, so it shows
//! without `--nocapture`). With `TAGLAKE_REQUIRE_PEERS` set, as `.ci/run`
//! sets it after installing every client, a missing one fails the test
//! instead: in CI a skip must never pass for a run.
//!
//! A test asks first (`if !require(&[Peer::Psql]) { return; }`, or
//! [`require_for`] around the part that needs the client) and then runs
//! the client through [`program`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A client some tests run.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// PostgreSQL's command-line client (Debian's `postgresql-client`).
    Psql,
    /// `openssl`, to make a TLS certificate.
    Openssl,
    /// A Python that imports psycopg (libpq: PostgreSQL's extended protocol).
    Psycopg,
    /// A Python that imports duckdb and pyroaring.
    DuckDb,
    /// A Python that imports selenium, with Debian's `chromium` and
    /// `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`):
    /// the studio's browser tests. The program is that Python.
    Browser,
}

impl Peer {
    /// The program, or why there is none; looked for once per test binary.
    fn found(self) -> &'static Result<PathBuf, String> {
        static FOUND: [OnceLock<Result<PathBuf, String>>; 5] = [const { OnceLock::new() }; 5];
        FOUND[self as usize].get_or_init(|| match self {
            Peer::Psql => on_path("psql", "--version"),
            Peer::Openssl => on_path("openssl", "version"),
            Peer::Psycopg => python_with(&["psycopg"]),
            Peer::DuckDb => python_with(&["duckdb", "pyroaring"]),
            Peer::Browser => on_path(CHROMIUM, "--version")
                .and_then(|_| on_path(CHROMEDRIVER, "--version"))
                .and_then(|_| python_with(&["selenium"])),
        })
    }
}

/// Debian's Chromium (package `chromium`): the only browser the tests drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver (package `chromium-driver`), of the same version.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// `name` when `name arg` runs and succeeds.
fn on_path(name: &str, arg: &str) -> Result<PathBuf, String> {
    match Command::new(name).arg(arg).output() {
        Ok(out) if out.status.success() => Ok(PathBuf::from(name)),
        Ok(out) => Err(format!("`{name} {arg}` failed ({})", out.status)),
        Err(_) => Err(format!("{name} not found")),
    }
}

/// The first Python that imports every module of `modules`:
/// `TAGLAKE_PYTHON` alone when it is set, else the benchmarks' virtualenv
/// (`benches/.venv`, made by the bench scripts), then `python3`.
fn python_with(modules: &[&str]) -> Result<PathBuf, String> {
    let candidates: Vec<(PathBuf, String)> = match std::env::var_os("TAGLAKE_PYTHON") {
        Some(p) => vec![(PathBuf::from(&p), format!("TAGLAKE_PYTHON={}", Path::new(&p).display()))],
        None => vec![
            (Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/.venv/bin/python"), "benches/.venv".into()),
            (PathBuf::from("python3"), "python3".into()),
        ],
    };
    let import = format!("import {}", modules.join(", "));
    for (python, _) in &candidates {
        let out = Command::new(python).args(["-c", &import]).output();
        if out.is_ok_and(|o| o.status.success()) {
            return Ok(python.clone());
        }
    }
    let tried: Vec<&str> = candidates.iter().map(|(_, name)| name.as_str()).collect();
    Err(format!("no Python with {} (tried {})", modules.join(" and "), tried.join(", ")))
}

/// Whether a missing client fails the test rather than skipping it.
fn required() -> bool {
    std::env::var_os("TAGLAKE_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether every client of `needs` is here. When one is missing the test
/// fails if `TAGLAKE_REQUIRE_PEERS` is set; otherwise this prints
/// `skipped <test>: <why>` and returns false, and the test returns.
pub fn require(needs: &[Peer]) -> bool {
    check(None, needs)
}

/// Like [`require`] for one part of a test, which goes on without it:
/// prints `skipped <part> in <test>: <why>`.
pub fn require_for(part: &str, needs: &[Peer]) -> bool {
    check(Some(part), needs)
}

fn check(part: Option<&str>, needs: &[Peer]) -> bool {
    let missing: Vec<&str> = needs.iter().filter_map(|p| p.found().as_ref().err()).map(String::as_str).collect();
    if missing.is_empty() {
        return true;
    }
    // The test harness names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let what = part.map_or(test.clone(), |part| format!("{part} in {test}"));
    let why = missing.join("; ");
    assert!(
        !required(),
        "{what} cannot run: {why}. TAGLAKE_REQUIRE_PEERS is set, so that fails rather than skips: \
         install psql, openssl, chromium and chromium-driver (Debian: postgresql-client, openssl, chromium, \
         chromium-driver) and `pip install -r \
         benches/requirements.txt` into the Python that TAGLAKE_PYTHON names, as .ci/run does"
    );
    // Straight to the stream, not through `eprintln!`, which the harness
    // captures and shows only for a failing test.
    let _ = writeln!(std::io::stderr(), "skipped {what}: {why} (set TAGLAKE_REQUIRE_PEERS=1 to fail instead)");
    false
}

/// The program that runs `peer` (for a Python peer, that Python). Fails
/// the test when it is missing: call [`require`] first.
pub fn program(peer: Peer) -> &'static Path {
    match peer.found() {
        Ok(p) => p,
        Err(why) => panic!("{peer:?} is missing ({why}): the test must call peers::require first"),
    }
}
