//! Members and products: entities, where the latest row for a key wins.
//!
//! Rows identical to what is stored change nothing; new keys are appended;
//! a changed entity's new row is appended and the files holding its old row
//! are rewritten without it, all in one commit (the old version stays
//! readable by time travel). Whether a row is new, unchanged or changed
//! comes from the table's key index, which holds a digest of every stored
//! row: the stored rows themselves are read only in the files being
//! rewritten, one batch at a time.
//!
//! The input is held in memory up to a third of the budget; beyond that it
//! is spilled to 64 Arrow IPC files by key hash and each part is processed
//! on its own. Parts cover disjoint, ascending ranges of key hashes, so the
//! index entries of the run come out sorted, part after part, and go
//! straight into the new index run: nothing grows with the table.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{concat_batches, take, take_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, file_batches, scan};
use taglake_storage::{PartWriter, Table, Warehouse};

use super::quarantine::Quarantine;
use super::sink::Sinks;
use super::{IngestOptions, IngestSummary, Message, Piece, with_member_key};
use crate::convert::input_schema;
use crate::dictionary::MemberDictionary;
use crate::keys::run::RunWriter;
use crate::keys::{KeyIndex, KeyKind, row_digests, text_key};
use crate::{Error, Result};

/// Spill parts (the top 6 bits of the key hash).
const PARTS: usize = 64;

