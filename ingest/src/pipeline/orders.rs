//! Orders: append-only facts keyed by `(order_id, line_no)`.
//!
//! A line seen before — in the warehouse or earlier in this input — is
//! skipped; the first one in input order is kept. Lines are checked a chunk
//! at a time: the chunk's distinct member ids are looked up in the
//! dictionary and its line keys in the orders key index (one sorted probe
//! each; sorting the keys with their rows also finds the chunk's own
//! repeats), then the rows go through in order. A line repeated across
//! chunks is found later, when this run's keys are merged ([`LineKeys`]),
//! and taken out of the written files before the commit.
//!
//! The per-line work of the thread that checks the chunks (hashing,
//! sorting) runs on every core: it was the backfill's bottleneck, a
//! per-line hash map insert (cache misses) and its regrowth after each
//! spill taking a third of that thread's time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::filter;
use arrow::datatypes::{Int32Type, TimestampMicrosecondType};
use rayon::prelude::*;
use taglake_storage::{Table, Warehouse};

use super::quarantine::Quarantine;
use super::sink::{Sinks, remove_rows};
use super::{IngestOptions, IngestSummary, Message, Piece, commit_with_index, describe_row, with_member_key};
use crate::convert::input_schema;
use crate::dictionary::MemberDictionary;
use crate::keys::run::{Run, RunWriter};
use crate::keys::{FINAL_RUN_KEYS, KeyIndex, KeyKind, merge_range, order_line_key, row_digests, text_key};
use crate::source::Reject;
use crate::{Error, Result};

/// Bytes a converted order line takes in memory, for sizing chunks.
pub(super) const LINE_BYTES: usize = 160;

/// The line keys of the warehouse (through its index) and of this run.
///
/// Each chunk's new keys arrive sorted, with the sequence numbers of their
/// rows (the chunk found its own repeats and the stored keys while sorting
/// for the index probe: no per-line hash map). They are held in memory as
/// sorted runs up to a share of the budget; then a background thread
/// merges the held runs into one run on disk ("pending") while the next
/// chunks arrive, so a backfill of any size stays within the budget. A key
/// that two chunks both hold was written twice: the merges find it (the
/// smaller sequence number is the first occurrence) and
/// [`LineKeys::finish`] returns the later rows' sequence numbers, to be
/// taken out of the files before the commit. The last merge of the pending
/// runs is split into key ranges merged in parallel.
pub struct LineKeys {
    index: KeyIndex,
    /// This run's new keys not yet on disk: sorted runs of (key, sequence
    /// number), in input order.
    held: Vec<Vec<(u128, u64)>>,
    held_len: usize,
    /// Keys held before they are spilled.
    cap: usize,
    /// Spilled runs in input order, each with the sequence numbers its
    /// merge found repeated.
    pending: Vec<(Run, Vec<u64>)>,
    /// The newest spill while a background thread writes it.
    writing: Option<Spill>,
}

/// A spill of held runs being written by a background thread.
struct Spill {
    path: std::path::PathBuf,
    thread: std::thread::JoinHandle<Result<(Run, Vec<u64>)>>,
}

impl Spill {
    fn join(self) -> Result<(Run, Vec<u64>)> {
        let path = self.path;
        self.thread.join().map_err(|_| Error::Spill { path, source: "the thread writing it panicked".into() })?
    }
}

impl LineKeys {
    /// The orders index, with `memory` for this run's keys (or at most
    /// `cap` of them).
    pub async fn open(wh: &Warehouse, memory: usize, cap: Option<usize>) -> Result<LineKeys> {
        let index = KeyIndex::open(wh, KeyKind::OrderLines, memory / 4).await?;
        // An entry takes 32 bytes; while one spill is written the next
        // runs fill up: two caps' worth within `memory`.
        let cap = cap.unwrap_or((memory / 64).max(1 << 16));
        Ok(LineKeys { index, held: Vec::new(), held_len: 0, cap, pending: Vec::new(), writing: None })
    }

    /// For each of `keys` (sorted, distinct): whether the warehouse holds it.
    pub fn stored(&self, keys: &[u128]) -> Result<Vec<bool>> {
        Ok(self.index.lookup(keys, true)?.into_iter().map(|f| f.is_some()).collect())
    }

