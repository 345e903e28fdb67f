//! Acceptance: `taglake cluster` and `taglake export`, each several writes
//! (communities, model, snapshot; cohort file, registry row), killed at
//! any moment leave nothing half published, and running the same command
//! again gives exactly what one clean run gives.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::{ingested_warehouse, runtime};
use crate::{copy_dir, kill_fractions, run_and_kill, table_rows, taglake_ok};

/// An ingested and tagged base of 20,000 members, copied by each test run.
fn base() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        ingested_warehouse(&dir, 20_000, 11, "warehouse");
        taglake_ok(&["tag"], &dir);
        (tmp, dir)
    })
    .1
}

/// A fresh copy of the base warehouse in its own folder.
fn copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&base().join("warehouse"), &tmp.path().join("warehouse"));
    tmp
}

/// The newest snapshot: `(name, members)` per tag and each tag's members.
type Tags = (Vec<(String, i64)>, Vec<(String, Vec<u32>)>);

fn newest(wh: &Warehouse) -> Tags {
    let rt = runtime();
    let info = rt.block_on(snapshot::info(wh, None)).unwrap();
    let bitmaps = rt.block_on(snapshot::bitmaps(wh, Some(info.snapshot), None)).unwrap().1;
    let members = bitmaps.into_iter().map(|(n, b)| (n, b.iter().collect())).collect();
    (info.tags.iter().map(|t| (t.name.clone(), t.members)).collect(), members)
}

/// The saved model without its creation time.
fn model(warehouse: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(warehouse.join("models/communities.json")).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&text).unwrap();
    model.as_object_mut().unwrap().remove("created_at");
    model
}

#[test]
fn killed_cluster_runs_publish_nothing_partial_and_a_rerun_converges() {
    let args = ["cluster", "--k", "5", "--seed", "7"];
    let clean_dir = copy();
    let start = Instant::now();
    taglake_ok(&args, clean_dir.path());
    let clean_time = start.elapsed();
    let clean_wh = clean_dir.path().join("warehouse");
    let clean_tags = newest(&Warehouse::open(&clean_wh).unwrap());
    let clean_communities = table_rows(&clean_wh, Table::Communities, &[]);
    let clean_model = model(&clean_wh);
    let tagged = newest(&Warehouse::open(base().join("warehouse")).unwrap()).0;

    let mut killed = 0;
    for f in kill_fractions("cluster") {
        let tmp = copy();
        let finished = run_and_kill(&args, tmp.path(), clean_time.mul_f64(f));
        killed += usize::from(!finished);
        let when = format!("after a kill at {f:.2} of `taglake cluster` (finished: {finished})");
        let warehouse = tmp.path().join("warehouse");
        let wh = Warehouse::open(&warehouse).unwrap();
        // Audiences see the tags before the run, or those after it: never a
        // part of the communities.
        let (tags, _) = newest(&wh);
        assert!(tags == tagged || tags == clean_tags.0, "{when}: the newest snapshot is neither before nor after");
        taglake_ok(&["audience", "count", "tier_gold"], tmp.path());

        taglake_ok(&args, tmp.path());
        let when = format!("{when} and a re-run");
        assert!(newest(&wh) == clean_tags, "{when}: the community tags differ from a clean run's");
        assert!(table_rows(&warehouse, Table::Communities, &[]) == clean_communities, "{when}: `communities` differs");
        assert_eq!(model(&warehouse), clean_model, "{when}: the model differs");
    }
    println!("{killed} cluster runs killed before they finished");
    assert!(killed >= 3, "only {killed} cluster runs were killed before they finished");
}

