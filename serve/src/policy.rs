//! What the server runs: it is read-only, and writes files only into the
//! export directory.
//!
//! Every statement is checked here before anything plans it, because
//! DataFusion runs DDL (`CREATE TABLE`, `CREATE EXTERNAL TABLE`, `DROP`,
//! `SET datafusion.…`) while planning. The rule is an allowlist: queries,
//! `EXPLAIN` of a query, `SHOW`, `SET`, transaction and cursor statements.
//! Anything else gets SQLSTATE 25006 (read-only transaction).
//!
//! The statement text is not enough: `SELECT … INTO t` is a query to the
//! parser but plans to a table creation, and a cursor or a prepared
//! statement carries a query planned elsewhere. So every plan is checked
//! too, on every path that runs one (simple and extended protocol,
//! cursors, the source of a `COPY`), by [`check_plan`]: a plan that
//! creates, changes or drops anything, or changes the session, never runs.
//!
//! `COPY (query) TO 'file'` is the one write. It is refused unless the
//! server has an export directory, and then the file must resolve inside
//! it: relative paths are taken from it, `..` is refused outright, an
//! existing file that is a symbolic link is refused, and the nearest
//! existing ancestor is resolved (symlinks followed) and must lie inside
//! the resolved export directory. Refusals get SQLSTATE 42501.

use std::path::{Component, Path, PathBuf};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};

/// Why a statement is refused: a PostgreSQL SQLSTATE and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The SQLSTATE code.
    pub code: &'static str,
    /// What the user reads.
    pub message: String,
}

impl Refusal {
    fn read_only(what: &str) -> Refusal {
        Refusal {
            code: "25006",
            message: format!(
                "taglake serve is read-only: {what} is not allowed (queries, EXPLAIN, SHOW and SET run here; \
                 change the warehouse with the taglake command line)"
            ),
        }
    }
    fn privilege(message: String) -> Refusal {
        Refusal { code: "42501", message }
    }
    fn unsupported(message: String) -> Refusal {
        Refusal { code: "0A000", message }
    }
}

/// What a statement is, for the handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A query or `EXPLAIN` of one: planned and run under the limits.
    Query,
    /// `SET`, `SHOW`, transactions: answered by the protocol hooks.
    Session,
    /// `DECLARE … CURSOR`, `FETCH`, `CLOSE`: the server's own cursors.
    Cursor,
    /// `COPY … TO` a checked file.
    Copy(CopyPlan),
}

/// A `COPY … TO` the policy allows, translated to DataFusion.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyPlan {
    /// The file, resolved inside the export directory.
    pub path: PathBuf,
    /// The statement DataFusion runs.
    pub sql: String,
}

/// Classifies a statement, or refuses it. Without an `export_dir`, a
/// `COPY … TO` file is refused with a hint naming `export_setting`, the
/// setting that would allow it.
pub fn check(statement: &Statement, export_dir: Option<&Path>, export_setting: &str) -> Result<Kind, Refusal> {
    use Statement::*;
    match statement {
        Query(_) => Ok(Kind::Query),
        Explain { statement: inner, .. } => match check(inner, export_dir, export_setting)? {
            Kind::Query => Ok(Kind::Query),
            _ => Err(Refusal::unsupported("EXPLAIN works on queries only".into())),
        },
        ExplainTable { .. }
        | ShowVariable { .. }
        | ShowVariables { .. }
        | ShowStatus { .. }
        | ShowTables { .. }
        | ShowColumns { .. }
        | ShowCatalogs { .. }
        | ShowSchemas { .. }
        | ShowDatabases { .. }
        | ShowViews { .. }
        | ShowFunctions { .. }
        | Set(_)
        | StartTransaction { .. }
        | Commit { .. }
        | Rollback { .. } => Ok(Kind::Session),
        Declare { .. } | Fetch { .. } | Close { .. } => Ok(Kind::Cursor),
        Copy { source, to: true, target, options, legacy_options, .. } => {
            copy(source, target, options, legacy_options, export_dir, export_setting).map(Kind::Copy)
        }
        Copy { to: false, .. } => Err(Refusal::read_only("COPY … FROM")),
        other => Err(Refusal::read_only(&verb(other))),
    }
}

