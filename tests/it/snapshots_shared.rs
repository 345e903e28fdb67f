//! Shared bitmaps and retention through every reader: a snapshot whose tags
//! refer to an earlier snapshot's bytes reads exactly like one that holds
//! them, in `tags` commands, SQL, audiences and the query crate's tag set;
//! `taglake tags prune` deletes what the policy does not keep without
//! changing what any kept snapshot holds, also when killed at any moment.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use roaring::RoaringBitmap;
use taglake_query::tagset::TagSet;
use taglake_storage::scan::{Wanted, scan};
use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::{ingested_warehouse, runtime};
use crate::{copy_dir, kill_fractions, run_and_kill, taglake, taglake_ok};

type Bitmaps = Vec<(String, RoaringBitmap)>;

/// Every snapshot's tags as [`snapshot::bitmaps`] reads them.
fn all_bitmaps(wh: &Warehouse) -> BTreeMap<i64, Bitmaps> {
    let rt = runtime();
    let versions = rt.block_on(snapshot::versions(wh)).unwrap();
    versions.into_iter().map(|v| (v, rt.block_on(snapshot::bitmaps(wh, Some(v), None)).unwrap().1)).collect()
}

/// `(snapshot, tag) → holder` of the rows stored as references.
fn references(wh: &Warehouse) -> BTreeMap<(i64, String), i64> {
    let rt = runtime();
    let files = rt.block_on(wh.files(Table::Tags)).unwrap();
    let mut out = BTreeMap::new();
    for f in files {
        let v: i64 = f.partition_value("snapshot").unwrap().parse().unwrap();
        let t = Table::Tags;
        let rows = std::sync::Mutex::new(Vec::new());
        let wanted = [Wanted::plain(t, "name"), Wanted::plain(t, "bitmap_snapshot").or_null()];
        scan::<_, taglake_storage::Error>(t, &[f.path], &wanted, |b| {
            let (n, h) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
            for r in (0..b.num_rows()).filter(|&r| h.is_valid(r)) {
                rows.lock().unwrap().push((n.value(r).to_string(), h.value(r)));
            }
            Ok(())
        })
        .unwrap();
        out.extend(rows.into_inner().unwrap().into_iter().map(|(n, h)| ((v, n), h)));
    }
    out
}

/// The query crate's tag set reads snapshot `v` as `want`, tag by tag on
/// demand and all at once (`warm`).
fn tag_set_reads(wh: &Warehouse, v: i64, want: &Bitmaps) {
    let rt = runtime();
    for warm in [false, true] {
        let set = rt.block_on(TagSet::load(wh, Some(v))).unwrap().unwrap();
        if warm {
            set.warm().unwrap();
        }
        for (name, bitmap) in want {
            let i = set.position(name).unwrap_or_else(|| panic!("snapshot {v}: no tag {name}"));
            assert_eq!(&set.bitmap(i).unwrap().to_roaring(), bitmap, "snapshot {v}, tag {name}, warm {warm}");
        }
    }
}