#[test]
fn killed_exports_never_show_an_unrecorded_file_and_a_rerun_records_nothing_twice() {
    // The audience excludes members of running experiments: a re-run that
    // did not recognise its own recorded experiment would export nobody.
    let args = [
        "export",
        "--audience",
        "tier_gold AND NOT in_experiment",
        "--salt",
        "kill-test",
        "--launch-at",
        "2026-01-01",
        "--open-ended",
        "--columns",
        "city,spend_total",
        "--out",
        "cohort.parquet",
    ];
    let registry = |dir: &Path| {
        let rows = table_rows(&dir.join("warehouse"), Table::Experiments, &["created_at", "output"]);
        let wh = Warehouse::open(dir.join("warehouse")).unwrap();
        let outputs: Vec<Option<String>> =
            runtime().block_on(taglake_query::experiment::list(&wh)).unwrap().into_iter().map(|e| e.output).collect();
        let want = std::fs::canonicalize(dir).unwrap().join("cohort.parquet");
        assert!(outputs.iter().all(|o| o.as_deref() == Some(want.to_str().unwrap())), "{outputs:?}");
        rows
    };
    let clean_dir = copy();
    let start = Instant::now();
    taglake_ok(&args, clean_dir.path());
    let clean_time = start.elapsed();
    let clean_file = std::fs::read(clean_dir.path().join("cohort.parquet")).unwrap();
    let clean_registry = registry(clean_dir.path());
    assert!(clean_registry.len() == 2 && clean_file.len() > 1_000, "{clean_registry:?}");

    let mut killed = 0;
    for f in kill_fractions("export") {
        let tmp = copy();
        let d = tmp.path();
        let finished = run_and_kill(&args, d, clean_time.mul_f64(f));
        killed += usize::from(!finished);
        let when = format!("after a kill at {f:.2} of `taglake export` (finished: {finished})");
        let recorded = registry(d);
        assert!(recorded.is_empty() || recorded == clean_registry, "{when}: a partial registry entry");
        if let Ok(file) = std::fs::read(d.join("cohort.parquet")) {
            assert!(!recorded.is_empty(), "{when}: the cohort file is there but its experiment is not recorded");
            assert!(file == clean_file, "{when}: the cohort file differs from a clean run's");
        }

        taglake_ok(&args, d);
        let when = format!("{when} and a re-run");
        assert!(registry(d) == clean_registry, "{when}: the registry differs from a clean run's");
        assert!(std::fs::read(d.join("cohort.parquet")).unwrap() == clean_file, "{when}: the file differs");
    }
    println!("{killed} exports killed before they finished");
    assert!(killed >= 3, "only {killed} exports were killed before they finished");
}

/// The state a `taglake tag` killed between its two commits leaves,
/// rebuilt exactly: the `features` of a second run over the same inputs,
/// and no second snapshot. `cluster` refuses to publish communities of
/// features no snapshot describes; the next `tag` keeps those features
/// (no second write) and publishes their snapshot.
#[test]
fn a_tag_killed_between_its_commits_is_completed_by_the_next_and_cluster_waits_for_it() {
    let killed = copy();
    let finished = copy();
    taglake_ok(&["tag"], finished.path());
    let features = killed.path().join("warehouse/features");
    std::fs::remove_dir_all(&features).unwrap();
    copy_dir(&finished.path().join("warehouse/features"), &features);
    let wh = Warehouse::open(killed.path().join("warehouse")).unwrap();
    let rt = runtime();
    let ahead = rt.block_on(wh.version(Table::Features)).unwrap().unwrap();
    assert_eq!(rt.block_on(snapshot::versions(&wh)).unwrap(), [1]);

    let out = crate::taglake(&["cluster", "--k", "3"], killed.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cluster ran on features no snapshot describes");
    assert!(
        err.contains(&format!(
            "the `features` table (version {ahead}) is not the one tag snapshot 1 was computed from"
        )) && err.contains("the last `taglake tag` did not finish; run `taglake tag` again first"),
        "{err}"
    );
    assert_eq!(rt.block_on(snapshot::versions(&wh)).unwrap(), [1], "nothing was published");

    taglake_ok(&["tag"], killed.path());
    assert_eq!(rt.block_on(wh.version(Table::Features)).unwrap(), Some(ahead), "the features were kept, not rewritten");
    let info = rt.block_on(snapshot::info(&wh, None)).unwrap();
    assert_eq!((info.snapshot, info.features_version), (2, Some(ahead as i64)));
    assert!(newest(&wh) == newest(&Warehouse::open(finished.path().join("warehouse")).unwrap()));
    taglake_ok(&["cluster", "--k", "3"], killed.path());
}
