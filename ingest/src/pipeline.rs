//! The ingest command: files → validated rows → one Delta commit per table.
//!
//! Reading and converting run on a producer thread (conversion itself is
//! parallel across columns) while the main task assigns member keys,
//! removes rows already present and streams the rest into Parquet files
//! of an open Delta append. Nothing becomes visible until the commits at
//! the end, made in dependency order — `member_ids`, then the data table,
//! then `quarantine` — so a kill at any moment leaves each table as it was
//! before or as after, and a re-run converges on what one clean run gives
//! (keys are assigned in input order; existing rows are recognised by key).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::compute::{concat_batches, filter, take};
use arrow::datatypes::Int32Type;
use arrow::row::{RowConverter, SortField};
use taglake_storage::{Table, TableWriter, Warehouse};

use crate::convert::{Converted, ConvertedFile, input_schema};
use crate::dictionary::MemberDictionary;
use crate::mapping::CheckedMapping;
use crate::source::{ReadOptions, Reject};
use crate::{Error, Result};

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The validated mapping (its table is the target table).
    pub mapping: CheckedMapping,
    /// Orders of members not yet known create them instead of being
    /// quarantined.
    pub create_members: bool,
    /// Rows per batch.
    pub batch_rows: usize,
}

impl IngestOptions {
    /// Options for a table with the canonical layout.
    pub fn new(mapping: CheckedMapping) -> Self {
        IngestOptions { mapping, create_members: false, batch_rows: 65_536 }
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
}

/// Reads and converts the files on a separate thread, in order.
fn spawn_reader(
    files: Vec<PathBuf>,
    opts: IngestOptions,
    progress: Arc<dyn Progress>,
) -> tokio::sync::mpsc::Receiver<Message> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let read_opts =
            ReadOptions { delimiter: opts.mapping.delimiter, batch_rows: opts.batch_rows, ..ReadOptions::default() };
        let total = files.len();
        for (index, path) in files.into_iter().enumerate() {
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
                    Error::Source { message, .. } => message,
                    other => other.to_string(),
                };
                if tx.blocking_send(Message::FileFailed(path, msg)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Ingests files into one warehouse table. Row-level problems are
/// quarantined; an error is returned only when the warehouse fails or the
/// options are unusable.
pub async fn ingest(
    wh: &Warehouse,
    files: &[PathBuf],
    opts: &IngestOptions,
    progress: Arc<dyn Progress>,
) -> Result<IngestSummary> {
    let start = Instant::now();
    let table = opts.mapping.table;
    if !Table::INPUTS.contains(&table) {
        return Err(Error::source(table.name(), "this table is written by taglake itself, not ingested"));
    }
    let mut summary = IngestSummary { table: table.name(), files: files.len(), ..Default::default() };
    let mut quarantine = Quarantine::open(wh, table).await?;
    let mut dict = MemberDictionary::load(wh).await?;
    let rx = spawn_reader(files.to_vec(), opts.clone(), progress);
    match table {
        Table::Orders => ingest_orders(wh, rx, opts, &mut dict, &mut quarantine, &mut summary).await?,
        _ => ingest_upsert(wh, rx, table, &mut dict, &mut quarantine, &mut summary).await?,
    }
    summary.quarantined = quarantine.written;
    quarantine.commit().await?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

// ---------------------------------------------------------------- quarantine

/// The quarantine table, skipping entries recorded by an earlier run.
struct Quarantine {
    table: Table,
    known: HashSet<(String, i64)>,
    writer: TableWriter,
    written: u64,
    now_us: i64,
}

impl Quarantine {
    async fn open(wh: &Warehouse, table: Table) -> Result<Self> {
        let mut known = HashSet::new();
        for b in wh.read(Table::Quarantine, Some(&["table_name", "source_file", "row_number"])).await? {
            let (t, f, r) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
                b.column(2).as_primitive::<arrow::datatypes::Int64Type>(),
            );
            for i in 0..b.num_rows() {
                if t.value(i) == table.name() {
                    known.insert((f.value(i).to_string(), r.value(i)));
                }
            }
        }
        let writer = wh.append(Table::Quarantine).await?;
        Ok(Quarantine { table, known, writer, written: 0, now_us: chrono::Utc::now().timestamp_micros() })
    }

    async fn add(&mut self, file: &str, rejects: &[Reject]) -> Result<()> {
        let fresh: Vec<&Reject> =
            rejects.iter().filter(|r| self.known.insert((file.to_string(), r.row as i64))).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let n = fresh.len();
        let table = StringArray::from(vec![self.table.name(); n]);
        let files = StringArray::from(vec![file; n]);
        let rows = Int64Array::from_iter_values(fresh.iter().map(|r| r.row as i64));
        let cols = StringArray::from_iter(fresh.iter().map(|r| r.column.as_deref()));
        let reasons = StringArray::from_iter_values(fresh.iter().map(|r| r.reason.as_str()));
        let raws = StringArray::from_iter(fresh.iter().map(|r| r.raw.as_deref()));
        let at = TimestampMicrosecondArray::from(vec![self.now_us; n]).with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(table),
            Arc::new(files),
            Arc::new(rows),
            Arc::new(cols),
            Arc::new(reasons),
            Arc::new(raws),
            Arc::new(at),
        ];
        let batch = RecordBatch::try_new(Table::Quarantine.arrow_schema(), columns)
            .map_err(Error::internal("building quarantine rows"))?;
        self.writer.write(batch).await?;
        self.written += n as u64;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        self.writer.commit().await?;
        Ok(())
    }
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

/// Order-line keys are already uniform 128-bit hashes: the set uses their
/// low bits directly instead of hashing them again.
#[derive(Default, Clone, Copy)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u128 keys; fold the bytes in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type KeySet = HashSet<u128, std::hash::BuildHasherDefault<PreHashed>>;

fn order_key(order_id: &str, line_no: i32) -> u128 {
    // One-shot 128-bit hash of the id, seeded by the line number: distinct
    // (id, line) pairs collide with probability ~2^-128.
    xxhash_rust::xxh3::xxh3_128_with_seed(order_id.as_bytes(), line_no as u32 as u64)
}

// ---------------------------------------------------------------- orders

/// Orders are append-only facts keyed by `(order_id, line_no)`: a line seen
/// before (in the warehouse or earlier in this input) is skipped. Keys are
/// kept as 128-bit hashes (16 bytes a line), so the check costs ~2 GB of
/// memory at 100 M lines instead of the strings themselves.
async fn ingest_orders(
    wh: &Warehouse,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    opts: &IngestOptions,
    dict: &mut MemberDictionary,
    quarantine: &mut Quarantine,
    summary: &mut IngestSummary,
) -> Result<()> {
    let table = Table::Orders;
    let mut seen = KeySet::default();
    for b in wh.read(table, Some(&["order_id", "line_no"])).await? {
        let (ids, lines) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int32Type>());
        seen.reserve(b.num_rows());
        for i in 0..b.num_rows() {
            seen.insert(order_key(ids.value(i), lines.value(i)));
        }
    }
    let mut categories: HashMap<String, String> = HashMap::new();
    if opts.mapping.category_from_products {
        for b in wh.read(Table::Products, Some(&["sku", "category"])).await? {
            let (s, c) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
            for i in 0..b.num_rows() {
                categories.insert(s.value(i).to_string(), c.value(i).to_string());
            }
        }
    }
    let schema = input_schema(table);
    let idx = |name: &str| schema.index_of(name).expect("orders column");
    let (c_order, c_line, c_member, c_at, c_cat) =
        (idx("order_id"), idx("line_no"), idx("member_id"), idx("ordered_at"), idx("category"));
    let mut writer = wh.append(table).await?;
    // Members created from orders (--create-members): first order time.
    let mut created: Vec<(String, i64, i64)> = Vec::new();
    while let Some(msg) = rx.recv().await {
        let Piece { file, converted } = match msg {
            Message::Rows(n) => {
                summary.rows_read += n;
                continue;
            }
            Message::FileFailed(path, reason) => {
                summary.failed_files.push((path, reason));
                continue;
            }
            Message::Piece(p) => p,
        };
        let batch = &converted.batch;
        let mut rejects = converted.rejects;
        let ids = batch.column(c_order).as_string::<i32>();
        let lines = batch.column(c_line).as_primitive::<Int32Type>();
        let members = batch.column(c_member).as_string::<i32>();
        let at = batch.column(c_at).as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut keys = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let member = members.value(i);
            let key = match dict.get(member) {
                Some(k) => k,
                None if opts.create_members => {
                    let k = dict.get_or_assign(member)?;
                    created.push((member.to_string(), k, at.value(i)));
                    k
                }
                None => {
                    rejects.push(Reject {
                        row: converted.rows[i],
                        column: Some("member_id".into()),
                        reason: format!(
                            "unknown member_id {member:?} (ingest members first, or pass --create-members)"
                        ),
                        raw: Some(describe_row(batch, i)),
                    });
                    keep.push(false);
                    continue;
                }
            };
            if !seen.insert(order_key(ids.value(i), lines.value(i))) {
                summary.unchanged += 1;
                keep.push(false);
                continue;
            }
            keep.push(true);
            keys.push(key);
        }
        rejects.sort_by_key(|r| r.row);
        quarantine.add(&file, &rejects).await?;
        let mask = BooleanArray::from(keep);
        let mut cols: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| filter(c, &mask))
            .collect::<std::result::Result<_, _>>()
            .map_err(Error::internal("filtering orders"))?;
        if !categories.is_empty() {
            let cat = cols[c_cat].as_string::<i32>();
            if cat.null_count() > 0 {
                let skus = cols[idx("sku")].as_string::<i32>();
                let filled: StringArray = (0..cat.len())
                    .map(|i| {
                        if cat.is_valid(i) {
                            Some(cat.value(i))
                        } else {
                            categories.get(skus.value(i)).map(String::as_str)
                        }
                    })
                    .collect();
                cols[c_cat] = Arc::new(filled);
            }
        }
        let kept = RecordBatch::try_new(schema.clone(), cols).map_err(Error::internal("filtering orders"))?;
        summary.inserted += kept.num_rows() as u64;
        writer.write(with_member_key(table, &kept, Arc::new(Int64Array::from(keys)))?).await?;
    }
    summary.new_members = dict.added() as u64;
    // Dependency order: keys first, then the members they create, then orders.
    dict.commit(wh).await?;
    if !created.is_empty() {
        let mut w = wh.append(Table::Members).await?;
        w.write(created_members_batch(&created)?).await?;
        w.commit().await?;
    }
    writer.commit().await?;
    Ok(())
}

