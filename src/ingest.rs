//! `taglake ingest`: files of one table into the warehouse, within a
//! memory budget, with a progress bar and a one-line summary; also the
//! ingest step of `demo` and `nightly`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use taglake_ingest::{CheckedMapping, IngestOptions, IngestSummary, Mapping};
use taglake_storage::{Table, Warehouse, WriterLock};

use crate::args::{WaitArg, WarehouseArg, lock_writer, parse_memory};
use crate::report::{self, IngestBar};

#[derive(Copy, Clone, ValueEnum)]
pub(crate) enum TableArg {
    Members,
    Orders,
    Products,
}

impl From<TableArg> for Table {
    fn from(t: TableArg) -> Table {
        match t {
            TableArg::Members => Table::Members,
            TableArg::Orders => Table::Orders,
            TableArg::Products => Table::Products,
        }
    }
}

#[derive(Args)]
pub(crate) struct IngestArgs {
    /// Target table.
    #[arg(value_enum)]
    table: TableArg,
    /// Files, directories or glob patterns (CSV, JSON lines, Parquet).
    #[arg(required = true)]
    files: Vec<String>,
    /// Mapping file (TOML) for exports not in the canonical layout.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Orders of unknown members create them instead of being quarantined.
    #[arg(long)]
    create_members: bool,
    /// Memory the ingest may hold (`512MiB`, `4GiB`; at least 64MiB): bigger inputs are processed in
    /// chunks and spilled to the warehouse's `_taglake/spill` folder, whatever the size of the tables.
    #[arg(long, default_value = "2GiB")]
    memory: String,
    #[command(flatten)]
    wait: WaitArg,
    #[command(flatten)]
    wh: WarehouseArg,
}

pub(crate) async fn ingest_files(
    wh: &Warehouse,
    lock: &WriterLock,
    table: Table,
    files: &[String],
    mapping: Option<&Path>,
    create_members: bool,
    memory: usize,
) -> Result<IngestSummary> {
    lock.check(wh)?;
    let mapping = match mapping {
        Some(p) => Mapping::from_file(p)?.check(table)?,
        None => CheckedMapping::canonical(table),
    };
    let files = taglake_ingest::source::expand_inputs(files)?;
    let opts = IngestOptions::builder(mapping).create_members(create_members).memory(memory).build()?;
    let (bar, pb) = IngestBar::new(&format!("ingest {}", table.name()));
    let started = std::time::SystemTime::now();
    let s = match taglake_ingest::ingest(wh, &files, &opts, bar).await {
        Ok(s) => s,
        Err(e) => {
            pb.finish_and_clear();
            // What the failed run wrote goes now, not at the next vacuum:
            // after a full disk, the disk is usable again.
            match taglake_ingest::discard_failed(wh, lock, started).await {
                Ok(d) if d.files > 0 => eprintln!(
                    "note: the files this ingest wrote and did not commit were deleted ({} file{}, {})",
                    d.files,
                    if d.files == 1 { "" } else { "s" },
                    report::bytes(d.bytes)
                ),
                Ok(_) => {}
                Err(c) => eprintln!(
                    "note: the files this ingest wrote and did not commit could not be deleted ({c}); \
                     `taglake vacuum --retain 0` deletes them"
                ),
            }
            return Err(e.into());
        }
    };
    pb.finish_and_clear();
    for (path, reason) in &s.failed_files {
        eprintln!("error: {}: {reason}", path.display());
    }
    report::say!(
        "ingest {}: {} file{}, {} rows read, {} inserted, {} replaced, {} unchanged, {} quarantined{} · {}",
        table.name(),
        s.files,
        if s.files == 1 { "" } else { "s" },
        report::count(s.rows_read),
        report::count(s.inserted),
        report::count(s.replaced),
        report::count(s.unchanged),
        report::count(s.quarantined),
        if s.new_members > 0 { format!(", {} new members", report::count(s.new_members)) } else { String::new() },
        report::timing(s.rows_read, s.seconds)
    );
    if s.quarantined > 0 {
        report::say!(
            "  quarantined rows are in {} (file, row, column, reason)",
            wh.table_path(Table::Quarantine).display()
        );
    }
    if s.nothing_read() {
        bail!("nothing could be read from {} file(s)", s.files);
    }
    Ok(s)
}

pub(crate) async fn ingest_cmd(a: IngestArgs) -> Result<()> {
    let memory = parse_memory(&a.memory)?;
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let lock = lock_writer(&wh, &a.wait)?;
    ingest_files(&wh, &lock, a.table.into(), &a.files, a.mapping.as_deref(), a.create_members, memory).await?;
    Ok(())
}
