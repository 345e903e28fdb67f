//! The ingest command: files → validated rows → one Delta commit per table.
//!
//! Reading and converting run on a producer thread (conversion itself is
//! parallel across columns) while the main task resolves member keys,
//! removes rows already present and hands the rest to one Parquet writer
//! task per core ([`sink`]). Nothing becomes visible until the commits at
//! the end, made in dependency order — `member_ids`, then `members`, then
//! the data table, then `quarantine` — so a kill at any moment leaves each
//! table as it was before or as after, and a re-run converges on what one
//! clean run gives. A run that fails waits for its writers and returns the
//! error; its caller then deletes the files it left ([`discard_failed`]).
//! A reader that panics ends the run with [`Error::ReaderStopped`]: ending
//! the input early would commit a truncated file as if it were whole.
//!
//! **Memory is bounded by [`IngestOptions::memory`]**, whatever the size of
//! the input or of the warehouse: which keys a table already holds comes
//! from its key index ([`crate::keys`]), probed a chunk of input at a time,
//! never loaded whole. The budget is split as follows:
//! - orders: a chunk of converted rows (1/8) and the next chunk, read and
//!   converted while the current one is checked (1/8); this run's new line keys
//!   (1/4: each chunk sorts its keys once, which finds the chunk's own
//!   repeats and is the index probe, and keeps the new ones as a sorted run
//!   in memory; held runs are merged onto disk by a background thread, and
//!   duplicates between chunks are found by those merges and one last
//!   merge split by key range over the cores, then taken out of the files
//!   before the commit); from
//!   the second chunk on, the member dictionary (20 bytes a member) and the
//!   line keys' filters (1.25 bytes a stored line) held in memory when they
//!   fit in 3/8 of the budget together, instead of being read again for
//!   every chunk; the writers (the rest);
//! - members and products: the incoming rows (1/3; beyond, they are spilled
//!   to 64 files by key hash and processed a part at a time), the lookups
//!   and the writers (the rest).
//!
//! Checking a day of orders against years of history reads the key
//! index's filters (about 1.25 bytes per stored line) and a few key blocks:
//! the time follows the new file, not the history.

mod orders;
mod quarantine;
pub mod sink;
mod upsert;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use taglake_storage::{ParamMessage, Table, Warehouse};

use crate::convert::{Converted, ConvertedFile};
use crate::mapping::CheckedMapping;
use crate::source::ReadOptions;
use crate::{Error, Result};

/// What to ingest and how. Its fields are private: the only way to get
/// one is [`IngestOptionsBuilder::build`], which checks them once (an
/// input table, a memory budget of at least [`MIN_MEMORY`], batches of at
/// least one row), so [`ingest`] and its steps rely on them as they are.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    mapping: CheckedMapping,
    create_members: bool,
    batch_rows: usize,
    memory: usize,
    /// Tests force chunking and spilling on tiny inputs with these.
    limits: Option<Limits>,
}

/// Sizes that otherwise follow from the memory budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Order lines per chunk.
    pub chunk_rows: usize,
    /// Line keys of this run held in memory before they spill.
    pub line_keys: usize,
    /// Bytes of incoming member or product rows before they spill.
    pub incoming_bytes: usize,
    /// Rows per data file.
    pub rows_per_file: u64,
}

impl IngestOptions {
    /// A builder for `mapping`'s table with the defaults: unknown members
    /// quarantined, batches of 65,536 rows, [`DEFAULT_MEMORY`].
    pub fn builder(mapping: CheckedMapping) -> IngestOptionsBuilder {
        IngestOptionsBuilder {
            mapping,
            create_members: false,
            batch_rows: 65_536,
            memory: DEFAULT_MEMORY,
            limits: None,
        }
    }

