//! The `taglake tag` and `taglake tags …` commands, with exact expectations
//! on what they print, each over a small generated warehouse with snapshot 1
//! as of an early date and snapshot 2 as of the default date.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::tag_reference::{ingested_warehouse, runtime};
use crate::{taglake, taglake_ok};

/// The as-of date of snapshot 1, months before the newest generated order.
const EARLY: &str = "2026-05-01";

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    /// `taglake tags list` before any tag run.
    list_before_any_run: Output,
    /// What `taglake tag --as-of EARLY` and `taglake tag` printed.
    early_run: String,
    default_run: String,
}

/// A fresh small warehouse with two snapshots (it takes well under a second).
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    ingested_warehouse(&dir, 300, 21, "warehouse");
    let list_before_any_run = taglake(&["tags", "list"], &dir);
    let early_run = taglake_ok(&["tag", "--as-of", EARLY], &dir);
    let default_run = taglake_ok(&["tag"], &dir);
    Fixture { _dir: tmp, dir, list_before_any_run, early_run, default_run }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The members of every tag of a snapshot, read with the library.
fn tag_bitmaps(f: &Fixture, v: i64) -> Vec<(String, BTreeSet<u32>)> {
    let rt = runtime();
    let wh = Warehouse::open(f.dir.join("warehouse")).unwrap();
    let (_, tags) = rt.block_on(snapshot::bitmaps(&wh, Some(v), None)).unwrap();
    tags.into_iter().map(|(n, b)| (n, b.iter().collect())).collect()
}

/// "… from 12,345 order lines …" → 12345.
fn order_lines(summary: &str) -> u64 {
    let before = summary.split(" order lines").next().unwrap();
    before.rsplit(' ').next().unwrap().replace(',', "").parse().unwrap_or_else(|e| panic!("{e}: {summary}"))
}

#[test]
fn tags_list_before_any_run_says_to_run_tag() {
    let f = fixture();
    let out = &f.list_before_any_run;
    assert!(!out.status.success(), "tags list succeeded without a snapshot");
    let err = stderr(out);
    assert!(err.contains("no tag snapshot yet; run `taglake tag` first"), "{err}");
}

#[test]
fn tag_prints_a_summary_and_as_of_bounds_the_orders() {
    let f = fixture();
    assert!(f.early_run.starts_with(&format!("tag: snapshot 1 as of {EARLY}: ")), "{}", f.early_run);
    assert!(f.default_run.starts_with("tag: snapshot 2 as of "), "{}", f.default_run);
    let (early, all) = (order_lines(&f.early_run), order_lines(&f.default_run));
    assert!(0 < early && early < all, "as of {EARLY}: {early} order lines, by default {all}");
    // Every order line of the warehouse is before the default date.
    let rt = runtime();
    let wh = Warehouse::open(f.dir.join("warehouse")).unwrap();
    assert_eq!(rt.block_on(wh.row_count(Table::Orders)).unwrap(), all);
    let old = rt.block_on(snapshot::info(&wh, Some(1))).unwrap();
    assert_eq!(old.as_of.to_string(), EARLY);
    let count = |info: &snapshot::SnapshotInfo, name: &str| info.tags.iter().find(|t| t.name == name).unwrap().members;
    let new = rt.block_on(snapshot::info(&wh, Some(2))).unwrap();
    assert!(f.default_run.starts_with(&format!("tag: snapshot 2 as of {}: ", new.as_of)), "{}", f.default_run);
    assert!(old.base_members <= new.base_members);
    assert!(count(&old, "repeat_buyer") < count(&new, "repeat_buyer"), "fewer orders as of {EARLY}");
}

