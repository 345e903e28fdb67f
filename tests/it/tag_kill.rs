//! Acceptance: a `taglake tag` killed at any moment leaves only complete
//! snapshots behind (every tag, with the member counts of a clean run), and
//! the next run ends exactly where one clean run ends: the same tags and
//! bitmaps, the same `features`, and a snapshot that references the
//! `features` version in the table (a run killed between its two commits
//! has its `features` kept, not written again).

use std::path::Path;
use std::time::Instant;

use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::{ingested_warehouse, runtime};
use crate::{kill_fractions, run_and_kill, table_rows, taglake_ok};

/// Every snapshot present must hold every tag with the clean run's counts,
/// and its bitmaps must read back with those counts.
fn check_snapshots(dir: &Path, wh: &Warehouse, rt: &tokio::runtime::Runtime, clean: &[(String, i64)], when: &str) {
    let versions = rt.block_on(snapshot::versions(wh)).unwrap();
    for v in &versions {
        let info = rt.block_on(snapshot::info(wh, Some(*v))).unwrap();
        let tags: Vec<(String, i64)> = info.tags.iter().map(|t| (t.name.clone(), t.members)).collect();
        assert!(tags == clean, "{when}: snapshot {v} has {} tags, not the clean run's {}", tags.len(), clean.len());
        let (_, bitmaps) = rt.block_on(snapshot::bitmaps(wh, Some(*v), None)).unwrap();
        let lens: Vec<(String, i64)> = bitmaps.iter().map(|(n, b)| (n.clone(), b.len() as i64)).collect();
        assert!(lens == clean, "{when}: the bitmaps of snapshot {v} do not match its member counts");
    }
    // What a user sees: the newest snapshot, complete.
    let csv = taglake_ok(&["tags", "list", "--format", "csv"], dir);
    let listed: Vec<(String, i64)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let fields: Vec<&str> = l.rsplitn(3, ',').collect();
            (l.split(',').next().unwrap().to_string(), fields[1].parse().unwrap())
        })
        .collect();
    assert!(listed == clean, "{when}: `taglake tags list` shows an incomplete snapshot:\n{csv}");
}

#[test]
fn killed_tag_runs_leave_only_complete_snapshots_and_a_rerun_converges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = ingested_warehouse(d, 20_000, 5, "warehouse");
    let rt = runtime();
    let wh = Warehouse::open(&path).unwrap();

    // Reference: one clean run.
    let start = Instant::now();
    taglake_ok(&["tag"], d);
    let clean_time = start.elapsed();
    let info = rt.block_on(snapshot::info(&wh, None)).unwrap();
    let clean: Vec<(String, i64)> = info.tags.iter().map(|t| (t.name.clone(), t.members)).collect();
    assert!(clean.len() > 100, "only {} tags", clean.len());
    let clean_bitmaps = rt.block_on(snapshot::bitmaps(&wh, None, None)).unwrap().1;
    let clean_features = table_rows(&path, Table::Features, &[]);

    println!("clean run {:.2} s", clean_time.as_secs_f64());
    let fractions = kill_fractions("tag");
    let (mut killed, mut ahead) = (0, 0);
    for f in &fractions {
        let finished = run_and_kill(&["tag"], d, clean_time.mul_f64(*f));
        killed += usize::from(!finished);
        let when = format!("after a kill at {f:.2} of the run (finished: {finished})");
        check_snapshots(d, &wh, &rt, &clean, &when);

        // Killed between its two commits, a run leaves `features` ahead of
        // the newest snapshot; the re-run must keep them.
        let features = rt.block_on(wh.version(Table::Features)).unwrap().map(|v| v as i64);
        let left_ahead = features != rt.block_on(snapshot::info(&wh, None)).unwrap().features_version;
        taglake_ok(&["tag"], d);
        let when = format!("{when} and a re-run");
        let newest = rt.block_on(snapshot::info(&wh, None)).unwrap();
        let now = rt.block_on(wh.version(Table::Features)).unwrap().map(|v| v as i64);
        assert_eq!(newest.features_version, now, "{when}: the snapshot references the current features");
        if left_ahead {
            ahead += 1;
            assert_eq!(now, features, "{when}: the interrupted run's features were written again, not kept");
        }
        assert_eq!((newest.as_of, newest.base_members), (info.as_of, info.base_members), "{when}");
        assert_eq!(newest.catalog_digest, info.catalog_digest, "{when}");
        check_snapshots(d, &wh, &rt, &clean, &when);
        let bitmaps = rt.block_on(snapshot::bitmaps(&wh, None, None)).unwrap().1;
        assert!(bitmaps == clean_bitmaps, "{when}: the newest snapshot's bitmaps differ from a clean run's");
        assert!(table_rows(&path, Table::Features, &[]) == clean_features, "{when}: `features` differs");
    }
    // The kills must have landed inside runs, or this test proved nothing.
    println!("{killed} of {} runs killed before they finished, {ahead} between the two commits", fractions.len());
    assert!(killed >= 3, "only {killed} of {} runs were killed before they finished", fractions.len());
}