    /// The validated mapping (its table is the target table).
    pub fn mapping(&self) -> &CheckedMapping {
        &self.mapping
    }
    /// Whether orders of members not yet known create them instead of
    /// being quarantined.
    pub fn create_members(&self) -> bool {
        self.create_members
    }
    /// Rows per batch read from a file.
    pub fn batch_rows(&self) -> usize {
        self.batch_rows
    }
    /// Memory the ingest may hold, in bytes (see the module docs for how
    /// it is shared out).
    pub fn memory(&self) -> usize {
        self.memory
    }

    fn rows_per_file(&self) -> u64 {
        self.limits.map(|l| l.rows_per_file).unwrap_or(sink::ROWS_PER_FILE)
    }

    fn writers(&self) -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
    }

    /// Order lines checked at a time: 1/8 of the budget.
    fn chunk_rows(&self) -> usize {
        self.limits.map(|l| l.chunk_rows).unwrap_or((self.memory / 8 / orders::LINE_BYTES).max(1 << 16))
    }

    /// Messages the reader may send ahead of the consumer. For orders,
    /// one chunk's worth of pieces (a piece holds at most `batch_rows`
    /// rows and comes with its row count): the next chunk is read and
    /// converted while the consumer checks the current one. Without it the
    /// two took turns, and the consumer's share of a chunk ran on one core
    /// (about half of each chunk's time in a 42 M-member backfill, which
    /// now takes 0.78 of its time before). Members and products
    /// are read into a spill, not checked a chunk at a time: a few pieces.
    fn read_ahead(&self) -> usize {
        match self.mapping.table {
            Table::Orders => 2 * self.chunk_rows().div_ceil(self.batch_rows).max(2),
            _ => 4,
        }
    }
}

/// The default memory budget of an ingest: 2 GiB.
pub const DEFAULT_MEMORY: usize = 2 << 30;
/// The smallest budget accepted: 64 MiB.
pub const MIN_MEMORY: usize = 64 << 20;

/// The options as given; [`build`](Self::build) checks them.
#[derive(Debug, Clone)]
pub struct IngestOptionsBuilder {
    mapping: CheckedMapping,
    create_members: bool,
    batch_rows: usize,
    memory: usize,
    limits: Option<Limits>,
}

impl IngestOptionsBuilder {
    /// Orders of members not yet known create them instead of being
    /// quarantined.
    pub fn create_members(mut self, yes: bool) -> Self {
        self.create_members = yes;
        self
    }
    /// Rows per batch read from a file (at least 1).
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }
    /// Memory the ingest may hold, in bytes (at least [`MIN_MEMORY`]).
    pub fn memory(mut self, bytes: usize) -> Self {
        self.memory = bytes;
        self
    }
    /// Sizes that force chunking and spilling on a few rows (tests).
    #[cfg(test)]
    pub(crate) fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Checks the options: the mapping's table is one taglake ingests, the
    /// budget is at least [`MIN_MEMORY`] (below it, the shares of the
    /// module docs leave the steps too little to make progress) and a
    /// batch holds at least one row.
    pub fn build(self) -> Result<IngestOptions> {
        let table = self.mapping.table;
        if !Table::INPUTS.contains(&table) {
            return Err(Error::Parameter(
                ParamMessage::param("mapping")
                    .then_text(format!(": table `{}` is written by taglake itself, not ingested", table.name())),
            ));
        }
        if self.memory < MIN_MEMORY {
            return Err(Error::Parameter(ParamMessage::param("memory").then_text(format!(
                ": {} bytes is below the smallest budget, {} MiB",
                self.memory,
                MIN_MEMORY >> 20
            ))));
        }
        if self.batch_rows == 0 {
            return Err(Error::Parameter(ParamMessage::param("batch_rows").then_text(" must be at least 1")));
        }
        Ok(IngestOptions {
            mapping: self.mapping,
            create_members: self.create_members,
            batch_rows: self.batch_rows,
            memory: self.memory,
            limits: self.limits,
        })
    }
}

