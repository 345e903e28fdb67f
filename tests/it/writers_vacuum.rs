//! `taglake vacuum` and what `taglake status` says is reclaimable: files
//! killed runs left are found and deleted once older than the retention,
//! the data stays intact, and the previous version of a table survives
//! any retention (a server may still be reading it).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use taglake_storage::{Table, Warehouse};

use crate::tag_reference::runtime;
use crate::{taglake, taglake_ok};

/// The `reclaimable` column of a table's line in `taglake status`.
fn reclaimable(status: &str, table: &str) -> String {
    let line = status.lines().find(|l| l.starts_with(&format!("{table} "))).unwrap_or_else(|| panic!("{status}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    // table, version, size (2 words), reclaimable (2 words), rows
    format!("{} {}", words[4], words[5])
}

fn backdate(path: &Path, days: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400)).unwrap();
}

fn parquet_files(folder: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    v.sort();
    v
}

#[test]
fn vacuum_reclaims_what_killed_runs_left_and_status_says_how_much() {
    let t = crate::tagged(2_000, 12);
    let dir = &t.dir;
    taglake_ok(&["cluster", "--k", "3"], dir);
    taglake_ok(&["export", "--audience", "tier_gold", "--salt", "v", "--out", "v.csv"], dir);
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let status = taglake_ok(&["status"], dir);
    for table in ["tags", "communities", "experiments"] {
        assert!(status.lines().any(|l| l.starts_with(table)), "{status}");
    }
    assert!(status.contains("reclaimable: 0 B in 0 files by `taglake vacuum`"), "{status}");

    // What killed runs leave: a features file never committed, a tags file
    // cut off while being written, both from a week and a day ago.
    let features = wh.table_path(Table::Features);
    let live = parquet_files(&features);
    let orphan = features.join("part-00000-killed-run.snappy.parquet");
    std::fs::copy(&live[0], &orphan).unwrap();
    let partial = wh.table_path(Table::Tags).join("snapshot=1").join("part-00000-cut.parquet#1");
    std::fs::write(&partial, vec![7u8; 1000]).unwrap();
    backdate(&orphan, 8);
    backdate(&partial, 8);

    let status = taglake_ok(&["status"], dir);
    assert_eq!(reclaimable(&status, "tags"), "1000 B", "{status}");
    assert_ne!(reclaimable(&status, "features"), "0 B", "{status}");
    assert!(status.contains("in 2 files by `taglake vacuum`"), "{status}");

    let dry = taglake_ok(&["vacuum", "--dry-run"], dir);
    assert!(dry.contains("vacuum features: would delete 1 file") && dry.contains("killed-run"), "{dry}");
    assert!(dry.contains("vacuum tags: would delete 1 file, 1000 B") && dry.contains("cut.parquet#1"), "{dry}");
    assert!(dry.contains("nothing was deleted (--dry-run)"), "{dry}");
    assert!(orphan.exists() && partial.exists());
    // A shorter retention than their age is needed: a day-old leftover stays.
    backdate(&orphan, 1);
    let week = taglake_ok(&["vacuum"], dir);
    assert!(week.contains("vacuum: deleted 1 file, 1000 B"), "{week}");
    assert!(orphan.exists() && !partial.exists());
    let day = taglake_ok(&["vacuum", "--retain", "12h"], dir);
    assert!(day.contains("vacuum features: deleted 1 file") && day.contains("killed-run"), "{day}");
    assert!(!orphan.exists());
    assert_eq!(parquet_files(&features), live, "the live files stay");
    let count = taglake_ok(&["sql", "SELECT count(*) AS n FROM features", "--format", "csv"], dir);
    assert_eq!(count, "n\n2000\n");
    assert!(taglake_ok(&["status"], dir).contains("reclaimable: 0 B in 0 files"));
    let e = taglake(&["vacuum", "--retain", "7x"], dir);
    assert!(String::from_utf8_lossy(&e.stderr).contains("--retain `7x`: write a number of minutes"));
}

/// `--keep-features-days 0` deletes old `features` files right after the
/// run, but never the previous version's: a server or query that opened it
/// before the run still reads it. Two runs later it goes.
#[test]
fn keep_features_days_zero_keeps_the_version_a_reader_may_still_be_on() {
    let t = crate::tagged(2_000, 13);
    let dir = &t.dir;
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let rt = runtime();
    // A reader (what `taglake serve` holds between refreshes) opens the
    // current `features` version.
    let ctx = datafusion::prelude::SessionContext::new();
    assert!(rt.block_on(wh.register(Table::Features, &ctx)).unwrap());
    // A sum reads every row (a count could come from the log's statistics).
    let keys = || {
        rt.block_on(async {
            let batches = ctx.sql("SELECT sum(member_key) FROM features").await?.collect().await?;
            let sum = batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
            Ok::<_, datafusion::error::DataFusionError>(sum)
        })
    };
    assert_eq!(keys().unwrap(), 1999 * 2000 / 2);
    let first = parquet_files(&wh.table_path(Table::Features));
    taglake_ok(&["tag", "--keep-features-days", "0"], dir);
    assert_eq!(keys().unwrap(), 1999 * 2000 / 2, "the reader's version was deleted under it");
    assert!(first.iter().all(|f| f.exists()));
    taglake_ok(&["tag", "--keep-features-days", "0"], dir);
    assert!(first.iter().all(|f| !f.exists()), "two runs later the first version's files go");
    assert!(keys().is_err(), "and a reader still on it fails");
}
