//! `taglake sql` without a statement, fed through a pipe: statements span
//! lines and end at `;`, backslash commands work, a failed statement does
//! not stop the rest but fails the command.

use crate::tag_reference::ingested_warehouse;
use crate::{taglake_ok, taglake_with_input};

#[test]
fn piped_statements_span_lines_and_commands_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ingested_warehouse(dir, 200, 4, "warehouse");
    let orders = taglake_ok(&["sql", "SELECT count(*) AS n FROM orders", "--format", "csv"], dir);
    let input = "\
SELECT gender,
       count(*) AS n
FROM members
GROUP BY gender
ORDER BY gender;
\\format csv
SELECT count(*) AS n   -- a comment; not the end of the statement
FROM orders o
  JOIN members m ON o.member_key = m.member_key
WHERE m.member_id <> 'a;b';
\\d
\\d members
\\q
SELECT * FROM not_run_after_quit;
";
    let out = taglake_with_input(&["sql", "--warehouse", "warehouse"], dir, input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("taglake>") && !stdout.contains("...>"), "no prompt when piped:\n{stdout}");
    // 1. The first statement, as a table (the default format).
    let (table, rest) = stdout.split_once("rows\n").unwrap_or_else(|| panic!("a table first:\n{stdout}"));
    assert!(table.contains("| gender") && table.contains("| n "), "{table}");
    // 2. The join, in CSV after \format csv: the same count as the one-shot command.
    let rest = rest.strip_prefix(orders.as_str()).unwrap_or_else(|| panic!("{orders:?} next:\n{rest}"));
    // 3. \d: the tables with their column counts.
    let (tables, columns) = rest.split_once("column,type,nullable\n").unwrap();
    let tables: Vec<&str> = tables.lines().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(tables, ["table", "member_ids", "members", "orders", "products", "quarantine"]);
    // 4. \d members: its columns with types (tag columns may follow).
    let columns: Vec<&str> = columns.lines().collect();
    assert_eq!(columns[0], "member_key,Int64,false", "{columns:?}");
    assert!(columns[1].starts_with("member_id,Utf8"), "{columns:?}");
    assert!(columns.iter().any(|l| l.starts_with("gender,")), "{columns:?}");
    assert_eq!(stderr.trim(), "format csv", "only the format change is reported:\n{stderr}");
}

#[test]
fn a_failed_statement_is_reported_the_rest_run_and_the_command_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ingested_warehouse(dir, 50, 5, "warehouse");
    let input = "\
SELECT count(*) AS n
FROM membrs;
SELECT 40 + 2 AS answer;
\\d nope
SELECT 'no semicolon at the end' AS last";
    let out = taglake_with_input(&["sql", "--warehouse", "warehouse", "--format", "csv"], dir, input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed statement fails the command:\n{stdout}\n{stderr}");
    assert_eq!(stdout, "answer\n42\nlast\nno semicolon at the end\n");
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(errors[0].starts_with("error: ") && errors[0].contains("did you mean `members`?"), "{stderr}");
    assert!(errors[1].starts_with("error: no table `nope`") && errors[1].contains("(tables: member_ids, members"));
    assert_eq!(errors[2], "error: 2 of 4 statements and commands failed");
}
