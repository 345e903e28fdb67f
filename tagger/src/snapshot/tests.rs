//! Shared bitmaps and retention against a model: every snapshot must read
//! back exactly what was written, whatever was shared and pruned.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use proptest::prelude::*;
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan};
use taglake_storage::{Table, Wait, Warehouse};

use super::*;

fn tag(position: i32, name: &str, members: u64) -> TagInfo {
    TagInfo {
        position,
        name: name.into(),
        family: "f".into(),
        description: String::new(),
        rule: "x".into(),
        members: members as i64,
        share: 0.0,
        value: None,
    }
}

fn new_snapshot(as_of: NaiveDate, tags: &[(&str, RoaringBitmap)]) -> NewSnapshot {
    NewSnapshot {
        as_of,
        base_members: 100,
        features_version: None,
        catalog_digest: "d".into(),
        tags: tags.iter().enumerate().map(|(i, (n, b))| (tag(i as i32, n, b.len()), b.clone())).collect(),
    }
}

/// A stored row: snapshot and tag name.
type Row = (i64, String);

/// `(snapshot, name) → holder` of every row stored as a reference, and the
/// rows that hold bytes.
fn stored_rows(wh: &Warehouse) -> (BTreeMap<Row, i64>, Vec<Row>) {
    let rt = tokio::runtime::Handle::current();
    let all = tokio::task::block_in_place(|| rt.block_on(wh.files(Table::Tags))).unwrap();
    let (mut refs, mut held) = (BTreeMap::new(), Vec::new());
    for v in numbers(&all) {
        let t = Table::Tags;
        let wanted =
            [Wanted::plain(t, "name"), Wanted::plain(t, "bitmap"), Wanted::plain(t, "bitmap_snapshot").or_null()];
        let rows = std::sync::Mutex::new(Vec::new());
        tokio::task::block_in_place(|| {
            scan::<_, Error>(t, &files_of(&all, v), &wanted, |b: &RecordBatch| {
                let (n, bm, h) = (b.column(0).as_string::<i32>(), b.column(1).as_binary::<i32>(), b.column(2));
                let h = h.as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    assert!(bm.is_valid(r) != h.is_valid(r), "snapshot {v}: a row holds bytes or refers, never both");
                    rows.lock().unwrap().push((n.value(r).to_string(), h.is_valid(r).then(|| h.value(r))));
                }
                Ok(())
            })
        })
        .unwrap();
        for (name, h) in rows.into_inner().unwrap() {
            match h {
                Some(h) => {
                    refs.insert((v, name), h);
                }
                None => held.push((v, name)),
            }
        }
    }
    (refs, held)
}

/// Every stored snapshot reads back as the model says, through
/// [`bitmaps`], [`diff`] and the stored rows (no chains, no dangling
/// references).
async fn check(wh: &Warehouse, model: &BTreeMap<i64, Vec<(String, RoaringBitmap)>>) {
    assert_eq!(versions(wh).await.unwrap(), model.keys().copied().collect::<Vec<_>>());
    for (v, tags) in model {
        let (got_v, got) = bitmaps(wh, Some(*v), None).await.unwrap();
        assert_eq!(got_v, *v);
        assert_eq!(&got, tags, "snapshot {v}");
        let only = [tags[0].0.as_str()];
        assert_eq!(bitmaps(wh, Some(*v), Some(&only)).await.unwrap().1, vec![tags[0].clone()]);
    }
    let (refs, held) = stored_rows(wh);
    for ((v, name), h) in &refs {
        assert!(h < v, "snapshot {v} refers forward to {h}");
        assert!(held.contains(&(*h, name.clone())), "snapshot {v}, tag {name}: holder {h} does not hold the bytes");
    }
    let vs: Vec<i64> = model.keys().copied().collect();
    if let [.., a, b] = vs[..] {
        let d = diff(wh, a, b).await.unwrap();
        for (name, new) in &model[&b] {
            let old = model[&a].iter().find(|(n, _)| n == name).map(|(_, o)| o.clone()).unwrap_or_default();
            let row = d.iter().find(|r| &r.name == name).unwrap();
            assert_eq!((row.entered, row.exited), ((new - &old).len(), (&old - new).len()), "{name}");
        }
    }
}

