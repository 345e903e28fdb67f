//! Opening, reading and committing warehouse tables.

use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;

use crate::parts::DirectParts;
use crate::schema::check_columns;
use crate::{Error, Result, Table};

/// Key of the commit metadata [`Warehouse::last_inputs`] reads.
const INPUTS_KEY: &str = "taglake.inputs";

/// Target size of the Parquet files a commit writes.
const TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// A warehouse directory holding one Delta table per [`Table`].
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: PathBuf,
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|source| Error::Io { path: root.into(), source })?;
        let root = std::fs::canonicalize(root).map_err(|source| Error::Io { path: root.into(), source })?;
        Ok(Warehouse { root })
    }

    /// The warehouse directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one table.
    pub fn table_path(&self, table: Table) -> PathBuf {
        self.root.join(table.name())
    }

    pub(crate) fn delta_err(&self, table: Table) -> impl Fn(DeltaTableError) -> Error + '_ {
        move |source| Error::Delta { table: table.name(), path: self.table_path(table), source: Box::new(source) }
    }

    /// Like `delta_err`, but a commit that lost to a conflicting one is
    /// [`Error::Conflict`], described by `what`.
    pub(crate) fn commit_err<'a>(&'a self, table: Table, what: &'a str) -> impl Fn(DeltaTableError) -> Error + 'a {
        move |source| match source {
            DeltaTableError::Transaction {
                source: deltalake::kernel::transaction::TransactionError::CommitConflict(conflict),
            } => Error::Conflict { table: table.name(), message: format!("{what} ({conflict})") },
            other => self.delta_err(table)(other),
        }
    }

    /// Loads the Delta table, or `None` when nothing was ever committed.
    pub(crate) async fn load(&self, table: Table) -> Result<Option<DeltaTable>> {
        let path = self.table_path(table);
        if !path.join("_delta_log").is_dir() {
            return Ok(None);
        }
        let url = deltalake::ensure_table_uri(path.to_string_lossy()).map_err(self.delta_err(table))?;
        match deltalake::open_table(url).await {
            Ok(t) => Ok(Some(t)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(self.delta_err(table)(e)),
        }
    }

    /// Registers the current version of a table in a DataFusion session
    /// under its name (`members`, `orders`, …), so SQL reads it with
    /// projection and filter pushdown into the Parquet files. Returns
    /// `false` (and registers nothing) when the table does not exist yet.
    pub async fn register(&self, table: Table, ctx: &datafusion::prelude::SessionContext) -> Result<bool> {
        let Some(provider) = self.provider(table, ctx).await? else { return Ok(false) };
        ctx.register_table(table.name(), provider).map_err(|e| self.delta_err(table)(DeltaTableError::from(e)))?;
        Ok(true)
    }

    /// A DataFusion table provider over the current version of a table
    /// (`None` when it does not exist yet), for callers that wrap it.
    pub async fn provider(
        &self,
        table: Table,
        ctx: &datafusion::prelude::SessionContext,
    ) -> Result<Option<std::sync::Arc<dyn datafusion::catalog::TableProvider>>> {
        let Some(delta) = self.load(table).await? else { return Ok(None) };
        delta.update_datafusion_session(&ctx.state()).map_err(self.delta_err(table))?;
        let provider = delta.table_provider().await.map_err(|e| self.delta_err(table)(DeltaTableError::from(e)))?;
        Ok(Some(provider))
    }

    /// The current version of a table, `None` when it does not exist yet.
    pub async fn version(&self, table: Table) -> Result<Option<u64>> {
        Ok(self.load(table).await?.and_then(|t| t.version()))
    }

    /// Reads a table (or the given columns of it) into memory, each column
    /// in its canonical Arrow type. A table never written reads as empty.
    pub async fn read(&self, table: Table, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
        let names: Vec<&str> = match columns {
            Some(c) => c.to_vec(),
            None => table.columns().iter().map(|c| c.name).collect(),
        };
        for n in &names {
            if table.column(n).is_none() {
                return Err(Error::BatchSchema {
                    table: table.name(),
                    message: format!("no column `{n}`; columns are {}", column_list(table)),
                });
            }
        }
        let target = projected_schema(table, &names);
        let Some(delta) = self.load(table).await? else { return Ok(Vec::new()) };
        let (_, stream) = delta
            .scan_table()
            .with_columns(names.iter().map(|s| s.to_string()))
            .await
            .map_err(self.delta_err(table))?;
        let batches: Vec<RecordBatch> =
            stream.try_collect().await.map_err(|e| self.delta_err(table)(DeltaTableError::from(e)))?;
        batches.into_iter().filter(|b| b.num_rows() > 0).map(|b| self.conform(table, &target, b)).collect()
    }

    /// Casts a batch read back from Delta (where strings may come back as
    /// views and nullability is relaxed) to the canonical types.
    fn conform(&self, table: Table, target: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let Some(col) = batch.column_by_name(field.name()) else {
                return Err(Error::Schema {
                    table: table.name(),
                    path: self.table_path(table),
                    message: format!("column `{}` is missing", field.name()),
                    cause: None,
                });
            };
            let col = if col.data_type() == field.data_type() {
                col.clone()
            } else {
                cast(col, field.data_type()).map_err(|e| Error::Schema {
                    table: table.name(),
                    path: self.table_path(table),
                    message: format!(
                        "column `{}` has type {} and cannot be read as {}",
                        field.name(),
                        col.data_type(),
                        field.data_type()
                    ),
                    cause: Some(e.into()),
                })?
            };
            cols.push(col);
        }
        let relaxed =
            Schema::new(target.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>());
        RecordBatch::try_new(relaxed.into(), cols).map_err(|e| Error::Schema {
            table: table.name(),
            path: self.table_path(table),
            message: "its columns do not make a batch".into(),
            cause: Some(e.into()),
        })
    }

    /// Number of rows in a table (0 when it does not exist), from the
    /// footers of its current files.
    pub async fn row_count(&self, table: Table) -> Result<u64> {
        let files: Vec<PathBuf> = self.files(table).await?.into_iter().map(|f| f.path).collect();
        // Footers only: a few small reads per file.
        crate::scan::row_count(table, &files)
    }

    /// Starts a streaming append: batches go to Parquet files as they come;
    /// nothing is visible until [`TableWriter::commit`] makes them one
    /// Delta commit. Dropping the writer without committing deletes its
    /// files; a killed process leaves only unreferenced files behind (for
    /// `vacuum`), never a partial table. A table written by
    /// an older taglake first gains the columns added since
    /// ([`Warehouse::evolve`]).
    pub async fn append(&self, table: Table) -> Result<TableWriter> {
        let delta = match self.load(table).await? {
            Some(t) => self.evolve(table, t).await?,
            None => self.create(table).await?,
        };
        check_table_schema(self, table, &delta)?;
        Ok(TableWriter {
            warehouse: self.clone(),
            table,
            delta,
            id: uuid::Uuid::new_v4().to_string(),
            parts: Default::default(),
            rows: 0,
            claims: Vec::new(),
        })
    }

    /// Brings a table written by an older taglake to the current schema:
    /// adds the nullable columns [`Table::columns`] lists that the stored
    /// table lacks (its files read them as null) and drops NOT NULL from
    /// stored columns now declared nullable. One commit of its own that
    /// changes the schema only, made once; a table already current is
    /// returned as it is. Required columns that are missing stay missing:
    /// [`Warehouse::append`] refuses such a table by name.
    pub(crate) async fn evolve(&self, table: Table, delta: DeltaTable) -> Result<DeltaTable> {
        use deltalake::kernel::transaction::CommitBuilder;
        use deltalake::kernel::{Action, MetadataExt, StructField};
        use deltalake::protocol::DeltaOperation;
        let err = self.delta_err(table);
        let snapshot = delta.snapshot().map_err(&err)?;
        let wanted: StructType =
            table.arrow_schema().as_ref().try_into_kernel().map_err(|e| err(DeltaTableError::from(e)))?;
        let stored = snapshot.schema();
        let mut fields: Vec<StructField> = Vec::new();
        let mut changed = false;
        for f in stored.fields() {
            let mut f = f.clone();
            if !f.nullable && wanted.field(&f.name).is_some_and(|w| w.nullable) {
                f.nullable = true;
                changed = true;
            }
            fields.push(f);
        }
        let added: Vec<StructField> =
            wanted.fields().filter(|w| w.nullable && stored.field(&w.name).is_none()).cloned().collect();
        if !changed && added.is_empty() {
            return Ok(delta);
        }
        fields.extend(added.iter().cloned());
        let schema = StructType::try_new(fields).map_err(|e| err(DeltaTableError::from(e)))?;
        let metadata = snapshot.metadata().clone().with_schema(&schema).map_err(|e| err(e.into()))?;
        CommitBuilder::default()
            .with_actions(vec![Action::Metadata(metadata)])
            .build(Some(snapshot), delta.log_store(), DeltaOperation::AddColumn { fields: added })
            .await
            .map_err(&err)?;
        self.load(table).await?.ok_or_else(|| Error::Schema {
            table: table.name(),
            path: self.table_path(table),
            message: "the table disappeared while its schema was brought up to date".into(),
            cause: None,
        })
    }

    pub(crate) async fn create(&self, table: Table) -> Result<DeltaTable> {
        let path = self.table_path(table);
        let url = deltalake::ensure_table_uri(path.to_string_lossy()).map_err(self.delta_err(table))?;
        let schema: StructType = table
            .arrow_schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.delta_err(table)(DeltaTableError::from(e)))?;
        let fresh = DeltaTable::try_from_url(url).await.map_err(self.delta_err(table))?;
        fresh
            .create()
            .with_table_name(table.name())
            .with_columns(schema.fields().cloned())
            .with_partition_columns(table.partition_columns().iter().copied())
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(self.delta_err(table))
    }

    /// Replaces the whole content of a table in one commit (the previous
    /// version stays readable by time travel). Returns the new version.
    pub async fn overwrite(&self, table: Table, batches: Vec<RecordBatch>) -> Result<u64> {
        for b in &batches {
            check_batch(table, b)?;
        }
        let delta = match self.load(table).await? {
            Some(t) => t,
            None => self.create(table).await?,
        };
        let written = delta
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_target_file_size(std::num::NonZeroU64::new(TARGET_FILE_SIZE))
            .await
            .map_err(self.delta_err(table))?;
        Ok(written.version().unwrap_or(0))
    }
}

