//! Orders: append-only facts keyed by `(order_id, line_no)`.
//!
//! A line seen before — in the warehouse or earlier in this input — is
//! skipped; the first one in input order is kept. Lines are checked a chunk
//! at a time: the chunk's distinct member ids are looked up in the
//! dictionary and its line keys in the orders key index (one sorted probe
//! each), then the rows go through in order against this run's own set of
//! new keys ([`LineKeys`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::filter;
use arrow::datatypes::{Int32Type, TimestampMicrosecondType};
use taglake_storage::{Table, Warehouse};

use super::quarantine::Quarantine;
use super::sink::{Sinks, remove_rows};
use super::{IngestOptions, IngestSummary, Message, Piece, commit_with_index, describe_row, with_member_key};
use crate::convert::input_schema;
use crate::dictionary::MemberDictionary;
use crate::keys::run::{Run, RunWriter};
use crate::keys::{FINAL_RUN_KEYS, KeyIndex, KeyKind, merge_cursors, order_line_key, row_digests, text_key};
use crate::source::Reject;
use crate::{Error, Result};

/// Bytes a converted order line takes in memory, for sizing chunks.
const LINE_BYTES: usize = 160;

/// Line keys are already uniform 128-bit hashes: the set uses their low
/// bits directly instead of hashing them again.
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

type KeyMap = HashMap<u128, u64, std::hash::BuildHasherDefault<PreHashed>>;

/// The line keys of the warehouse (through its index) and of this run.
///
/// This run's new keys live in a hash map from key to the row's sequence
/// number, up to a share of the memory budget; when it is full it is written
/// out as a sorted run ("pending") and a fresh map starts, so a backfill of
/// any size stays within the budget. A key repeated across two pending runs
/// was written twice: [`LineKeys::finish`] finds such keys in one merge of
/// the pending runs and returns the later rows' sequence numbers to be
/// taken out of the files before the commit.
pub struct LineKeys {
    index: KeyIndex,
    map: KeyMap,
    cap: usize,
    pending: Vec<Run>,
}

impl LineKeys {
    /// The orders index, with `memory` for this run's keys (or at most
    /// `cap` of them).
    pub async fn open(wh: &Warehouse, memory: usize, cap: Option<usize>) -> Result<LineKeys> {
        let index = KeyIndex::open(wh, KeyKind::OrderLines, memory / 4).await?;
        // A map entry takes 25 bytes at full load, up to twice that while
        // it grows: cap the entries so the map stays within `memory`.
        let cap = cap.unwrap_or((memory / 50).max(1 << 16));
        Ok(LineKeys { index, map: KeyMap::default(), cap, pending: Vec::new() })
    }

    /// Which of `keys` (sorted, distinct) the warehouse holds.
    pub fn stored(&self, keys: &[u128]) -> Result<HashSet<u128>> {
        let found = self.index.lookup(keys, true)?;
        Ok(keys.iter().zip(found).filter(|(_, f)| f.is_some()).map(|(k, _)| *k).collect())
    }

    /// Records a key of this run for the row numbered `seq`; `false` when
    /// this run's map has it already.
    pub fn insert(&mut self, key: u128, seq: u64) -> Result<bool> {
        use std::collections::hash_map::Entry;
        match self.map.entry(key) {
            Entry::Occupied(_) => return Ok(false),
            Entry::Vacant(v) => {
                v.insert(seq);
            }
        }
        if self.map.len() >= self.cap {
            self.spill()?;
        }
        Ok(true)
    }

    fn spill(&mut self) -> Result<()> {
        let mut entries: Vec<(u128, u64)> = self.map.drain().collect();
        self.map.shrink_to(0);
        entries.sort_unstable_by_key(|e| e.0);
        let mut w = RunWriter::create(&self.index.new_run_path(), true, entries.len() as u64)?;
        for (k, seq) in entries {
            w.push(k, seq)?;
        }
        self.pending.push(w.finish()?);
        Ok(())
    }