#[test]
fn tags_list_csv_and_json() {
    let f = fixture();
    let tags = tag_bitmaps(&f, 2);
    let csv = taglake_ok(&["tags", "list", "--format", "csv"], &f.dir);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("name,family,description,members,share"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), tags.len(), "one CSV row per tag");
    for (row, (name, members)) in rows.iter().zip(&tags) {
        assert!(row.starts_with(&format!("{name},")), "{row}");
        let fields: Vec<&str> = row.rsplitn(3, ',').collect();
        assert_eq!(fields[1], members.len().to_string(), "{row}");
    }
    let json = taglake_ok(&["tags", "list", "--format", "json"], &f.dir);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}:\n{json}"));
    let items = parsed.as_array().unwrap();
    assert_eq!(items.len(), tags.len());
    for (item, (name, members)) in items.iter().zip(&tags) {
        assert_eq!(item["name"], name.as_str());
        assert_eq!(item["members"], members.len() as u64);
        assert!(item["family"].is_string() && item["description"].is_string() && item["share"].is_number());
    }
    let rt = runtime();
    let info = rt.block_on(snapshot::info(&Warehouse::open(f.dir.join("warehouse")).unwrap(), None)).unwrap();
    let table = taglake_ok(&["tags", "list", "--family", "tier"], &f.dir);
    let header = format!("snapshot 2 as of {} · {} members · 3 tags\n", info.as_of, info.base_members);
    assert!(table.starts_with(&header), "{table}");
    let tiers: Vec<&str> = table.lines().skip(2).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(tiers, ["tier_regular", "tier_silver", "tier_gold"], "{table}");
    let old = taglake_ok(&["tags", "list", "--snapshot", "1", "--format", "csv"], &f.dir);
    assert_eq!(old.lines().count(), tag_bitmaps(&f, 1).len() + 1);
}

#[test]
fn tags_show_prints_the_rule_and_suggests_a_name() {
    let f = fixture();
    let out = taglake_ok(&["tags", "show", "tier_gold"], &f.dir);
    assert!(out.contains("tag          tier_gold\n"), "{out}");
    assert!(out.contains("rule         growth_value >= 6000\n"), "{out}");
    let gold = tag_bitmaps(&f, 2).into_iter().find(|(n, _)| n == "tier_gold").unwrap().1.len();
    assert!(out.contains(&format!("members      {gold} (")), "{out}");

    let out = taglake(&["tags", "show", "tier_gld"], &f.dir);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no tag `tier_gld` in snapshot 2; did you mean `tier_gold`?"), "{err}");
}

#[test]
fn tags_diff_has_one_row_per_tag_and_exports_who_entered() {
    let f = fixture();
    let (old, new) = (tag_bitmaps(&f, 1), tag_bitmaps(&f, 2));
    let old: BTreeMap<String, BTreeSet<u32>> = old.into_iter().collect();
    let csv = taglake_ok(&["tags", "diff", "--from", "1", "--to", "2", "--format", "csv"], &f.dir);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("name,entered,exited,net"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let names: BTreeSet<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names.len(), rows.len(), "a tag appears twice in the diff");
    let all: BTreeSet<&str> = new.iter().map(|(n, _)| n.as_str()).chain(old.keys().map(|n| n.as_str())).collect();
    assert_eq!(names, all, "one row per tag of either snapshot");
    let empty = BTreeSet::new();
    for (name, members) in &new {
        let before = old.get(name).unwrap_or(&empty);
        let entered = members.difference(before).count();
        let exited = before.difference(members).count();
        let want =
            [name.clone(), entered.to_string(), exited.to_string(), (entered as i64 - exited as i64).to_string()];
        assert!(rows.iter().any(|r| *r == want), "no row {want:?}");
    }
    let table = taglake_ok(&["tags", "diff", "--from", "1", "--to", "2"], &f.dir);
    assert_eq!(table.lines().count(), rows.len() + 1, "table: a header and one row per tag");

    // The trigger list of the tag most members entered.
    let (tag, entered) = new
        .iter()
        .map(|(n, m)| (n, m.difference(old.get(n).unwrap_or(&empty)).copied().collect::<BTreeSet<u32>>()))
        .max_by_key(|(_, e)| e.len())
        .unwrap();
    assert!(!entered.is_empty());
    let out = taglake_ok(
        &["tags", "diff", "--from", "1", "--to", "2", "--tag", tag, "--who", "entered", "--out", "entered.csv"],
        &f.dir,
    );
    assert!(out.is_empty(), "the list goes to the file, not stdout: {out}");
    let written = std::fs::read_to_string(f.dir.join("entered.csv")).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("member_id,member_key"));
    let rt = runtime();
    let wh = Warehouse::open(f.dir.join("warehouse")).unwrap();
    let mut ids = BTreeMap::new();
    for b in rt.block_on(wh.read(Table::MemberIds, None)).unwrap() {
        let id = b.column_by_name("member_id").unwrap().as_string::<i32>();
        let key = b.column_by_name("member_key").unwrap().as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            ids.insert(key.value(r) as u32, id.value(r).to_string());
        }
    }
    let want: Vec<String> = entered.iter().map(|k| format!("{},{k}", ids[k])).collect();
    assert_eq!(lines.collect::<Vec<_>>(), want, "members who entered `{tag}`, in key order");

    let out = taglake(&["tags", "diff", "--from", "1", "--to", "2", "--tag", "tier_gld", "--who", "exited"], &f.dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("did you mean `tier_gold`?"), "{}", stderr(&out));
}

