//! `taglake nightly`: one command gives exactly what the separate commands
//! give, its summary adds up, a re-run changes nothing, and a scheduler can
//! tell a failed night (1) from a busy warehouse (75).

use std::path::Path;

use taglake_storage::{Table, Wait, Warehouse};

use crate::{copy_dir, table_rows, taglake, taglake_ok};

/// A day of exports for a tagged warehouse: `orders.csv` with new lines of
/// known members (and one of an unknown member) and `members.csv` with
/// changed rows of known members.
fn write_day(dir: &Path) -> (u64, u64) {
    let ids = taglake_ok(&["sql", "--format", "csv", "SELECT member_id FROM members ORDER BY member_id LIMIT 40"], dir);
    let ids: Vec<&str> = ids.lines().skip(1).collect();
    assert_eq!(ids.len(), 40, "{ids:?}");
    let mut orders = String::from("order_id,line_no,member_id,ordered_at,channel,sku,category,quantity,amount\n");
    for (i, id) in ids.iter().enumerate() {
        orders.push_str(&format!(
            "NIGHT{i},1,{id},2030-01-0{}T10:00:00Z,online,SKU-N,beauty,2,{}.5\n",
            1 + i % 3,
            10 + i
        ));
    }
    orders.push_str("NIGHT-X,1,NOBODY,2030-01-02T10:00:00Z,online,SKU-N,beauty,1,3\n");
    let mut members = String::from("member_id,registered_at,city\n");
    for id in &ids[..7] {
        members.push_str(&format!("{id},2029-12-24T00:00:00Z,Nightville\n"));
    }
    std::fs::write(dir.join("orders.csv"), orders).unwrap();
    std::fs::write(dir.join("members.csv"), members).unwrap();
    (40, 7)
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{e}: stdout is one JSON document:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

fn step<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("{name}: {summary}"))
}

