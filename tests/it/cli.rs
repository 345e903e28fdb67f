//! The command's own error handling: exit codes and messages.

use crate::{taglake, taglake_ok};

#[test]
fn nothing_readable_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.csv"), "a,b\n1,2\n").unwrap();
    let out = taglake(&["ingest", "members", "bad.csv"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv: required column `member_id` not found; the file's columns are: a, b"), "{err}");
    assert!(err.contains("error: nothing could be read from 1 file(s)"), "{err}");

    let out = taglake(&["ingest", "orders", "missing/*.csv"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no input file matches `missing/*.csv`"));
}

#[test]
fn some_bad_rows_still_succeed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.csv"),
        "member_id,registered_at,points_balance\nM1,2024-01-01,10\nM2,not-a-date,5\nM3,2024-02-01,lots\n",
    )
    .unwrap();
    let out = taglake_ok(&["ingest", "members", "m.csv"], dir.path());
    assert!(out.contains("3 rows read, 1 inserted, 0 replaced, 0 unchanged, 2 quarantined"), "{out}");
    let out = taglake_ok(&["ingest", "members", "m.csv"], dir.path());
    assert!(out.contains("3 rows read, 0 inserted, 0 replaced, 1 unchanged, 0 quarantined"), "{out}");
}

#[test]
fn mapping_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.csv"), "id\n1\n").unwrap();
    std::fs::write(dir.path().join("map.toml"), "[columns]\nmembr_id = \"id\"\n").unwrap();
    let out = taglake(&["ingest", "members", "m.csv", "--mapping", "map.toml"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "mapping map.toml: columns.membr_id: `members` has no column `membr_id` (did you mean `member_id`?)"
        ),
        "{err}"
    );
}
