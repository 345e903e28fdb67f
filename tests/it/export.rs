//! `taglake export` and `taglake experiment`: deterministic salted splits,
//! shares within sampling error, a holdout that never leaks, stratified
//! balance, the registry and `in_experiment`, and a report checked against
//! hand-computed figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::tag_reference::ingested_warehouse;
use crate::{taglake, taglake_ok};

const MEMBERS: u64 = 6_000;

/// A generated, ingested and tagged base; tests work on copies because
/// exports record experiments.
fn base() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        ingested_warehouse(&dir, MEMBERS, 21, "warehouse");
        taglake_ok(&["tag"], &dir);
        (tmp, dir)
    })
    .1
}

fn copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("cp").arg("-a").arg(base().join("warehouse")).arg(tmp.path()).status().unwrap();
    assert!(ok.success());
    tmp
}

/// `member_id → arm` (and the other columns) of a CSV export.
fn arms(path: &Path) -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("member_id,arm"));
    lines
        .map(|l| {
            let mut f = l.split(',').map(String::from);
            (f.next().unwrap(), f.collect())
        })
        .collect()
}

fn tally<'a>(a: impl Iterator<Item = &'a Vec<String>>) -> HashMap<String, u64> {
    let mut t = HashMap::new();
    for v in a {
        *t.entry(v[0].clone()).or_default() += 1;
    }
    t
}

fn chi_square(observed: &[u64], shares: &[f64]) -> f64 {
    let n: u64 = observed.iter().sum();
    observed.iter().zip(shares).map(|(&o, &s)| (o as f64 - s * n as f64).powi(2) / (s * n as f64)).sum()
}

const EVERYONE: &str = "tier_regular OR NOT tier_regular";

#[test]
fn exports_are_deterministic_within_sampling_error_and_never_hold_the_holdout() {
    let tmp = copy();
    let dir = tmp.path();
    let export = |audience: &str, salt: &str, out: &str, extra: &[&str]| {
        let mut args =
            vec!["export", "--audience", audience, "--split", "treatment=70,control=30", "--salt", salt, "--out", out];
        args.extend_from_slice(extra);
        taglake_ok(&args, dir)
    };
    export(EVERYONE, "s1", "a.csv", &[]);
    export(EVERYONE, "s1", "b.csv", &[]);
    assert_eq!(std::fs::read(dir.join("a.csv")).unwrap(), std::fs::read(dir.join("b.csv")).unwrap());
    export(EVERYONE, "s1", "a.parquet", &["--columns", "city,tier_gold,spend_total"]);
    export(EVERYONE, "s1", "b.parquet", &["--columns", "city,tier_gold,spend_total"]);
    assert_eq!(std::fs::read(dir.join("a.parquet")).unwrap(), std::fs::read(dir.join("b.parquet")).unwrap());

    let a = arms(&dir.join("a.csv"));
    let t = tally(a.values());
    let (treat, control) = (t["treatment"], t["control"]);
    // 99.9 % critical value of chi-square with 1 degree of freedom.
    assert!(chi_square(&[treat, control], &[0.7, 0.3]) < 10.83, "{t:?}");

    // The holdout: about 5 % of everyone, in no export, and including it
    // moves nobody else's arm.
    let out = export(EVERYONE, "s1", "h.csv", &["--include-holdout"]);
    assert!(out.contains("exported as arm holdout"), "{out}");
    let h = arms(&dir.join("h.csv"));
    let held: Vec<&String> = h.iter().filter(|(_, v)| v[0] == "holdout").map(|(id, _)| id).collect();
    assert_eq!(h.len() as u64, MEMBERS);
    assert_eq!(a.len() + held.len(), h.len());
    assert!(chi_square(&[held.len() as u64, MEMBERS - held.len() as u64], &[0.05, 0.95]) < 10.83, "{}", held.len());
    for (id, v) in &a {
        assert_eq!(&h[id][0], &v[0], "{id} changed arm when the holdout was included");
    }
    export("tier_gold OR category_lover_beauty", "s2", "other.csv", &[]);
    for file in ["a.csv", "other.csv"] {
        let e = arms(&dir.join(file));
        assert!(held.iter().all(|id| !e.contains_key(*id)), "a holdout member is in {file}");
    }
    let again = arms(&dir.join("other.csv"));
    assert!(!again.is_empty());
    // A smaller holdout is a subset of the default one (same salt).
    export(EVERYONE, "s1", "h2.csv", &["--holdout", "2", "--include-holdout"]);
    let h2 = arms(&dir.join("h2.csv"));
    assert!(h2.iter().filter(|(_, v)| v[0] == "holdout").all(|(id, _)| h[id][0] == "holdout"));
}

