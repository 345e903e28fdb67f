use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use proptest::prelude::*;

use super::*;

fn ids(pairs: &[(String, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Table::MemberIds.arrow_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(pairs.iter().map(|p| p.0.as_str()))),
            Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.1))),
        ],
    )
    .unwrap()
}

fn members(range: std::ops::Range<i64>) -> Vec<(String, i64)> {
    range.map(|k| (format!("M{k:07}"), k)).collect()
}

/// Appends rows to `member_ids` as one commit; returns its version.
async fn append(wh: &Warehouse, pairs: &[(String, i64)]) -> TableState {
    let mut w = wh.part_writer(Table::MemberIds, Table::MemberIds.arrow_schema()).unwrap();
    w.write(ids(pairs)).await.unwrap();
    let adds = w.finish().await.unwrap();
    wh.commit_files(Table::MemberIds, &[], &adds).await.unwrap();
    wh.state(Table::MemberIds).await.unwrap().unwrap()
}

/// The rows of `member_ids` as stored.
async fn stored(wh: &Warehouse) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in wh.read(Table::MemberIds, None).await.unwrap() {
        let (ids, keys) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
        out.extend((0..b.num_rows()).map(|i| (ids.value(i).to_string(), keys.value(i))));
    }
    out
}

fn probes(pairs: &[(String, i64)]) -> (Vec<u128>, Vec<i64>) {
    let mut v: Vec<(u128, i64)> = pairs.iter().map(|(id, k)| (text_key(id), *k)).collect();
    v.sort();
    v.into_iter().unzip()
}

async fn assert_knows(wh: &Warehouse, index: &KeyIndex, known: &[(String, i64)], unknown: &[(String, i64)]) {
    let (keys, want) = probes(known);
    for bloom in [true, false] {
        let got = index.lookup(&keys, bloom).unwrap();
        let bad: Vec<usize> = (0..keys.len()).filter(|&i| got[i] != Some(want[i] as u64)).collect();
        assert!(
            bad.is_empty(),
            "bloom {bloom}: {} of {} wrong, first {:?}: got {:?} want {}, runs {}",
            bad.len(),
            keys.len(),
            bad.first(),
            bad.first().map(|&i| got[i]),
            bad.first().map(|&i| want[i]).unwrap_or(0),
            index.runs()
        );
        let (keys, _) = probes(unknown);
        assert!(index.lookup(&keys, bloom).unwrap().iter().all(Option::is_none));
    }
    assert_eq!(index.state(), wh.state(Table::MemberIds).await.unwrap().as_ref());
}