    /// Takes a chunk's new keys (sorted, distinct) with their rows'
    /// sequence numbers.
    pub fn add(&mut self, run: Vec<(u128, u64)>) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        self.held_len += run.len();
        self.held.push(run);
        if self.held_len >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands the held runs to a background thread that merges them into
    /// one run on disk; waits for the previous spill first, so at most one
    /// is in flight (and its held runs are freed before more are taken).
    fn spill(&mut self) -> Result<()> {
        if let Some(previous) = self.writing.take() {
            self.pending.push(previous.join()?);
        }
        let held = std::mem::take(&mut self.held);
        let n = std::mem::take(&mut self.held_len) as u64;
        let path = self.index.new_run_path();
        let target = path.clone();
        let thread = std::thread::spawn(move || {
            let mut w = RunWriter::create(&target, true, n)?;
            let mut dups = Vec::new();
            merge_held(held, |key, seq| w.push(key, seq), &mut dups)?;
            Ok((w.finish()?, dups))
        });
        self.writing = Some(Spill { path, thread });
        Ok(())
    }

    /// The runs holding this run's keys (to commit with the table) and the
    /// sequence numbers of rows that repeat an earlier row's key, sorted.
    pub fn finish(&mut self) -> Result<(Vec<Run>, Vec<u64>)> {
        let mut dups = Vec::new();
        if self.pending.is_empty() && self.writing.is_none() {
            // Everything is in memory: merge it into the index's run.
            let mut entries = Vec::with_capacity(self.held_len);
            merge_held(
                std::mem::take(&mut self.held),
                |key, _| {
                    entries.push((key, 0));
                    Ok(())
                },
                &mut dups,
            )?;
            let run = self.index.write_run(entries.into_iter())?;
            dups.sort_unstable();
            return Ok((vec![run], dups));
        }
        if !self.held.is_empty() {
            self.spill()?;
        }
        if let Some(last) = self.writing.take() {
            self.pending.push(last.join()?);
        }
        let pending: Vec<Run> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(run, d)| {
                dups.extend(d);
                run
            })
            .collect();
        let total: u64 = pending.iter().map(Run::len).sum();
        // Keys are uniform hashes: equal ranges of the key space hold about
        // as many keys, so the final merge is split into one range per core.
        let parts = rayon::current_num_threads().clamp(1, 16) as u128;
        let bound = |i: u128| (i < parts).then(|| u128::MAX / parts * i);
        let index = &self.index;
        let merged: Vec<Result<(Vec<Run>, Vec<u64>)>> = (0..parts)
            .into_par_iter()
            .map(|i| merge_pending(index, &pending, bound(i).unwrap_or(0), bound(i + 1), total / parts as u64 + 1))
            .collect();
        let mut runs = Vec::new();
        for m in merged {
            let (r, d) = m?;
            runs.extend(r);
            dups.extend(d);
        }
        for p in pending {
            std::fs::remove_file(p.path())
                .map_err(|e| Error::Index { path: p.path().to_path_buf(), source: e.into() })?;
        }
        dups.sort_unstable();
        Ok((runs, dups))
    }
}

/// Merges held runs (each sorted by key) in key order, calling `each(key,
/// seq)` with the first occurrence of every key and putting the later
/// occurrences' sequence numbers in `dups`.
fn merge_held(
    held: Vec<Vec<(u128, u64)>>,
    mut each: impl FnMut(u128, u64) -> Result<()>,
    dups: &mut Vec<u64>,
) -> Result<()> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    if let [one] = held.as_slice() {
        return one.iter().try_for_each(|&(k, seq)| each(k, seq));
    }
    let mut at = vec![0usize; held.len()];
    let mut heap: BinaryHeap<Reverse<(u128, u64, usize)>> =
        held.iter().enumerate().filter_map(|(i, r)| r.first().map(|&(k, seq)| Reverse((k, seq, i)))).collect();
    let mut last: Option<u128> = None;
    while let Some(Reverse((key, seq, i))) = heap.pop() {
        at[i] += 1;
        if let Some(&(k, s)) = held[i].get(at[i]) {
            heap.push(Reverse((k, s, i)));
        }
        // Equal keys pop smallest sequence number first: the first occurrence.
        if last == Some(key) {
            dups.push(seq);
        } else {
            each(key, seq)?;
            last = Some(key);
        }
    }
    Ok(())
}