#[test]
fn arms_are_stable_across_snapshots_and_independent_between_salts() {
    let tmp = copy();
    let dir = tmp.path();
    let split = ["--split", "treatment=50,control=50", "--holdout", "0"];
    let run = |audience: &str, salt: &str, out: &str| {
        let mut args = vec!["export", "--audience", audience, "--salt", salt, "--out", out];
        args.extend_from_slice(&split);
        taglake_ok(&args, dir);
        arms(&dir.join(out))
    };
    let first = run("tier_gold OR tier_silver", "stable", "first.csv");
    // A new snapshot, as of an earlier date, selects other members.
    taglake_ok(&["tag", "--as-of", "2026-06-01"], dir);
    let second = run("tier_gold OR tier_silver", "stable", "second.csv");
    let common: Vec<&String> = first.keys().filter(|id| second.contains_key(*id)).collect();
    assert!(common.len() > 100 && first.len() != second.len(), "{} {} {}", common.len(), first.len(), second.len());
    assert!(common.iter().all(|id| first[*id][0] == second[*id][0]), "an arm moved between snapshots");
    // Another salt: arms independent of the first (2×2 chi-square, 1 df).
    let other = run("tier_gold OR tier_silver", "another", "third.csv");
    let mut joint = [[0u64; 2]; 2];
    for (id, v) in &second {
        let a = usize::from(v[0] == "control");
        let b = usize::from(other[id][0] == "control");
        joint[a][b] += 1;
    }
    let n = second.len() as f64;
    let mut stat = 0.0;
    for a in 0..2 {
        for b in 0..2 {
            let expected = (joint[a][0] + joint[a][1]) as f64 * (joint[0][b] + joint[1][b]) as f64 / n;
            stat += (joint[a][b] as f64 - expected).powi(2) / expected;
        }
    }
    assert!(stat < 10.83, "{joint:?}");
}

#[test]
fn stratified_exports_balance_every_stratum() {
    let tmp = copy();
    let dir = tmp.path();
    taglake_ok(
        &[
            "export",
            "--audience",
            EVERYONE,
            "--split",
            "a=1,b=1,c=1",
            "--salt",
            "strata",
            "--stratify-by",
            "tier",
            "--columns",
            "tier_gold,tier_silver,tier_regular",
            "--out",
            "s.csv",
        ],
        dir,
    );
    let rows = arms(&dir.join("s.csv"));
    let mut per: HashMap<(usize, String), u64> = HashMap::new();
    for v in rows.values() {
        let stratum = v[1..].iter().position(|x| x == "true").unwrap();
        *per.entry((stratum, v[0].clone())).or_default() += 1;
    }
    for s in 0..3 {
        let sizes: Vec<u64> =
            ["a", "b", "c"].iter().map(|a| per.get(&(s, a.to_string())).copied().unwrap_or(0)).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "stratum {s}: {sizes:?}");
    }
    // Its report checks the split inside every stratum too, and finds the
    // exact quotas of the export (no member has left since).
    let list: serde_json::Value =
        serde_json::from_str(&taglake_ok(&["experiment", "list", "--format", "json"], dir)).unwrap();
    let id = list.as_array().unwrap().iter().filter_map(|e| e["id"].as_i64()).max().unwrap().to_string();
    let r: serde_json::Value =
        serde_json::from_str(&taglake_ok(&["experiment", "report", &id, "--control", "a", "--format", "json"], dir))
            .unwrap();
    let strata = r["srm_strata"].as_array().unwrap();
    let names: Vec<&str> = strata.iter().filter_map(|s| s["stratum"].as_str()).collect();
    assert!(names.contains(&"tier_gold") && names.contains(&"tier_regular"), "{strata:?}");
    for s in strata {
        let observed: Vec<u64> = s["srm"]["observed"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let per: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|a| {
                let t =
                    ["tier_gold", "tier_silver", "tier_regular"].iter().position(|t| Some(*t) == s["stratum"].as_str());
                t.map_or(0, |t| per.get(&(t, a.to_string())).copied().unwrap_or(0))
            })
            .collect();
        if s["stratum"].is_string() {
            assert_eq!(observed, per, "{s}");
        }
        assert_eq!(s["srm"]["mismatch"], false, "{s}");
    }
    assert_eq!(r["srm"]["mismatch"], false);
    // Two comparisons (b and c against a), each conversion, revenue and
    // orders per member, and the average order value where both arms ordered.
    let comparisons = r["comparisons"].as_array().unwrap();
    let ratios = comparisons.iter().filter(|c| !c["average_order_value"].is_null()).count() as u64;
    assert_eq!(comparisons.len(), 2);
    assert_eq!((r["tests"].as_u64(), r["correction"].as_str()), (Some(6 + ratios), Some("holm")));
    let table = taglake_ok(&["experiment", "report", &id, "--control", "a"], dir);
    assert!(table.contains("sample ratio per stratum of `tier`:") && table.contains("no mismatch"), "{table}");
    // An empty audience writes a file with the header only.
    let out = taglake_ok(
        &[
            "export",
            "--audience",
            "tier_gold AND NOT tier_gold",
            "--salt",
            "x",
            "--columns",
            "city",
            "--out",
            "none.csv",
        ],
        dir,
    );
    assert!(out.contains("0 members in the audience") && out.contains("(0 rows)"), "{out}");
    assert_eq!(std::fs::read_to_string(dir.join("none.csv")).unwrap(), "member_id,arm,city\n");
    let e =
        taglake(&["export", "--audience", "tier_gold", "--salt", "x", "--stratify-by", "tiers", "--out", "x.csv"], dir);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(err.contains("no tag family `tiers`") && err.contains("did you mean `tier`?"), "{err}");
}