/// Receives progress while an ingest runs.
pub trait Progress: Send + Sync {
    /// A file is about to be read.
    fn file(&self, _path: &Path, _index: usize, _total: usize) {}
    /// `n` more rows were read.
    fn rows(&self, _n: u64) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What an ingest did.
#[derive(Debug, Clone, Default)]
pub struct IngestSummary {
    /// Target table.
    pub table: &'static str,
    /// Files read (including failed ones).
    pub files: usize,
    /// Files that could not be read at all, with the reason.
    pub failed_files: Vec<(PathBuf, String)>,
    /// Rows read (good and bad).
    pub rows_read: u64,
    /// New rows written.
    pub inserted: u64,
    /// Existing rows replaced by a newer version (members, products).
    pub replaced: u64,
    /// Rows already present, or repeated within the input, and skipped.
    pub unchanged: u64,
    /// Rows sent to quarantine (new quarantine entries only).
    pub quarantined: u64,
    /// Members added to the dictionary.
    pub new_members: u64,
    /// Wall time.
    pub seconds: f64,
}

impl IngestSummary {
    /// True when no file could be read: the only case the command fails.
    pub fn nothing_read(&self) -> bool {
        self.files == 0 || self.failed_files.len() == self.files
    }
}

/// One converted batch with the file it came from.
struct Piece {
    file: Arc<str>,
    converted: Converted,
}

enum Message {
    Rows(u64),
    Piece(Piece),
    FileFailed(PathBuf, String),
    /// The reader stopped (the file it was reading, the panic's message).
    Stopped(PathBuf, String),
}

/// What a panic carried, as text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic".to_string(),
    }
}

/// Reads and converts the files on a separate thread, in order.
fn spawn_reader(
    files: Vec<PathBuf>,
    opts: IngestOptions,
    progress: Arc<dyn Progress>,
) -> tokio::sync::mpsc::Receiver<Message> {
    let (tx, rx) = tokio::sync::mpsc::channel(opts.read_ahead());
    std::thread::spawn(move || {
        // A panic here must not look like the end of the input: the
        // consumer would commit what it had. It is sent as `Stopped`.
        let reading = std::sync::Mutex::new(PathBuf::new());
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_files(files, &opts, progress.as_ref(), &tx, &reading)
        }));
        if let Err(payload) = read {
            let path = std::mem::take(&mut *reading.lock().unwrap_or_else(|e| e.into_inner()));
            let _ = tx.blocking_send(Message::Stopped(path, panic_text(payload.as_ref())));
        }
    });
    rx
}