#[test]
fn a_night_gives_what_the_separate_commands_give_and_a_rerun_changes_nothing() {
    let t = crate::tagged(2_000, 7);
    let dir = &t.dir;
    taglake_ok(&["cluster", "--k", "3"], dir);
    let (lines, changed) = write_day(dir);
    copy_dir(&dir.join("warehouse"), &dir.join("separate"));
    for args in [
        &["ingest", "members", "members.csv"][..],
        &["ingest", "orders", "orders.csv"],
        &["tag"],
        &["cluster", "--reuse-model"],
    ] {
        taglake_ok(&[args, &["--warehouse", "separate"]].concat(), dir);
    }

    let out = taglake(&["nightly", "--orders", "orders.csv", "--members", "members.csv", "--format", "json"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = json_of(&out);
    assert_eq!(s["status"], "ok", "{s}");
    let statuses: Vec<(&str, &str)> = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| (st["step"].as_str().unwrap(), st["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ingest products", "skipped"),
            ("ingest members", "done"),
            ("ingest orders", "done"),
            ("tag", "done"),
            ("cluster", "done"),
            ("tag movement", "done"),
            ("prune snapshots", "done"),
            ("vacuum", "done"),
        ],
        "{s}"
    );
    // Retention by default keeps the last snapshot of each day (the
    // cluster snapshots 2 and 4) and, within the daily window, the tag
    // snapshots whose bytes those share (1 and 3): nothing to delete.
    let pruned = &step(&s, "prune snapshots")["counts"];
    assert_eq!((pruned["kept"].as_u64(), pruned["deleted"].as_u64()), (Some(4), Some(0)), "{s}");
    let dry = taglake_ok(&["tags", "prune", "--dry-run"], dir);
    for line in ["1  ", "2  ", "3  ", "4  "] {
        assert!(dry.contains(&format!("keep    {:>6}", line.trim())), "{dry}");
    }
    assert!(dry.contains("holder") && dry.contains("would delete 0 snapshots"), "{dry}");
    assert_eq!(step(&s, "ingest members")["counts"]["replaced"], changed, "{s}");
    let orders = &step(&s, "ingest orders")["counts"];
    assert_eq!((orders["inserted"].as_u64(), orders["quarantined"].as_u64()), (Some(lines), Some(1)), "{s}");
    for name in ["ingest members", "ingest orders", "tag", "cluster"] {
        assert!(step(&s, name)["peak_memory_bytes"].as_u64().unwrap() > 0, "{s}");
    }
    // The families add up to the movement `tags diff` reports.
    let families = s["families"].as_object().unwrap();
    let to = step(&s, "tag movement")["counts"]["to_snapshot"].as_i64().unwrap();
    let from = step(&s, "tag movement")["counts"]["from_snapshot"].as_i64().unwrap();
    let diff =
        taglake_ok(&["tags", "diff", "--from", &from.to_string(), "--to", &to.to_string(), "--format", "csv"], dir);
    let (entered, exited) = diff.lines().skip(1).fold((0, 0), |(e, x), l| {
        let f: Vec<&str> = l.split(',').collect();
        (e + f[1].parse::<u64>().unwrap(), x + f[2].parse::<u64>().unwrap())
    });
    assert!(entered > 0, "new orders move members into tags: {diff}");
    let sum = |k: &str| families.values().map(|f| f[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("entered"), sum("exited")), (entered, exited), "{s}");
    assert!(families.contains_key("community"), "{s}");

    // Exactly what the separate commands gave.
    let same = |what: &[&str]| {
        let night = taglake_ok(what, dir);
        let separate = taglake_ok(&[what, &["--warehouse", "separate"]].concat(), dir);
        assert_eq!(night, separate, "{what:?}");
    };
    same(&["tags", "list", "--format", "csv"]);
    same(&["sql", "--format", "csv", "SELECT community, count(*) FROM communities GROUP BY 1 ORDER BY 1"]);
    for table in [Table::Members, Table::Orders, Table::MemberIds] {
        assert_eq!(
            table_rows(&dir.join("warehouse"), table, &[]),
            table_rows(&dir.join("separate"), table, &[]),
            "{}",
            table.name()
        );
    }

    // The same night again: nothing new, every line recognised.
    let out = taglake(
        &[
            "nightly",
            "--orders",
            "orders.csv",
            "--members",
            "members.csv",
            "--format",
            "json",
            "--keep-pruned-days",
            "0",
        ],
        dir,
    );
    let again = json_of(&out);
    assert!(out.status.success(), "{again}");
    let orders = &step(&again, "ingest orders")["counts"];
    assert_eq!((orders["inserted"].as_u64(), orders["quarantined"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(orders["unchanged"].as_u64(), Some(lines), "{again}");
    assert_eq!(step(&again, "ingest members")["counts"]["replaced"], 0, "{again}");
    let before = table_rows(&dir.join("separate"), Table::Orders, &[]);
    assert_eq!(table_rows(&dir.join("warehouse"), Table::Orders, &[]), before);
    // Its assignment replaced `communities` once more: the files the
    // night's assignment replaced (two versions back) are deleted, the
    // table still reads the same.
    let vacuum = &step(&again, "vacuum")["counts"];
    assert!(vacuum["communities_files"].as_u64().unwrap() >= 1, "{again}");
    assert_eq!(
        table_rows(&dir.join("warehouse"), Table::Communities, &[]).len(),
        table_rows(&dir.join("separate"), Table::Communities, &[]).len()
    );

    // The re-run's retention deleted the re-run's tag snapshot (5: its
    // rows all refer on, and the day's last, the re-run's cluster
    // snapshot 6, refers to the night's 3 and 4 for every tag). With a
    // one-day window (the night's date) the first day's pair (1, 2) goes
    // too.
    assert_eq!(step(&again, "prune snapshots")["counts"]["deleted"], 1, "{again}");
    let one_day = taglake_ok(&["tags", "prune", "--keep-daily", "1", "--keep-monthly", "0"], dir);
    assert!(one_day.contains("deleted 2 snapshots"), "{one_day}");
    let listed = taglake_ok(&["tags", "snapshots"], dir);
    let numbers: Vec<&str> = listed.lines().skip(1).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(numbers, ["3", "4", "6"], "{listed}");
}

#[test]
fn a_failed_step_and_a_busy_warehouse_have_their_own_exit_codes() {
    let t = crate::tagged(500, 3);
    let dir = &t.dir;
    let snapshots = taglake_ok(&["tags", "snapshots"], dir);

    // A step fails: 1, the summary names it, later steps did not run.
    let out = taglake(&["nightly", "--orders", "missing-folder/*.csv", "--format", "json"], dir);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let s = json_of(&out);
    assert_eq!(s["status"], "failed", "{s}");
    assert!(s["error"].as_str().unwrap().contains("ingest orders"), "{s}");
    assert_eq!(step(&s, "ingest orders")["status"], "failed", "{s}");
    assert!(s["steps"].as_array().unwrap().iter().all(|st| st["step"] != "tag"), "{s}");
    assert_eq!(taglake_ok(&["tags", "snapshots"], dir), snapshots, "no snapshot was made");

    // Another writer holds the warehouse: 75, naming it; nothing ran.
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let held = wh.lock_writer("taglake tag", Wait::No).unwrap();
    let out = taglake(&["nightly"], dir);
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is being written by `taglake tag`") && stderr.contains("--wait"), "{stderr}");
    drop(held);

    // Free again: a night without new files re-tags, and has no model to
    // assign with yet.
    let out = taglake(&["nightly", "--format", "json"], dir);
    let s = json_of(&out);
    assert!(out.status.success(), "{s}");
    assert_eq!(step(&s, "tag")["status"], "done", "{s}");
    assert_eq!(step(&s, "cluster")["status"], "skipped", "{s}");
    assert!(step(&s, "cluster")["note"].as_str().unwrap().contains("taglake cluster"), "{s}");
}