#[test]
fn experiments_are_recorded_and_their_members_are_in_experiment() {
    let tmp = copy();
    let dir = tmp.path();
    let out = taglake_ok(
        &[
            "export",
            "--audience",
            "tier_gold AND NOT in_experiment",
            "--salt",
            "spring-2026",
            "--name",
            "spring push",
            "--out",
            "one.csv",
        ],
        dir,
    );
    assert!(out.starts_with("export: experiment 1 \"spring push\""), "{out}");
    let one = arms(&dir.join("one.csv"));
    let t = tally(one.values());
    let rows = taglake_ok(
        &[
            "sql",
            "SELECT experiment_id, name, audience, snapshot, salt, arm, arm_share, members FROM experiments ORDER BY arm",
            "--format",
            "csv",
        ],
        dir,
    );
    assert_eq!(
        rows,
        format!(
            "experiment_id,name,audience,snapshot,salt,arm,arm_share,members\n\
             1,spring push,tier_gold AND NOT in_experiment,1,spring-2026,control,0.1,{}\n\
             1,spring push,tier_gold AND NOT in_experiment,1,spring-2026,treatment,0.9,{}\n",
            t["control"], t["treatment"]
        )
    );
    let count = |e: &str| -> usize {
        let j = taglake_ok(&["audience", "count", e, "--format", "json"], dir);
        serde_json::from_str::<serde_json::Value>(&j).unwrap()["members"].as_u64().unwrap() as usize
    };
    assert_eq!(count("in_experiment"), one.len());
    // The next export of the same audience excludes them.
    taglake_ok(
        &[
            "export",
            "--audience",
            "(tier_gold OR tier_silver) AND NOT in_experiment",
            "--salt",
            "s",
            "--out",
            "two.csv",
        ],
        dir,
    );
    let two = arms(&dir.join("two.csv"));
    assert!(!two.is_empty() && two.keys().all(|id| !one.contains_key(id)));
    // An experiment that already ended holds nobody.
    taglake_ok(
        &[
            "export",
            "--audience",
            "tier_regular",
            "--salt",
            "old",
            "--launch-at",
            "2020-01-01",
            "--duration",
            "7d",
            "--out",
            "old.csv",
        ],
        dir,
    );
    assert_eq!(count("in_experiment"), one.len() + two.len());
    let list = taglake_ok(&["experiment", "list"], dir);
    assert!(list.contains("spring push") && list.contains("ended") && list.contains("running"), "{list}");
}