/// See the module docs.
pub(super) async fn ingest_upsert(
    wh: &Warehouse,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    opts: &IngestOptions,
    quarantine: &mut Quarantine,
    summary: &mut IngestSummary,
) -> Result<()> {
    let table = opts.mapping.table;
    let schema = input_schema(table);
    let budget = opts.limits.map(|l| l.incoming_bytes).unwrap_or(opts.memory / 3);
    let mut incoming = Incoming::new(wh, schema.clone(), budget);
    while let Some(msg) = rx.recv().await {
        match msg {
            Message::Rows(n) => summary.rows_read += n,
            Message::FileFailed(path, reason) => summary.failed_files.push((path, reason)),
            Message::Stopped(path, message) => return Err(Error::ReaderStopped { path, message }),
            Message::Piece(Piece { file, converted }) => {
                quarantine.add(&file, &converted.rejects).await?;
                incoming.push(converted.batch)?;
            }
        }
    }
    let kind = if table == Table::Members { KeyKind::Members } else { KeyKind::Products };
    let mut index = KeyIndex::open(wh, kind, opts.memory / 8).await?;
    let mut dict = match table {
        Table::Members => Some(Dictionary::open(wh, opts.memory / 8, incoming.rows).await?),
        _ => None,
    };
    let mut run = Upsert {
        table,
        index_run: RunWriter::create(&index.new_run_path(), true, incoming.rows)?,
        changed: Changed::default(),
        sinks: Sinks::new(wh, table, table.arrow_schema(), opts.writers(), opts.rows_per_file())?,
    };
    let parts = async {
        for part in incoming.parts()? {
            let part = part?;
            run.part(&part, &index, dict.as_mut(), summary).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = parts {
        run.sinks.stop().await;
        return Err(e);
    }
    let Upsert { index_run, changed, sinks, .. } = run;
    // The writers finish before an error of the rewrite is returned, so
    // that every file of this run exists for `discard_failed`.
    let rewritten = rewrite_changed(wh, table, &changed).await;
    let written = sinks.finish().await;
    let (removes, mut adds) = rewritten?;
    adds.extend(written?.into_iter().map(|f| f.add));
    // Dependency order: keys first, then the rows that use them.
    if let Some(dict) = dict {
        summary.new_members = dict.added;
        dict.commit(wh).await?;
    }
    let index_run = index_run.finish()?;
    super::commit_with_index(wh, table, &removes, &adds, &mut index, vec![index_run]).await
}

/// Old rows to take out of the stored files: members by key, products by
/// the hash of their sku.
#[derive(Default)]
struct Changed {
    member_keys: RoaringBitmap,
    skus: HashSet<u128>,
}

impl Changed {
    fn is_empty(&self) -> bool {
        self.member_keys.is_empty() && self.skus.is_empty()
    }
}

/// What the parts of one upsert share.
struct Upsert {
    table: Table,
    index_run: RunWriter,
    changed: Changed,
    sinks: Sinks,
}

impl Upsert {
    /// Decides and writes the entities of one part (all rows of a range of
    /// key hashes, in input order).
    async fn part(
        &mut self,
        batch: &RecordBatch,
        index: &KeyIndex,
        dict: Option<&mut Dictionary>,
        summary: &mut IngestSummary,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // The latest row of each key, entities in order of first appearance.
        let ids = batch.column(0).as_string::<i32>();
        let hashes: Vec<u128> = (0..ids.len()).map(|i| text_key(ids.value(i))).collect();
        let mut slot: HashMap<u128, usize> = HashMap::with_capacity(hashes.len());
        let mut latest: Vec<u32> = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            match slot.get(h) {
                Some(&s) => {
                    latest[s] = i as u32;
                    summary.unchanged += 1;
                }
                None => {
                    slot.insert(*h, latest.len());
                    latest.push(i as u32);
                }
            }
        }
        drop(slot);
        let indices = UInt32Array::from(latest);
        let rows = take_record_batch(batch, &indices).map_err(Error::internal("deduplicating"))?;
        let hashes: Vec<u128> = indices.values().iter().map(|&i| hashes[i as usize]).collect();
        let digests = row_digests(rows.columns())?;

        // Stored digests (and member keys), by one sorted probe each.
        let mut order: Vec<usize> = (0..hashes.len()).collect();
        order.sort_unstable_by_key(|&i| hashes[i]);
        let sorted: Vec<u128> = order.iter().map(|&i| hashes[i]).collect();
        let mut stored = vec![None; hashes.len()];
        for (j, d) in index.lookup(&sorted, false)?.into_iter().enumerate() {
            stored[order[j]] = d;
        }
        let mut member_keys = vec![None; hashes.len()];
        if let Some(dict) = &dict {
            for (j, k) in dict.dict.lookup(&sorted)?.into_iter().enumerate() {
                member_keys[order[j]] = k;
            }
        }

        let mut write = Vec::with_capacity(hashes.len());
        let mut entries: Vec<(u128, u64)> = Vec::new();
        for i in 0..hashes.len() {
            match stored[i] {
                Some(d) if d == digests[i] => {
                    write.push(false);
                    summary.unchanged += 1;
                    continue;
                }
                Some(_) => {
                    summary.replaced += 1;
                    match member_keys[i] {
                        Some(k) => {
                            self.changed.member_keys.insert(k as u32);
                        }
                        None => {
                            self.changed.skus.insert(hashes[i]);
                        }
                    }
                }
                None => summary.inserted += 1,
            }
            write.push(true);
            entries.push((hashes[i], digests[i]));
        }
        let keep = BooleanArray::from(write.clone());
        let out = arrow::compute::filter_record_batch(&rows, &keep).map_err(Error::internal("filtering rows"))?;
        let out = match dict {
            Some(dict) => {
                // New members get keys in order of first appearance.
                let ids = rows.column(0).as_string::<i32>();
                let mut keys = Vec::with_capacity(out.num_rows());
                for i in (0..hashes.len()).filter(|&i| write[i]) {
                    let k = match member_keys[i] {
                        Some(k) => k,
                        None => dict.assign(ids.value(i), hashes[i])?,
                    };
                    keys.push(k);
                }
                dict.end_part().await?;
                with_member_key(self.table, &out, Arc::new(Int64Array::from(keys)))?
            }
            None => out,
        };
        entries.sort_unstable_by_key(|e| e.0);
        for (k, d) in entries {
            self.index_run.push(k, d)?;
        }
        self.sinks.write(out).await
    }
}

/// The dictionary of an upsert of members: lookups as usual, new members
/// streamed out part by part (their rows to a `member_ids` file, their
/// index entries, sorted within a part, to a run) instead of held.
struct Dictionary {
    dict: MemberDictionary,
    rows: PartWriter,
    run: RunWriter,
    /// New members of the current part: (hash, key), and their ids.
    part: Vec<(u128, i64)>,
    ids: Vec<String>,
    next: i64,
    added: u64,
}

impl Dictionary {
    async fn open(wh: &Warehouse, memory: usize, max_new: u64) -> Result<Dictionary> {
        let dict = MemberDictionary::open(wh, memory).await?;
        let run = RunWriter::create(&dict.index().new_run_path(), true, max_new)?;
        let rows = wh.file_writer(Table::MemberIds, Table::MemberIds.arrow_schema())?;
        let next = dict.next_key();
        Ok(Dictionary { dict, rows, run, part: Vec::new(), ids: Vec::new(), next, added: 0 })
    }

    fn assign(&mut self, id: &str, hash: u128) -> Result<i64> {
        if self.next > u32::MAX as i64 {
            return Err(Error::source("member_ids", "more than 4,294,967,296 members: dense u32 keys are exhausted"));
        }
        let k = self.next;
        self.next += 1;
        self.part.push((hash, k));
        self.ids.push(id.to_string());
        Ok(k)
    }

    /// Writes the current part's new members out.
    async fn end_part(&mut self) -> Result<()> {
        if self.part.is_empty() {
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            Table::MemberIds.arrow_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(self.ids.drain(..))),
                Arc::new(Int64Array::from_iter_values(self.part.iter().map(|p| p.1))),
            ],
        )
        .map_err(Error::internal("building member_ids"))?;
        self.rows.write(batch).await?;
        self.added += self.part.len() as u64;
        self.part.sort_unstable_by_key(|p| p.0);
        for (h, k) in self.part.drain(..) {
            self.run.push(h, k as u64)?;
        }
        Ok(())
    }

    async fn commit(self, wh: &Warehouse) -> Result<()> {
        let Dictionary { dict, rows, run, .. } = self;
        let adds = rows.finish().await?;
        let run = run.finish()?;
        let mut index = dict.into_index();
        super::commit_with_index(wh, Table::MemberIds, &[], &adds, &mut index, vec![run]).await
    }
}