#[tokio::test(flavor = "multi_thread")]
async fn index_follows_appends_kills_and_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    let index = KeyIndex::open(&wh, KeyKind::MemberIds, 1 << 20).await.unwrap();
    assert_eq!((index.entries(), index.state()), (0, None));

    // Rows the index never saw: opening catches up on them.
    let first = members(0..5_000);
    append(&wh, &first).await;
    let mut index = KeyIndex::open(&wh, KeyKind::MemberIds, 1 << 20).await.unwrap();
    assert_eq!(index.entries(), 5_000);
    assert_knows(&wh, &index, &first, &members(5_000..6_000)).await;

    // An ingest: the table commit, then the run of its keys.
    let second = members(5_000..9_000);
    let state = append(&wh, &second).await;
    let run = index.sort_into_run(second.iter().map(|(id, k)| (text_key(id), *k as u64)).collect()).unwrap();
    index.commit(vec![run], state).unwrap();
    let mut all: Vec<(String, i64)> = first.iter().chain(&second).cloned().collect();
    assert_knows(&wh, &index, &all, &members(9_000..9_100)).await;

    // A killed ingest: the table moved on without the index, and a run
    // file was left unreferenced.
    let third = members(9_000..9_500);
    let stray = index.sort_into_run(vec![(1, 1), (2, 2)]).unwrap();
    let stray_path = stray.path().to_path_buf();
    drop(stray);
    append(&wh, &third).await;
    drop(index);
    let index = KeyIndex::open(&wh, KeyKind::MemberIds, 1 << 20).await.unwrap();
    assert!(!stray_path.exists(), "unreferenced run removed");
    all.extend(third.iter().cloned());
    assert_knows(&wh, &index, &all, &members(9_500..9_600)).await;
    assert_eq!(index.entries(), 9_500);
    drop(index);

    // Something rewrote the table: the index starts over from it, here in
    // a budget small enough to spill into several runs.
    let files = wh.files(Table::MemberIds).await.unwrap();
    let mut w = wh.part_writer(Table::MemberIds, Table::MemberIds.arrow_schema()).unwrap();
    w.write(ids(&members(20_000..20_010))).await.unwrap();
    let adds = w.finish().await.unwrap();
    wh.commit_files(Table::MemberIds, &[files[0].path.clone()], &adds).await.unwrap();
    let now = stored(&wh).await;
    let present: std::collections::HashSet<&(String, i64)> = now.iter().collect();
    let gone: Vec<(String, i64)> = all.iter().filter(|m| !present.contains(m)).cloned().collect();
    assert!(!gone.is_empty());
    assert_eq!(now.len() + gone.len(), all.len() + 10, "one file went, ten rows came");
    let rebuilt = KeyIndex::open(&wh, KeyKind::MemberIds, 1 << 16).await.unwrap();
    assert_knows(&wh, &rebuilt, &now, &gone).await;
    drop(rebuilt);

    // A damaged run file: rebuilt too.
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("_taglake/index/member_ids/manifest.json")).unwrap(),
    )
    .unwrap();
    let run_file = dir.path().join("_taglake/index/member_ids").join(&manifest.runs[0].file);
    std::fs::write(&run_file, b"garbage").unwrap();
    let repaired = KeyIndex::open(&wh, KeyKind::MemberIds, 1 << 20).await.unwrap();
    assert_knows(&wh, &repaired, &now, &gone).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn small_runs_are_merged_and_newest_values_win() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Warehouse::open(dir.path()).unwrap();
    // `members` index semantics: later entries replace earlier ones.
    let mut index = KeyIndex::open(&wh, KeyKind::Members, 1 << 20).await.unwrap();
    let state = TableState { version: 0, id: "t".into() };
    for night in 0..(MERGE_FAN_IN as u64 + 3) {
        // Each night: 100 new keys and a new value for key 0.
        let mut entries: Vec<(u128, u64)> = (0..100).map(|i| ((night * 100 + i + 1) as u128, night)).collect();
        entries.push((0, 1_000 + night));
        let run = index.sort_into_run(entries).unwrap();
        index.commit(vec![run], state.clone()).unwrap();
    }
    assert!(index.runs() < MERGE_FAN_IN, "{} runs", index.runs());
    let probes: Vec<u128> = vec![0, 1, 150, 1_100, 5_000];
    let got = index.lookup(&probes, false).unwrap();
    assert_eq!(got, vec![Some(1_000 + MERGE_FAN_IN as u64 + 2), Some(0), Some(1), Some(10), None]);
    let files = std::fs::read_dir(dir.path().join("_taglake/index/members")).unwrap().count();
    assert_eq!(files, index.runs() + 1, "merged runs are deleted");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Lookups over several runs agree with a map where the newest entry
    /// of a key wins.
    #[test]
    fn lookups_agree_with_a_map(
        batches in proptest::collection::vec(proptest::collection::vec((0u128..400, any::<u64>()), 0..200), 1..12),
        probe in proptest::collection::btree_set(0u128..450, 0..100),
        narrow in any::<bool>(),
    ) {
        // Values that all fit 32 bits are held in 32 bits when resident.
        let batches: Vec<Vec<(u128, u64)>> = match narrow {
            true => batches.into_iter().map(|b| b.into_iter().map(|(k, v)| (k, v & u32::MAX as u64)).collect()).collect(),
            false => batches,
        };
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let mut index = rt.block_on(KeyIndex::open(&wh, KeyKind::Products, 1 << 20)).unwrap();
        let mut model = std::collections::HashMap::new();
        for b in &batches {
            for (k, v) in b {
                model.insert(*k, *v);
            }
            let run = index.sort_into_run(b.clone()).unwrap();
            index.commit(vec![run], TableState { version: 0, id: "t".into() }).unwrap();
        }
        let probes: Vec<u128> = probe.into_iter().collect();
        let want: Vec<Option<u64>> = probes.iter().map(|k| model.get(k).copied()).collect();
        prop_assert_eq!(index.lookup(&probes, true).unwrap(), want.clone());
        prop_assert_eq!(index.lookup(&probes, false).unwrap(), want.clone());
        prop_assert_eq!(index.resident().unwrap().lookup(&probes), want.clone());
        let wide = batches.iter().flatten().any(|(_, v)| *v > u32::MAX as u64);
        prop_assert_eq!(index.resident_bytes(), index.entries() * if wide { 24 } else { 20 });
        index.keep_blooms(u64::MAX).unwrap();
        prop_assert_eq!(index.lookup(&probes, true).unwrap(), want);
    }
}

#[test]
fn quarantine_keys_follow_content_not_position_alone() {
    let k = |row, raw: Option<&str>| quarantine_key("orders", "/d/day.csv", row, Some("amount"), "bad", raw);
    assert_eq!(k(5, Some("a,b")), k(5, Some("a,b")));
    assert_ne!(k(5, Some("a,b")), k(5, Some("a,c")), "a rewritten file's new bad row at the same line");
    assert_ne!(k(5, Some("a,b")), k(6, Some("a,b")), "the same bad line twice in a file");
    assert_ne!(
        quarantine_key("orders", "/d/day.csv", 5, Some("amount"), "bad", None),
        quarantine_key("orders", "/d/day.csv", 5, Some("quantity"), "bad", None)
    );
    assert_ne!(
        quarantine_key("orders", "a", 1, None, "r", None),
        quarantine_key("orders", "a\u{1f}", 1, None, "r", None).wrapping_add(0)
    );
}

/// Order ids a digit apart with line numbers one apart (as every brand's
/// sequential ids have) give different keys: the pairs that collided when
/// the line number was the hash seed, and a million such lines.
#[test]
fn order_line_keys_of_sequential_ids_never_collide() {
    for (a, b) in [
        (("N1-O001120310002", 3), ("N1-O001130310002", 2)),
        (("N1-O002220130002", 3), ("N1-O002230130002", 2)),
        (("N1-O005782940003", 2), ("N1-O005792940003", 3)),
        (("N1-O006518550002", 2), ("N1-O006558550002", 6)),
    ] {
        assert_ne!(order_line_key(a.0, a.1), order_line_key(b.0, b.1), "{a:?} {b:?}");
    }
    let mut keys = std::collections::HashSet::new();
    for order in 0..125_000u64 {
        for line in 1..=8 {
            let id = format!("N1-O{:09}{}", order * 7919 % 1_000_000_000, line % 3);
            assert!(keys.insert(order_line_key(&id, line)), "{id} line {line} collides");
        }
    }
    // Ids longer than the stack buffer hash the same bytes.
    let long = "X".repeat(100);
    assert_ne!(order_line_key(&long, 1), order_line_key(&long, 2));
    assert_ne!(order_line_key(&long[..59], 1), order_line_key(&long[..60], 1));
}