#[test]
fn export_errors_name_the_problem() {
    let dir = base();
    let err = |args: &[&str]| {
        let o = taglake(args, dir);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e =
        err(&["export", "--audience", "tier_gold", "--salt", "x", "--split", "treatment=90,control", "--out", "x.csv"]);
    assert!(e.contains("`control` has no `=weight`"), "{e}");
    let e = err(&["export", "--audience", "tier_gold", "--salt", "x", "--out", "x.xlsx"]);
    assert!(e.contains("write a .csv or .parquet file"), "{e}");
    let e = err(&["export", "--audience", "tier_gold", "--out", "x.csv"]);
    assert!(e.contains("give --salt"), "{e}");
    let e = err(&["export", "--audience", "tier_gold", "--salt", "x", "--columns", "citty", "--out", "x.csv"]);
    assert!(e.contains("`citty` is not a column of members or features; did you mean `city`?"), "{e}");
    let e = err(&["export", "--audience", "tier_gol", "--salt", "x", "--out", "x.csv"]);
    assert!(e.contains("did you mean `tier_gold`?"), "{e}");
    let e = err(&["export", "--audience", "tier_gold", "--salt", "x", "--holdout", "100", "--out", "x.csv"]);
    assert!(e.contains("--holdout must be at least 0 and below 100"), "{e}");
    let e = err(&["experiment", "report", "7"]);
    assert!(e.contains("no experiment 7"), "{e}");
    assert!(!dir.join("x.csv").exists(), "a failed export leaves no file");
}

/// A base small enough to compute the report by hand: 40 members, split
/// 50/50 with no holdout, launched 2026-01-01, and order lines placed
/// before, inside and after the 14-day window.
/// 40 members who each bought 50 on 2025-06-01, an export on 2026-01-01
/// split 19/21, then orders around the launch (see below); returns the
/// warehouse directory and the treatment and control member ids, sorted.
fn report_fixture() -> (tempfile::TempDir, Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut members = String::from("member_id,registered_at\n");
    let mut orders = String::from("order_id,line_no,member_id,ordered_at,channel,sku,category,quantity,amount\n");
    for i in 1..=40 {
        members.push_str(&format!("M{i:02},2024-01-01T00:00:00Z\n"));
        orders.push_str(&format!("P{i:02},1,M{i:02},2025-06-01T10:00:00Z,store,SKU1,beauty,1,50\n"));
    }
    std::fs::write(dir.join("members.csv"), members).unwrap();
    std::fs::write(dir.join("orders.csv"), orders).unwrap();
    taglake_ok(&["ingest", "members", "members.csv"], dir);
    taglake_ok(&["ingest", "orders", "orders.csv"], dir);
    taglake_ok(&["tag"], dir);
    taglake_ok(
        &[
            "export",
            "--audience",
            "true",
            "--split",
            "treatment=50,control=50",
            "--salt",
            "report-test",
            "--holdout",
            "0",
            "--launch-at",
            "2026-01-01",
            "--out",
            "arms.csv",
        ],
        dir,
    );
    let a = arms(&dir.join("arms.csv"));
    let mut t: Vec<String> = a.iter().filter(|(_, v)| v[0] == "treatment").map(|(id, _)| id.clone()).collect();
    let mut c: Vec<String> = a.iter().filter(|(_, v)| v[0] == "control").map(|(id, _)| id.clone()).collect();
    t.sort();
    c.sort();
    // The salt fixes the arm sizes; the figures below are for these sizes.
    assert_eq!((t.len(), c.len()), (19, 21));
    // In the window: treatment buyers spend 40 (two orders: 10 + 30, the
    // first of two lines), 20 and 60; one control buyer spends 15. Outside:
    // an order the day before launch and one exactly at the window's end.
    let lines = [
        ("W1", 1, &t[0], "2026-01-02T09:00:00Z", 4.0),
        ("W1", 2, &t[0], "2026-01-02T09:00:00Z", 6.0),
        ("W2", 1, &t[0], "2026-01-05T09:00:00Z", 30.0),
        ("W3", 1, &t[1], "2026-01-03T09:00:00Z", 20.0),
        ("W4", 1, &t[2], "2026-01-14T23:59:59Z", 60.0),
        ("W5", 1, &c[0], "2026-01-01T00:00:00Z", 15.0),
        ("X1", 1, &t[3], "2025-12-31T23:59:59Z", 100.0),
        ("X2", 1, &c[1], "2026-01-15T00:00:00Z", 100.0),
    ];
    let mut after = String::from("order_id,line_no,member_id,ordered_at,channel,sku,category,quantity,amount\n");
    for (order, line, member, at, amount) in lines {
        after.push_str(&format!("{order},{line},{member},{at},app,SKU1,beauty,1,{amount}\n"));
    }
    std::fs::write(dir.join("after.csv"), after).unwrap();
    taglake_ok(&["ingest", "orders", "after.csv"], dir);
    (tmp, t, c)
}

#[test]
fn the_experiment_report_matches_a_hand_computed_example() {
    let (tmp, _, _) = report_fixture();
    let dir = tmp.path();

    let json = taglake_ok(&["experiment", "report", "1", "--window", "14d", "--format", "json"], dir);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arm = |name: &str| r["arms"].as_array().unwrap().iter().find(|a| a["arm"] == name).unwrap().clone();
    let (tr, co) = (arm("treatment"), arm("control"));
    assert_eq!((tr["members"].as_u64(), tr["buyers"].as_u64(), tr["orders"].as_u64()), (Some(19), Some(3), Some(4)));
    assert_eq!((co["members"].as_u64(), co["buyers"].as_u64(), co["orders"].as_u64()), (Some(21), Some(1), Some(1)));
    let close = |v: &serde_json::Value, want: f64| {
        let got = v.as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    };
    close(&tr["conversion"], 3.0 / 19.0);
    close(&co["conversion"], 1.0 / 21.0);
    close(&tr["revenue_per_member"], 120.0 / 19.0);
    close(&co["revenue_per_member"], 15.0 / 21.0);
    close(&tr["orders_per_member"], 4.0 / 19.0);
    let cmp = &r["comparisons"][0];
    assert_eq!(cmp["arm"], "treatment");
    assert_eq!(cmp["control"], "control");
    // Hand computation (Python, scipy 1.17):
    //   conversion: p1, p2 = 3/19, 1/21; pooled p = 4/40 = 0.1;
    //   z = (p1 - p2) / sqrt(0.1 * 0.9 * (1/19 + 1/21)) = 1.160953909245723
    //   p = 2 * norm.sf(z) = 0.24566064369985519
    //   CI = (p1 - p2) ± 1.959963984540054 * sqrt(p1*(1-p1)/19 + p2*(1-p2)/21)
    //      = [-0.07728476065210807, 0.2978361390982234]
    //   revenue: ttest_ind([40,20,60]+[0]*16, [15]+[0]*20, equal_var=False)
    //   t = 1.4625582157237558, df = 19.298114015171137, p = 0.15968423794983957
    let conv = &cmp["conversion"];
    close(&conv["diff"], 3.0 / 19.0 - 1.0 / 21.0);
    close(&conv["statistic"], 1.160953909245723);
    close(&conv["p_value"], 0.24566064369985519);
    close(&conv["ci_low"], -0.07728476065210807);
    close(&conv["ci_high"], 0.2978361390982234);
    let rev = &cmp["revenue_per_member"];
    close(&rev["diff"], 120.0 / 19.0 - 15.0 / 21.0);
    close(&rev["statistic"], 1.4625582157237558);
    close(&rev["df"], 19.298114015171137);
    close(&rev["p_value"], 0.15968423794983957);

    // Orders per member (scipy: ttest_ind([2, 1, 1] + [0] * 16, [1] + [0] * 20,
    // equal_var=False) -> t 1.2368058179950896, df 23.344694544705956,
    // p 0.2284575877900509) and the average order value by the delta method
    // (numpy, as in stats.rs: 30 vs 15, z 1.5607979451434113,
    // p 0.11857143244439473, CI [-3.8361727791738556, 33.83617277917386]).
    let orders = &cmp["orders_per_member"];
    close(&orders["statistic"], 1.2368058179950896);
    close(&orders["df"], 23.344694544705956);
    close(&orders["p_value"], 0.2284575877900509);
    let aov = &cmp["average_order_value"];
    close(&aov["treatment"], 30.0);
    close(&aov["control"], 15.0);
    close(&aov["statistic"], 1.5607979451434113);
    close(&aov["p_value"], 0.11857143244439473);
    close(&aov["ci_low"], -3.8361727791738556);
    close(&aov["ci_high"], 33.83617277917386);
    close(&tr["average_order_value"], 30.0);
    // The split checked (scipy: chisquare([19, 21], [20, 20]) -> 0.1,
    // 0.7518296340458492) and the four p-values adjusted together
    // (statsmodels: multipletests([p_conv, p_rev, p_orders, p_aov],
    // method="holm") -> 0.47905271384951875 × 3, 0.47428572977757893).
    assert_eq!((tr["present"].as_u64(), co["present"].as_u64()), (Some(19), Some(21)));
    close(&r["srm"]["chi2"], 0.1);
    close(&r["srm"]["p_value"], 0.7518296340458492);
    assert_eq!(r["srm"]["mismatch"], false);
    assert_eq!(r["srm_arms"], serde_json::json!(["treatment", "control"]));
    assert_eq!((r["correction"].as_str(), r["tests"].as_u64()), (Some("holm"), Some(4)));
    close(&conv["p_adjusted"], 0.47905271384951875);
    close(&rev["p_adjusted"], 0.47905271384951875);
    close(&orders["p_adjusted"], 0.47905271384951875);
    close(&aov["p_adjusted"], 0.47428572977757893);
    // Two metrics only, revenue winsorised at the cohort's 95th percentile
    // (numpy: np.percentile([40, 20, 60, 15] + [0] * 36, 95) -> 21; scipy:
    // ttest_ind([21, 20, 21] + [0] * 16, [15] + [0] * 20, equal_var=False)
    // -> t 1.3310127403047645, p 0.19583238487407745; Holm over it and the
    // conversion's p -> 0.3916647697481549 both).
    let capped = taglake_ok(
        &["experiment", "report", "1", "--metric", "conversion,revenue", "--cap", "95", "--format", "json"],
        dir,
    );
    let capped: serde_json::Value = serde_json::from_str(&capped).unwrap();
    close(&capped["revenue_cap"]["value"], 21.0);
    assert_eq!(capped["revenue_cap"]["capped_members"], 2);
    assert_eq!(capped["tests"], 2);
    assert_eq!(capped["metrics"], serde_json::json!(["conversion", "revenue"]));
    let c0 = &capped["comparisons"][0];
    close(&c0["revenue_per_member"]["statistic"], 1.3310127403047645);
    close(&c0["revenue_per_member"]["p_value"], 0.19583238487407745);
    close(&c0["revenue_per_member"]["diff"], 2.548872180451122);
    close(&c0["revenue_per_member"]["p_adjusted"], 0.3916647697481549);
    close(&c0["conversion"]["p_adjusted"], 0.3916647697481549);
    assert!(c0["orders_per_member"]["p_adjusted"].is_null(), "{c0}");
    let text = taglake_ok(&["experiment", "report", "1", "--metric", "revenue", "--cap", "95", "--cuped", "off"], dir);
    assert!(text.contains("capped at 21.00 (the 95th percentile") && text.contains("2 members capped"), "{text}");
    // Only revenue's line, and nothing to adjust with one test.
    assert_eq!(text.matches("Welch's t-test").count(), 1, "{text}");
    assert!(!text.contains("z-test") && !text.contains("delta method") && !text.contains("adjusted"), "{text}");
    for (args, want) in [
        (vec!["--cap", "100"], "--cap 100: a percentile above 0 and below 100"),
        (vec!["--cap", "0"], "--cap 0: a percentile above 0 and below 100"),
        (vec!["--cap", "NaN"], "--cap NaN: a percentile above 0 and below 100"),
        (vec!["--cap", "1e308"], "a percentile above 0 and below 100"),
        (vec!["--cap=-5"], "--cap -5: a percentile above 0 and below 100"),
        (vec!["--cap", "ninety"], "invalid value 'ninety' for '--cap"),
        (vec!["--metric", "margin"], "invalid value 'margin' for '--metric"),
    ] {
        let out = taglake(&[&["experiment", "report", "1"][..], &args].concat(), dir);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains(want), "{args:?}: {e}");
    }
    // CUPED over the 30 days before launch: only t[3] bought then (100, one
    // order). numpy/scipy over the eight values per member (window bought,
    // revenue, orders; the same before launch), as in stats.rs:
    //   revenue: θ -0.03461538461538461, diff 5.783689994216309,
    //     t 1.515023510269905, p 0.14596739029834682, reduction 0.0064532002510305775
    //   conversion: θ -0.10256410256410249, diff 0.11567379988432619, t 1.1812740289039476
    //   orders: θ -0.12820512820512864, t 1.2922238290768726, p 0.20890473173586177
    assert_eq!(r["cuped"]["days"], 30.0);
    let rc = &cmp["revenue_per_member_cuped"];
    close(&rc["theta"], -0.03461538461538461);
    close(&rc["uplift"]["diff"], 5.783689994216309);
    close(&rc["uplift"]["statistic"], 1.515023510269905);
    close(&rc["uplift"]["p_value"], 0.14596739029834682);
    close(&rc["variance_reduction"], 0.0064532002510305775);
    close(&cmp["conversion_cuped"]["theta"], -0.10256410256410249);
    close(&cmp["conversion_cuped"]["uplift"]["diff"], 0.11567379988432619);
    close(&cmp["conversion_cuped"]["uplift"]["statistic"], 1.1812740289039476);
    close(&cmp["orders_per_member_cuped"]["theta"], -0.12820512820512864);
    close(&cmp["orders_per_member_cuped"]["uplift"]["p_value"], 0.20890473173586177);
    // The control bought nothing before launch: no pre-period order value.
    assert!(cmp["average_order_value_cuped"].is_null());
    assert_eq!(cmp["average_order_value_cuped_note"], "control has no orders, so its average order value is undefined");
    let text = taglake_ok(&["experiment", "report", "1", "--metric", "revenue"], dir);
    assert!(text.contains("CUPED: each metric adjusted by the same metric over the 30 days before launch"), "{text}");
    assert!(text.contains("CUPED, θ = -0.0346, variance -0.6%") && text.contains("without CUPED"), "{text}");
    let off = taglake_ok(&["experiment", "report", "1", "--cuped", "off", "--format", "json"], dir);
    let off: serde_json::Value = serde_json::from_str(&off).unwrap();
    assert!(off["cuped"].is_null() && off["comparisons"][0]["revenue_per_member_cuped"].is_null());
    // The lookback decides what is adjusted by: the last hour before launch
    // holds t[3]'s order as the 30 days do; a year also holds everyone's
    // first order (50 each), which no arm differs in.
    let theta = |lookback: &str| {
        let j = taglake_ok(&["experiment", "report", "1", "--cuped", lookback, "--format", "json"], dir);
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        j["comparisons"][0]["revenue_per_member_cuped"]["theta"].as_f64().unwrap()
    };
    close(&theta("1h").into(), -0.03461538461538461);
    assert_ne!(theta("400d"), theta("30d"));
    for bad in ["0d", "soon", "-3d"] {
        let out = taglake(&["experiment", "report", "1", &format!("--cuped={bad}")], dir);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains("--cuped (a lookback such as 30d, or off)"), "{bad}: {e}");
    }
    let bh = taglake_ok(&["experiment", "report", "1", "--correction", "bh", "--format", "json"], dir);
    let bh: serde_json::Value = serde_json::from_str(&bh).unwrap();
    assert_eq!(bh["correction"], "benjamini-hochberg");

    let table = taglake_ok(&["experiment", "report", "1", "--window", "14d"], dir);
    assert!(table.contains("treatment vs control") && table.contains("Welch's t-test"), "{table}");
    assert!(table.contains("chi-square = 0.100, df = 1, p = 0.7518 (no mismatch)"), "{table}");
    assert!(table.contains("adjusted for 4 tests") && table.contains("adjusted 0.4791"), "{table}");
    assert!(table.contains("orders/member") && table.contains("delta method"), "{table}");
    assert!(!table.contains("MISMATCH"), "{table}");
    let csv = taglake_ok(&["experiment", "report", "1", "--format", "csv"], dir);
    assert!(csv.lines().next().unwrap().ends_with(",present,srm_p_value,srm_mismatch"), "{csv}");
    let e = taglake(&["experiment", "report", "1", "--control", "placebo"], dir);
    assert!(String::from_utf8_lossy(&e.stderr).contains("has no arm `placebo` (arms: treatment, control)"));
}

