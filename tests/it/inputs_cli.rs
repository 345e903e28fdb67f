//! Unbounded inputs at the command line: absurd counts, durations and
//! sizes are clear errors; a free-text column mapped to `category` or
//! `city` costs its tag family, not the run; the demo keeps its synthetic
//! members out of every warehouse but its own.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::{Tagged, tagged, taglake, taglake_ok};

/// Generated, ingested and tagged once; one experiment exported.
fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| {
        let t = tagged(300, 7);
        taglake_ok(&["export", "--audience", "tier_regular", "--salt", "s", "--out", "cohort.csv"], &t.dir);
        t
    })
}

/// The command failed with an error (exit code 1) whose message has `want`.
fn refused(out: &Output, args: &[&str], want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "taglake {args:?}: {:?}\n{stderr}", out.status);
    assert!(stderr.starts_with("error: ") && stderr.contains(want), "taglake {args:?}: expected {want:?} in\n{stderr}");
}

#[test]
fn absurd_counts_durations_and_sizes_are_clear_errors() {
    let dir = &fixture().dir;
    let many: Vec<String> = (0..101).map(|_| "tier_gold".to_string()).collect();
    let mut overlap = vec!["audience", "overlap"];
    overlap.extend(many.iter().map(String::as_str));
    let export = ["export", "--audience", "tier_gold", "--salt", "x", "--out", "x.csv"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&export[..], &["--duration", "100000000d"]].concat(),
            "`100000000d` is too long a window: at most 36525 days",
        ),
        ([&export[..], &["--duration", "99999999999999999999999w"]].concat(), "is too long a window"),
        ([&export[..], &["--launch-at", "2026-01-01", "--duration", "0h"]].concat(), "is not a window"),
        (vec!["experiment", "report", "1", "--window", "200000000000d"], "--window: `200000000000d` is too long"),
        (vec!["audience", "sample", "tier_gold", "--n", "1000000000000"], "a sample shows at most 100000 members"),
        (overlap, "overlap compares at most 100"),
        (vec!["generate", "--members", "1000000000000000", "--out", "g"], "got 1000000000000000, need at most"),
        (vec!["demo", "--members", "1000000000000000", "--data", "d", "--warehouse", "w"], "need at most"),
        (vec!["tag", "--keep-features-days", "4294967295"], "--keep-features-days 4294967295: at most 36525"),
        (vec!["tag", "--max-family-values", "0"], "a family needs at least 1 value"),
        (vec!["vacuum", "--retain", "200000000000d"], "--retain `200000000000d`: at most 36525 days"),
        (vec!["vacuum", "--retain", "99999999999999999999999h"], "at most 36525 days"),
        (vec!["cluster", "--runs", "1000000000000"], "--runs 1000000000000: at most 100"),
        (vec!["cluster", "--max-iterations", "18446744073709551615"], "at most 100000"),
        (vec!["cluster", "--k", "1000000000"], "asks for 1000000000 communities; at most 1000"),
        (vec!["cluster", "--k-range", "2..1000000000"], "at most 1000"),
        (vec!["optimize", "--memory", "99999999999999TiB"], "expected a size"),
        (
            vec!["ingest", "orders", "x.csv", "--memory", "1KiB"],
            "--memory \"1KiB\": expected a size of at least 64MiB, like 512MiB or 4GiB",
        ),
        (vec!["ingest", "members", "x.csv", "--memory", "99999999999999TiB"], "expected a size of at least 64MiB"),
        (vec!["nightly", "--orders", "x.csv", "--memory", "lots"], "--memory \"lots\": expected a size"),
        (vec!["serve", "--statement-timeout", "100000000000000000000s"], "--statement-timeout"),
        (vec!["serve", "--query-memory", "99999999999999TiB"], "--query-memory"),
    ];
    for (args, want) in &cases {
        refused(&taglake(args, dir), args, want);
    }
    // Cluster process settings are checked by the argument parser (a usage error, exit code 2).
    for (args, want) in [
        (vec!["scheduler", "--executor-timeout", "18446744073709551615"], "is not in 1..=86400"),
        (vec!["executor", "--scheduler", "h:1", "--slots", "1000000000000"], "is not in 1..=1024"),
        (vec!["executor", "--scheduler", "h:1", "--heartbeat", "0"], "is not in 1..=3600"),
    ] {
        let out = taglake(&args, dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && stderr.contains(want), "taglake {args:?}: {:?}\n{stderr}", out.status);
    }
    // Within the limits the same commands work.
    taglake_ok(&["audience", "sample", "tier_regular", "--n", "100000", "--format", "csv"], dir);
    taglake_ok(&["experiment", "report", "1", "--window", "36525d"], dir);
    taglake_ok(&["vacuum", "--retain", "36525d", "--dry-run"], dir);
}