/// One Parquet file of a table's current version.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Local path of the file.
    pub path: PathBuf,
    /// Values of the table's partition columns for this file.
    pub partition: Vec<(String, Option<String>)>,
    /// Size in bytes.
    pub size: u64,
}

impl DataFile {
    /// The value of one partition column, if set.
    pub fn partition_value(&self, column: &str) -> Option<&str> {
        self.partition.iter().find(|(c, _)| c == column).and_then(|(_, v)| v.as_deref())
    }
}

/// What [`Warehouse::sort_by_member_key`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sorted {
    /// The version it committed; `None` when there was nothing to sort.
    pub version: Option<u64>,
    /// Files the new version no longer uses (kept for time travel until
    /// a VACUUM).
    pub files_removed: u64,
    /// Sorted files written.
    pub files_added: u64,
}

/// What [`Warehouse::vacuum`] deleted (or would delete) in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacuumed {
    /// The table.
    pub table: Table,
    /// Each file with its size in bytes, by path.
    pub files: Vec<(PathBuf, u64)>,
}

impl Vacuumed {
    /// Total size of the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b).sum()
    }
}

/// The version whose files a vacuum keeps besides the current one: the
/// version before the newest commit that removed files (a replace, an
/// OPTIMIZE). Appends and vacuums remove nothing, so they are skipped.
/// Read from the commit files of `_delta_log`; none when no commit in the
/// last 1,000 removed a file.
fn previous_data_version(folder: &Path, current: Option<u64>) -> Vec<u64> {
    let Some(current) = current else { return Vec::new() };
    for v in (current.saturating_sub(1_000)..=current).rev() {
        let Ok(text) = std::fs::read_to_string(folder.join("_delta_log").join(format!("{v:020}.json"))) else {
            break;
        };
        let removes = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|action| action.get("remove").is_some());
        if removes {
            return v.checked_sub(1).into_iter().collect();
        }
    }
    Vec::new()
}

/// A partial file an interrupted write left: the object store writes
/// `name#N` and renames it when complete.
fn is_partial(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes the files of a vacuum or a clean-up; one already gone is fine.
fn remove_listed(files: &[(PathBuf, u64)]) -> Result<()> {
    for (path, _) in files {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::File { path: path.clone(), source }),
        }
    }
    Ok(())
}

/// Calls `f` on every file under `dir` (recursively).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::File { path: dir.into(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::File { path: dir.into(), source })?;
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            walk(&path, f)?;
        } else if meta.is_file() {
            f(&path, &meta);
        }
    }
    Ok(())
}

/// Receiving end of a streaming write: batches, or the producer's error.
pub type BatchReceiver = tokio::sync::mpsc::Receiver<std::result::Result<RecordBatch, String>>;

impl Warehouse {
    /// The Parquet files of a table's current version, in log order. Readers
    /// that need more speed or control than [`Warehouse::read`] (a parallel
    /// scan of a few columns, one partition) read these directly.
    pub async fn files(&self, table: Table) -> Result<Vec<DataFile>> {
        let Some(delta) = self.load(table).await? else { return Ok(Vec::new()) };
        self.files_of(table, &delta)
    }

    /// One version of a table, read once: the embedded provider's schema
    /// (the column types SQL sees) and that same version's data files.
    /// `None` when the table does not exist yet. Used where another process
    /// must read exactly what this one planned against.
    pub async fn pinned(&self, table: Table) -> Result<Option<(SchemaRef, Vec<DataFile>)>> {
        let Some(delta) = self.load(table).await? else { return Ok(None) };
        let provider = delta.table_provider().await.map_err(|e| self.delta_err(table)(DeltaTableError::from(e)))?;
        Ok(Some((provider.schema(), self.files_of(table, &delta)?)))
    }

    fn files_of(&self, table: Table, delta: &DeltaTable) -> Result<Vec<DataFile>> {
        let snapshot = delta.snapshot().map_err(self.delta_err(table))?;
        let log_store = delta.log_store();
        let mut out = Vec::new();
        for file in snapshot.log_data() {
            let uri = log_store.to_uri(&file.object_store_path());
            let local = if uri.starts_with('/') { Some(PathBuf::from(&uri)) } else { None };
            let path =
                local.or_else(|| url::Url::parse(&uri).ok().and_then(|u| u.to_file_path().ok())).ok_or_else(|| {
                    Error::Schema {
                        table: table.name(),
                        path: self.table_path(table),
                        message: format!("data file {uri} is not a local file"),
                        cause: None,
                    }
                })?;
            let mut partition: Vec<(String, Option<String>)> = file.partition_values_map().into_iter().collect();
            partition.sort();
            out.push(DataFile { path, partition, size: file.size().max(0) as u64 });
        }
        Ok(out)
    }