/// Merges the keys `from..to` of the pending runs into the index's runs
/// (at most [`FINAL_RUN_KEYS`] keys each), with the sequence numbers of
/// repeated rows.
fn merge_pending(
    index: &KeyIndex,
    pending: &[Run],
    from: u128,
    to: Option<u128>,
    expected: u64,
) -> Result<(Vec<Run>, Vec<u64>)> {
    let mut runs = Vec::new();
    let mut dups = Vec::new();
    let mut written = 0u64;
    let mut writer: Option<RunWriter> = None;
    merge_range(pending, from, to, |key, sources| {
        // The smallest sequence number is the first occurrence.
        let first = sources.iter().map(|s| s.1).min().expect("one source at least");
        dups.extend(sources.iter().map(|s| s.1).filter(|&s| s != first));
        let w = match &mut writer {
            Some(w) if w.len() < FINAL_RUN_KEYS => w,
            _ => {
                if let Some(full) = writer.take() {
                    runs.push(full.finish()?);
                }
                let size = expected.saturating_sub(written).clamp(1, FINAL_RUN_KEYS);
                writer.insert(RunWriter::create(&index.new_run_path(), false, size)?)
            }
        };
        w.push(key, 0)?;
        written += 1;
        Ok(())
    })?;
    if let Some(w) = writer {
        runs.push(w.finish()?);
    }
    Ok((runs, dups))
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
    scratch: Scratch,
}