/// 1,200 members and their orders as CSV with one more column each (`note`,
/// `memo`) holding free text: `cities` distinct notes, `categories` distinct memos.
fn free_text_exports(dir: &Path, cities: usize, categories: usize) {
    taglake_ok(&["generate", "--members", "1200", "--seed", "5", "--format", "csv", "--out", "data"], dir);
    let add = |file: &Path, header: &str, distinct: usize, prefix: &str| {
        let text = std::fs::read_to_string(file).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let extra = if i == 0 { header.to_string() } else { format!("{prefix} {}", i % distinct) };
            out.push_str(&format!("{line},{extra}\n"));
        }
        std::fs::write(file, out).unwrap();
    };
    add(&dir.join("data/members.csv"), "note", cities, "lives near");
    for part in std::fs::read_dir(dir.join("data/orders")).unwrap() {
        add(&part.unwrap().path(), "memo", categories, "bought for");
    }
    std::fs::write(dir.join("members.toml"), "[columns]\ncity = \"note\"\n").unwrap();
    std::fs::write(dir.join("orders.toml"), "[columns]\ncategory = \"memo\"\n").unwrap();
    taglake_ok(&["ingest", "products", "data/products.csv"], dir);
    taglake_ok(&["ingest", "members", "data/members.csv", "--mapping", "members.toml"], dir);
    taglake_ok(&["ingest", "orders", "data/orders", "--mapping", "orders.toml"], dir);
}

fn tag_names(dir: &Path, prefix: &str) -> usize {
    taglake_ok(&["tags", "list", "--format", "csv"], dir).lines().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn a_free_text_column_costs_its_family_not_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    free_text_exports(dir, 1_100, 60);
    // Default cap (1,000): the city partition is left out with a warning
    // naming the column and the count; every other tag is made.
    let out = taglake(&["tag"], dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: [[partition]] city_{value}: members.city has 1100 distinct values, more than the 1000 a family \
             may expand over"
        ),
        "{stderr}"
    );
    assert_eq!(tag_names(dir, "city_"), 0);
    assert_eq!(tag_names(dir, "category_lover_bought_for_"), 60);
    assert!(tag_names(dir, "tier_") == 3 && tag_names(dir, "home_store_") > 100);
    // A lower cap: the categories' per-member features and families go too.
    let out = taglake(&["tag", "--max-family-values", "50"], dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: orders.category has more than 50 distinct values"), "{stderr}");
    assert_eq!(tag_names(dir, "category_lover_") + tag_names(dir, "category_buyer_"), 0);
    assert_eq!(tag_names(dir, "main_category_"), 0);
    assert!(tag_names(dir, "tier_") == 3);
    // A higher one: every family is made.
    let out = taglake(&["tag", "--max-family-values", "2000"], dir);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tag_names(dir, "city_lives_near_"), 1_100);
}

/// Every file under `dir` with its size, sorted (to see that nothing changed).
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(dir).unwrap().display().to_string(), e.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_demo_works_in_its_own_warehouse_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A real warehouse, named by TAGLAKE_WAREHOUSE as in production.
    taglake_ok(&["generate", "--members", "50", "--seed", "2", "--out", "real-data"], dir);
    taglake_ok(&["ingest", "members", "real-data/members.parquet", "--warehouse", "real"], dir);
    let before = listing(&dir.join("real"));
    let demo = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_taglake"))
            .args(["demo", "--members", "300"])
            .args(args)
            .current_dir(dir)
            .env("TAGLAKE_WAREHOUSE", dir.join("real"))
            .output()
            .unwrap()
    };
    let out = demo(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&dir.join("real")), before, "the demo wrote into TAGLAKE_WAREHOUSE");
    let own = dir.join("data/demo/warehouse");
    assert!(own.join(".taglake-demo").is_file() && own.join("members/_delta_log").is_dir());
    assert!(stdout.contains("its warehouse is data/demo/warehouse"), "{stdout}");
    // Again: its own folder is reused.
    let out = demo(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing changes"));
    // Pointed at a folder it did not write: refused, the folder untouched.
    let out = demo(&["--warehouse", "real"]);
    refused(&out, &["demo", "--warehouse", "real"], "--warehouse real: the folder holds data the demo did not write");
    assert_eq!(listing(&dir.join("real")), before);
}
