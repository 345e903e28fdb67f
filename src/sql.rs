//! `taglake sql`: one SQL statement over the warehouse tables (without one,
//! `cli` opens the interactive prompt, [`crate::repl`], instead); both
//! print results with [`render`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use clap::{Args, ValueEnum};
use taglake_storage::Warehouse;

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
pub enum SqlFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

impl From<crate::args::OutputFormat> for SqlFormat {
    fn from(f: crate::args::OutputFormat) -> SqlFormat {
        match f {
            crate::args::OutputFormat::Table => SqlFormat::Table,
            crate::args::OutputFormat::Csv => SqlFormat::Csv,
            crate::args::OutputFormat::Json => SqlFormat::Json,
        }
    }
}

impl SqlFormat {
    /// The name used by `--format` and `\format`.
    pub fn name(self) -> &'static str {
        match self {
            SqlFormat::Table => "table",
            SqlFormat::Csv => "csv",
            SqlFormat::Json => "json",
            SqlFormat::Parquet => "parquet",
        }
    }
}

#[derive(Args)]
pub struct SqlArgs {
    /// The statement, e.g. "SELECT community, count(*) FROM communities GROUP BY 1".
    /// Without one, an interactive prompt opens; with standard input not a
    /// terminal, statements ending in `;` are read from it.
    pub query: Option<String>,
    /// Output format (parquet needs --out).
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub format: SqlFormat,
    /// Write the result here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// History file of the interactive prompt [default: $HOME/.taglake_history].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: crate::args::DistributedArg,
    #[command(flatten)]
    pub wh: crate::args::WarehouseArg,
}

pub async fn sql(a: SqlArgs) -> Result<()> {
    let Some(query) = &a.query else { bail!("no statement given") };
    if a.format == SqlFormat::Parquet && a.out.is_none() {
        bail!("--format parquet needs --out FILE");
    }
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let (ctx, _) = crate::distributed::session(&wh, &a.cluster).await?;
    let batches = taglake_query::sql(&ctx, query).await?;
    let bytes = render(&batches, a.format, None)?;
    match &a.out {
        Some(path) => std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}

/// The result as bytes of `format`. A table ends with its row count, and
/// with `elapsed` (the prompt's `\timing`) also the statement's time.
pub(crate) fn render(batches: &[RecordBatch], format: SqlFormat, elapsed: Option<Duration>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        // No batches (a CREATE VIEW, say) has no columns to draw.
        SqlFormat::Table if batches.is_empty() => out.extend(format!("{}\n", rows_line(batches, elapsed)).bytes()),
        SqlFormat::Table => {
            out.extend(arrow::util::pretty::pretty_format_batches(batches)?.to_string().bytes());
            out.extend(format!("\n{}\n", rows_line(batches, elapsed)).bytes());
        }
        SqlFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        SqlFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            out.push(b'\n');
        }
        SqlFormat::Parquet => {
            let Some(first) = batches.first() else { bail!("the query returned no batches to write") };
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, first.schema(), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(out)
}

/// "3 rows", or "3 rows in 12.4 ms" with a time.
pub(crate) fn rows_line(batches: &[RecordBatch], elapsed: Option<Duration>) -> String {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let time = elapsed.map(|t| format!(" in {:.1} ms", t.as_secs_f64() * 1e3)).unwrap_or_default();
    format!("{rows} row{}{time}", if rows == 1 { "" } else { "s" })
}