#[test]
fn a_bad_user_catalog_names_the_tag_the_position_and_the_fix() {
    let f = fixture();
    let catalog = "[[tag]]\nname = \"recent_repeat\"\nfamily = \"mine\"\ndescription = \"Repeat buyer, recent\"\n\
                   rule = \"orders_total >= 2 and recency_dayz > 3\"\n";
    std::fs::write(f.dir.join("bad-feature.toml"), catalog).unwrap();
    let out = taglake(&["tag", "--catalog", "bad-feature.toml"], &f.dir);
    assert!(!out.status.success(), "a rule with an unknown feature was accepted");
    let err = stderr(&out);
    assert!(err.contains("bad-feature.toml"), "the error names the file: {err}");
    assert!(err.contains("tag `recent_repeat`"), "the error names the tag: {err}");
    assert!(err.contains("did you mean `recency_days`?"), "the error suggests the feature: {err}");
    // Position 23 is where `recency_dayz` starts; a caret points at it under the rule.
    assert!(err.contains("position 23"), "the error names the position: {err}");
    let rule = "orders_total >= 2 and recency_dayz > 3";
    let lines: Vec<&str> = err.lines().collect();
    let at = lines.iter().position(|l| l.trim_start() == rule).unwrap_or_else(|| panic!("no rule line in: {err}"));
    let indent = lines[at].len() - rule.len();
    assert_eq!(lines[at + 1], format!("{}^", " ".repeat(indent + 22)), "caret under `recency_dayz`:\n{err}");
    let rt = runtime();
    let wh = Warehouse::open(f.dir.join("warehouse")).unwrap();
    assert_eq!(rt.block_on(snapshot::versions(&wh)).unwrap(), vec![1, 2], "a rejected catalog commits nothing");
}

#[test]
fn an_exclusive_family_whose_tags_overlap_fails_the_run_naming_them() {
    let f = fixture();
    let tag = |name: &str, rule: &str, exclusive: bool| {
        format!(
            "[[tag]]\nname = \"{name}\"\nfamily = \"buyers\"\ndescription = \"d\"\nrule = \"{rule}\"\n{}\n",
            if exclusive { "exclusive = true" } else { "" }
        )
    };
    let catalog = tag("buyers_one", "orders_total >= 1", true) + &tag("buyers_two", "orders_total >= 2", true);
    std::fs::write(f.dir.join("overlap.toml"), catalog).unwrap();
    let out = taglake(&["tag", "--catalog", "overlap.toml"], &f.dir);
    let err = stderr(&out);
    assert!(!out.status.success(), "overlapping exclusive tags were accepted");
    assert!(err.contains("overlap.toml") && err.contains("family `buyers` is declared exclusive"), "{err}");
    assert!(err.contains("`buyers_one` and `buyers_two` share") && err.contains(" members"), "{err}");
    // Declared on some of a family's tags only: refused before any work.
    let catalog = tag("buyers_one", "orders_total = 1", true) + &tag("buyers_two", "orders_total >= 2", false);
    std::fs::write(f.dir.join("partly.toml"), catalog).unwrap();
    let out = taglake(&["tag", "--catalog", "partly.toml"], &f.dir);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("tag `buyers_one` says `exclusive = true` but tag `buyers_two`"), "{err}");
    let rt = runtime();
    let wh = Warehouse::open(f.dir.join("warehouse")).unwrap();
    assert_eq!(rt.block_on(snapshot::versions(&wh)).unwrap(), vec![1, 2], "a rejected catalog commits nothing");
}