    /// The runs holding this run's keys (to commit with the table) and the
    /// sequence numbers of rows that repeat an earlier row's key, sorted.
    pub fn finish(&mut self) -> Result<(Vec<Run>, Vec<u64>)> {
        if self.pending.is_empty() {
            let mut keys: Vec<u128> = self.map.drain().map(|(k, _)| k).collect();
            keys.sort_unstable();
            let n = keys.len();
            let run = self.index.write_run(keys.into_iter().map(|k| (k, 0)).take(n))?;
            return Ok((vec![run], Vec::new()));
        }
        self.spill()?;
        let pending = std::mem::take(&mut self.pending);
        let total: u64 = pending.iter().map(Run::len).sum();
        let mut cursors = pending.iter().map(Run::cursor).collect::<Result<Vec<_>>>()?;
        let mut runs = Vec::new();
        let mut dups = Vec::new();
        let mut left = total;
        let mut writer: Option<RunWriter> = None;
        merge_cursors(&mut cursors, |key, sources| {
            // Pending runs are in input order: the first source holds the
            // first occurrence; the others are rows written twice.
            dups.extend(sources[1..].iter().map(|(_, seq)| *seq));
            let w = match &mut writer {
                Some(w) if w.len() < FINAL_RUN_KEYS => w,
                _ => {
                    if let Some(full) = writer.take() {
                        runs.push(full.finish()?);
                    }
                    writer.insert(RunWriter::create(&self.index.new_run_path(), false, left.min(FINAL_RUN_KEYS))?)
                }
            };
            w.push(key, 0)?;
            left -= sources.len() as u64;
            Ok(())
        })?;
        if let Some(w) = writer {
            runs.push(w.finish()?);
        }
        for p in pending {
            std::fs::remove_file(p.path())
                .map_err(|e| Error::Index { path: p.path().to_path_buf(), source: e.into() })?;
        }
        dups.sort_unstable();
        Ok((runs, dups))
    }
}

/// A member first met in this run's orders (`--create-members`).
struct Created {
    id: String,
    key: i64,
    /// Its earliest order in this input: the registration time recorded.
    first_at: i64,
}

/// What the chunks of one run share.
struct OrdersRun<'a> {
    opts: &'a IngestOptions,
    dict: MemberDictionary,
    lines: LineKeys,
    /// The `members` index, with `--create-members`: members known to the
    /// dictionary but without a row (a run killed between the two commits)
    /// get one too.
    members: Option<KeyIndex>,
    created: HashMap<u128, Created>,
    categories: HashMap<String, String>,
    sinks: Sinks,
}

