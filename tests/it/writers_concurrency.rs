//! Writers started at the same time on one warehouse: four ingests of
//! disjoint new members, then `tag` beside `cluster`, then two exports.
//! Every member key stays unique, every snapshot holds one catalog, every
//! experiment id is unique; without `--wait` the later writer is refused
//! with the holder's name.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::{Child, Output};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::runtime;
use crate::{start, taglake_ok};

/// The words of a command line.
fn words(line: &[&str]) -> Vec<String> {
    line.iter().map(|w| w.to_string()).collect()
}

/// Runs the commands at once and returns their outputs, in order.
fn at_once(commands: &[Vec<String>], dir: &Path) -> Vec<Output> {
    let children: Vec<Child> =
        commands.iter().map(|args| start(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir)).collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn all_succeed(outputs: &[Output], what: &str) {
    for o in outputs {
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Exports of `tier_gold AND NOT in_experiment` with the given salts.
fn exports(salts: &[&str], wait: bool) -> Vec<Vec<String>> {
    salts
        .iter()
        .map(|salt| {
            let out = format!("{salt}.csv");
            let mut args =
                words(&["export", "--audience", "tier_gold AND NOT in_experiment", "--salt", salt, "--out", &out]);
            if wait {
                args.push("--wait".into());
            }
            args
        })
        .collect()
}

/// Member ids of a CSV export.
fn cohort(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect()
}

#[test]
fn concurrent_writers_never_share_an_id_nor_mix_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    taglake_ok(&["generate", "--members", "4000", "--seed", "8", "--format", "csv", "--out", "data"], dir);

    // Four ingests of disjoint new members at once.
    let members = std::fs::read_to_string(dir.join("data/members.csv")).unwrap();
    let mut lines = members.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let mut ingests = Vec::new();
    for part in 0..4 {
        let mut text = format!("{header}\n");
        for r in rows.iter().skip(part).step_by(4) {
            text.push_str(r);
            text.push('\n');
        }
        let name = format!("part-{part}.csv");
        std::fs::write(dir.join(&name), text).unwrap();
        ingests.push(words(&["ingest", "members", &name, "--wait"]));
    }
    all_succeed(&at_once(&ingests, dir), "ingest");
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let rt = runtime();
    let keys: Vec<i64> = rt
        .block_on(wh.read(Table::MemberIds, Some(&["member_key"])))
        .unwrap()
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    let unique: BTreeSet<i64> = keys.iter().copied().collect();
    assert_eq!(keys.len(), rows.len(), "one key per member");
    assert_eq!(unique.len(), keys.len(), "a member key was given twice");
    assert_eq!(unique, (0..rows.len() as i64).collect(), "keys are dense");
    taglake_ok(&["ingest", "orders", "data/orders"], dir);

    // `tag` beside `cluster`: each snapshot is one catalog, with or
    // without the communities, never two, never stale tags over fresh ones.
    taglake_ok(&["tag"], dir);
    let catalog: Vec<String> =
        rt.block_on(snapshot::info(&wh, None)).unwrap().tags.into_iter().map(|t| t.name).collect();
    let both = [words(&["tag", "--wait"]), words(&["cluster", "--k", "3", "--wait"])];
    all_succeed(&at_once(&both, dir), "tag and cluster");
    let versions = rt.block_on(snapshot::versions(&wh)).unwrap();
    assert_eq!(versions, [1, 2, 3]);
    let with_communities: Vec<String> =
        catalog.iter().cloned().chain((1..=3).map(|c| format!("community_{c}"))).collect();
    for v in versions {
        let names: Vec<String> =
            rt.block_on(snapshot::info(&wh, Some(v))).unwrap().tags.into_iter().map(|t| t.name).collect();
        assert!(names == catalog || names == with_communities, "snapshot {v} holds {} tags", names.len());
    }

    // Two exports at once: the second sees the first's experiment.
    all_succeed(&at_once(&exports(&["first", "second"], true), dir), "export --wait");
    let ids: Vec<i64> = rt.block_on(taglake_query::experiment::list(&wh)).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2]);
    let (a, b) = (cohort(&dir.join("first.csv")), cohort(&dir.join("second.csv")));
    assert!(!a.is_empty() || !b.is_empty());
    assert!(a.is_disjoint(&b), "two experiments share members: the second export did not see the first");

    // Without --wait, a writer that finds the lock taken is refused by name.
    let outputs = at_once(&exports(&["third", "fourth"], false), dir);
    for o in &outputs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() || (err.contains("is being written by `taglake export") && err.contains("use --wait")),
            "{err}"
        );
    }
    let ids: Vec<i64> = rt.block_on(taglake_query::experiment::list(&wh)).unwrap().iter().map(|e| e.id).collect();
    let succeeded = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ids, (1..=2 + succeeded as i64).collect::<Vec<_>>(), "experiment ids are unique and dense");
}