/// The input rows: in memory, or spilled to parts by key hash.
struct Incoming {
    wh: Warehouse,
    schema: SchemaRef,
    budget: usize,
    bytes: usize,
    rows: u64,
    memory: Vec<RecordBatch>,
    spill: Option<Spill>,
}

struct Spill {
    dir: tempfile::TempDir,
    writers: Vec<StreamWriter<BufWriter<File>>>,
}

impl Incoming {
    fn new(wh: &Warehouse, schema: SchemaRef, budget: usize) -> Incoming {
        Incoming { wh: wh.clone(), schema, budget, bytes: 0, rows: 0, memory: Vec::new(), spill: None }
    }

    fn spill_err(path: PathBuf) -> impl Fn(arrow::error::ArrowError) -> Error {
        move |e| Error::Spill { path: path.clone(), source: e.into() }
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        if self.spill.is_none() {
            self.bytes += batch.get_array_memory_size();
            self.memory.push(batch);
            if self.bytes > self.budget {
                self.start_spill()?;
            }
            return Ok(());
        }
        self.spill_batch(&batch)
    }

    fn start_spill(&mut self) -> Result<()> {
        let root = self.wh.root().join("_taglake").join("spill");
        std::fs::create_dir_all(&root).map_err(|e| Error::Spill { path: root.clone(), source: e.into() })?;
        remove_orphaned_spills(&root);
        let dir = tempfile::Builder::new()
            .prefix(&format!("ingest-{}-", std::process::id()))
            .tempdir_in(&root)
            .map_err(|e| Error::Spill { path: root.clone(), source: e.into() })?;
        let mut writers = Vec::with_capacity(PARTS);
        for p in 0..PARTS {
            let path = dir.path().join(format!("part-{p:02}.arrows"));
            let file = File::create(&path).map_err(|e| Error::Spill { path: path.clone(), source: e.into() })?;
            writers.push(
                StreamWriter::try_new(BufWriter::with_capacity(1 << 16, file), &self.schema)
                    .map_err(Self::spill_err(path))?,
            );
        }
        self.spill = Some(Spill { dir, writers });
        for b in std::mem::take(&mut self.memory) {
            self.spill_batch(&b)?;
        }
        Ok(())
    }