/// See the module docs.
pub(super) async fn ingest_orders(
    wh: &Warehouse,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    opts: &IngestOptions,
    quarantine: &mut Quarantine,
    summary: &mut IngestSummary,
) -> Result<()> {
    let table = Table::Orders;
    let memory = opts.memory;
    let mut categories = HashMap::new();
    if opts.mapping.category_from_products {
        for b in wh.read(Table::Products, Some(&["sku", "category"])).await? {
            let (s, c) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
            for i in 0..b.num_rows() {
                categories.insert(s.value(i).to_string(), c.value(i).to_string());
            }
        }
    }
    let dict = MemberDictionary::open(wh, memory / 8).await?;
    let lines = LineKeys::open(wh, memory / 4, opts.limits.map(|l| l.line_keys)).await?;
    let mut run = OrdersRun {
        opts,
        dict,
        lines,
        members: match opts.create_members {
            true => Some(KeyIndex::open(wh, KeyKind::Members, memory / 8).await?),
            false => None,
        },
        created: HashMap::new(),
        categories,
        sinks: Sinks::new(wh, table, table.arrow_schema(), opts.writers(), opts.rows_per_file())?,
    };
    let chunk_rows = opts.limits.map(|l| l.chunk_rows).unwrap_or((memory / 8 / LINE_BYTES).max(1 << 16));
    let mut chunk: Vec<Piece> = Vec::new();
    let mut rows = 0usize;
    let mut chunks = 0usize;
    while let Some(msg) = rx.recv().await {
        match msg {
            Message::Rows(n) => summary.rows_read += n,
            Message::FileFailed(path, reason) => summary.failed_files.push((path, reason)),
            Message::Piece(p) => {
                rows += p.converted.batch.num_rows() + p.converted.rejects.len();
                chunk.push(p);
                if rows >= chunk_rows {
                    chunks += 1;
                    if chunks == 2 {
                        // More than one chunk: the dictionary and the line
                        // keys' filters would be read once per chunk. Hold
                        // them instead, in half the budget, when they fit.
                        run.dict.keep_in_memory(memory as u64 * 3 / 8)?;
                        run.lines.index.keep_blooms(memory as u64 / 2 - run.dict.resident_bytes())?;
                    }
                    run.chunk(std::mem::take(&mut chunk), quarantine, summary).await?;
                    rows = 0;
                }
            }
        }
    }
    run.chunk(chunk, quarantine, summary).await?;

    let OrdersRun { mut dict, mut lines, members, created, sinks, .. } = run;
    let mut files = sinks.finish().await?;
    let (runs, dups) = lines.finish()?;
    remove_rows(wh, table, &mut files, &dups).await?;
    summary.inserted -= dups.len() as u64;
    summary.unchanged += dups.len() as u64;
    summary.new_members = dict.added() as u64;
    // Dependency order: keys first, then the members they create, then orders.
    dict.commit(wh).await?;
    if let Some(mut index) = members
        && !created.is_empty()
    {
        let mut created: Vec<Created> = created.into_values().collect();
        created.sort_by_key(|c| c.key);
        let batch = created_members_batch(&created)?;
        let input: Vec<ArrayRef> = batch.columns()[1..].to_vec();
        let digests = row_digests(&input)?;
        let entries: Vec<(u128, u64)> = created.iter().zip(digests).map(|(c, d)| (text_key(&c.id), d)).collect();
        let mut w = wh.file_writer(Table::Members, Table::Members.arrow_schema())?;
        w.write(batch).await?;
        let adds = w.finish().await?;
        let run = index.sort_into_run(entries)?;
        commit_with_index(wh, Table::Members, &[], &adds, &mut index, vec![run]).await?;
    }
    let adds: Vec<String> = files.iter().filter(|f| !f.add.is_empty()).map(|f| f.add.clone()).collect();
    commit_with_index(wh, table, &[], &adds, &mut lines.index, runs).await
}