/// The reader's body: every file in order, each batch sent as it comes;
/// `reading` names the file being read.
fn read_files(
    files: Vec<PathBuf>,
    opts: &IngestOptions,
    progress: &dyn Progress,
    tx: &tokio::sync::mpsc::Sender<Message>,
    reading: &std::sync::Mutex<PathBuf>,
) {
    let read_opts =
        ReadOptions { delimiter: opts.mapping.delimiter, batch_rows: opts.batch_rows, ..ReadOptions::default() };
    let total = files.len();
    for (index, path) in files.into_iter().enumerate() {
        path.clone_into(&mut reading.lock().unwrap_or_else(|e| e.into_inner()));
        progress.file(&path, index, total);
        let file: Arc<str> = std::fs::canonicalize(&path).unwrap_or(path.clone()).to_string_lossy().into();
        let result = (|| -> Result<()> {
            for batch in ConvertedFile::open(&path, &opts.mapping, &read_opts)? {
                let (read, converted) = batch?;
                progress.rows(read);
                let sent = tx.blocking_send(Message::Rows(read)).is_ok()
                    && tx.blocking_send(Message::Piece(Piece { file: file.clone(), converted })).is_ok();
                if !sent {
                    return Ok(()); // the consumer stopped
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let msg = match e {
                Error::Source { message, cause, .. } => crate::error::joined(&message, &cause),
                other => other.to_string(),
            };
            if tx.blocking_send(Message::FileFailed(path, msg)).is_err() {
                return;
            }
        }
    }
}

/// Ingests files into one warehouse table. Row-level problems are
/// quarantined; an error is returned only when the warehouse fails (the
/// options were checked when they were built).
pub async fn ingest(
    wh: &Warehouse,
    files: &[PathBuf],
    opts: &IngestOptions,
    progress: Arc<dyn Progress>,
) -> Result<IngestSummary> {
    let start = Instant::now();
    let table = opts.mapping.table;
    let mut summary = IngestSummary { table: table.name(), files: files.len(), ..Default::default() };
    let mut quarantine = quarantine::Quarantine::open(wh, table, opts.memory / 8).await?;
    let rx = spawn_reader(files.to_vec(), opts.clone(), progress);
    match table {
        Table::Orders => orders::ingest_orders(wh, rx, opts, &mut quarantine, &mut summary).await?,
        _ => upsert::ingest_upsert(wh, rx, opts, &mut quarantine, &mut summary).await?,
    }
    summary.quarantined = quarantine.written;
    quarantine.commit(wh).await?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// What [`discard_failed`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discarded {
    /// Files deleted.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Deletes what an ingest that failed wrote and never committed: the data
/// files of every table an ingest writes that were written since `since`
/// and that no version references, and the key-index runs no manifest
/// lists. Call it after [`ingest`] returned an error, with the time taken
/// just before the ingest started and the writer lock held throughout.
///
/// Without it a failed ingest left its files to `taglake vacuum` (whose
/// default keeps files written in the last 7 days): a backfill of 420 M
/// lines that failed for a full disk left gigabytes of Parquet and key
/// runs behind, and the disk full. Tables the ingest committed before it
/// failed (a member dictionary before its orders) keep their commits: only
/// unreferenced files go.
pub async fn discard_failed(
    wh: &Warehouse,
    lock: &taglake_storage::WriterLock,
    since: std::time::SystemTime,
) -> Result<Discarded> {
    // File times are coarser than the clock (a kernel tick): a file written
    // just after `since` may carry a slightly earlier time.
    let since = since.checked_sub(std::time::Duration::from_secs(1)).unwrap_or(since);
    let mut out = Discarded::default();
    // Every table an ingest writes has a key index: one list for both.
    for kind in crate::keys::KeyKind::ALL {
        let removed = wh.remove_uncommitted(lock, kind.table(), since).await?;
        out.files += removed.files.len();
        out.bytes += removed.bytes();
    }
    for (_, size) in crate::keys::discard_unlisted(wh)? {
        out.files += 1;
        out.bytes += size;
    }
    Ok(out)
}

/// A row of a converted batch as `name=value` text, for quarantine.
fn describe_row(batch: &RecordBatch, i: usize) -> String {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("");
    let schema = batch.schema();
    let mut parts = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let v = ArrayFormatter::try_new(c.as_ref(), &opts).map(|fm| fm.value(i).to_string()).unwrap_or_default();
        parts.push(format!("{}={v}", f.name()));
    }
    parts.join(", ")
}

/// Inserts the `member_key` column at its place in the table schema.
fn with_member_key(table: Table, batch: &RecordBatch, keys: ArrayRef) -> Result<RecordBatch> {
    let mut cols = Vec::with_capacity(batch.num_columns() + 1);
    let mut input = batch.columns().iter();
    for c in table.columns() {
        if c.name == "member_key" {
            cols.push(keys.clone());
        } else {
            cols.push(input.next().expect("input columns in schema order").clone());
        }
    }
    RecordBatch::try_new(table.arrow_schema(), cols).map_err(Error::internal("adding member_key"))
}

/// Commits the files of one table written by this run, then records the
/// new keys in its index.
async fn commit_with_index(
    wh: &Warehouse,
    table: Table,
    removes: &[PathBuf],
    adds: &[String],
    index: &mut crate::keys::KeyIndex,
    runs: Vec<crate::keys::run::Run>,
) -> Result<()> {
    if wh.commit_files(table, removes, adds).await?.is_none() {
        return Ok(());
    }
    let state = wh.state(table).await?.expect("just committed");
    index.commit(runs, state)
}

#[cfg(test)]
mod tests;
