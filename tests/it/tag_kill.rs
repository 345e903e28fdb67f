//! Acceptance: a `taglake tag` killed at any moment leaves only complete
//! snapshots behind (every tag, with the member counts of a clean run), and
//! the next run succeeds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use taglake_storage::Warehouse;
use taglake_tagger::snapshot;

use crate::tag_reference::{ingested_warehouse, runtime};
use crate::taglake_ok;

/// Starts `taglake tag` and SIGKILLs it after `after`; returns whether it
/// had already finished (successfully).
fn tag_and_kill(cwd: &Path, after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taglake"))
        .arg("tag")
        .current_dir(cwd)
        .env_remove("TAGLAKE_WAREHOUSE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "taglake tag failed on its own: {status}");
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

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
fn killed_tag_runs_leave_only_complete_snapshots() {
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

    // Random moments spread over the run (and one past its end), plus three
    // near the end where the commits happen, from a seed printed so a
    // failure can be replayed by hand.
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut state = seed;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let slots = 6;
    let mut fractions: Vec<f64> = (0..slots).map(|i| (i as f64 + random()) / slots as f64 * 1.15).collect();
    fractions.extend((0..3).map(|_| 0.8 + 0.2 * random()));
    println!("clean run {:.2} s; killing at fractions {fractions:.2?} (seed {seed})", clean_time.as_secs_f64());
    let mut killed = 0;
    for f in &fractions {
        let finished = tag_and_kill(d, clean_time.mul_f64(*f));
        killed += usize::from(!finished);
        check_snapshots(d, &wh, &rt, &clean, &format!("after a kill at {f:.2} of the run (finished: {finished})"));
    }
    let before = rt.block_on(snapshot::versions(&wh)).unwrap();
    taglake_ok(&["tag"], d);
    let after = rt.block_on(snapshot::versions(&wh)).unwrap();
    assert_eq!(after.len(), before.len() + 1, "the final run adds one snapshot");
    check_snapshots(d, &wh, &rt, &clean, "after the final run");
    // The kills must have landed inside runs, or this test proved nothing.
    println!("{killed} of {} runs killed before they finished", fractions.len());
    assert!(killed >= 3, "only {killed} of {} runs were killed before they finished", fractions.len());
}