impl OrdersRun<'_> {
    // Long on purpose: one chunk's checks (keys, members, duplicates) and its write share the chunk's buffers
    // and must run in this order.
    /// Checks and writes one chunk of converted pieces, in input order.
    async fn chunk(
        &mut self,
        pieces: Vec<Piece>,
        quarantine: &mut Quarantine,
        summary: &mut IngestSummary,
    ) -> Result<()> {
        if pieces.is_empty() {
            return Ok(());
        }
        let schema = input_schema(Table::Orders);
        let idx = |name: &str| schema.index_of(name).expect("orders column");
        let (c_order, c_line, c_member, c_at, c_cat, c_sku) =
            (idx("order_id"), idx("line_no"), idx("member_id"), idx("ordered_at"), idx("category"), idx("sku"));

        // The chunk's members and line keys, looked up once for all pieces.
        let member_hashes: Vec<Vec<u128>> = pieces
            .iter()
            .map(|p| {
                let ids = p.converted.batch.column(c_member).as_string::<i32>();
                (0..ids.len()).map(|i| text_key(ids.value(i))).collect()
            })
            .collect();
        let line_keys: Vec<Vec<u128>> = pieces
            .iter()
            .map(|p| {
                let b = &p.converted.batch;
                let (ids, lines) = (b.column(c_order).as_string::<i32>(), b.column(c_line).as_primitive::<Int32Type>());
                (0..ids.len()).map(|i| order_line_key(ids.value(i), lines.value(i))).collect()
            })
            .collect();
        let mut distinct: Vec<u128> = member_hashes.iter().flatten().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let known = self.dict.lookup(&distinct)?;
        let mut without_row: HashSet<u128> = HashSet::new();
        if let Some(members) = &self.members {
            let present: Vec<u128> =
                distinct.iter().zip(&known).filter(|(_, k)| k.is_some()).map(|(h, _)| *h).collect();
            for (h, row) in present.iter().zip(members.lookup(&present, false)?) {
                if row.is_none() {
                    without_row.insert(*h);
                }
            }
        }
        let mut probes: Vec<u128> = line_keys.iter().flatten().copied().collect();
        probes.sort_unstable();
        probes.dedup();
        let stored = self.lines.stored(&probes)?;
        drop(probes);

        for ((piece, hashes), keys) in pieces.into_iter().zip(member_hashes).zip(line_keys) {
            let Piece { file, converted } = piece;
            let batch = &converted.batch;
            let mut rejects = converted.rejects;
            let members = batch.column(c_member).as_string::<i32>();
            let at = batch.column(c_at).as_primitive::<TimestampMicrosecondType>();
            let mut keep = Vec::with_capacity(batch.num_rows());
            let mut member_keys = Vec::with_capacity(batch.num_rows());
            let mut seq = self.sinks.next_seq();
            for i in 0..batch.num_rows() {
                let h = hashes[i];
                let pos = distinct.binary_search(&h).expect("every member hash is in the chunk's set");
                let key = match known[pos] {
                    Some(k) => {
                        if without_row.contains(&h) {
                            self.record_created(h, members.value(i), k, at.value(i));
                        }
                        k
                    }
                    None if self.opts.create_members => {
                        let k = self.dict.assign(members.value(i), h)?;
                        self.record_created(h, members.value(i), k, at.value(i));
                        k
                    }
                    None => {
                        rejects.push(Reject {
                            row: converted.rows[i],
                            column: Some("member_id".into()),
                            reason: format!(
                                "unknown member_id {:?} (ingest members first, or pass --create-members)",
                                members.value(i)
                            ),
                            raw: Some(describe_row(batch, i)),
                        });
                        keep.push(false);
                        continue;
                    }
                };
                if stored.contains(&keys[i]) || !self.lines.insert(keys[i], seq)? {
                    summary.unchanged += 1;
                    keep.push(false);
                    continue;
                }
                seq += 1;
                keep.push(true);
                member_keys.push(key);
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
            if !self.categories.is_empty() {
                let cat = cols[c_cat].as_string::<i32>();
                if cat.null_count() > 0 {
                    let skus = cols[c_sku].as_string::<i32>();
                    let filled: StringArray = (0..cat.len())
                        .map(|i| {
                            if cat.is_valid(i) {
                                Some(cat.value(i))
                            } else {
                                self.categories.get(skus.value(i)).map(String::as_str)
                            }
                        })
                        .collect();
                    cols[c_cat] = Arc::new(filled);
                }
            }
            let kept = RecordBatch::try_new(schema.clone(), cols).map_err(Error::internal("filtering orders"))?;
            summary.inserted += kept.num_rows() as u64;
            let out = with_member_key(Table::Orders, &kept, Arc::new(Int64Array::from(member_keys)))?;
            self.sinks.write(out).await?;
        }
        Ok(())
    }

    fn record_created(&mut self, h: u128, id: &str, key: i64, at: i64) {
        self.created.entry(h).and_modify(|c| c.first_at = c.first_at.min(at)).or_insert_with(|| Created {
            id: id.to_string(),
            key,
            first_at: at,
        });
    }
}

/// Minimal member rows for members first seen in orders: registered at
/// their first order, other attributes unknown until a members export.
fn created_members_batch(created: &[Created]) -> Result<RecordBatch> {
    let schema = Table::Members.arrow_schema();
    let n = created.len();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "member_key" => Arc::new(Int64Array::from_iter_values(created.iter().map(|c| c.key))),
                "member_id" => Arc::new(StringArray::from_iter_values(created.iter().map(|c| c.id.as_str()))),
                "registered_at" => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(created.iter().map(|c| c.first_at))
                        .with_timezone("UTC"),
                ),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, cols).map_err(Error::internal("creating members"))
}