/// The buffers a chunk's checks fill, kept from one chunk to the next.
/// They take ~200 MB a chunk of 1.7 M lines: allocated afresh, every page
/// of them was a page fault and a page zeroed, a quarter of the consumer's
/// time in a 42 M-member backfill.
#[derive(Default)]
struct Scratch {
    /// The chunk's distinct member hashes, sorted.
    distinct: Vec<u128>,
    /// Each row's member, as its place in `distinct`.
    member_at: Vec<u32>,
    /// (line key, row) of the rows taking part, sorted.
    by_key: Vec<(u128, u32)>,
    /// The first row of each distinct line key.
    firsts: Vec<(u128, u32)>,
    /// The distinct line keys: the probe of the orders index.
    probes: Vec<u128>,
    /// By row: the first occurrence of a line the warehouse lacks.
    new_line: Vec<bool>,
    /// By row: the sequence number a kept row gets (`u64::MAX`: not kept).
    seq_of: Vec<u64>,
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
        scratch: Scratch::default(),
    };
    let chunk_rows = opts.chunk_rows();
    let mut chunk: Vec<Piece> = Vec::new();
    let mut rows = 0usize;
    let mut chunks = 0usize;
    let read = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                Message::Rows(n) => summary.rows_read += n,
                Message::FileFailed(path, reason) => summary.failed_files.push((path, reason)),
                Message::Stopped(path, message) => return Err(Error::ReaderStopped { path, message }),
                Message::Piece(p) => {
                    rows += p.converted.batch.num_rows() + p.converted.rejects.len();
                    chunk.push(p);
                    if rows >= chunk_rows {
                        chunks += 1;
                        if chunks == 2 {
                            // More than one chunk: the dictionary and the line
                            // keys' filters would be read once per chunk. Hold
                            // them instead, in 3/8 of the budget, when they fit.
                            let share = memory as u64 * 3 / 8;
                            run.dict.keep_in_memory(share)?;
                            run.lines.index.keep_blooms(share - run.dict.resident_bytes())?;
                        }
                        run.chunk(std::mem::take(&mut chunk), quarantine, summary).await?;
                        rows = 0;
                    }
                }
            }
        }
        run.chunk(chunk, quarantine, summary).await
    }
    .await;
    if let Err(e) = read {
        run.sinks.stop().await;
        return Err(e);
    }

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

        // The chunk's members and line keys, hashed on every core and
        // looked up once for all pieces.
        let (member_hashes, line_keys): (Vec<Vec<u128>>, Vec<Vec<u128>>) = pieces
            .par_iter()
            .map(|p| {
                let b = &p.converted.batch;
                let members = b.column(c_member).as_string::<i32>();
                let (ids, lines) = (b.column(c_order).as_string::<i32>(), b.column(c_line).as_primitive::<Int32Type>());
                (
                    (0..members.len()).map(|i| text_key(members.value(i))).collect(),
                    (0..ids.len()).map(|i| order_line_key(ids.value(i), lines.value(i))).collect(),
                )
            })
            .unzip();
        let mut s = std::mem::take(&mut self.scratch);
        s.distinct.clear();
        s.distinct.extend(member_hashes.iter().flatten());
        s.distinct.par_sort_unstable();
        s.distinct.dedup();
        let distinct = &s.distinct;
        let known = self.dict.lookup(distinct)?;
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

        // Which rows bring a new line: sorted by key (then row), the first
        // row of each key is its first occurrence in the chunk, and the
        // distinct keys are the probe of the orders index. Rows of unknown
        // members (rejected below) take no part.
        let total: usize = line_keys.iter().map(Vec::len).sum();
        // Each row's member, as its place in `distinct`, filled piece by
        // piece on every core.
        s.member_at.clear();
        s.member_at.resize(total, 0);
        let mut rest = s.member_at.as_mut_slice();
        let mut parts = Vec::with_capacity(member_hashes.len());
        for hashes in &member_hashes {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(hashes.len());
            parts.push(part);
            rest = tail;
        }
        parts.into_par_iter().zip(&member_hashes).for_each(|(part, hashes)| {
            for (at, h) in part.iter_mut().zip(hashes) {
                *at = distinct.binary_search(h).expect("every member hash is in the chunk's set") as u32;
            }
        });
        let member_at = &s.member_at;
        s.by_key.clear();
        for (row, k) in line_keys.iter().flatten().enumerate() {
            if self.opts.create_members || known[member_at[row] as usize].is_some() {
                s.by_key.push((*k, row as u32));
            }
        }
        drop(line_keys);
        s.by_key.par_sort_unstable();
        s.firsts.clear();
        s.firsts.extend(s.by_key.chunk_by(|a, b| a.0 == b.0).map(|group| group[0]));
        s.probes.clear();
        s.probes.extend(s.firsts.iter().map(|f| f.0));
        let stored = self.lines.stored(&s.probes)?;
        let new_line = &mut s.new_line;
        new_line.clear();
        new_line.resize(total, false);
        for (f, stored) in s.firsts.iter().zip(&stored) {
            new_line[f.1 as usize] = !stored;
        }
        // The sequence number each kept row gets, by row.
        let seq_of = &mut s.seq_of;
        seq_of.clear();
        seq_of.resize(total, u64::MAX);

        let mut row = 0usize;
        for (piece, hashes) in pieces.into_iter().zip(member_hashes) {
            let Piece { file, converted } = piece;
            let batch = &converted.batch;
            let mut rejects = converted.rejects;
            let members = batch.column(c_member).as_string::<i32>();
            let at = batch.column(c_at).as_primitive::<TimestampMicrosecondType>();
            let mut keep = Vec::with_capacity(batch.num_rows());
            let mut member_keys = Vec::with_capacity(batch.num_rows());
            let mut seq = self.sinks.next_seq();
            // One member hash per row of the batch.
            for (i, &h) in hashes.iter().enumerate() {
                let this = row;
                row += 1;
                let key = match known[member_at[this] as usize] {
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
                if !new_line[this] {
                    summary.unchanged += 1;
                    keep.push(false);
                    continue;
                }
                seq_of[this] = seq;
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
        // The chunk's new keys, sorted, with their rows' sequence numbers.
        let run: Vec<(u128, u64)> =
            s.firsts.iter().filter(|f| seq_of[f.1 as usize] != u64::MAX).map(|f| (f.0, seq_of[f.1 as usize])).collect();
        self.scratch = s;
        self.lines.add(run)
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Chunks' new keys, held, spilled and merged in any sizes, give
        /// exactly what one set in input order gives: every key once, and
        /// every later occurrence's sequence number as a repeat.
        #[test]
        fn held_and_spilled_keys_find_exactly_the_repeats(
            chunks in proptest::collection::vec(proptest::collection::btree_set(0u128..60, 0..20), 0..12),
            cap in 1usize..40,
            spread in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let wh = Warehouse::open(dir.path().join("wh")).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut keys = rt.block_on(LineKeys::open(&wh, 1 << 20, Some(cap))).unwrap();
            // Spread the small keys over the whole key space, so that the
            // final merge's ranges all get some.
            let key = |k: u128| if spread { k.wrapping_mul(u128::MAX / 61) } else { k };
            let mut seq = 0u64;
            let mut first: HashMap<u128, u64> = HashMap::new();
            let mut want_dups = Vec::new();
            for chunk in &chunks {
                let mut run: Vec<(u128, u64)> = chunk.iter().map(|&k| (key(k), 0)).collect();
                run.sort_unstable();
                for e in &mut run {
                    e.1 = seq;
                    seq += 1;
                    let at = *first.entry(e.0).or_insert(e.1);
                    if at != e.1 { want_dups.push(e.1) }
                }
                keys.add(run).unwrap();
            }
            let (runs, dups) = keys.finish().unwrap();
            want_dups.sort_unstable();
            proptest::prop_assert_eq!(dups, want_dups);
            let mut got = Vec::new();
            for r in &runs {
                let mut c = r.cursor().unwrap();
                while let Some((k, _)) = c.next_entry().unwrap() {
                    got.push(k);
                }
            }
            got.sort_unstable();
            let mut want: Vec<u128> = first.keys().copied().collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
