//! `taglake sql`: one statement over the warehouse tables, in every output
//! format, with `COPY … TO` and clear errors.

use crate::tag_reference::ingested_warehouse;
use crate::{taglake, taglake_ok};

#[test]
fn sql_reads_the_warehouse_tables_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ingested_warehouse(dir, 300, 9, "warehouse");
    let csv = taglake_ok(&["sql", "SELECT count(*) AS n FROM members", "--format", "csv"], dir);
    assert_eq!(csv, "n\n300\n");
    // The same figure two ways: SQL over orders vs the table's row count.
    let lines = taglake_ok(&["status"], dir);
    let orders_line = lines.lines().find(|l| l.starts_with("orders ")).unwrap();
    let rows = orders_line.split_whitespace().last().unwrap().replace(',', "");
    let json = taglake_ok(&["sql", "SELECT count(*) AS n FROM orders", "--format", "json"], dir);
    assert_eq!(json.trim(), format!("[{{\"n\":{rows}}}]"));
    // A join: every order line's member exists.
    let joined = taglake_ok(
        &["sql", "SELECT count(*) AS n FROM orders o JOIN members m ON o.member_key = m.member_key", "--format", "csv"],
        dir,
    );
    assert_eq!(joined, format!("n\n{rows}\n"));
    let table = taglake_ok(&["sql", "SELECT gender, count(*) AS n FROM members GROUP BY gender ORDER BY gender"], dir);
    assert!(table.contains("| gender") && table.trim_end().ends_with("rows"), "{table}");
    // Parquet needs a file; COPY writes one itself.
    taglake_ok(&["sql", "SELECT member_id FROM members", "--format", "parquet", "--out", "ids.parquet"], dir);
    let file = std::fs::File::open(dir.join("ids.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 300);
    taglake_ok(&["sql", "COPY (SELECT member_id FROM members ORDER BY member_id) TO 'ids.csv'"], dir);
    assert_eq!(std::fs::read_to_string(dir.join("ids.csv")).unwrap().lines().count(), 301);
}

#[test]
fn sql_errors_name_the_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ingested_warehouse(dir, 50, 2, "warehouse");
    let err = |args: &[&str]| {
        let out = taglake(args, dir);
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = err(&["sql", "SELECT * FROM membrs"]);
    assert!(
        e.contains("did you mean `members`?") && e.contains("(tables: member_ids, members, orders, products"),
        "{e}"
    );
    let e = err(&["sql", "SELECT * FROM communities"]);
    assert!(e.contains("the warehouse has no `communities` table yet"), "{e}");
    let e = err(&["sql", "SELECT 1", "--format", "parquet"]);
    assert!(e.contains("--format parquet needs --out FILE"), "{e}");
}