/// Minimal member rows for members first seen in orders: registered at
/// their first order, other attributes unknown until a members export.
fn created_members_batch(created: &[(String, i64, i64)]) -> Result<RecordBatch> {
    let schema = Table::Members.arrow_schema();
    let n = created.len();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "member_key" => Arc::new(Int64Array::from_iter_values(created.iter().map(|c| c.1))),
                "member_id" => Arc::new(StringArray::from_iter_values(created.iter().map(|c| c.0.as_str()))),
                "registered_at" => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(created.iter().map(|c| c.2)).with_timezone("UTC"),
                ),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, cols).map_err(Error::internal("creating members"))
}

// ---------------------------------------------------------------- members, products

/// Members and products are entities: the latest row for a key wins. Rows
/// identical to what is stored change nothing; new keys are appended; when
/// any stored row changes, the table is rewritten in one commit (the old
/// version stays readable by time travel).
async fn ingest_upsert(
    wh: &Warehouse,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    table: Table,
    dict: &mut MemberDictionary,
    quarantine: &mut Quarantine,
    summary: &mut IngestSummary,
) -> Result<()> {
    let key_col = table.key()[0];
    let schema = input_schema(table);
    let mut incoming: Vec<RecordBatch> = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            Message::Rows(n) => summary.rows_read += n,
            Message::FileFailed(path, reason) => summary.failed_files.push((path, reason)),
            Message::Piece(Piece { file, converted }) => {
                quarantine.add(&file, &converted.rejects).await?;
                incoming.push(converted.batch);
            }
        }
    }
    let incoming = concat_batches(&schema, &incoming).map_err(Error::internal("collecting rows"))?;
    // Latest row per key, in order of first appearance.
    let keys = incoming.column(schema.index_of(key_col).expect("key")).as_string::<i32>();
    let mut slot: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    let mut latest: Vec<u32> = Vec::new();
    for i in 0..keys.len() {
        match slot.get(keys.value(i)) {
            Some(&s) => {
                latest[s] = i as u32;
                summary.unchanged += 1;
            }
            None => {
                slot.insert(keys.value(i), latest.len());
                latest.push(i as u32);
            }
        }
    }
    let indices = UInt32Array::from(latest);
    let cols: Vec<ArrayRef> = incoming
        .columns()
        .iter()
        .map(|c| take(c, &indices, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::internal("deduplicating"))?;
    let incoming = RecordBatch::try_new(schema.clone(), cols).map_err(Error::internal("deduplicating"))?;
    let incoming = if table == Table::Members {
        let ids = incoming.column(schema.index_of("member_id").expect("member_id")).as_string::<i32>();
        let keys: Vec<i64> = (0..ids.len()).map(|i| dict.get_or_assign(ids.value(i))).collect::<Result<_>>()?;
        with_member_key(table, &incoming, Arc::new(Int64Array::from(keys)))?
    } else {
        incoming
    };
    summary.new_members = dict.added() as u64;

    let existing_batches = wh.read(table, None).await?;
    let full = table.arrow_schema();
    let relaxed = Arc::new(arrow::datatypes::Schema::new(
        full.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    let existing = concat_batches(&relaxed, &existing_batches).map_err(Error::internal("reading stored rows"))?;
    let converter = RowConverter::new(full.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())
        .map_err(Error::internal("comparing rows"))?;
    let old_rows = converter.convert_columns(existing.columns()).map_err(Error::internal("comparing rows"))?;
    let new_rows = converter.convert_columns(incoming.columns()).map_err(Error::internal("comparing rows"))?;
    let key_idx = full.index_of(key_col).expect("key");
    let old_keys = existing.column(key_idx).as_string::<i32>();
    let stored: HashMap<&str, usize> = (0..old_keys.len()).map(|i| (old_keys.value(i), i)).collect();
    let new_keys = incoming.column(key_idx).as_string::<i32>();
    let mut write_new = Vec::new();
    let mut replaced_old = vec![false; existing.num_rows()];
    for i in 0..incoming.num_rows() {
        match stored.get(new_keys.value(i)) {
            None => {
                write_new.push(true);
                summary.inserted += 1;
            }
            Some(&j) if old_rows.row(j) == new_rows.row(i) => {
                write_new.push(false);
                summary.unchanged += 1;
            }
            Some(&j) => {
                write_new.push(true);
                replaced_old[j] = true;
                summary.replaced += 1;
            }
        }
    }
    let to_write = filter_batch(&incoming, write_new)?;
    dict.commit(wh).await?;
    if summary.replaced == 0 {
        let mut w = wh.append(table).await?;
        w.write(to_write).await?;
        w.commit().await?;
    } else {
        let kept_old = filter_batch(&existing, replaced_old.iter().map(|r| !r).collect())?;
        let kept_old = RecordBatch::try_new(full.clone(), kept_old.columns().to_vec())
            .map_err(Error::internal("rewriting table"))?;
        wh.overwrite(table, vec![kept_old, to_write]).await?;
    }
    Ok(())
}

fn filter_batch(batch: &RecordBatch, keep: Vec<bool>) -> Result<RecordBatch> {
    let mask = BooleanArray::from(keep);
    let cols: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| filter(c, &mask))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::internal("filtering rows"))?;
    RecordBatch::try_new(batch.schema(), cols).map_err(Error::internal("filtering rows"))
}

#[cfg(test)]
mod tests;