fn day(i: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(i)
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_tags_are_stored_once_and_read_back_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    let lock = wh.lock_writer("test", Wait::No).unwrap();
    let a = RoaringBitmap::from_iter(0..5000u32);
    let b = RoaringBitmap::from_iter([1u32, 7, 70_000]);
    let c = RoaringBitmap::from_iter((0..200_000u32).step_by(3));
    let mut model = BTreeMap::new();
    let s1: Vec<(&str, RoaringBitmap)> = vec![("a", a.clone()), ("b", b.clone()), ("c", c.clone())];
    model.insert(write(&wh, &lock, new_snapshot(day(0), &s1)).await.unwrap(), own(&s1));
    // b changes, a and c do not: a and c refer to snapshot 1.
    let b2 = RoaringBitmap::from_iter([1u32, 8]);
    let s2 = vec![("a", a.clone()), ("b", b2.clone()), ("c", c.clone())];
    model.insert(write(&wh, &lock, new_snapshot(day(1), &s2)).await.unwrap(), own(&s2));
    // A third with a new tag: a still refers to 1 (never to 2's reference).
    let s3 = vec![
        ("a", a.clone()),
        ("b", b2.clone()),
        ("d", RoaringBitmap::new()),
        ("c", c - RoaringBitmap::from_iter([0u32])),
    ];
    model.insert(write(&wh, &lock, new_snapshot(day(2), &s3)).await.unwrap(), own(&s3));
    check(&wh, &model).await;
    let (refs, _) = stored_rows(&wh);
    assert_eq!(
        refs,
        BTreeMap::from([
            ((2, "a".to_string()), 1),
            ((2, "c".to_string()), 1),
            ((3, "a".to_string()), 1),
            ((3, "b".to_string()), 2),
        ])
    );
    // Deleting 1 and 2: 3 takes over a's and b's bytes.
    let policy = Retention { keep_last: 1, keep_daily: 1, keep_monthly: 0 };
    let dry = prune(&wh, &lock, &policy, true).await.unwrap();
    assert_eq!(dry.deleted.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((dry.rewritten.clone(), dry.taken_over, dry.version), (vec![3], 2, None));
    check(&wh, &model).await;
    let done = prune(&wh, &lock, &policy, false).await.unwrap();
    assert!(done.version.is_some() && done.bytes_removed > done.bytes_added, "{done:?}");
    model.retain(|v, _| *v == 3);
    check(&wh, &model).await;
    assert!(stored_rows(&wh).0.is_empty());
    // Nothing left to delete: no commit.
    assert_eq!(prune(&wh, &lock, &policy, false).await.unwrap().version, None);
}

fn own(tags: &[(&str, RoaringBitmap)]) -> Vec<(String, RoaringBitmap)> {
    tags.iter().map(|(n, b)| (n.to_string(), b.clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_without_a_digest_hold_their_bytes_and_are_stored_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    let lock = wh.lock_writer("test", Wait::No).unwrap();
    // Rows as a table written before references reads them: no digest,
    // no reference (storage's tests cover gaining the columns).
    let a = RoaringBitmap::from_iter(0..10u32);
    let full = snapshot_batch(1, 0, new_snapshot(day(0), &[("a", a.clone())]), &HashMap::new()).unwrap();
    let mut columns = full.columns().to_vec();
    columns[14] = arrow::array::new_null_array(columns[14].data_type(), 1);
    let batch = RecordBatch::try_new(full.schema(), columns).unwrap();
    let mut w = wh.append(Table::Tags).await.unwrap();
    w.write(batch).await.unwrap();
    w.commit().await.unwrap();
    let mut model = BTreeMap::from([(1, own(&[("a", a.clone())]))]);
    check(&wh, &model).await;
    // The old row has no digest: the next snapshot stores a again, the
    // one after refers to it.
    for v in [2, 3] {
        assert_eq!(write(&wh, &lock, new_snapshot(day(v), &[("a", a.clone())])).await.unwrap(), v);
        model.insert(v, own(&[("a", a.clone())]));
    }
    check(&wh, &model).await;
    assert_eq!(stored_rows(&wh).0, BTreeMap::from([((3, "a".to_string()), 2)]));
    assert_eq!(info(&wh, Some(1)).await.unwrap().tags[0].name, "a");
}

fn stored(as_of: &[(i64, NaiveDate)]) -> BTreeMap<i64, prune::Stored> {
    as_of.iter().map(|&(v, d)| (v, prune::Stored { as_of: d, references: Vec::new() })).collect()
}

#[test]
fn retention_keeps_the_last_of_each_day_and_month_experiments_and_the_newest() {
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
    // Two snapshots a night (tag, then cluster) over 70 nights, and one
    // re-tag of an old day done later (number 200, as of day 3).
    let mut rows = Vec::new();
    for i in 0..70 {
        rows.push((2 * i + 1, day(i)));
        rows.push((2 * i + 2, day(i)));
    }
    rows.push((200, day(3)));
    let s = stored(&rows);
    let keep = |p: Retention, e: &[i64]| prune::keep(&s, 200, &p, &e.iter().copied().collect());
    let kept = keep(Retention { keep_last: 0, keep_daily: 3, keep_monthly: 0 }, &[]);
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [136, 138, 140, 200]);
    assert_eq!(kept[&200], ["newest"]);
    // Months: January (whose highest number is the re-tag, 200), February
    // (day 58: 118) and March 2026.
    let kept = keep(Retention { keep_last: 2, keep_daily: 0, keep_monthly: 12 }, &[5]);
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [5, 118, 140, 200]);
    assert_eq!(kept[&5], ["experiment"]);
    assert_eq!(kept[&140], ["last", "monthly"]);
    assert_eq!(kept[&118], ["monthly"]);
    assert_eq!(kept[&200], ["newest", "last", "monthly"]);
    assert_eq!(d(2026, 2, 28), day(58));
    // Keeping nothing still keeps the newest; an experiment's snapshot that
    // no longer exists changes nothing.
    assert_eq!(keep(Retention { keep_last: 0, keep_daily: 0, keep_monthly: 0 }, &[999]).len(), 1);
    // The night's `tag` snapshot holds the bytes its `cluster` snapshot
    // refers to: kept while its day is in the daily window, not after.
    let mut s = s;
    for i in 0..70 {
        s.get_mut(&(2 * i + 2)).unwrap().references = vec![("t".into(), 2 * i + 1)];
    }
    let keep = |p: Retention| prune::keep(&s, 200, &p, &BTreeSet::new());
    let kept = keep(Retention { keep_last: 0, keep_daily: 3, keep_monthly: 0 });
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [135, 136, 137, 138, 139, 140, 200]);
    assert_eq!((kept[&135].clone(), kept[&136].clone()), (vec!["holder"], vec!["daily"]));
    let kept = keep(Retention { keep_last: 0, keep_daily: 0, keep_monthly: 1 });
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [140, 200], "a monthly snapshot takes over instead");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random nights (each tag kept, changed, dropped or added), random
    /// prunes in between: every kept snapshot reads back exactly.
    #[test]
    fn any_history_of_snapshots_and_prunes_reads_back_exactly(
        nights in proptest::collection::vec(
            (proptest::collection::vec(0u8..4, 5), 0u32..3, any::<bool>(), 0usize..4), 2..8
        )
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let wh = Warehouse::open(dir.path()).unwrap();
            let lock = wh.lock_writer("test", Wait::No).unwrap();
            let mut model: BTreeMap<i64, Vec<(String, RoaringBitmap)>> = BTreeMap::new();
            let mut current: Vec<(String, RoaringBitmap)> = Vec::new();
            let mut day_no = 0;
            for (n, (moves, gap, prune_now, keep_daily)) in nights.into_iter().enumerate() {
                let mut next = Vec::new();
                for (i, m) in moves.iter().enumerate() {
                    let name = format!("t{i}");
                    let old = current.iter().find(|(x, _)| *x == name).map(|(_, b)| b.clone());
                    // 4,096 and 4,097 members straddle the array/bitmap container edge.
                    let fresh = || RoaringBitmap::from_iter((0..4096 + (n as u32 % 2)).map(|k| k * (i as u32 + 1) + n as u32));
                    match (m, old) {
                        (0, Some(b)) => next.push((name, b)),
                        (1, _) | (0, None) => next.push((name, fresh())),
                        (2, _) => {}
                        (_, Some(b)) => next.push((name, b | RoaringBitmap::from_iter([1_000_000 + n as u32]))),
                        (_, None) => next.push((name, RoaringBitmap::new())),
                    }
                }
                if next.is_empty() {
                    next.push(("t0".into(), RoaringBitmap::new()));
                }
                day_no += gap as i64;
                let tags: Vec<(&str, RoaringBitmap)> = next.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
                let v = write(&wh, &lock, new_snapshot(day(day_no), &tags)).await.unwrap();
                model.insert(v, next.clone());
                current = next;
                if prune_now {
                    let policy = Retention { keep_last: 1, keep_daily, keep_monthly: 0 };
                    let done = prune(&wh, &lock, &policy, false).await.unwrap();
                    for (d, _) in &done.deleted {
                        model.remove(d);
                    }
                    prop_assert_eq!(done.kept.len(), model.len());
                }
                check(&wh, &model).await;
            }
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_without_its_bytes_is_an_error_naming_the_tag_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    let lock = wh.lock_writer("test", Wait::No).unwrap();
    let (a, b) = (RoaringBitmap::from_iter(0..10u32), RoaringBitmap::from_iter([3u32]));
    write(&wh, &lock, new_snapshot(day(0), &[("a", a.clone())])).await.unwrap();
    // Rows as a damaged table (or another writer) could hold them: `a`
    // refers to snapshot 1, which holds it; `b` to snapshot 1, which does
    // not; `c` to a snapshot that does not exist.
    let mut bytes = Vec::new();
    b.serialize_into(&mut bytes).unwrap();
    let shared = HashMap::from([
        (
            "a".to_string(),
            (
                digest(&{
                    let mut v = Vec::new();
                    a.serialize_into(&mut v).unwrap();
                    v
                }),
                1,
            ),
        ),
        ("b".to_string(), (digest(&bytes), 1)),
        ("c".to_string(), (digest(&bytes), 9)),
    ]);
    let tags = [("a", a.clone()), ("b", b.clone()), ("c", b.clone())];
    let batch = snapshot_batch(2, 0, new_snapshot(day(1), &tags), &shared).unwrap();
    let mut w = wh.append(Table::Tags).await.unwrap();
    w.write(batch).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(bitmaps(&wh, Some(2), Some(&["a"])).await.unwrap().1, own(&[("a", a.clone())]));
    for (tag, holder) in [("b", 1), ("c", 9)] {
        let err = bitmaps(&wh, Some(2), Some(&[tag])).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "tag snapshot 2, tag `{tag}`: the stored bitmap is damaged: its bytes are in snapshot {holder}, \
                 which holds no such tag"
            )
        );
    }
    assert!(diff(&wh, 1, 2).await.is_err());
    // Retention leaves such rows alone rather than failing on them.
    let kept = prune(&wh, &lock, &Retention::default(), true).await.unwrap();
    assert_eq!(kept.deleted, []);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_the_newest_snapshot_lacks_is_compared_with_the_last_snapshot_that_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    let lock = wh.lock_writer("test", Wait::No).unwrap();
    let (a, c) = (RoaringBitmap::from_iter(0..10u32), RoaringBitmap::from_iter([5u32, 6]));
    let a2 = RoaringBitmap::from_iter(0..11u32);
    // tag, cluster (adds `c`), tag (changes `a`, no `c`), cluster (same `c`).
    let nights: [&[(&str, RoaringBitmap)]; 4] = [
        &[("a", a.clone())],
        &[("a", a.clone()), ("c", c.clone())],
        &[("a", a2.clone())],
        &[("a", a2.clone()), ("c", c.clone())],
    ];
    let mut model = BTreeMap::new();
    for (i, tags) in nights.iter().enumerate() {
        model.insert(write(&wh, &lock, new_snapshot(day(i as i64), tags)).await.unwrap(), own(tags));
    }
    check(&wh, &model).await;
    assert_eq!(
        stored_rows(&wh).0,
        BTreeMap::from([((2, "a".to_string()), 1), ((4, "a".to_string()), 3), ((4, "c".to_string()), 2)])
    );
}

/// On a current-thread runtime, where `block_in_place` would panic, a read
/// and a write of snapshots fail with an error and commit nothing.
#[test]
fn a_current_thread_runtime_gets_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    let lock = wh.lock_writer("test", Wait::No).unwrap();
    let tags = [("a", RoaringBitmap::from_iter(0..10u32))];
    let multi = tokio::runtime::Runtime::new().unwrap();
    let first = multi.block_on(write(&wh, &lock, new_snapshot(day(0), &tags))).unwrap();
    let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let is_runtime_error = |e: &Error| matches!(e, Error::Storage(taglake_storage::Error::CurrentThreadRuntime));
    let Err(e) = current.block_on(info(&wh, None)) else { panic!("info ran on a current-thread runtime") };
    assert!(is_runtime_error(&e), "{e}");
    let e = current.block_on(write(&wh, &lock, new_snapshot(day(1), &tags))).unwrap_err();
    assert!(is_runtime_error(&e), "{e}");
    assert_eq!(multi.block_on(versions(&wh)).unwrap(), vec![first], "nothing was committed");
}
