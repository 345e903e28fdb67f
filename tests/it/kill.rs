//! Acceptance: a kill at any moment of an ingest leaves the warehouse
//! readable — each table as before or as after the command — and a
//! re-run converges on exactly what one clean run produces.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use taglake_storage::Table;

use crate::{table_rows, taglake_ok};

fn ingest_args<'a>(table: &'a str, files: &'a str, wh: &'a str) -> Vec<&'a str> {
    vec!["ingest", table, files, "--warehouse", wh]
}

fn creating<'a>(files: &'a str, wh: &'a str) -> Vec<&'a str> {
    vec!["ingest", "orders", files, "--warehouse", wh, "--create-members"]
}

/// Starts an ingest and SIGKILLs it after `after`; returns whether it had
/// already finished.
fn run_and_kill(args: &[&str], cwd: &Path, after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taglake"))
        .args(args)
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

#[test]
fn killed_ingest_leaves_before_or_after_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // CSV is the slowest path, so the kill lands inside the work.
    taglake_ok(&["generate", "--members", "20000", "--seed", "3", "--format", "csv", "--out", "data"], d);

    // Reference: one clean run (members first, then orders).
    let clean_start = Instant::now();
    taglake_ok(&ingest_args("members", "data/members.csv", "clean"), d);
    let members_time = clean_start.elapsed();
    let orders_start = Instant::now();
    taglake_ok(&ingest_args("orders", "data/orders", "clean"), d);
    let orders_time = orders_start.elapsed();
    let tables = [Table::MemberIds, Table::Members, Table::Orders];
    let reference: Vec<Vec<String>> = tables.iter().map(|t| table_rows(&d.join("clean"), *t, &[])).collect();

    // Kill at spread-out moments of each command, including near the end
    // where the commits happen; check the state after each kill.
    let fractions = [0.05, 0.3, 0.6, 0.85, 0.95, 1.0];
    let mut kills = 0;
    for (i, f) in fractions.iter().enumerate() {
        let wh = format!("killed-{i}");
        let killed_members =
            !run_and_kill(&ingest_args("members", "data/members.csv", &wh), d, members_time.mul_f64(*f));
        let members_now = table_rows(&d.join(&wh), Table::Members, &[]);
        assert!(members_now.is_empty() || members_now == reference[1], "kill at {f} of members left a partial table");
        taglake_ok(&ingest_args("members", "data/members.csv", &wh), d);

        let killed_orders = !run_and_kill(&ingest_args("orders", "data/orders", &wh), d, orders_time.mul_f64(*f));
        let orders_now = table_rows(&d.join(&wh), Table::Orders, &[]);
        assert!(
            orders_now.is_empty() || orders_now == reference[2],
            "kill at {f} of orders left a partial table ({} rows)",
            orders_now.len()
        );
        taglake_ok(&ingest_args("orders", "data/orders", &wh), d);

        kills += usize::from(killed_members) + usize::from(killed_orders);
        for (t, want) in tables.iter().zip(&reference) {
            let got = table_rows(&d.join(&wh), *t, &[]);
            assert!(
                got == *want,
                "after kill at {f} (members killed: {killed_members}, orders killed: {killed_orders}) and re-run, {t} differs from a clean run"
            );
        }
    }
    // The early kills must have landed inside the work, or this test proved nothing.
    assert!(kills >= 4, "only {kills} of the ingests were killed before they finished");
}

/// `ingest orders --create-members` into an empty warehouse writes three
/// tables in three commits (`member_ids`, `members`, `orders`) and updates
/// three key indexes after them: a kill between any two leaves a state from
/// which a re-run gives exactly what one clean run gives — including the
/// members rows of the members the killed run had already given keys to.
#[test]
fn killed_ingest_that_creates_members_converges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    taglake_ok(&["generate", "--members", "8000", "--seed", "5", "--format", "csv", "--out", "data"], d);
    let start = Instant::now();
    taglake_ok(&creating("data/orders", "clean"), d);
    let time = start.elapsed();
    let tables = [Table::MemberIds, Table::Members, Table::Orders];
    let reference: Vec<Vec<String>> = tables.iter().map(|t| table_rows(&d.join("clean"), *t, &[])).collect();
    assert!(!reference[1].is_empty(), "members were created");

    let mut kills = 0;
    for (i, f) in crate::kill_fractions("ingest --create-members").iter().enumerate() {
        let wh = format!("killed-{i}");
        kills += usize::from(!run_and_kill(&creating("data/orders", &wh), d, time.mul_f64(*f)));
        let orders_now = table_rows(&d.join(&wh), Table::Orders, &[]);
        assert!(orders_now.is_empty() || orders_now == reference[2], "kill at {f:.2} left a partial orders table");
        taglake_ok(&creating("data/orders", &wh), d);
        for (t, want) in tables.iter().zip(&reference) {
            assert!(table_rows(&d.join(&wh), *t, &[]) == *want, "after a kill at {f:.2} and a re-run, {t} differs");
        }
        // A third run finds everything in place.
        let again = taglake_ok(&creating("data/orders", &wh), d);
        assert!(again.contains(" 0 inserted") && !again.contains("new members"), "{again}");
    }
    assert!(kills >= 3, "only {kills} of the ingests were killed before they finished");
}
