//! `taglake cluster` end to end: communities recover the planted personas,
//! runs are deterministic, the model is reused, community tags land in a
//! snapshot, profiles render, and bad parameters are refused one by one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int32Type};
use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::{ingested_warehouse, runtime};
use crate::{copy_dir, taglake, taglake_ok};

/// Members of the shared fixture: enough for every persona to be a few
/// hundred members, small enough to generate, tag and cluster in seconds.
const MEMBERS: u64 = 6_000;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    /// What the first `taglake cluster --k 8` printed.
    first_run: String,
}

/// Generated, ingested and tagged once for every test of this module.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        ingested_warehouse(&dir, MEMBERS, 5, "warehouse");
        taglake_ok(&["tag"], &dir);
        let first_run = taglake_ok(&["cluster", "--k", "8", "--seed", "3"], &dir);
        Fixture { _dir: tmp, dir, first_run }
    })
}

/// `(member_id, community, distance)` of the `communities` table, by id.
fn communities(warehouse: &Path) -> Vec<(String, i32, f64)> {
    let wh = Warehouse::open(warehouse).unwrap();
    let batches =
        runtime().block_on(wh.read(Table::Communities, Some(&["member_id", "community", "distance"]))).unwrap();
    let mut rows = Vec::new();
    for b in batches {
        let (id, c, d) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_primitive::<Int32Type>(),
            b.column(2).as_primitive::<Float64Type>(),
        );
        for r in 0..b.num_rows() {
            rows.push((id.value(r).to_string(), c.value(r), d.value(r)));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The ground truth the generator wrote (read only here).
fn personas(data: &Path) -> HashMap<String, String> {
    let file = std::fs::File::open(data.join("personas.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192).unwrap();
    let mut out = HashMap::new();
    for b in reader {
        let b = b.unwrap();
        let (id, p) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        for r in 0..b.num_rows() {
            out.insert(id.value(r).to_string(), p.value(r).to_string());
        }
    }
    out
}

/// Adjusted Rand index of two labelings (Hubert and Arabie).
fn adjusted_rand_index<A: Eq + std::hash::Hash, B: Eq + std::hash::Hash>(pairs: &[(A, B)]) -> f64 {
    let comb2 = |n: f64| n * (n - 1.0) / 2.0;
    let mut table: HashMap<(&A, &B), f64> = HashMap::new();
    let mut rows: HashMap<&A, f64> = HashMap::new();
    let mut cols: HashMap<&B, f64> = HashMap::new();
    for (a, b) in pairs {
        *table.entry((a, b)).or_default() += 1.0;
        *rows.entry(a).or_default() += 1.0;
        *cols.entry(b).or_default() += 1.0;
    }
    let index: f64 = table.values().map(|&n| comb2(n)).sum();
    let sum_a: f64 = rows.values().map(|&n| comb2(n)).sum();
    let sum_b: f64 = cols.values().map(|&n| comb2(n)).sum();
    let expected = sum_a * sum_b / comb2(pairs.len() as f64);
    (index - expected) / (0.5 * (sum_a + sum_b) - expected)
}

#[test]
fn adjusted_rand_index_matches_known_values() {
    // Identical partitions (up to renaming) score 1.
    assert!((adjusted_rand_index(&[(1, 'a'), (1, 'a'), (2, 'b'), (2, 'b')]) - 1.0).abs() < 1e-12);
    // The textbook example: {a a a b b b} vs {1 1 2 2 3 3} → 0.2424…
    let pairs = [('a', 1), ('a', 1), ('a', 2), ('b', 2), ('b', 3), ('b', 3)];
    assert!((adjusted_rand_index(&pairs) - 0.242_424_242_424).abs() < 1e-9, "{}", adjusted_rand_index(&pairs));
}

#[test]
fn communities_recover_the_planted_personas() {
    let f = fixture();
    let truth = personas(&f.dir.join(format!("data-{MEMBERS}-5")));
    let rows = communities(&f.dir.join("warehouse"));
    let pairs: Vec<(String, i32)> = rows.iter().map(|(id, c, _)| (truth[id].clone(), *c)).collect();
    assert!(pairs.iter().all(|(p, _)| p != "never_bought"), "members without orders are left out");
    let never = truth.values().filter(|p| *p == "never_bought").count();
    assert_eq!(rows.len() + never, MEMBERS as usize, "every member with orders is assigned");
    assert!(f.first_run.contains(&format!("({never} without orders left out)")), "{}", f.first_run);
    let ari = adjusted_rand_index(&pairs);
    assert!(ari >= 0.8, "adjusted Rand index {ari:.3} against the personas");
    eprintln!("adjusted Rand index against the planted personas: {ari:.3}");
}

#[test]
fn same_seed_same_assignments_and_the_model_is_reused() {
    let f = fixture();
    let first = communities(&f.dir.join("warehouse"));
    // A second warehouse copy so the shared fixture is not changed.
    let copy = f.dir.join("copy");
    copy_dir(&f.dir.join("warehouse"), &copy);
    taglake_ok(&["cluster", "--k", "8", "--seed", "3", "--warehouse", "copy"], &f.dir);
    assert_eq!(communities(&copy), first, "same data and seed give identical communities");
    let reused = taglake_ok(&["cluster", "--reuse-model", "--warehouse", "copy"], &f.dir);
    assert!(reused.contains("(model reused)"), "{reused}");
    assert_eq!(communities(&copy), first, "the saved model assigns everyone to the same community");
    let other = taglake_ok(&["cluster", "--k", "8", "--seed", "4", "--runs", "1", "--warehouse", "copy"], &f.dir);
    assert!(other.contains("8 communities"), "{other}");
    // Distances are to the member's own (nearest) centroid: non-negative.
    assert!(first.iter().all(|r| r.2 >= 0.0 && r.2.is_finite()));
}

#[test]
fn communities_become_tags_of_a_new_snapshot() {
    let f = fixture();
    let wh = Warehouse::open(f.dir.join("warehouse")).unwrap();
    let rt = runtime();
    let versions = rt.block_on(snapshot::versions(&wh)).unwrap();
    let newest = *versions.last().unwrap();
    let (_, tags) = rt.block_on(snapshot::bitmaps(&wh, Some(newest), None)).unwrap();
    let (_, before) = rt.block_on(snapshot::bitmaps(&wh, Some(newest - 1), None)).unwrap();
    // Every tag of the tagging snapshot is carried over unchanged.
    for (name, bm) in &before {
        assert_eq!(tags.iter().find(|t| &t.0 == name).map(|t| &t.1), Some(bm), "{name}");
    }
    let rows = communities(&f.dir.join("warehouse"));
    let mut sizes: HashMap<i32, u64> = HashMap::new();
    for r in &rows {
        *sizes.entry(r.1).or_default() += 1;
    }
    for c in 1..=8 {
        let tag = tags.iter().find(|t| t.0 == format!("community_{c}")).unwrap_or_else(|| panic!("community_{c}"));
        assert_eq!(tag.1.len(), sizes[&c], "community_{c}");
    }
    assert!(tags.iter().all(|t| t.0 != "community_9"));
    // Communities are numbered by size.
    assert!((1..8).all(|c| sizes[&c] >= sizes[&(c + 1)]), "{sizes:?}");
    let listed = taglake_ok(&["tags", "list", "--family", "community"], &f.dir);
    assert!(listed.contains("community_1") && listed.contains("community_8"), "{listed}");
}

#[test]
fn profiles_render_as_table_json_csv_and_chart() {
    let f = fixture();
    let table = taglake_ok(&["cluster", "profile"], &f.dir);
    assert!(table.contains("communities") && table.contains("community_1 · "), "{table}");
    let json = taglake_ok(&["cluster", "profile", "--format", "json"], &f.dir);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let communities = v["communities"].as_array().unwrap();
    assert_eq!(communities.len(), 8);
    let shares: f64 = communities.iter().map(|c| c["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    let features = v["features"].as_array().unwrap().len();
    assert!(communities.iter().all(|c| c["lift"].as_array().unwrap().len() == features));
    // Generated names describe what sets a community apart.
    let names: Vec<&str> = communities.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for expected in ["beauty-heavy", "snacks-heavy", "toys-heavy", "lapsed"] {
        assert!(names.iter().any(|n| n.contains(expected)), "{expected} in {names:?}");
    }
    let out = f.dir.join("profile.csv");
    taglake_ok(&["cluster", "profile", "--format", "csv", "--out", out.to_str().unwrap()], &f.dir);
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8 * features);
    let svg = std::fs::read_to_string(f.dir.join("profile.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<title>").count() == 8 * features);
}

#[test]
fn bad_parameters_give_clear_errors() {
    let f = fixture();
    let err = |args: &[&str]| {
        let out = taglake(args, &f.dir);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    assert_eq!(err(&["cluster", "--k", "0"]), "error: invalid clustering parameter: k must be at least 1");
    assert_eq!(err(&["cluster", "--k", "100000"]), "error: --k / --k-range asks for 100000 communities; at most 1000");
    assert_eq!(
        err(&["cluster", "--k", "4", "--features", "recency_dayz"]),
        "error: invalid clustering parameter: unknown feature `recency_dayz`; did you mean `recency_days`? \
         (--features takes the numeric columns of the `features` table)"
    );
    assert_eq!(err(&["cluster", "--k", "eight"]), "error: --k `eight` is neither a number nor `auto`");
    assert_eq!(
        err(&["cluster", "--k-range", "1..5"]),
        "error: invalid clustering parameter: --k auto needs a range of at least 2 clusters, like 2..12; got 1..5"
    );
    assert_eq!(
        err(&["cluster", "--k", "3", "--runs", "0"]),
        "error: invalid clustering parameter: runs must be at least 1"
    );

    // A warehouse never tagged, and one whose members never bought.
    let empty = f.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(
        err(&["cluster", "--warehouse", "empty"]),
        "error: the warehouse has no `features` table yet: run `taglake tag` first"
    );
    assert_eq!(
        err(&["cluster", "profile", "--warehouse", "empty"]),
        format!(
            "error: no community model at {}: run `taglake cluster` first",
            std::fs::canonicalize(&empty).unwrap().join("models/communities.json").display()
        )
    );
    let data = format!("data-{MEMBERS}-5");
    taglake_ok(&["ingest", "members", &format!("{data}/members.parquet"), "--warehouse", "no-orders"], &f.dir);
    taglake_ok(&["tag", "--as-of", "2030-01-01", "--warehouse", "no-orders"], &f.dir);
    assert_eq!(
        err(&["cluster", "--warehouse", "no-orders"]),
        format!("error: no member has orders, so there is nothing to cluster ({MEMBERS} members without orders)")
    );
}

#[test]
fn demo_clusters_and_prints_the_profiles() {
    let tmp = tempfile::tempdir().unwrap();
    let out = taglake_ok(&["demo", "--members", "3000", "--data", "d", "--warehouse", "w"], tmp.path());
    assert!(out.contains("5. find communities of similar members"), "{out}");
    assert!(out.contains("k chosen by silhouette"), "{out}");
    assert!(out.contains("community_1 · ") && out.contains("lift"), "{out}");
    assert!(tmp.path().join("w/models/communities.svg").is_file());
}

/// The fit's sample inertia and what was printed, for `cluster ARGS` on
/// `warehouse` (a copy of the fixture's).
fn fit_on(warehouse: &str, args: &[&str]) -> (f64, String) {
    let f = fixture();
    let mut all = vec!["cluster", "--warehouse", warehouse];
    all.extend_from_slice(args);
    let out = taglake_ok(&all, &f.dir);
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join(warehouse).join("models/communities.json")).unwrap())
            .unwrap();
    (model["sample_inertia"].as_f64().unwrap(), out)
}

/// The defaults land in the best optimum whatever the seed: over ten seeds
/// every fit recovers the personas and is within 0.5 % of the best inertia
/// fifty starts find. (With linfa's one-candidate seeding, half the seeds
/// ended 4–5 % worse, two personas merged and a third split.)
#[test]
fn every_seed_lands_in_the_best_optimum() {
    let f = fixture();
    copy_dir(&f.dir.join("warehouse"), &f.dir.join("seeds"));
    std::fs::remove_dir_all(f.dir.join("seeds/models")).ok();
    let truth = personas(&f.dir.join(format!("data-{MEMBERS}-5")));
    let (best, out) = fit_on("seeds", &["--k", "8", "--seed", "99", "--runs", "50"]);
    assert!(out.contains("fit: best of 50 starts"), "{out}");
    for seed in 1..=10 {
        let (inertia, out) = fit_on("seeds", &["--k", "8", "--seed", &seed.to_string()]);
        assert!(out.contains("fit: best of 10 starts"), "{out}");
        assert!(inertia <= best * 1.005, "seed {seed}: inertia {inertia:.1} vs {best:.1} with 50 starts");
        let rows = communities(&f.dir.join("seeds"));
        let pairs: Vec<(String, i32)> = rows.iter().map(|(id, c, _)| (truth[id].clone(), *c)).collect();
        let ari = adjusted_rand_index(&pairs);
        assert!(ari >= 0.85, "seed {seed}: adjusted Rand index {ari:.3} against the personas");
    }
}

/// `--k auto` finds the eight planted behaviours for (nearly) any seed, and
/// prints the scores it chose by.
#[test]
fn k_auto_finds_the_planted_number_of_personas() {
    let f = fixture();
    copy_dir(&f.dir.join("warehouse"), &f.dir.join("auto"));
    let mut picked = Vec::new();
    for seed in 1..=10 {
        let (_, out) = fit_on("auto", &["--seed", &seed.to_string()]);
        assert!(out.contains("within one standard error"), "{out}");
        let chosen = out.lines().find(|l| l.contains("← chosen")).unwrap_or_else(|| panic!("{out}"));
        let k: usize = chosen.split_whitespace().nth(2).unwrap().parse().unwrap();
        picked.push(k);
    }
    let planted = picked.iter().filter(|&&k| k == 8).count();
    eprintln!("--k auto picked {picked:?}");
    assert!(planted >= 8, "k = 8 on {planted} of 10 seeds: {picked:?}");
}

/// A refit on the next day's data keeps the community numbers: a member's
/// community number changes only where the data moved it, and the output
/// says every community continues its number; `--stability` reports how
/// far refits on resamples agree.
#[test]
fn a_refit_on_the_next_day_keeps_the_numbers() {
    let f = fixture();
    copy_dir(&f.dir.join("warehouse"), &f.dir.join("next-day"));
    let before = communities(&f.dir.join("next-day"));
    // One more day: a line for each of 300 members.
    let ids: Vec<&str> = before.iter().step_by(17).take(300).map(|r| r.0.as_str()).collect();
    let mut orders = String::from("order_id,line_no,member_id,ordered_at,channel,sku,category,quantity,amount\n");
    for (i, id) in ids.iter().enumerate() {
        orders.push_str(&format!("DAY{i},1,{id},2026-10-31T10:00:00Z,app,SKU-D,beauty,1,{}.5\n", 10 + i % 50));
    }
    std::fs::write(f.dir.join("day.csv"), orders).unwrap();
    taglake_ok(&["ingest", "orders", "day.csv", "--warehouse", "next-day"], &f.dir);
    taglake_ok(&["tag", "--warehouse", "next-day"], &f.dir);
    // Another seed, so the fit's own order of communities differs too.
    let (_, out) = fit_on("next-day", &["--k", "8", "--seed", "11", "--stability", "3"]);
    assert!(out.contains("numbering: 8 of 8 communities keep the previous model's numbers"), "{out}");
    assert!(out.contains("stability: 3 refits on resamples agree with the fit"), "{out}");
    let after = communities(&f.dir.join("next-day"));
    assert_eq!(before.len(), after.len());
    let same = before.iter().zip(&after).filter(|(a, b)| a.0 == b.0 && a.1 == b.1).count();
    assert!(same as f64 >= 0.97 * before.len() as f64, "{same} of {} members keep their number", before.len());
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join("next-day/models/communities.json")).unwrap())
            .unwrap();
    assert!(model["stability"]["mean_ari"].as_f64().unwrap() > 0.9, "{}", model["stability"]);
    assert_eq!(model["starts"].as_array().unwrap().len(), 10);
    // Nine communities next: eight continue their numbers, one is new.
    let (_, out) = fit_on("next-day", &["--k", "9", "--seed", "11"]);
    assert!(out.contains("numbering: 8 of 9 communities keep the previous model's numbers"), "{out}");
    assert!(
        out.contains("community_9") && out.contains("(new: no community of the previous model matches it)"),
        "{out}"
    );
}