/// Refuses a plan that writes or changes anything: DDL (including the
/// table `SELECT … INTO` creates), DML, session statements (`PREPARE`,
/// `SET` planned as a statement) and any `COPY` but the top-level one of an
/// allowed `COPY … TO` (`copy_at_root`). Subqueries are walked too.
pub fn check_plan(plan: &LogicalPlan, copy_at_root: bool) -> Result<(), Refusal> {
    let mut refusal = None;
    let mut root = true;
    let _ = plan.apply_with_subqueries(|node| {
        let what = match node {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(_)) => {
                Some("SELECT … INTO or CREATE TABLE (a new table)".to_string())
            }
            LogicalPlan::Ddl(ddl) => Some(format!("{} (DDL)", ddl.name())),
            LogicalPlan::Dml(dml) => Some(format!("{} into {}", dml.op, dml.table_name)),
            LogicalPlan::Copy(_) if !(root && copy_at_root) => Some("COPY inside a query".to_string()),
            LogicalPlan::Statement(st) => Some(format!("{} (a session statement)", st.name())),
            _ => None,
        };
        root = false;
        match what {
            Some(w) => {
                refusal = Some(Refusal::read_only(&w));
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    refusal.map_or(Ok(()), Err)
}

/// The statement's leading keywords (`INSERT`, `CREATE TABLE`, …).
fn verb(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let n = match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("CREATE" | "DROP" | "ALTER") => {
            if matches!(words.get(1).map(|w| w.to_ascii_uppercase()).as_deref(), Some("OR" | "EXTERNAL" | "TEMPORARY"))
            {
                3
            } else {
                2
            }
        }
        _ => 1,
    };
    words.iter().take(n).map(|w| w.to_ascii_uppercase()).collect::<Vec<_>>().join(" ")
}

fn copy(
    source: &CopySource,
    target: &CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    export_dir: Option<&Path>,
    export_setting: &str,
) -> Result<CopyPlan, Refusal> {
    let file = match target {
        CopyTarget::File { filename } => filename,
        CopyTarget::Stdout => {
            return Err(Refusal::unsupported(
                "COPY … TO STDOUT is not supported: run the query itself (e.g. psql --csv -c \"SELECT …\" -o file.csv)"
                    .into(),
            ));
        }
        CopyTarget::Program { .. } => return Err(Refusal::privilege("COPY … TO PROGRAM is never allowed".into())),
        CopyTarget::Stdin => return Err(Refusal::read_only("COPY … FROM STDIN")),
    };
    let Some(dir) = export_dir else {
        return Err(Refusal::privilege(format!(
            "COPY … TO '{file}' is refused: this server has no export directory (start it with {export_setting})"
        )));
    };
    let path = export_path(dir, file)?;
    let query = match source {
        CopySource::Query(q) => q.to_string(),
        CopySource::Table { table_name, columns } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table { table_name, columns } => {
            let cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            format!("SELECT {} FROM {table_name}", cols.join(", "))
        }
    };
    let format = file_format(&path, options, legacy)?;
    let quoted = path.to_string_lossy().replace('\'', "''");
    Ok(CopyPlan { sql: format!("COPY ({query}) TO '{quoted}' {format}"), path })
}

/// The DataFusion `STORED AS … OPTIONS (…)` for PostgreSQL's COPY options
/// (`FORMAT csv|text|parquet|json`, `HEADER`, `DELIMITER`), defaulting by
/// file extension, then to PostgreSQL's own default, tab-separated text.
fn file_format(path: &Path, options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<String, Refusal> {
    let mut format: Option<String> = None;
    let mut header = false;
    let mut delimiter: Option<char> = None;
    for o in options {
        match o {
            CopyOption::Format(f) => format = Some(f.value.to_ascii_lowercase()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Delimiter(d) => delimiter = Some(*d),
            CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(Refusal::unsupported(format!("COPY option {other} is not supported"))),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(csv) => {
                format = Some("csv".into());
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        other => return Err(Refusal::unsupported(format!("COPY option {other} is not supported"))),
                    }
                }
            }
            CopyLegacyOption::Header => header = true,
            CopyLegacyOption::Delimiter(d) => delimiter = Some(*d),
            CopyLegacyOption::Binary => format = Some("binary".into()),
            other => return Err(Refusal::unsupported(format!("COPY option {other} is not supported"))),
        }
    }
    let by_extension = || match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("parquet") => "parquet",
        Some("json" | "jsonl" | "ndjson") => "json",
        Some("csv") => "csv",
        _ => "text",
    };
    let format = format.unwrap_or_else(|| by_extension().to_string());
    let csv = |delim: char, header: bool| {
        let d = if delim == '\'' { "''".to_string() } else { delim.to_string() };
        format!("STORED AS CSV OPTIONS ('format.has_header' '{header}', 'format.delimiter' '{d}')")
    };
    match format.as_str() {
        "csv" => Ok(csv(delimiter.unwrap_or(','), header)),
        "text" => Ok(csv(delimiter.unwrap_or('\t'), header)),
        "parquet" | "json" if header || delimiter.is_some() => {
            Err(Refusal::unsupported(format!("HEADER and DELIMITER do not apply to FORMAT {format}")))
        }
        "parquet" => Ok("STORED AS PARQUET".into()),
        "json" => Ok("STORED AS JSON".into()),
        other => {
            Err(Refusal::unsupported(format!("COPY FORMAT {other} is not supported (csv, text, parquet or json)")))
        }
    }
}

/// Resolves a `COPY` target inside the (canonical) export directory, or
/// says why it is refused.
pub fn export_path(export_dir: &Path, target: &str) -> Result<PathBuf, Refusal> {
    let outside = |why: &str| {
        Refusal::privilege(format!(
            "COPY … TO '{target}' is refused: {why}; files are written only inside the export directory {}",
            export_dir.display()
        ))
    };
    if target.trim().is_empty() {
        return Err(outside("the file name is empty"));
    }
    if target.contains("://") || target.starts_with("file:") {
        return Err(outside("URLs are not allowed"));
    }
    let given = Path::new(target);
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(outside("'..' is not allowed in the path"));
    }
    let path = if given.is_absolute() { given.to_path_buf() } else { export_dir.join(given) };
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(outside("the file is a symbolic link"));
    }
    // The nearest existing ancestor, with every symlink resolved, must be
    // inside; what is below it does not exist yet and has no `..`.
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        rest.push(existing.file_name().ok_or_else(|| outside("the path has no existing parent"))?.to_owned());
        existing = existing.parent().ok_or_else(|| outside("the path has no existing parent"))?;
    }
    let resolved = existing.canonicalize().map_err(|e| outside(&format!("it cannot be resolved ({e})")))?;
    if !resolved.starts_with(export_dir) {
        return Err(outside("it resolves outside the export directory"));
    }
    let mut out = resolved;
    for part in rest.into_iter().rev() {
        out.push(part);
    }
    if out == export_dir {
        return Err(outside("it names the export directory itself"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn parse(sql: &str) -> Statement {
        PostgresCompatibilityParser::new().parse(sql).unwrap().remove(0)
    }

    fn verdict(sql: &str, dir: Option<&Path>) -> Result<Kind, Refusal> {
        check(&parse(sql), dir, "export_dir")
    }

    #[test]
    fn only_reads_and_session_statements_pass() {
        for sql in [
            "SELECT count(*) FROM members WHERE tier_gold",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
        ] {
            assert_eq!(verdict(sql, None), Ok(Kind::Query), "{sql}");
        }
        for sql in ["SET statement_timeout = '1s'", "SHOW search_path", "BEGIN", "COMMIT", "ROLLBACK"] {
            assert_eq!(verdict(sql, None), Ok(Kind::Session), "{sql}");
        }
        for sql in ["DECLARE c CURSOR FOR SELECT 1", "FETCH 10 FROM c", "CLOSE c", "CLOSE ALL"] {
            assert_eq!(verdict(sql, None), Ok(Kind::Cursor), "{sql}");
        }
        let refused = [
            ("INSERT INTO members VALUES (1)", "INSERT"),
            ("UPDATE members SET city = 'x'", "UPDATE"),
            ("DELETE FROM members", "DELETE"),
            ("CREATE TABLE t (a int)", "CREATE TABLE"),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE OR REPLACE"),
            ("CREATE TABLE t AS SELECT * FROM members", "CREATE TABLE"),
            ("DROP TABLE members", "DROP TABLE"),
            ("ALTER TABLE members ADD COLUMN x int", "ALTER TABLE"),
            ("TRUNCATE members", "TRUNCATE"),
            ("COPY members FROM '/tmp/x.csv'", "COPY … FROM"),
        ];
        for (sql, what) in refused {
            let r = verdict(sql, None).unwrap_err();
            assert_eq!(r.code, "25006", "{sql}");
            assert!(
                r.message.starts_with(&format!("taglake serve is read-only: {what} is not allowed")),
                "{sql}: {r:?}"
            );
        }
        let r = verdict("EXPLAIN ANALYZE DELETE FROM members", None).unwrap_err();
        assert_eq!(r.code, "25006");
    }

    #[test]
    fn copy_is_refused_without_an_export_directory() {
        let r = verdict("COPY (SELECT 1) TO '/tmp/x.csv'", None).unwrap_err();
        assert_eq!(r.code, "42501");
        assert!(r.message.contains("no export directory (start it with export_dir)"), "{r:?}");
        let r = verdict("COPY members TO STDOUT", None).unwrap_err();
        assert_eq!(r.code, "0A000");
        let r = verdict("COPY members TO PROGRAM 'rm -rf /'", None).unwrap_err();
        assert_eq!(r.code, "42501");
    }

    #[test]
    fn copy_translates_formats_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        let plan = |sql: &str| match verdict(sql, Some(&d)) {
            Ok(Kind::Copy(p)) => p,
            other => panic!("{sql}: {other:?}"),
        };
        let p = plan("COPY (SELECT member_id FROM members WHERE tier_gold) TO 'gold.csv' WITH (FORMAT csv, HEADER)");
        assert_eq!(p.path, d.join("gold.csv"));
        assert_eq!(
            p.sql,
            format!(
                "COPY (SELECT member_id FROM members WHERE tier_gold) TO '{}' STORED AS CSV OPTIONS \
                 ('format.has_header' 'true', 'format.delimiter' ',')",
                d.join("gold.csv").display()
            )
        );
        assert!(plan("COPY members TO 'm.parquet'").sql.ends_with("STORED AS PARQUET"));
        assert!(
            plan("COPY members (member_id, city) TO 'm.tsv'")
                .sql
                .starts_with("COPY (SELECT member_id, city FROM members)")
        );
        assert!(plan("COPY members TO 'm.tsv'").sql.contains("'format.delimiter' '\t'"));
        assert!(plan("COPY members TO 'm.txt' CSV HEADER").sql.contains("'format.has_header' 'true'"));
        assert!(plan("COPY members TO 'm.out' (FORMAT json)").sql.ends_with("STORED AS JSON"));
        let r = verdict("COPY members TO 'm.bin' (FORMAT binary)", Some(&d)).unwrap_err();
        assert_eq!(r.message, "COPY FORMAT binary is not supported (csv, text, parquet or json)");
        let r = verdict("COPY members TO 'm.parquet' (FORMAT parquet, HEADER)", Some(&d)).unwrap_err();
        assert_eq!(r.message, "HEADER and DELIMITER do not apply to FORMAT parquet");
    }

    #[test]
    fn paths_must_stay_inside_the_export_directory() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        let exports = base.join("exports");
        std::fs::create_dir_all(exports.join("sub")).unwrap();
        std::fs::create_dir(base.join("secret")).unwrap();
        assert_eq!(export_path(&exports, "a.csv").unwrap(), exports.join("a.csv"));
        assert_eq!(export_path(&exports, "sub/a.csv").unwrap(), exports.join("sub/a.csv"));
        assert_eq!(export_path(&exports, "new/dir/a.csv").unwrap(), exports.join("new/dir/a.csv"));
        let abs = exports.join("b.csv");
        assert_eq!(export_path(&exports, abs.to_str().unwrap()).unwrap(), abs);

        let refused = |target: &str, why: &str| {
            let r = export_path(&exports, target).unwrap_err();
            assert_eq!(r.code, "42501", "{target}");
            assert!(r.message.contains(why), "{target}: {}", r.message);
            assert!(r.message.contains("only inside the export directory"), "{}", r.message);
        };
        refused("../secret/a.csv", "'..' is not allowed");
        refused("sub/../../secret/a.csv", "'..' is not allowed");
        refused(base.join("secret/a.csv").to_str().unwrap(), "resolves outside");
        refused("/etc/passwd", "resolves outside");
        refused("s3://bucket/a.csv", "URLs are not allowed");
        refused("file:///tmp/a.csv", "URLs are not allowed");
        refused("", "empty");
        refused(exports.to_str().unwrap(), "the export directory itself");
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(base.join("secret"), exports.join("escape")).unwrap();
            refused("escape/a.csv", "resolves outside");
            refused("escape/new/a.csv", "resolves outside");
            std::fs::write(base.join("secret/target"), "x").unwrap();
            symlink(base.join("secret/target"), exports.join("link.csv")).unwrap();
            refused("link.csv", "symbolic link");
            // A link inside pointing inside is a plain directory to us.
            symlink(exports.join("sub"), exports.join("alias")).unwrap();
            assert_eq!(export_path(&exports, "alias/a.csv").unwrap(), exports.join("sub/a.csv"));
        }
    }

    /// Plans that write are refused whatever statement they came from:
    /// `SELECT … INTO` passes the statement check (it is a query) and is
    /// caught here, also inside `EXPLAIN ANALYZE`, a subquery or a `COPY`.
    #[test]
    fn plans_that_write_are_refused_wherever_they_sit() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let plan = |sql: &str| {
            let statement = parse(sql);
            rt.block_on(
                ctx.state().statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(statement))),
            )
            .unwrap()
        };
        for sql in ["SELECT 1 AS a INTO t", "EXPLAIN ANALYZE SELECT 1 AS a INTO t"] {
            assert_eq!(verdict(sql, None), Ok(Kind::Query), "the statement check lets {sql} through");
            let r = check_plan(&plan(sql), false).unwrap_err();
            assert_eq!(r.code, "25006", "{sql}");
            assert!(r.message.contains("SELECT … INTO or CREATE TABLE (a new table) is not allowed"), "{r:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let copy = format!("COPY (SELECT 1 AS a) TO '{}' STORED AS CSV", dir.path().join("a.csv").display());
        let copy_plan = rt
            .block_on(
                ctx.state().statement_to_plan(
                    datafusion::sql::parser::DFParser::parse_sql(&copy).unwrap().pop_front().unwrap(),
                ),
            )
            .unwrap();
        assert_eq!(check_plan(&copy_plan, true), Ok(()));
        assert_eq!(check_plan(&copy_plan, false).unwrap_err().code, "25006");
        for sql in ["SELECT 1", "SELECT * FROM (SELECT 1 AS a) WHERE a IN (SELECT 1)", "EXPLAIN SELECT 1"] {
            assert_eq!(check_plan(&plan(sql), false), Ok(()), "{sql}");
        }
    }
}