    fn spill_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let spill = self.spill.as_mut().expect("spilling");
        let ids = batch.column(0).as_string::<i32>();
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); PARTS];
        for i in 0..ids.len() {
            parts[(text_key(ids.value(i)) >> 122) as usize].push(i as u32);
        }
        for (p, rows) in parts.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let indices = UInt32Array::from(rows);
            let cols: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()
                .map_err(Error::internal("spilling rows"))?;
            let part = RecordBatch::try_new(self.schema.clone(), cols).map_err(Error::internal("spilling rows"))?;
            let path = spill.dir.path().join(format!("part-{p:02}.arrows"));
            spill.writers[p].write(&part).map_err(Self::spill_err(path))?;
        }
        Ok(())
    }

    /// The parts, in ascending order of key hash, each as one batch.
    fn parts(self) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
        let schema = self.schema.clone();
        let (memory, dir) = match self.spill {
            None => (Some(self.memory), None),
            Some(Spill { dir, writers }) => {
                for (p, mut w) in writers.into_iter().enumerate() {
                    let path = dir.path().join(format!("part-{p:02}.arrows"));
                    w.finish().map_err(Self::spill_err(path))?;
                }
                (None, Some(dir))
            }
        };
        let in_memory =
            memory.map(|batches| concat_batches(&schema, &batches).map_err(Error::internal("collecting rows")));
        let schema = self.schema;
        let spilled = dir.map(|dir| {
            // The closure owns the folder: it is deleted after the last part.
            (0..PARTS).map(move |p| {
                let path = dir.path().join(format!("part-{p:02}.arrows"));
                let file = File::open(&path).map_err(|e| Error::Spill { path: path.clone(), source: e.into() })?;
                let reader =
                    StreamReader::try_new(BufReader::new(file), None).map_err(Self::spill_err(path.clone()))?;
                let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(Self::spill_err(path))?;
                concat_batches(&schema, &batches).map_err(Error::internal("reading spilled rows"))
            })
        });
        Ok(in_memory.into_iter().chain(spilled.into_iter().flatten()))
    }
}

/// Deletes the spill folders of ingests whose process is gone (killed: a
/// finished or failed one deletes its own). Best effort: a folder that
/// cannot be deleted now is tried again next time.
fn remove_orphaned_spills(root: &std::path::Path) {
    // Whether a process is alive is read from /proc; elsewhere keep all.
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid =
            name.strip_prefix("ingest-").and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Rewrites the stored files that hold an old row of a changed entity,
/// without those rows: returns the files to remove and the new files' adds.
async fn rewrite_changed(wh: &Warehouse, table: Table, changed: &Changed) -> Result<(Vec<PathBuf>, Vec<String>)> {
    if changed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let key_column = if table == Table::Members { "member_key" } else { "sku" };
    let stale = |b: &RecordBatch| -> Vec<bool> {
        if table == Table::Members {
            let keys = b.column(0).as_primitive::<Int64Type>();
            keys.values().iter().map(|k| changed.member_keys.contains(*k as u32)).collect()
        } else {
            let skus = b.column(0).as_string::<i32>();
            (0..skus.len()).map(|i| changed.skus.contains(&text_key(skus.value(i)))).collect()
        }
    };
    let wanted_key = [Wanted::plain(table, key_column)];
    let all: Vec<Wanted> = table.columns().iter().map(|c| Wanted::plain(table, c.name)).collect();
    let key_at = table.columns().iter().position(|c| c.name == key_column).expect("key column");
    let mut removes = Vec::new();
    let mut adds = Vec::new();
    for file in wh.files(table).await? {
        let hit = std::sync::atomic::AtomicBool::new(false);
        scan::<_, Error>(table, std::slice::from_ref(&file.path), &wanted_key, |b| {
            if stale(b).iter().any(|s| *s) {
                hit.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })?;
        if !hit.into_inner() {
            continue;
        }
        let mut writer = wh.file_writer(table, table.arrow_schema())?;
        for batch in file_batches(table, &file.path, &all)? {
            let batch = batch?;
            let key = RecordBatch::try_new(
                Arc::new(arrow::datatypes::Schema::new(vec![batch.schema().field(key_at).clone()])),
                vec![batch.column(key_at).clone()],
            )
            .map_err(Error::internal("rewriting rows"))?;
            let keep = BooleanArray::from(stale(&key).into_iter().map(|s| !s).collect::<Vec<_>>());
            let kept = arrow::compute::filter_record_batch(&batch, &keep).map_err(Error::internal("rewriting rows"))?;
            let kept = RecordBatch::try_new(table.arrow_schema(), kept.columns().to_vec())
                .map_err(Error::internal("rewriting rows"))?;
            writer.write(kept).await?;
        }
        adds.extend(writer.finish().await?);
        removes.push(file.path);
    }
    Ok((removes, adds))
}