fn sql_count(dir: &Path, tag: &str) -> u64 {
    let csv =
        taglake_ok(&["sql", "--format", "csv", &format!("SELECT count(*) AS n FROM members WHERE \"{tag}\"")], dir);
    csv.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn shared_bitmaps_read_alike_everywhere_and_prune_keeps_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = ingested_warehouse(dir, 400, 31, "warehouse");
    let wh = Warehouse::open(&path).unwrap();
    taglake_ok(&["tag"], dir);
    taglake_ok(&["cluster", "--k", "4", "--seed", "3", "--runs", "1"], dir);
    taglake_ok(&["tag"], dir);
    let before = all_bitmaps(&wh);
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);

    // `cluster` (2) stores only its community tags; a second tag run on
    // the same data (3) stores nothing new: every row refers to 1.
    let refs = references(&wh);
    let of = |v: i64| refs.iter().filter(|((s, _), _)| *s == v).map(|((_, n), h)| (n.clone(), *h)).collect::<Vec<_>>();
    let first: Vec<String> = before[&1].iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(of(2).iter().map(|(n, _)| n.clone()).collect::<Vec<_>>().len(), first.len());
    assert!(of(2).iter().all(|(n, h)| *h == 1 && first.contains(n)));
    let third: Vec<String> = before[&3].iter().map(|(n, _)| n.clone()).collect();
    assert!(of(3).iter().all(|(_, h)| *h == 1) && of(3).len() == first.len());
    assert_eq!(third.len(), first.len(), "the tag run after cluster carries the catalog's tags");
    assert_eq!(before[&3], before[&1], "same data, same as-of: same tags");
    let communities: Vec<&(String, RoaringBitmap)> = before[&2].iter().filter(|(n, _)| !first.contains(n)).collect();
    assert!(communities.len() >= 4, "{} community tags", communities.len());

    // Every reader: the tag set, SQL, audiences, diff.
    for (v, tags) in &before {
        tag_set_reads(&wh, *v, tags);
    }
    for (name, bitmap) in before[&3].iter().filter(|(_, b)| !b.is_empty()).take(5) {
        assert_eq!(sql_count(dir, name), bitmap.len(), "SQL count of {name}");
        let json = taglake_ok(&["audience", "count", name, "--format", "json"], dir);
        assert!(json.contains(&format!("{}", bitmap.len())), "{name}: {json}");
    }
    let diff = taglake_ok(&["tags", "diff", "--from", "1", "--to", "3", "--format", "csv"], dir);
    assert!(diff.lines().skip(1).all(|l| l.ends_with(",0,0,0")), "{diff}");
    let (name, bitmap) = before[&1].iter().find(|(_, b)| b.len() > 3).unwrap();
    taglake_ok(&["tags", "diff", "--from", "2", "--to", "3", "--tag", name, "--who", "entered", "--out", "w.csv"], dir);
    assert_eq!(std::fs::read_to_string(dir.join("w.csv")).unwrap().lines().count(), 1, "nobody entered {name}");
    assert_eq!(bitmap, &before[&2].iter().find(|(n, _)| n == name).unwrap().1);

    // An experiment exported from snapshot 3 keeps it; the newest (a
    // fourth, after one more cluster) is kept; 1 and 2 go, and 3 (kept)
    // takes over every bitmap it referred to in 1.
    taglake_ok(&["export", "--audience", name, "--salt", "s", "--out", "cohort.csv"], dir);
    taglake_ok(&["cluster", "--reuse-model"], dir);
    let before = all_bitmaps(&wh);
    let dry = taglake_ok(
        &["tags", "prune", "--keep-last", "1", "--keep-daily", "0", "--keep-monthly", "0", "--dry-run"],
        dir,
    );
    assert!(dry.contains("would delete 2 snapshots") && dry.contains("2 kept snapshots would take over"), "{dry}");
    assert_eq!(all_bitmaps(&wh), before, "a dry run changes nothing");
    let json = taglake_ok(
        &["tags", "prune", "--keep-last", "1", "--keep-daily", "0", "--keep-monthly", "0", "--format", "json"],
        dir,
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let kept: Vec<(i64, String)> = json["pruned"]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["snapshot"].as_i64().unwrap(),
                k["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect::<Vec<_>>().join(","),
            )
        })
        .collect();
    assert_eq!(kept, [(3, "experiment".to_string()), (4, "newest,last".to_string())]);
    let mut after = before.clone();
    after.retain(|v, _| *v >= 3);
    assert_eq!(all_bitmaps(&wh), after);
    for (v, tags) in &after {
        tag_set_reads(&wh, *v, tags);
    }
    assert!(references(&wh).values().all(|h| *h == 3), "every reference now names snapshot 3");
    let listed = taglake_ok(&["tags", "snapshots"], dir);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    for (name, bitmap) in after[&4].iter().filter(|(_, b)| !b.is_empty()).take(3) {
        assert_eq!(sql_count(dir, name), bitmap.len(), "SQL count of {name} after the prune");
    }
    let again = taglake_ok(&["tags", "prune", "--keep-last", "1", "--keep-daily", "0", "--keep-monthly", "0"], dir);
    assert!(again.contains("deleted 0 snapshots"), "{again}");
    // Bad flags are refused before anything happens.
    let bad = taglake(&["tags", "prune", "--keep-daily", "-1"], dir);
    assert!(!bad.status.success());
}

#[test]
fn killed_prunes_leave_every_snapshot_readable_and_a_rerun_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = ingested_warehouse(dir, 3_000, 32, "warehouse");
    let wh = Warehouse::open(&path).unwrap();
    taglake_ok(&["tag", "--as-of", "2026-06-01"], dir);
    taglake_ok(&["cluster", "--k", "4", "--seed", "3", "--runs", "1"], dir);
    taglake_ok(&["tag", "--as-of", "2026-06-02"], dir);
    taglake_ok(&["cluster", "--reuse-model"], dir);
    let original = all_bitmaps(&wh);
    assert_eq!(original.len(), 4);
    copy_dir(&path, &dir.join("pristine"));
    let prune = ["tags", "prune", "--keep-last", "1", "--keep-daily", "0", "--keep-monthly", "0"];
    let start = Instant::now();
    taglake_ok(&prune, dir);
    let clean_time = start.elapsed();
    let clean = all_bitmaps(&wh);
    assert_eq!(clean.keys().copied().collect::<Vec<_>>(), [4]);
    for f in kill_fractions("tags prune") {
        std::fs::remove_dir_all(&path).unwrap();
        copy_dir(&dir.join("pristine"), &path);
        let finished = run_and_kill(&prune, dir, clean_time.mul_f64(f));
        let when = format!("after a kill at {f:.2} (finished: {finished})");
        // Either nothing happened or everything did; every snapshot still
        // listed reads back as it was written.
        let now = all_bitmaps(&wh);
        assert!(now == original || now == clean, "{when}: snapshots {:?}", now.keys().collect::<Vec<_>>());
        taglake_ok(&["vacuum", "--retain", "0d"], dir);
        taglake_ok(&prune, dir);
        assert_eq!(all_bitmaps(&wh), clean, "{when} and a re-run");
    }
}
