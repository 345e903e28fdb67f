//! End-to-end tests of the `taglake` command: one test binary (DataFusion
//! is linked once) with a module per capability.

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
mod optimize;
mod repl;
mod serve;
mod sql;
mod tag_cli;
mod tag_kill;
mod tag_reference;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs the built `taglake` binary and returns its output.
pub fn taglake(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taglake"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TAGLAKE_WAREHOUSE")
        .output()
        .expect("taglake runs")
}

/// Runs the built `taglake` binary with `input` on its standard input (a
/// pipe, not a terminal).
pub fn taglake_with_input(args: &[&str], cwd: &Path, input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taglake"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TAGLAKE_WAREHOUSE")
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