    /// Rewrites the current files of a table in `member_key` order, so each
    /// file and row group holds a narrow band of members: a reader of one
    /// member range (a cluster's refresh task, [`crate::scan::scan_keys`]) then
    /// skips almost every row group. Exports sorted by time, the usual
    /// layout, otherwise spread every member over every file.
    ///
    /// This is Delta's `OPTIMIZE ZORDER BY (member_key)`: one commit that
    /// removes the old files and adds the sorted ones, marked as no data
    /// change, so readers and time travel are unaffected. The sort keeps at
    /// most `memory` bytes in memory and spills the rest to the system's
    /// temporary directory. A commit that lands meanwhile and removes files
    /// makes it fail without changing anything; appends are kept.
    pub async fn sort_by_member_key(&self, table: Table, memory: usize) -> Result<Sorted> {
        if table.column("member_key").is_none() {
            return Err(Error::Unsupported {
                table: table.name(),
                message: "has no `member_key` column to sort by".into(),
            });
        }
        let Some(delta) = self.load(table).await? else { return Ok(Sorted::default()) };
        let before = delta.version();
        let pool = datafusion::execution::memory_pool::FairSpillPool::new(memory);
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(std::sync::Arc::new(pool))
            .build_arc()
            .map_err(|e| self.delta_err(table)(DeltaTableError::from(e)))?;
        // One sort stream: parallel sorters would each need their share of
        // `memory` and a final merge that cannot spill, which fails on a
        // tight budget. The merge phase reserves its buffer up front;
        // DataFusion's default (10 MB) would not fit a small budget.
        let config = datafusion::prelude::SessionConfig::new()
            .with_target_partitions(1)
            .with_sort_spill_reservation_bytes((memory / 8).min(10 << 20));
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime)
            .build();
        let (after, metrics) = delta
            .optimize()
            .with_type(deltalake::operations::optimize::OptimizeType::ZOrder(vec!["member_key".into()]))
            .with_writer_properties(parquet_properties(table, &table.arrow_schema()))
            .with_target_size(std::num::NonZeroU64::new(TARGET_FILE_SIZE).expect("target size > 0"))
            .with_session_state(std::sync::Arc::new(state))
            .await
            .map_err(self.delta_err(table))?;
        Ok(Sorted {
            version: after.version().filter(|v| Some(*v) != before),
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
        })
    }

    /// Deletes the files of `table` that no reader needs any more and that
    /// have been unneeded for longer than `retain`, or with `dry_run` only
    /// lists them. Returns what was (or would be) deleted, with sizes.
    ///
    /// Three kinds of files go:
    /// - files the current version no longer uses, replaced more than
    ///   `retain` ago (Delta VACUUM): older versions can no longer be read
    ///   afterwards;
    /// - files no version references, last written more than `retain` ago
    ///   (Delta's full-mode VACUUM): Parquet a killed or failed command
    ///   wrote and never committed;
    /// - partial files of interrupted writes (`name#1`, left by a kill in
    ///   the middle of writing a file or a commit), which Delta never lists.
    ///
    /// The current version is never touched, and neither is the previous
    /// one (the files the last commit that replaced data replaced), whatever
    /// `retain` says: a server or query that started on it before the last
    /// write still finishes. A table folder without a Delta log (a killed
    /// first write) holds only orphans.
    pub async fn vacuum(
        &self,
        lock: &crate::WriterLock,
        table: Table,
        retain: chrono::Duration,
        dry_run: bool,
    ) -> Result<Vacuumed> {
        lock.check(self)?;
        let plan = self.reclaimable(table, retain).await?;
        if !dry_run {
            remove_listed(&plan.files)?;
        }
        Ok(plan)
    }

    /// Deletes the data files of `table` written since `since` that its
    /// current version does not reference: what a command holding `lock`
    /// wrote and never committed because it failed. Returns them, with
    /// sizes.
    ///
    /// A failed ingest of a day's or a history's orders otherwise leaves
    /// every file it wrote until `taglake vacuum`, and when it failed
    /// because the disk was full, the disk stays full. Under the writer
    /// lock nothing else writes, so an unreferenced file written since is
    /// garbage; a file the table replaced keeps the date it was written
    /// (before `since`), so older versions stay readable. Commit files
    /// (`_delta_log`) are not touched.
    pub async fn remove_uncommitted(
        &self,
        lock: &crate::WriterLock,
        table: Table,
        since: std::time::SystemTime,
    ) -> Result<Vacuumed> {
        lock.check(self)?;
        let folder = self.table_path(table);
        let mut files = Vec::new();
        if !folder.is_dir() {
            return Ok(Vacuumed { table, files });
        }
        let live: std::collections::HashSet<PathBuf> = self.files(table).await?.into_iter().map(|f| f.path).collect();
        let log = folder.join("_delta_log");
        walk(&folder, &mut |path, meta| {
            let recent = meta.modified().is_ok_and(|m| m >= since);
            if recent && !path.starts_with(&log) && !live.contains(path) {
                files.push((path.to_path_buf(), meta.len()));
            }
        })?;
        files.sort();
        remove_listed(&files)?;
        Ok(Vacuumed { table, files })
    }

    /// What [`Warehouse::vacuum`] would delete with this `retain`, without
    /// deleting anything or taking the writer lock (`taglake status`).
    pub async fn reclaimable(&self, table: Table, retain: chrono::Duration) -> Result<Vacuumed> {
        let folder = self.table_path(table);
        let mut files = Vec::new();
        if !folder.is_dir() {
            return Ok(Vacuumed { table, files });
        }
        let cutoff = std::time::SystemTime::now()
            .checked_sub(retain.to_std().unwrap_or_default())
            .unwrap_or(std::time::UNIX_EPOCH);
        let stale = |meta: &std::fs::Metadata| meta.modified().is_ok_and(|m| m < cutoff);
        match self.load(table).await? {
            Some(delta) => {
                let keep = previous_data_version(&folder, delta.version());
                let (_, metrics) = delta
                    .vacuum()
                    .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
                    .with_retention_period(retain)
                    .with_enforce_retention_duration(false)
                    .with_keep_versions(&keep)
                    .with_dry_run(true)
                    .await
                    .map_err(self.delta_err(table))?;
                for name in metrics.files_deleted {
                    let path = folder.join(name.trim_start_matches('/'));
                    if let Ok(meta) = std::fs::metadata(&path) {
                        files.push((path, meta.len()));
                    }
                }
                walk(&folder, &mut |path, meta| {
                    if is_partial(path) && stale(meta) {
                        files.push((path.to_path_buf(), meta.len()));
                    }
                })?;
            }
            None => walk(&folder, &mut |path, meta| {
                if stale(meta) {
                    files.push((path.to_path_buf(), meta.len()));
                }
            })?,
        }
        files.sort();
        files.dedup();
        Ok(Vacuumed { table, files })
    }

    /// The column names of a table as stored (for tables whose columns
    /// depend on the data, see [`Table::has_data_dependent_columns`]).
    pub async fn stored_columns(&self, table: Table) -> Result<Vec<String>> {
        let Some(delta) = self.load(table).await? else { return Ok(Vec::new()) };
        let snapshot = delta.snapshot().map_err(self.delta_err(table))?;
        Ok(snapshot.schema().fields().map(|f| f.name().to_string()).collect())
    }

    /// Replaces a table's content (and schema) with batches streamed from
    /// `batches`, in one commit, without holding them all in memory. The
    /// producer ends the stream by dropping its sender; an `Err` it sends
    /// aborts the write and nothing is committed. Returns the new version.
    ///
    /// Each receiver is one partition of the write, encoded to Parquet on its
    /// own task: give it as many as there are cores to spare. Text, 32-bit
    /// integer and date columns are dictionary-encoded (counts and days have
    /// few distinct values); 64-bit numbers are not (their dictionaries
    /// rarely pay for the hashing at write time).
    pub async fn overwrite_streaming(
        &self,
        table: Table,
        schema: SchemaRef,
        partitions: Vec<BatchReceiver>,
    ) -> Result<u64> {
        self.write_streaming(table, schema, partitions, None).await
    }

    /// [`Warehouse::overwrite_streaming`] that records `inputs` (a
    /// description of what the content was computed from) in the commit, for
    /// [`Warehouse::last_inputs`]: a re-run of an interrupted command
    /// recognises a commit it would make again and keeps it.
    pub async fn overwrite_streaming_with_inputs(
        &self,
        table: Table,
        schema: SchemaRef,
        partitions: Vec<BatchReceiver>,
        inputs: &str,
    ) -> Result<u64> {
        self.write_streaming(table, schema, partitions, Some(inputs)).await
    }

    /// The version of a table and the `inputs` its newest commit recorded
    /// ([`Warehouse::overwrite_streaming_with_inputs`]); `None` when the
    /// table does not exist or its newest commit recorded none.
    pub async fn last_inputs(&self, table: Table) -> Result<Option<(u64, String)>> {
        let Some(delta) = self.load(table).await? else { return Ok(None) };
        let Some(version) = delta.version() else { return Ok(None) };
        let newest: Vec<deltalake::kernel::CommitInfo> =
            delta.history(Some(1)).try_collect().await.map_err(self.delta_err(table))?;
        let inputs = newest.first().and_then(|c| c.info.get(INPUTS_KEY)).and_then(|v| v.as_str());
        Ok(inputs.map(|i| (version, i.to_string())))
    }

    /// Each partition is encoded to Parquet by a writer on its own blocking
    /// thread, so the partitions use as many cores as there are: a Delta
    /// `write` of a many-partition plan drains every partition into one
    /// writer task, which made the `features` encoding of a tag run
    /// single-threaded (one core at ~90 % while the tag evaluation waited
    /// for it). The files bypass the page cache ([`DirectParts`]) and are
    /// committed together as one overwrite.
    async fn write_streaming(
        &self,
        table: Table,
        schema: SchemaRef,
        partitions: Vec<BatchReceiver>,
        inputs: Option<&str>,
    ) -> Result<u64> {
        check_schema(table, &schema)?;
        if !table.partition_columns().is_empty() {
            return Err(Error::Unsupported {
                table: table.name(),
                message: "a streaming overwrite of a partitioned table".into(),
            });
        }
        let dir = self.table_path(table);
        std::fs::create_dir_all(&dir).map_err(|source| Error::File { path: dir.clone(), source })?;
        let props = parquet_properties(table, &schema);
        let id = uuid::Uuid::new_v4();
        let writers: Vec<_> = partitions
            .into_iter()
            .enumerate()
            .map(|(k, mut rx)| {
                let mut parts = DirectParts::new(
                    table,
                    dir.clone(),
                    schema.clone(),
                    props.clone(),
                    TARGET_FILE_SIZE,
                    format!("{id}-{k}"),
                );
                // Encoding is CPU work and direct writes wait for the
                // device: a blocking thread per partition, not a task.
                tokio::task::spawn_blocking(move || {
                    while let Some(batch) = rx.blocking_recv() {
                        let written = match batch {
                            Ok(batch) => parts.write(&batch),
                            Err(message) => Err(Error::Producer { table: table.name(), message }),
                        };
                        if let Err(e) = written {
                            parts.abort();
                            return Err(e);
                        }
                    }
                    parts.finish()
                })
            })
            .collect();
        let mut adds = Vec::new();
        let mut failed = None;
        // Every writer runs to its end (a failed one drops its receiver,
        // which stops the producer); the first error is the answer, but
        // for a writer's own error over the producer's: when one writer
        // fails (a full disk), the producer stops and tells the others,
        // and the cause is the first writer's error, not "stopped". A
        // failed write deletes its files (a killed one leaves them to
        // `vacuum`).
        for w in writers {
            match w.await {
                Ok(Ok(files)) => adds.extend(files),
                Ok(Err(e)) => {
                    if matches!(failed, None | Some(Error::Producer { .. })) && !matches!(e, Error::Producer { .. }) {
                        failed = Some(e);
                    } else {
                        failed.get_or_insert(e);
                    }
                }
                Err(e) => {
                    failed.get_or_insert(Error::Producer {
                        table: table.name(),
                        message: format!("writer panicked: {e}"),
                    });
                }
            }
        }
        if let Some(e) = failed {
            self.remove_added(table, &adds);
            return Err(e);
        }
        self.commit_overwrite(table, schema, &adds, inputs).await
    }
}

/// Parquet files of one table written by one process and committed by
/// another (a cluster's tag refresh: each executor writes its members'
/// `features`, the coordinator commits them all at once). Until
/// [`Warehouse::commit_parts`] they are unreferenced files no reader sees;
/// a run that fails leaves them to the next VACUUM.
pub struct PartWriter {
    table: Table,
    warehouse: Warehouse,
    writer: RecordBatchWriter,
}

impl PartWriter {
    /// Writes one batch (in the writer's schema).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer.write(batch).await.map_err(self.warehouse.delta_err(self.table))
    }

    /// Closes the files written so far and returns their Delta `add`
    /// actions as JSON; the writer goes on with new files. A writer from
    /// [`Warehouse::file_writer`] returns exactly one file per call (none
    /// when nothing was written since the last one).
    pub async fn flush(&mut self) -> Result<Vec<String>> {
        let adds = self.writer.flush().await.map_err(self.warehouse.delta_err(self.table))?;
        adds.iter()
            .map(|a| {
                serde_json::to_string(a).map_err(|e| self.warehouse.delta_err(self.table)(DeltaTableError::from(e)))
            })
            .collect()
    }

    /// Closes the files; returns their Delta `add` actions as JSON, for
    /// [`Warehouse::commit_parts`] or [`Warehouse::commit_files`].
    pub async fn finish(mut self) -> Result<Vec<String>> {
        self.flush().await
    }
}

