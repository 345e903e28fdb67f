//! The query layer's tests as data: every `tests/slt/*.slt` file, in the
//! sqllogictest format, run against one small fixed warehouse (2,000
//! generated members, seed 5, tagged, with one running experiment).
//!
//! A file states statements that must succeed or fail (with a regex the
//! error must match) and queries with their exact results. Most results
//! are self-checks that hold on any data (a pushdown count equals the
//! same count over a plain copy of `members`); the others pin the numbers
//! of this warehouse, so a change in what a query answers shows here.
//! After a deliberate change (of the generator, the catalog or a rule),
//! `TAGLAKE_SLT_COMPLETE=1 cargo test --test it slt::` writes the new
//! results into the files, to be reviewed in the diff.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::Array;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use taglake_storage::Warehouse;

use crate::tag_reference::runtime;
use crate::{Tagged, tagged, taglake_ok};

/// The fixed warehouse every file runs against.
fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| {
        let f = tagged(2_000, 5);
        // One running experiment, so `in_experiment` has members.
        taglake_ok(
            &[
                "export",
                "--audience",
                "tier_gold",
                "--name",
                "slt",
                "--launch-at",
                "2026-11-01",
                "--open-ended",
                "--out",
                "cohort.csv",
            ],
            &f.dir,
        );
        f
    })
}

/// One session over the warehouse.
struct Taglake {
    ctx: Arc<SessionContext>,
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Taglake {
    type Error = Failed;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Failed> {
        let batches = taglake_query::sql(&self.ctx, sql).await.map_err(|e| Failed(e.to_string()))?;
        let Some(first) = batches.first() else { return Ok(DBOutput::StatementComplete(0)) };
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for b in &batches {
            let formatters = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failed(e.to_string()))?;
            for r in 0..b.num_rows() {
                let cells: Vec<String> = formatters
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| if c.is_null(r) { "NULL".to_string() } else { empty_as(f.value(r).to_string()) })
                    .collect();
                // A value of several lines (a plan) is shown a line per
                // row: the format is line based.
                let lines: Vec<Vec<&str>> = cells.iter().map(|c| c.lines().collect()).collect();
                let height = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
                for i in 0..height {
                    rows.push(
                        lines.iter().map(|l| l.get(i).map_or("-".to_string(), |s| s.trim().to_string())).collect(),
                    );
                }
            }
        }
        let types = first.schema().fields().iter().map(|f| column_type(f.data_type())).collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "taglake"
    }
}

/// `I` for integers, `R` for floating point, `T` for text, `?` otherwise
/// (booleans among them).
fn column_type(t: &arrow::datatypes::DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() {
        DefaultColumnType::FloatingPoint
    } else if matches!(
        t,
        arrow::datatypes::DataType::Utf8 | arrow::datatypes::DataType::LargeUtf8 | arrow::datatypes::DataType::Utf8View
    ) {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

/// A value as the files show it: an empty text as `(empty)`, so it
/// differs from a missing value; no trailing blank (a plan's last line).
fn empty_as(s: String) -> String {
    let s = s.trim_end();
    if s.is_empty() { "(empty)".into() } else { s.to_string() }
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[test]
fn every_slt_file_gives_its_results() {
    let wh = Warehouse::open(fixture().dir.join("warehouse")).unwrap();
    let complete = std::env::var_os("TAGLAKE_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in files() {
        let wh = wh.clone();
        let connect = move || {
            let wh = wh.clone();
            async move {
                let (ctx, _) = taglake_query::open(&wh).await.map_err(|e| Failed(e.to_string()))?;
                Ok::<_, Failed>(Taglake { ctx: Arc::new(ctx) })
            }
        };
        let mut runner = sqllogictest::Runner::new(connect);
        let result = runtime().block_on(async {
            if complete {
                runner
                    .update_test_file(
                        &file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::default_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner.run_file_async(&file).await.map_err(|e| e.display(true).to_string())
            }
        });
        if let Err(e) = result {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