#[test]
fn plans_holdout_reports_and_charts_read_the_same_history() {
    let (tmp, _, _) = report_fixture();
    let dir = tmp.path();
    // The plan's windows end at the newest order's day (2026-01-15): per
    // member revenue [40, 20, 60, 15] + 36 zeros, then t[3]'s 100, then
    // nothing (and nothing 52 weeks before). Sized on σ projected one window
    // ahead on the windows' trend; numpy / statsmodels 0.15.0:
    //   s = [w0.std(ddof=1), w1.std(ddof=1), 0]; sd = np.polyval(np.polyfit([0, -1, -2], s, 1), 1)
    //     = 20.915201012051774
    //   d = brentq(lambda d: NormalIndPower().power(d, 20, 0.05, ratio=1) - 0.8, ...)
    //   MDE = d * sd = 18.529570304706333 (solve_power: 18.529572122130407)
    //   for an MDE of 5: nobs1 = 274.6759805416437, so 550 members in all
    let args = [
        "experiment",
        "plan",
        "--audience",
        "true",
        "--metric",
        "revenue",
        "--split",
        "treatment=50,control=50",
        "--holdout",
        "0",
        "--cuped",
        "off",
        "--format",
        "json",
    ];
    let p: serde_json::Value = serde_json::from_str(&taglake_ok(&args, dir)).unwrap();
    let close = |v: &serde_json::Value, want: f64| {
        let got = v.as_f64().unwrap_or_else(|| panic!("{v}"));
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want}");
    };
    assert_eq!((p["audience_members"].as_u64(), p["eligible"].as_u64()), (Some(40), Some(40)));
    assert_eq!(p["history"].as_array().unwrap().len(), 4);
    assert_eq!(p["history"][3]["year_before"], true);
    assert_eq!(p["history"][0]["from"], "2026-01-01T00:00:00Z");
    close(&p["history"][0]["mean"], 135.0 / 40.0);
    close(&p["baseline"], 135.0 / 40.0);
    close(&p["sd"], 20.915201012051774);
    close(&p["arms"][0]["mde"], 18.529570304706333);
    assert!(
        (p["arms"][0]["mde"].as_f64().unwrap() / 18.529572122130407 - 1.0).abs() < 0.01,
        "statsmodels' solve_power"
    );
    let sized: serde_json::Value =
        serde_json::from_str(&taglake_ok(&[&args[..], &["--mde", "5"]].concat(), dir)).unwrap();
    assert_eq!(sized["needed"], 550);
    close(&sized["needed_share"], 550.0 / 40.0);
    let text = taglake_ok(&[&args[..args.len() - 2], &["--mde", "5"]].concat(), dir);
    assert!(text.contains("the audience is too small for this effect"), "{text}");
    for (bad, want) in [
        (vec!["--mde=-2%"], "--mde"),
        (vec!["--power", "1.5"], "--power and --alpha"),
        (vec!["--split", "a=50,b=50"], "the split has no arm `control`"),
        (vec!["--window", "2h"], "a plan's window is at least a day"),
        (vec!["--audience", "no_such_tag"], "no_such_tag"),
    ] {
        let audience: &[&str] = if bad[0] == "--audience" { &[] } else { &["--audience", "true"] };
        let out = taglake(&[&["experiment", "plan"][..], audience, &bad].concat(), dir);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains(want), "{bad:?}: {e}");
    }

    // The holdout report: the export held nobody out (--holdout 0), so the
    // members of the default 5 % holdout were exported: a leak it names.
    let h: serde_json::Value = serde_json::from_str(&taglake_ok(
        &["experiment", "holdout-report", "--window", "14d", "--format", "json"],
        dir,
    ))
    .unwrap();
    let held = h["held_out"].as_u64().unwrap();
    assert_eq!(h["members"], 40);
    assert_eq!(h["analysis"]["arms"][0]["members"].as_u64().unwrap() + held, 40);
    assert_eq!(h["exported_holdout_members"].as_u64(), Some(held));
    assert_eq!(h["window_start"], "2026-01-01T00:00:00Z");
    if held > 0 {
        assert_eq!(h["leaking_experiments"], serde_json::json!([1]));
        let text = taglake_ok(&["experiment", "holdout-report", "--window", "14d"], dir);
        assert!(text.contains("holdout members were exported in experiments 1"), "{text}");
    }
    let out = taglake(&["experiment", "holdout-report", "--holdout", "0"], dir);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("above 0 and below 100"));

    // The chart: one SVG with both arms, written beside the text report.
    let text = taglake_ok(&["experiment", "report", "1", "--chart", "report.svg"], dir);
    assert!(text.contains("treatment vs control"), "{text}");
    let svg = std::fs::read_to_string(dir.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("treatment") && svg.contains("control") && !svg.contains("NaN"), "{svg}");
    let out = taglake(&["experiment", "report", "1", "--chart", "no/such/dir/report.svg"], dir);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--chart: writing"));
}