impl Warehouse {
    /// Starts writing files of `table` with `schema` that
    /// [`Warehouse::commit_parts`] commits later, in any process.
    pub fn part_writer(&self, table: Table, schema: SchemaRef) -> Result<PartWriter> {
        self.writer_of(table, schema, TARGET_FILE_SIZE)
    }

    /// Like [`Warehouse::part_writer`], but a file ends only at
    /// [`PartWriter::flush`], so the caller knows which rows each file holds.
    pub fn file_writer(&self, table: Table, schema: SchemaRef) -> Result<PartWriter> {
        self.writer_of(table, schema, 0)
    }

    fn writer_of(&self, table: Table, schema: SchemaRef, target_size: u64) -> Result<PartWriter> {
        check_schema(table, &schema)?;
        let path = self.table_path(table);
        std::fs::create_dir_all(&path).map_err(|source| Error::File { path: path.clone(), source })?;
        let url = deltalake::ensure_table_uri(path.to_string_lossy()).map_err(self.delta_err(table))?;
        let partitions = table.partition_columns();
        let partitions = (!partitions.is_empty()).then(|| partitions.iter().map(|c| c.to_string()).collect());
        let writer = RecordBatchWriter::try_new(url.as_str(), schema.clone(), partitions, None)
            .map_err(self.delta_err(table))?
            .with_writer_properties(parquet_properties(table, &schema))
            .with_target_file_size(target_size);
        Ok(PartWriter { table, warehouse: self.clone(), writer })
    }

    /// Replaces the content (and schema) of `table` with the files of
    /// [`PartWriter::finish`] in one commit. Returns the new version.
    pub async fn commit_parts(&self, table: Table, schema: SchemaRef, adds: &[String]) -> Result<u64> {
        self.commit_overwrite(table, schema, adds, None).await
    }

    /// [`Warehouse::commit_parts`], recording `inputs` in the commit (see
    /// [`Warehouse::overwrite_streaming_with_inputs`]).
    async fn commit_overwrite(
        &self,
        table: Table,
        schema: SchemaRef,
        adds: &[String],
        inputs: Option<&str>,
    ) -> Result<u64> {
        use deltalake::kernel::Action;
        use deltalake::kernel::transaction::CommitBuilder;
        use deltalake::protocol::DeltaOperation;
        check_schema(table, &schema)?;
        let err = self.delta_err(table);
        let delta = match self.load(table).await? {
            Some(t) => t,
            None => self.create(table).await?,
        };
        let snapshot = delta.snapshot().map_err(&err)?;
        let mut actions = Vec::with_capacity(adds.len() + 1);
        let kernel: StructType = schema.as_ref().try_into_kernel().map_err(|e| err(DeltaTableError::from(e)))?;
        if snapshot.schema().as_ref() != &kernel {
            let configuration: Vec<(String, String)> =
                snapshot.metadata().configuration().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let metadata = deltalake::kernel::new_metadata(&kernel, table.partition_columns().iter(), configuration)
                .map_err(|e| err(e.into()))?;
            actions.push(Action::Metadata(metadata));
        }
        for file in snapshot.log_data() {
            actions.push(Action::Remove(file.remove_action(true)));
        }
        for a in adds {
            let add: deltalake::kernel::Add = serde_json::from_str(a).map_err(|e| err(DeltaTableError::from(e)))?;
            actions.push(Action::Add(add));
        }
        let operation = DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by: None, predicate: None };
        let metadata = inputs.map(|i| (INPUTS_KEY.to_string(), serde_json::Value::String(i.to_string())));
        let done = CommitBuilder::default()
            .with_actions(actions)
            .with_app_metadata(metadata.into_iter().collect())
            .build(Some(snapshot), delta.log_store(), operation)
            .await
            .map_err(self.commit_err(table, "another writer replaced the table at the same time"))?;
        Ok(done.version() as u64)
    }
}

/// The text columns of `orders` with nearly one value per order: written
/// plain, and with statistics per column chunk only.
///
/// A row group of 128 Ki generated lines holds ~54 k orders of ~12 k
/// members; their values repeat only in neighbouring lines, which Snappy
/// finds without interning every value (the writers' dictionaries were
/// ~11 % of a backfill's CPU). Their per-page minima and maxima cost two
/// string comparisons a line; a query for one member or order still skips
/// row groups by their column chunk statistics. Measured (release, 2
/// cores, 105 M lines into 42 M members, alternated): 72.7 and 77.3 s →
/// 69.1 and 72.4 s, user CPU 92–93 → 86–87 s, and the files 4 % smaller
/// (2.05 → 1.96 GB).
const NEARLY_UNIQUE_ORDER_TEXT: [&str; 2] = ["order_id", "member_id"];

/// The 64-bit columns of `orders` whose values repeat within a row group:
/// dictionary-encoded.
///
/// A row group of 128 Ki generated lines holds ~12 k member keys, ~54 k
/// order times, ~15 k amounts and ~6.6 k discounts. Plain and Snappy
/// they took 1.8–8 MB a file each, and decompressing them was most of the
/// tag refresh's Snappy time (18.6 % of its features phase at 42 M
/// members, where it reads them all). A dictionary stops growing at the
/// writer's page size limit (1 MiB), after which the rest of the column
/// chunk is written plain: data with more distinct values costs no more
/// than before.
const REPEATING_ORDER_NUMBERS: [&str; 4] = ["member_key", "ordered_at", "amount", "discount"];

/// Parquet settings of data-dependent wide tables: small row groups bound
/// each encoder's memory; text, 32-bit integers and dates (few distinct
/// values) dictionary-encoded, 64-bit numbers not (but for
/// [`REPEATING_ORDER_NUMBERS`]), nor [`NEARLY_UNIQUE_ORDER_TEXT`].
///
/// The `features` table is rewritten whole on every night, beside the tag
/// evaluation and on the same cores, so its encoding is chosen for the
/// cost of writing it:
/// - its integers (per-member counts and days, the bulk of its 88 columns)
///   are not interned (interning every value was the largest single cost)
///   but delta-encoded (`DELTA_BINARY_PACKED`): small counts bit-pack to a
///   few bits a value, which leaves Snappy a tenth of the bytes;
/// - those integers are not Snappy-compressed: after bit-packing, Snappy
///   found only ~6 % more to gain, at a pass over every page;
/// - only `member_key` has statistics (per column chunk: no page index),
///   the one column read by its statistics (a chunk of members reads just
///   the row groups of its keys, see `scan`). Nothing prunes `features` by
///   any other column: every row group of 128 Ki members spans nearly the
///   whole range of each feature, so their minima and maxima cost a
///   comparison per value (two per double, NaN-aware) and skip nothing.
///
/// Measured (release, 2 cores, `taglake tag`): interning off took 10 M
/// members from 30.6–35.4 s to 28.2–29.7 s; delta and chunk statistics
/// took 42 M members from 186 to 175 CPU-seconds (wall 99.7 s → 91.1–94.8
/// s) and the table from ~6.1 to 4.5 GB. Statistics on `member_key` only
/// and uncompressed integers took the tags phase's median from 53.1 to 50.6
/// s at 42 M and from 14.6 to 12.4 s at 10 M (binaries alternated on one
/// warehouse, `benches/README.md`).
fn parquet_properties(table: Table, schema: &SchemaRef) -> parquet::file::properties::WriterProperties {
    use parquet::basic::Encoding;
    use parquet::file::properties::EnabledStatistics;
    let mut props = parquet::file::properties::WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024));
    let features = table == Table::Features;
    if features {
        props = props
            .set_statistics_enabled(EnabledStatistics::None)
            .set_column_statistics_enabled(Table::Features.key()[0].into(), EnabledStatistics::Chunk);
    }
    for f in schema.fields() {
        use arrow::datatypes::DataType::*;
        let column = || f.name().as_str().into();
        match f.data_type() {
            Utf8 if table == Table::Orders && NEARLY_UNIQUE_ORDER_TEXT.contains(&f.name().as_str()) => {
                props = props.set_column_statistics_enabled(column(), EnabledStatistics::Chunk)
            }
            Utf8 | Date32 => props = props.set_column_dictionary_enabled(column(), true),
            Int64 | Float64 | Timestamp(..)
                if table == Table::Orders && REPEATING_ORDER_NUMBERS.contains(&f.name().as_str()) =>
            {
                props = props.set_column_dictionary_enabled(column(), true)
            }
            Int32 if !features => props = props.set_column_dictionary_enabled(column(), true),
            // Serialized roaring bitmaps: Snappy made a 42 M-member
            // snapshot 5.5 % smaller (1.41 against 1.49 GB) for a second of
            // the commit, on the one thread that encodes the snapshot, and
            // every reader then decompressed it again.
            Binary => props = props.set_column_compression(column(), parquet::basic::Compression::UNCOMPRESSED),
            Int32 | Int64 if features => {
                props = props
                    .set_column_encoding(column(), Encoding::DELTA_BINARY_PACKED)
                    .set_column_compression(column(), parquet::basic::Compression::UNCOMPRESSED)
            }
            _ => {}
        }
    }
    props.build()
}

/// An open append to one table; see [`Warehouse::append`].
///
/// Its files are written as they come, past the page cache, by one
/// [`DirectParts`] per partition value: a tag snapshot at 42 M members is
/// 1.4 GB of bitmaps, and through Delta's writer it was encoded into one
/// buffer in memory, then copied into the page cache at ~6 CPU-seconds a
/// GB on the machine this project is measured on (see [`crate::direct`]).
pub struct TableWriter {
    warehouse: Warehouse,
    table: Table,
    delta: DeltaTable,
    /// Unique to this append: its files' names.
    id: String,
    /// The writer of each partition value met (`None`: an unpartitioned
    /// table), in the order met. Behind a mutex only to make the writer
    /// `Sync` (Parquet's writer is not), as async callers hold `&self`
    /// across awaits; every use has `&mut self`.
    parts: std::sync::Mutex<Vec<(Option<i64>, DirectParts)>>,
    rows: u64,
    claims: Vec<deltalake::kernel::Transaction>,
}

impl TableWriter {
    /// Writes one batch (in the table's exact Arrow schema).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        check_batch(self.table, &batch)?;
        self.write_parts(&batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes a checked batch into the files of its partition values.
    fn write_parts(&mut self, batch: &RecordBatch) -> Result<()> {
        let [column] = self.table.partition_columns() else {
            if !self.table.partition_columns().is_empty() {
                return Err(Error::Unsupported {
                    table: self.table.name(),
                    message: "an append to a table partitioned by more than one column".into(),
                });
            }
            return self.parts_of(None, &batch.schema())?.write(batch);
        };
        // Delta's data files leave the partition column out.
        let at = batch.schema().index_of(column).map_err(|e| self.batch_err(e.to_string()))?;
        let values = arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::Int64Type>(batch.column(at))
            .ok_or_else(|| {
                self.batch_err(format!("partition column `{column}` is {}, not Int64", batch.column(at).data_type()))
            })?;
        if arrow::array::Array::null_count(values) > 0 {
            return Err(self.batch_err(format!("partition column `{column}` holds nulls")));
        }
        let rest: Vec<usize> = (0..batch.num_columns()).filter(|&i| i != at).collect();
        let mut distinct: Vec<i64> = values.values().to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for &value in &distinct {
            let part = match distinct.len() {
                1 => batch.clone(),
                _ => {
                    let mask = arrow::compute::kernels::cmp::eq(values, &arrow::array::Int64Array::new_scalar(value))
                        .map_err(|e| self.batch_err(e.to_string()))?;
                    arrow::compute::filter_record_batch(batch, &mask).map_err(|e| self.batch_err(e.to_string()))?
                }
            };
            let part = part.project(&rest).map_err(|e| self.batch_err(e.to_string()))?;
            self.parts_of(Some(value), &part.schema())?.write(&part)?;
        }
        Ok(())
    }

    fn batch_err(&self, message: String) -> Error {
        Error::BatchSchema { table: self.table.name(), message }
    }

    /// The writer of one partition value (opened on first use).
    fn parts_of(&mut self, value: Option<i64>, schema: &SchemaRef) -> Result<&mut DirectParts> {
        let all = self.parts.get_mut().unwrap_or_else(|e| e.into_inner());
        let k = match all.iter().position(|(v, _)| *v == value) {
            Some(k) => k,
            None => {
                let (table, dir) = (self.table, self.warehouse.table_path(self.table));
                let props = parquet_properties(table, schema);
                let id = format!("{}-{}", self.id, all.len());
                let parts = DirectParts::new(table, dir, schema.clone(), props, TARGET_FILE_SIZE, id);
                let parts = match (value, table.partition_columns()) {
                    (Some(v), [column]) => parts.in_partition(&[(column, v)]),
                    _ => parts,
                };
                all.push((value, parts));
                all.len() - 1
            }
        };
        Ok(&mut all[k].1)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The table's files as of the version this writer appends to: what an
    /// id allocation must read so that [`TableWriter::claim`] protects it.
    pub fn files(&self) -> Result<Vec<DataFile>> {
        self.warehouse.files_of(self.table, &self.delta)
    }

    /// The last id claimed under `app` (see [`TableWriter::claim`]) as of
    /// the version this writer appends to.
    pub async fn claimed(&self, app: &str) -> Result<Option<i64>> {
        let snapshot = self.delta.snapshot().map_err(self.warehouse.delta_err(self.table))?;
        snapshot
            .transaction_version(self.delta.log_store().as_ref(), app)
            .await
            .map_err(self.warehouse.delta_err(self.table))
    }

    /// Makes the commit claim `id` under the application id `app` (a Delta
    /// `txn` action). Delta's conflict checker then refuses the commit if
    /// another commit claiming `app` landed after the version this writer
    /// appends to: two writers that read the same largest id and append the
    /// next one cannot both commit, with or without the writer lock.
    pub fn claim(&mut self, app: &str, id: i64) {
        self.claims.push(deltalake::kernel::Transaction::new(app, id));
    }

    /// Commits everything written as one Delta commit. Returns the new
    /// version, or `None` when no row was written (no commit is made). A
    /// lost claim is [`Error::Conflict`] and commits nothing; a commit that
    /// fails deletes the files written.
    pub async fn commit(mut self) -> Result<Option<u64>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let (warehouse, table) = (self.warehouse.clone(), self.table);
        let what = match self.claims.first() {
            Some(c) => format!("another writer claimed `{}` {} (or later) at the same time", c.app_id, c.version),
            None => "another writer changed the table at the same time".to_string(),
        };
        let mut adds = Vec::new();
        let mut failed = None;
        for (_, parts) in self.take_parts() {
            match failed {
                Some(_) => parts.abort(),
                None => match parts.finish() {
                    Ok(a) => adds.extend(a),
                    Err(e) => failed = Some(e),
                },
            }
        }
        let committed = match failed {
            Some(e) => Err(e),
            None => self.commit_adds(&adds).await.map_err(warehouse.commit_err(table, &what)),
        };
        if committed.is_err() {
            warehouse.remove_added(table, &adds);
        }
        committed.map(Some)
    }

    fn take_parts(&mut self) -> Vec<(Option<i64>, DirectParts)> {
        std::mem::take(self.parts.get_mut().unwrap_or_else(|e| e.into_inner()))
    }

    /// One commit of `adds` and the claims, on the version this writer
    /// read: Delta's conflict checker compares it with every commit since.
    async fn commit_adds(&self, adds: &[String]) -> std::result::Result<u64, DeltaTableError> {
        let partition_by = Some(self.table.partition_columns().iter().map(|c| c.to_string()).collect())
            .filter(|p: &Vec<String>| !p.is_empty());
        let operation =
            deltalake::protocol::DeltaOperation::Write { mode: SaveMode::Append, partition_by, predicate: None };
        crate::changes::commit_on(&self.delta, Vec::new(), adds, self.claims.clone(), operation).await
    }
}

/// An append dropped without its commit deletes its files.
impl Drop for TableWriter {
    fn drop(&mut self) {
        for (_, parts) in self.take_parts() {
            parts.abort();
        }
    }
}

fn column_list(table: Table) -> String {
    table.columns().iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

fn projected_schema(table: Table, names: &[&str]) -> SchemaRef {
    let full = table.arrow_schema();
    let fields: Vec<_> = names.iter().map(|n| full.field_with_name(n).expect("checked").clone()).collect();
    Schema::new(fields).into()
}

fn check_batch(table: Table, batch: &RecordBatch) -> Result<()> {
    check_schema(table, &batch.schema())
}

/// The fixed columns must come first, in order and type; tables with
/// data-dependent columns may have more after them.
fn check_schema(table: Table, got: &SchemaRef) -> Result<()> {
    check_columns(table, got, &table.arrow_schema(), !table.has_data_dependent_columns())
}

fn check_table_schema(wh: &Warehouse, table: Table, delta: &DeltaTable) -> Result<()> {
    let snapshot = delta.snapshot().map_err(wh.delta_err(table))?;
    let on_disk = snapshot.schema();
    let names: Vec<String> = on_disk.fields().map(|f| f.name().to_string()).collect();
    for c in table.columns() {
        if !names.iter().any(|n| n == c.name) {
            return Err(Error::Schema {
                table: table.name(),
                path: wh.table_path(table),
                message: format!("column `{}` is missing; the table has {}", c.name, names.join(", ")),
                cause: None,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::Int64Type;
    use std::sync::Arc;

    #[test]
    fn features_integers_are_not_dictionary_encoded_other_tables_are() {
        use arrow::datatypes::{DataType, Field, Schema};
        use parquet::schema::types::ColumnPath;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("quantity", DataType::Int32, true),
            Field::new("city", DataType::Utf8, true),
            Field::new("spend", DataType::Float64, true),
        ]));
        let on = |table: Table, column: &str| {
            parquet_properties(table, &schema).dictionary_enabled(&ColumnPath::from(column))
        };
        assert!(on(Table::Orders, "quantity") && on(Table::Orders, "city") && !on(Table::Orders, "spend"));
        assert!(!on(Table::Features, "quantity") && on(Table::Features, "city") && !on(Table::Features, "spend"));
        let encoding =
            |table: Table, column: &str| parquet_properties(table, &schema).encoding(&ColumnPath::from(column));
        assert_eq!(encoding(Table::Features, "quantity"), Some(parquet::basic::Encoding::DELTA_BINARY_PACKED));
        assert_eq!(encoding(Table::Features, "spend"), None);
        assert_eq!(encoding(Table::Orders, "quantity"), None);
        use parquet::file::properties::EnabledStatistics;
        let statistics = |table: Table, column: &str| {
            parquet_properties(table, &schema).statistics_enabled(&ColumnPath::from(column))
        };
        // `features` keeps statistics on its key only, the one column read by them.
        assert_eq!(statistics(Table::Features, "member_key"), EnabledStatistics::Chunk);
        for column in ["city", "quantity", "spend"] {
            assert_eq!(statistics(Table::Features, column), EnabledStatistics::None, "{column}");
        }
        assert_eq!(statistics(Table::Orders, "city"), EnabledStatistics::Page);
        let ids: SchemaRef = Table::Orders.arrow_schema();
        let orders = parquet_properties(Table::Orders, &ids);
        for column in NEARLY_UNIQUE_ORDER_TEXT {
            assert!(!orders.dictionary_enabled(&ColumnPath::from(column)), "{column}");
            assert_eq!(orders.statistics_enabled(&ColumnPath::from(column)), EnabledStatistics::Chunk, "{column}");
        }
        assert!(orders.dictionary_enabled(&ColumnPath::from("sku")));
        assert_eq!(orders.statistics_enabled(&ColumnPath::from("sku")), EnabledStatistics::Page);
        use parquet::basic::Compression;
        let compression =
            |table: Table, column: &str| parquet_properties(table, &schema).compression(&ColumnPath::from(column));
        assert_eq!(compression(Table::Features, "quantity"), Compression::UNCOMPRESSED);
        assert_eq!(compression(Table::Features, "spend"), Compression::SNAPPY);
        assert_eq!(compression(Table::Orders, "quantity"), Compression::SNAPPY);
    }

    /// The `features` encodings read back value for value, nulls included,
    /// through the same Parquet reader every scan uses.
    #[test]
    fn features_encodings_read_back_exactly() {
        use arrow::array::{Float64Array, Int32Array};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("member_key", DataType::Int64, false),
            Field::new("orders_total", DataType::Int32, true),
            Field::new("spend_total", DataType::Float64, true),
        ]));
        let n = 300_000i64;
        let keys = Int64Array::from_iter_values(0..n);
        let counts: Int32Array = (0..n)
            .map(|i| (i % 7 != 3).then(|| ((i * 2_654_435_761) % 97) as i32 - (i % 5 == 0) as i32 * i32::MAX))
            .collect();
        let spend: Float64Array = (0..n).map(|i| (i % 11 != 0).then_some(i as f64 * 0.37)).collect();
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(counts), Arc::new(spend)]).unwrap();
        let file = tempfile::tempfile().unwrap();
        let props = parquet_properties(Table::Features, &schema);
        let mut w = parquet::arrow::ArrowWriter::try_new(file.try_clone().unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        let meta = w.close().unwrap();
        // Every row group can be found by its keys, and by nothing else.
        for rg in meta.row_groups() {
            assert!(rg.column(0).statistics().is_some_and(|s| s.min_bytes_opt().is_some()));
            assert!(rg.columns()[1..].iter().all(|c| c.statistics().is_none()));
        }
        let read: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192)
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(arrow::compute::concat_batches(&batch.schema(), &read).unwrap(), batch);
    }

    /// A `member_ids` batch of `(member_id, member_key)` pairs.
    pub(crate) fn ids(pairs: &[(&str, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            Table::MemberIds.arrow_schema(),
            vec![
                Arc::new(StringArray::from(pairs.iter().map(|p| p.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(pairs.iter().map(|p| p.1).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn missing_table_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        assert!(wh.read(Table::Orders, None).await.unwrap().is_empty());
        assert_eq!(wh.version(Table::Orders).await.unwrap(), None);
        assert_eq!(wh.row_count(Table::Orders).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn append_is_one_commit_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let mut w = wh.append(Table::MemberIds).await.unwrap();
        w.write(ids(&[("a", 0), ("b", 1)])).await.unwrap();
        w.write(ids(&[("c", 2)])).await.unwrap();
        let v = w.commit().await.unwrap().unwrap();
        assert_eq!(wh.version(Table::MemberIds).await.unwrap(), Some(v));
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 3);
        let keys = wh.read(Table::MemberIds, Some(&["member_key"])).await.unwrap();
        let mut all: Vec<i64> = keys
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
            .collect();
        all.sort();
        assert_eq!(all, [0, 1, 2]);
    }

    #[tokio::test]
    async fn uncommitted_writer_leaves_nothing_visible() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let mut w = wh.append(Table::MemberIds).await.unwrap();
        w.write(ids(&[("a", 0)])).await.unwrap();
        assert_eq!(parquet_files(dir.path()), 1, "written as it comes");
        drop(w);
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 0);
        assert_eq!(parquet_files(dir.path()), 0, "a dropped append deletes its files");
    }

    /// Parquet files under `dir`, at any depth.
    fn parquet_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| match p.is_dir() {
                true => parquet_files(&p),
                false => usize::from(p.extension().is_some_and(|x| x == "parquet")),
            })
            .sum()
    }

    #[tokio::test]
    async fn overwrite_replaces_and_keeps_history() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        wh.overwrite(Table::MemberIds, vec![ids(&[("a", 0), ("b", 1)])]).await.unwrap();
        let v = wh.overwrite(Table::MemberIds, vec![ids(&[("z", 9)])]).await.unwrap();
        assert!(v >= 1);
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 1);
    }

    /// `member_key` min/max of every row group of the current files.
    async fn key_bands(wh: &Warehouse, table: Table) -> Vec<(i64, i64)> {
        let files = crate::scan::table_files(wh, table).await.unwrap();
        crate::scan::member_key_bands(table, &files).unwrap().into_iter().map(|(lo, hi, _)| (lo, hi)).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sorting_by_member_key_keeps_the_rows_and_gives_disjoint_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        assert_eq!(wh.sort_by_member_key(Table::MemberIds, 1 << 20).await.unwrap(), Sorted::default());
        // Four appends, each a scattered quarter of 600,000 keys: every file
        // spans the whole key space, as a time-ordered export does.
        let n = 600_000i64;
        let names: Vec<String> = (0..n).map(|k| format!("m{k}")).collect();
        for part in 0..4 {
            let keys: Vec<i64> = (0..n).map(|i| (i * 7_919) % n).filter(|k| k % 4 == part).collect();
            let pairs: Vec<(&str, i64)> = keys.iter().map(|&k| (names[k as usize].as_str(), k)).collect();
            let mut w = wh.append(Table::MemberIds).await.unwrap();
            w.write(ids(&pairs)).await.unwrap();
            w.commit().await.unwrap();
        }
        let before = key_bands(&wh, Table::MemberIds).await;
        assert!(before.iter().all(|&(lo, hi)| hi - lo > n / 2), "{before:?}");
        let rows = |batches: Vec<RecordBatch>| {
            let mut v: Vec<(String, i64)> = batches
                .iter()
                .flat_map(|b| {
                    let (s, k) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
                    (0..b.num_rows()).map(|i| (s.value(i).to_string(), k.value(i))).collect::<Vec<_>>()
                })
                .collect();
            v.sort();
            v
        };
        let content = rows(wh.read(Table::MemberIds, None).await.unwrap());
        let version = wh.version(Table::MemberIds).await.unwrap().unwrap();
        // 4 MiB of sort memory for ~25 MiB of rows and sort keys: it spills.
        let sorted = wh.sort_by_member_key(Table::MemberIds, 4 << 20).await.unwrap();
        assert_eq!(sorted.version, Some(version + 1));
        assert_eq!(sorted.files_removed, 4);
        assert_eq!(sorted.files_added as usize, wh.files(Table::MemberIds).await.unwrap().len());
        assert_eq!(rows(wh.read(Table::MemberIds, None).await.unwrap()), content);
        let mut after = key_bands(&wh, Table::MemberIds).await;
        assert!(after.len() >= 3, "{after:?}");
        after.sort();
        for w in after.windows(2) {
            assert!(w[0].1 < w[1].0, "row groups overlap: {w:?}");
        }
        assert_eq!((after[0].0, after.last().unwrap().1), (0, n - 1));
        // A table without member keys is refused by name.
        let err = wh.sort_by_member_key(Table::Products, 1 << 20).await.unwrap_err().to_string();
        assert!(err.contains("products") && err.contains("member_key"), "{err}");
    }

    fn features(keys: &[i64], extra: &str) -> RecordBatch {
        let fixed = Table::Features.arrow_schema();
        let n = keys.len();
        let mut fields: Vec<arrow::datatypes::Field> =
            fixed.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let mut cols: Vec<ArrayRef> = fixed
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "member_key" {
                    Arc::new(Int64Array::from(keys.to_vec())) as ArrayRef
                } else {
                    arrow::array::new_null_array(f.data_type(), n)
                }
            })
            .collect();
        fields.push(arrow::datatypes::Field::new(extra, arrow::datatypes::DataType::Float64, true));
        cols.push(Arc::new(arrow::array::Float64Array::from(vec![0.5; n])));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    async fn stream(wh: &Warehouse, batches: Vec<RecordBatch>, fail: bool) -> Result<u64> {
        let schema = batches[0].schema();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let producer = tokio::spawn(async move {
            for b in batches {
                tx.send(Ok(b)).await.unwrap();
            }
            if fail {
                tx.send(Err("the producer failed".into())).await.unwrap();
            }
        });
        let v = wh.overwrite_streaming(Table::Features, schema, vec![rx]).await;
        producer.await.unwrap();
        v
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_writer_is_the_answer_not_the_stop_it_caused_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let good = features(&[0, 1], "spend_share_beauty");
        // A batch the writers' schema does not take: that writer fails on its own.
        let other = features(&[2], "spend_share_snacks");
        let (tx0, rx0) = tokio::sync::mpsc::channel(4);
        let (tx1, rx1) = tokio::sync::mpsc::channel(4);
        tx0.send(Ok(good.clone())).await.unwrap();
        tx0.send(Err("the features writer stopped".into())).await.unwrap();
        tx1.send(Ok(good.clone())).await.unwrap();
        tx1.send(Ok(other)).await.unwrap();
        drop((tx0, tx1));
        let err = wh.overwrite_streaming(Table::Features, good.schema(), vec![rx0, rx1]).await.unwrap_err();
        assert!(matches!(err, Error::BatchSchema { .. }), "{err}");
        assert_eq!(wh.version(Table::Features).await.unwrap(), None);
        let left: Vec<_> = std::fs::read_dir(wh.table_path(Table::Features))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".parquet"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn streaming_overwrite_replaces_schema_and_rows_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        stream(&wh, vec![features(&[0, 1], "spend_share_beauty"), features(&[2], "spend_share_beauty")], false)
            .await
            .unwrap();
        assert_eq!(wh.row_count(Table::Features).await.unwrap(), 3);
        assert!(wh.stored_columns(Table::Features).await.unwrap().contains(&"spend_share_beauty".to_string()));
        // The next run has other categories: the schema follows.
        let v = stream(&wh, vec![features(&[5], "spend_share_snacks")], false).await.unwrap();
        let cols = wh.stored_columns(Table::Features).await.unwrap();
        assert!(cols.contains(&"spend_share_snacks".to_string()) && !cols.contains(&"spend_share_beauty".to_string()));
        assert_eq!(wh.row_count(Table::Features).await.unwrap(), 1);
        assert_eq!(wh.files(Table::Features).await.unwrap().len(), 1);
        // A producer error commits nothing.
        let err = stream(&wh, vec![features(&[7, 8], "spend_share_snacks")], true).await.unwrap_err().to_string();
        assert!(err.contains("the producer failed"), "{err}");
        assert_eq!(wh.version(Table::Features).await.unwrap(), Some(v));
        assert_eq!(wh.row_count(Table::Features).await.unwrap(), 1);
        // Vacuum keeps the current and the previous version (a server may
        // still read it) and drops the older files.
        let lock = wh.lock_writer("storage test", crate::Wait::No).unwrap();
        assert!(wh.files(Table::Features).await.unwrap().len() == 1);
        let on_disk = |dir: &std::path::Path| {
            std::fs::read_dir(dir.join("features"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
                .count()
        };
        assert!(on_disk(dir.path()) > 1);
        let recent = wh.vacuum(&lock, Table::Features, chrono::Duration::days(7), false).await.unwrap();
        assert!(recent.files.is_empty(), "all are recent: {recent:?}");
        assert_eq!(on_disk(dir.path()), 2, "the current and the previous version");
        let v = stream(&wh, vec![features(&[6], "spend_share_snacks")], false).await.unwrap();
        let plan = wh.vacuum(&lock, Table::Features, chrono::Duration::zero(), true).await.unwrap();
        assert!(!plan.files.is_empty() && plan.bytes() > 0, "{plan:?}");
        assert_eq!(on_disk(dir.path()), 3, "a dry run deletes nothing");
        assert_eq!(wh.vacuum(&lock, Table::Features, chrono::Duration::zero(), false).await.unwrap(), plan);
        assert_eq!(on_disk(dir.path()), 2, "the oldest version's file is gone");
        assert_eq!(wh.version(Table::Features).await.unwrap(), Some(v));
        assert_eq!(wh.row_count(Table::Features).await.unwrap(), 1);
        // The fixed columns must lead.
        let wrong = ids(&[("a", 0)]);
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        assert!(wh.overwrite_streaming(Table::Features, wrong.schema(), vec![rx]).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_claimed_id_cannot_be_committed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        wh.overwrite(Table::MemberIds, vec![ids(&[("a", 0)])]).await.unwrap();
        // Two blind appends of the same next key both commit: why ids are claimed.
        for id in ["b", "c"] {
            let mut w = wh.append(Table::MemberIds).await.unwrap();
            w.write(ids(&[(id, 1)])).await.unwrap();
            w.commit().await.unwrap();
        }
        // Two writers read the same state and claim the same next id.
        let (mut first, mut second) =
            (wh.append(Table::MemberIds).await.unwrap(), wh.append(Table::MemberIds).await.unwrap());
        let next = |claimed: Option<i64>| claimed.unwrap_or(0) + 1;
        let (a, b) = (next(first.claimed("test.id").await.unwrap()), next(second.claimed("test.id").await.unwrap()));
        assert_eq!((a, b), (1, 1));
        assert_eq!(first.files().unwrap().len(), 3);
        first.claim("test.id", a);
        second.claim("test.id", b);
        first.write(ids(&[("d", 2)])).await.unwrap();
        second.write(ids(&[("e", 2)])).await.unwrap();
        first.commit().await.unwrap();
        let err = second.commit().await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
        let err = err.to_string();
        assert!(
            err.starts_with(
                "warehouse table `member_ids`: another writer claimed `test.id` 1 (or later) at the same time"
            ) && err.ends_with("nothing was committed, run the command again"),
            "{err}"
        );
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 4, "only the first claim committed");
        assert_eq!(parquet_files(dir.path()), 4, "the refused commit deleted its file");
        let third = wh.append(Table::MemberIds).await.unwrap();
        assert_eq!(third.claimed("test.id").await.unwrap(), Some(1));
        assert_eq!(third.claimed("other").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_commit_records_what_it_was_computed_from() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        assert_eq!(wh.last_inputs(Table::Features).await.unwrap(), None);
        let batch = features(&[0, 1], "spend_share_beauty");
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Ok(batch.clone())).await.unwrap();
        drop(tx);
        let v =
            wh.overwrite_streaming_with_inputs(Table::Features, batch.schema(), vec![rx], "inputs A").await.unwrap();
        assert_eq!(wh.last_inputs(Table::Features).await.unwrap(), Some((v, "inputs A".to_string())));
        stream(&wh, vec![batch], false).await.unwrap();
        assert_eq!(wh.last_inputs(Table::Features).await.unwrap(), None, "the newest commit recorded none");
    }

    /// Sets a file's modification time `age` in the past.
    fn age(path: &Path, age: std::time::Duration) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_table_written_before_columns_were_added_gains_them_and_old_files_read_them_as_null() {
        use arrow::array::{Array, BinaryArray, Date32Array, Float64Array, Int32Array, TimestampMicrosecondArray};
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        // `tags` as written before `bitmap_digest` and `bitmap_snapshot`
        // existed, with `bitmap` required.
        let t = Table::Tags;
        let full = t.arrow_schema();
        let old: SchemaRef = Arc::new(Schema::new(
            full.fields()[..14]
                .iter()
                .map(
                    |f| if f.name() == "bitmap" { f.as_ref().clone().with_nullable(false) } else { f.as_ref().clone() },
                )
                .collect::<Vec<_>>(),
        ));
        let kernel: StructType = old.as_ref().try_into_kernel().unwrap();
        let url = deltalake::ensure_table_uri(wh.table_path(t).to_string_lossy()).unwrap();
        let delta = DeltaTable::try_from_url(url)
            .await
            .unwrap()
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(["snapshot"])
            .await
            .unwrap();
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as arrow::array::ArrayRef;
        let row = RecordBatch::try_new(
            old.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int32Array::from(vec![0])),
                text("a"),
                text("f"),
                text(""),
                text("r"),
                Arc::new(Int64Array::from(vec![0])),
                Arc::new(Float64Array::from(vec![0.0])),
                Arc::new(BinaryArray::from(vec![b"x".as_slice()])),
                Arc::new(Date32Array::from(vec![0])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int64Array::from(vec![None::<i64>])),
                text("d"),
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
            ],
        )
        .unwrap();
        delta.write(vec![row]).await.unwrap();
        let v0 = wh.version(t).await.unwrap();
        // Appending brings the schema up to date in a commit of its own.
        let w = wh.append(t).await.unwrap();
        drop(w);
        assert_eq!(wh.version(t).await.unwrap(), v0.map(|v| v + 1));
        assert_eq!(wh.stored_columns(t).await.unwrap(), t.columns().iter().map(|c| c.name).collect::<Vec<_>>());
        let files: Vec<PathBuf> = wh.files(t).await.unwrap().into_iter().map(|f| f.path).collect();
        let wanted = [
            crate::scan::Wanted::plain(t, "name"),
            crate::scan::Wanted::plain(t, "bitmap_snapshot").or_null(),
            crate::scan::Wanted::plain(t, "bitmap_digest").or_null(),
        ];
        let seen = std::sync::Mutex::new(Vec::new());
        crate::scan::scan::<_, Error>(t, &files, &wanted, |b| {
            seen.lock().unwrap().push((b.num_rows(), b.column(1).null_count(), b.column(2).null_count()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.into_inner().unwrap(), [(1, 1, 1)]);
        // Without `or_null` a missing column is an error naming it.
        let err =
            crate::scan::scan::<_, Error>(t, &files, &[crate::scan::Wanted::plain(t, "bitmap_digest")], |_| Ok(()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("column `bitmap_digest` is missing"), "{err}");
        // Current tables are left alone.
        let v1 = wh.version(t).await.unwrap();
        drop(wh.append(t).await.unwrap());
        assert_eq!(wh.version(t).await.unwrap(), v1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn remove_uncommitted_takes_only_unreferenced_files_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let lock = wh.lock_writer("storage test", crate::Wait::No).unwrap();
        // Version 0 holds `old`; version 1 replaces it with `live`, so `old`
        // is what version 0 still reads.
        let mut w = wh.append(Table::MemberIds).await.unwrap();
        w.write(ids(&[("a", 0)])).await.unwrap();
        w.commit().await.unwrap();
        let old = wh.files(Table::MemberIds).await.unwrap()[0].path.clone();
        wh.overwrite(Table::MemberIds, vec![ids(&[("a", 0), ("b", 1)])]).await.unwrap();
        let live = wh.files(Table::MemberIds).await.unwrap()[0].path.clone();
        assert_ne!(old, live);
        let folder = wh.table_path(Table::MemberIds);
        for f in [&old, &live] {
            age(f, std::time::Duration::from_secs(60));
        }
        let since = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        // What a failed command left: a finished file never committed, a
        // file cut off while being written, one in a partition folder.
        let never = folder.join("part-00000-never.parquet");
        std::fs::copy(&live, &never).unwrap();
        let partial = folder.join("part-00001-cut.parquet#1");
        std::fs::write(&partial, b"PAR1 half").unwrap();
        let nested = folder.join("x=1").join("part-00000-nested.parquet");
        std::fs::create_dir_all(nested.parent().unwrap()).unwrap();
        std::fs::write(&nested, b"PAR1").unwrap();
        // An orphan from before `since` is left to `vacuum`.
        let earlier = folder.join("part-00000-earlier.parquet");
        std::fs::write(&earlier, b"PAR1").unwrap();
        age(&earlier, std::time::Duration::from_secs(60));
        // A file committed since `since` is referenced: it stays.
        let mut w = wh.append(Table::MemberIds).await.unwrap();
        w.write(ids(&[("c", 2)])).await.unwrap();
        w.commit().await.unwrap();
        let fresh: Vec<PathBuf> =
            wh.files(Table::MemberIds).await.unwrap().into_iter().map(|f| f.path).filter(|p| *p != live).collect();
        assert_eq!(fresh.len(), 1);
        let logs_before = std::fs::read_dir(folder.join("_delta_log")).unwrap().count();

        let done = wh.remove_uncommitted(&lock, Table::MemberIds, since).await.unwrap();
        let mut want: Vec<PathBuf> = vec![never.clone(), partial.clone(), nested.clone()];
        want.sort();
        assert_eq!(done.files.iter().map(|f| f.0.clone()).collect::<Vec<_>>(), want);
        assert!(want.iter().all(|f| !f.exists()));
        assert!(live.exists() && old.exists() && earlier.exists() && fresh[0].exists());
        assert_eq!(std::fs::read_dir(folder.join("_delta_log")).unwrap().count(), logs_before);
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 3);
        // A table never written, and nothing left to take.
        assert!(wh.remove_uncommitted(&lock, Table::Orders, since).await.unwrap().files.is_empty());
        assert!(wh.remove_uncommitted(&lock, Table::MemberIds, since).await.unwrap().files.is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn vacuum_reclaims_what_killed_runs_left_once_older_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let lock = wh.lock_writer("storage test", crate::Wait::No).unwrap();
        let mut w = wh.append(Table::MemberIds).await.unwrap();
        w.write(ids(&[("a", 0), ("b", 1)])).await.unwrap();
        w.commit().await.unwrap();
        let folder = wh.table_path(Table::MemberIds);
        let live = wh.files(Table::MemberIds).await.unwrap()[0].path.clone();
        // What killed runs leave: a data file never committed, a file and a
        // commit cut off while being written, and a table whose first
        // commit never happened.
        let orphan = folder.join("part-00000-orphan.parquet");
        std::fs::copy(&live, &orphan).unwrap();
        let partial = folder.join("part-00001-cut.parquet#1");
        std::fs::write(&partial, b"PAR1 half").unwrap();
        let partial_commit = folder.join("_delta_log").join(format!("{:020}.json#3", 1));
        std::fs::write(&partial_commit, b"{\"add\"").unwrap();
        let never = wh.table_path(Table::Orders).join("part-00000-first.parquet");
        std::fs::create_dir_all(never.parent().unwrap()).unwrap();
        std::fs::write(&never, b"PAR1").unwrap();
        let leftovers = [&orphan, &partial, &partial_commit, &never];
        let week = chrono::Duration::days(7);
        let plan = |table| {
            let wh = wh.clone();
            async move { wh.reclaimable(table, week).await.unwrap().files }
        };
        assert!(plan(Table::MemberIds).await.is_empty() && plan(Table::Orders).await.is_empty(), "all are recent");
        for f in leftovers {
            age(f, std::time::Duration::from_secs(8 * 86_400));
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let mut want: Vec<(PathBuf, u64)> =
            [&orphan, &partial, &partial_commit].map(|p| (p.to_path_buf(), size(p))).to_vec();
        want.sort();
        assert_eq!(plan(Table::MemberIds).await, want);
        assert_eq!(plan(Table::Orders).await, [(never.clone(), 4)]);
        let done = wh.vacuum(&lock, Table::MemberIds, week, false).await.unwrap();
        assert_eq!(done.files, want);
        assert_eq!(done.bytes(), want.iter().map(|f| f.1).sum::<u64>());
        wh.vacuum(&lock, Table::Orders, week, false).await.unwrap();
        assert!(leftovers.iter().all(|f| !f.exists()));
        assert!(live.exists());
        assert_eq!(wh.row_count(Table::MemberIds).await.unwrap(), 2);
        assert!(wh.reclaimable(Table::MemberIds, chrono::Duration::zero()).await.unwrap().files.is_empty());
    }

    /// Rows of `tags` with the given snapshot numbers (every other Int64
    /// column 1, dates day `day`).
    fn tag_rows(snapshots: &[i64], day: i32) -> RecordBatch {
        use arrow::datatypes::{DataType, TimeUnit};
        let schema = Table::Tags.arrow_schema();
        let n = snapshots.len();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.data_type() {
                    DataType::Int64 if f.name() == "snapshot" => Arc::new(Int64Array::from(snapshots.to_vec())),
                    DataType::Int64 => Arc::new(Int64Array::from(vec![1; n])),
                    DataType::Int32 => Arc::new(arrow::array::Int32Array::from_iter_values(0..n as i32)),
                    DataType::Utf8 => Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("t{i}")))),
                    DataType::Float64 => Arc::new(arrow::array::Float64Array::from(vec![0.5; n])),
                    DataType::Binary => Arc::new(arrow::array::BinaryArray::from_iter_values((0..n).map(|_| b"x"))),
                    DataType::Date32 => Arc::new(arrow::array::Date32Array::from(vec![day; n])),
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC"))
                    }
                    other => panic!("no test values for {other}"),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// `status` counted rows by reading the first key column, which for a
    /// partitioned table (`tags`, by `snapshot`) is not in the files.
    #[tokio::test(flavor = "multi_thread")]
    async fn row_count_counts_a_partitioned_table() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let mut w = wh.append(Table::Tags).await.unwrap();
        w.write(tag_rows(&[1, 1], 0)).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(wh.row_count(Table::Tags).await.unwrap(), 2);
    }

    /// A batch whose partition column holds a null (its field made
    /// nullable) is refused with the column named; the append goes on.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_null_partition_value_is_refused_and_the_append_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let good = tag_rows(&[1, 1], 0);
        let fields: Vec<_> = good
            .schema()
            .fields()
            .iter()
            .map(|f| if f.name() == "snapshot" { f.as_ref().clone().with_nullable(true) } else { f.as_ref().clone() })
            .collect();
        let mut columns = good.columns().to_vec();
        columns[good.schema().index_of("snapshot").unwrap()] = Arc::new(Int64Array::from(vec![Some(1), None]));
        let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let mut w = wh.append(Table::Tags).await.unwrap();
        let err = w.write(bad).await.unwrap_err().to_string();
        assert!(err.contains("partition column `snapshot` holds nulls"), "{err}");
        assert_eq!(w.rows(), 0, "a refused batch is not counted");
        w.write(good).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(wh.row_count(Table::Tags).await.unwrap(), 2);
    }

    /// An append's rows land in the directory of their partition value,
    /// whatever mix of values a batch holds, with Delta's statistics.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_partitioned_append_splits_rows_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let mut w = wh.append(Table::Tags).await.unwrap();
        w.write(tag_rows(&[2, 1, 2], 19_000)).await.unwrap();
        w.write(tag_rows(&[3], 19_000)).await.unwrap();
        w.write(tag_rows(&[1], 19_000)).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(wh.row_count(Table::Tags).await.unwrap(), 5);
        let mut rows: Vec<(String, String)> = Vec::new();
        for f in wh.files(Table::Tags).await.unwrap() {
            let value = f.partition_value("snapshot").unwrap().to_string();
            let dir_name = f.path.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(dir_name, format!("snapshot={value}"));
            for b in crate::scan::file_batches(Table::Tags, &f.path, &[crate::scan::Wanted::plain(Table::Tags, "name")])
                .unwrap()
            {
                let b = b.unwrap();
                let names = b.column(0).as_string::<i32>();
                rows.extend((0..b.num_rows()).map(|i| (value.clone(), names.value(i).to_string())));
            }
        }
        rows.sort();
        let want = [("1", "t0"), ("1", "t1"), ("2", "t0"), ("2", "t2"), ("3", "t0")];
        assert_eq!(rows, want.map(|(a, b)| (a.to_string(), b.to_string())));
        let log = std::fs::read_to_string(dir.path().join("tags/_delta_log/00000000000000000001.json")).unwrap();
        assert_eq!(log.matches("\"add\"").count(), 3, "one file per value: {log}");
        assert!(log.contains(r#"\"as_of\":\"2022-01-08\""#), "dates as Delta writes them: {log}");
        assert!(!log.contains(r#"\"snapshot\":1"#), "no statistics of the partition column: {log}");
    }

    #[tokio::test]
    async fn wrong_batch_schema_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let mut w = wh.append(Table::Products).await.unwrap();
        let err = w.write(ids(&[("a", 0)])).await.unwrap_err().to_string();
        assert!(err.contains("batch for warehouse table `products` does not match"), "{err}");
        let err = wh.read(Table::Orders, Some(&["nope"])).await.unwrap_err().to_string();
        assert!(err.contains("no column `nope`; columns are order_id, line_no"), "{err}");
    }
}
