//! The key index: which keys each ingested table holds, without reading it.
//!
//! Ingest must know, for every incoming row, whether its key is already
//! stored: an order line `(order_id, line_no)` seen before is skipped, a
//! member id has a dense key or gets the next one, a member row identical to
//! the stored one changes nothing. Reading those keys out of the table on
//! every run costs the whole history in time and memory, so a daily file
//! of a million lines would cost as much as loading years of orders. The
//! index keeps them beside the warehouse instead, in
//! `<warehouse>/_taglake/index/<table>/`, as a small log-structured merge
//! tree of immutable sorted runs ([`run`]) of 128-bit key hashes (with an
//! 8-byte value where one is needed: a member's key, a row's digest):
//!
//! - a probe sorts its keys and asks each run, which reads only the filter
//!   and key blocks the keys fall in: checking a day's lines reads about
//!   1.25 bytes of filter per stored line plus a few blocks, holding none
//!   of it (see [`run::Run::probe`]);
//! - an ingest adds the keys it committed as one new run; small runs are
//!   merged in the background of later ingests (size-tiered, at most
//!   [`MERGE_FAN_IN`] runs of a tier at once), so a year of nights stays a
//!   few dozen runs;
//! - keys are 128-bit xxh3 hashes of the key columns: two different keys
//!   collide with probability about 2⁻¹²⁸ · n², far below any disk error.
//!
//! The index is derived data: its manifest records the Delta version and
//! table id it reflects. When the table moved on (a run killed between its
//! table commit and its index update), the index catches up by reading only
//! the files appended since ([`taglake_storage::Warehouse::appended_since`]);
//! when the table was rewritten by something else, or a run file is
//! damaged, it is rebuilt from the table in bounded memory. The manifest is
//! replaced atomically (write, sync, rename), so a kill leaves the old or
//! the new index, never a mix; files no manifest names are deleted on open.

pub mod bloom;
pub mod run;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use taglake_storage::scan::{Wanted, scan};
use taglake_storage::{Table, TableState, Warehouse};

use crate::{Error, Result};
use run::{Run, RunWriter};

/// Runs of one size tier merged together once there are this many.
pub const MERGE_FAN_IN: usize = 8;
/// Runs this large are never merged: a probe costs the same over one big
/// run or several (filter bytes per key do not change), and merging them
/// would rewrite gigabytes for nothing.
pub const FINAL_RUN_KEYS: u64 = 1 << 24;

/// What an index holds: the key and value of each row of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `orders`: one key per `(order_id, line_no)`, no value.
    OrderLines,
    /// `member_ids`: `member_id` → `member_key`.
    MemberIds,
    /// `members`: `member_id` → digest of the stored row.
    Members,
    /// `products`: `sku` → digest of the stored row.
    Products,
    /// `quarantine`: one key per recorded bad row (table, file, row, content).
    Quarantine,
}

impl KeyKind {
    /// Every kind.
    pub const ALL: [KeyKind; 5] =
        [KeyKind::OrderLines, KeyKind::MemberIds, KeyKind::Members, KeyKind::Products, KeyKind::Quarantine];

    /// The table indexed.
    pub fn table(self) -> Table {
        match self {
            KeyKind::OrderLines => Table::Orders,
            KeyKind::MemberIds => Table::MemberIds,
            KeyKind::Members => Table::Members,
            KeyKind::Products => Table::Products,
            KeyKind::Quarantine => Table::Quarantine,
        }
    }

    /// Whether entries carry a value.
    pub fn has_values(self) -> bool {
        matches!(self, KeyKind::MemberIds | KeyKind::Members | KeyKind::Products)
    }

    /// Whether a later entry for a key replaces an earlier one (entities);
    /// otherwise keys are added once and never change (facts, the dictionary).
    pub fn replaces(self) -> bool {
        matches!(self, KeyKind::Members | KeyKind::Products)
    }

    /// The stored columns the entries are computed from.
    fn columns(self) -> Vec<Wanted> {
        let t = self.table();
        let plain = |names: &[&'static str]| names.iter().map(|n| Wanted::plain(t, n)).collect();
        match self {
            KeyKind::OrderLines => plain(&["order_id", "line_no"]),
            KeyKind::MemberIds => plain(&["member_id", "member_key"]),
            KeyKind::Members | KeyKind::Products => t.input_columns().map(|c| Wanted::plain(t, c.name)).collect(),
            KeyKind::Quarantine => {
                plain(&["table_name", "source_file", "row_number", "column_name", "reason", "raw_record"])
            }
        }
    }

    /// The entries of a batch holding [`KeyKind::columns`] in that order.
    fn entries(self, batch: &RecordBatch) -> Result<Vec<(u128, u64)>> {
        let n = batch.num_rows();
        Ok(match self {
            KeyKind::OrderLines => {
                let (ids, lines) = (batch.column(0).as_string::<i32>(), batch.column(1).as_primitive::<Int32Type>());
                (0..n).map(|i| (order_line_key(ids.value(i), lines.value(i)), 0)).collect()
            }
            KeyKind::MemberIds => {
                let (ids, keys) = (batch.column(0).as_string::<i32>(), batch.column(1).as_primitive::<Int64Type>());
                (0..n).map(|i| (text_key(ids.value(i)), keys.value(i) as u64)).collect()
            }
            KeyKind::Members | KeyKind::Products => {
                let ids = batch.column(0).as_string::<i32>();
                let digests = row_digests(batch.columns())?;
                (0..n).map(|i| (text_key(ids.value(i)), digests[i])).collect()
            }
            KeyKind::Quarantine => {
                let s = |c: usize| batch.column(c).as_string::<i32>();
                let (table, file, row, column, reason, raw) =
                    (s(0), s(1), batch.column(2).as_primitive::<Int64Type>(), s(3), s(4), s(5));
                fn opt(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
                    a.is_valid(i).then(|| a.value(i))
                }
                (0..n)
                    .map(|i| {
                        let key = quarantine_key(
                            table.value(i),
                            file.value(i),
                            row.value(i),
                            opt(column, i),
                            reason.value(i),
                            opt(raw, i),
                        );
                        (key, 0)
                    })
                    .collect()
            }
        })
    }
}

/// The key of an order line: a 128-bit hash of the id, a separator and
/// the line number's 4 bytes, as one input.
///
/// Not the line number as xxh3's seed: the seed enters short inputs by
/// XOR and subtraction, so ids a digit apart with line numbers one apart
/// can cancel out, and do (79 of 300,000 lines of a generated night
/// collided that way).
pub fn order_line_key(order_id: &str, line_no: i32) -> u128 {
    let id = order_id.as_bytes();
    let mut buf = [0u8; 64];
    if id.len() + 5 <= buf.len() {
        buf[..id.len()].copy_from_slice(id);
        buf[id.len()] = 0x1f;
        buf[id.len() + 1..id.len() + 5].copy_from_slice(&line_no.to_le_bytes());
        xxhash_rust::xxh3::xxh3_128(&buf[..id.len() + 5])
    } else {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(id);
        h.update(&[0x1f]);
        h.update(&line_no.to_le_bytes());
        h.digest128()
    }
}

/// The key of a text identifier (`member_id`, `sku`).
pub fn text_key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// The key of a quarantine entry: its table and file, the row, and the
/// content (the raw record, or the column and reason when there is none).
/// The same bad row read again is the same entry; a different bad row
/// that a rewritten file has at the same position is a new one.
pub fn quarantine_key(
    table: &str,
    file: &str,
    row: i64,
    column: Option<&str>,
    reason: &str,
    raw: Option<&str>,
) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [table, "\u{1f}", file, "\u{1f}"] {
        h.update(part.as_bytes());
    }
    h.update(&row.to_le_bytes());
    match raw {
        Some(raw) => {
            h.update(b"\x1fraw\x1f");
            h.update(raw.as_bytes());
        }
        None => {
            for part in ["\u{1f}", column.unwrap_or(""), "\u{1f}", reason] {
                h.update(part.as_bytes());
            }
        }
    }
    h.digest128()
}

/// A 64-bit digest of each row of `columns` (the canonical input columns
/// of a table, in their warehouse types): equal rows, equal digests.
pub fn row_digests(columns: &[ArrayRef]) -> Result<Vec<u64>> {
    let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
        .map_err(Error::internal("digesting rows"))?;
    let rows = converter.convert_columns(columns).map_err(Error::internal("digesting rows"))?;
    Ok((0..rows.num_rows()).map(|i| xxhash_rust::xxh3::xxh3_64(rows.row(i).as_ref())).collect())
}

/// Version of the manifest and of the key functions: an index of another
/// version is rebuilt from its table (2: order-line keys no longer use the
/// line number as the hash seed).
const FORMAT: u32 = 2;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RunEntry {
    file: String,
    entries: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: u32,
    table: String,
    /// The table version the runs reflect; `None` for a table not yet made.
    state: Option<TableState>,
    /// Oldest first.
    runs: Vec<RunEntry>,
}

const MANIFEST: &str = "manifest.json";

/// The key index of one table; see the module docs.
#[derive(Debug)]
pub struct KeyIndex {
    kind: KeyKind,
    dir: PathBuf,
    state: Option<TableState>,
    /// Oldest first.
    runs: Vec<Run>,
    /// Memory a rebuild or merge may hold.
    memory: usize,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Index { path: path.to_path_buf(), source: e.into() }
}

fn index_dir(wh: &Warehouse, kind: KeyKind) -> PathBuf {
    wh.root().join("_taglake").join("index").join(kind.table().name())
}

/// Deletes every file of `dir` but its manifest and `keep`; returns them
/// with sizes.
fn remove_all_but(dir: &Path, keep: &HashSet<PathBuf>) -> Result<Vec<(PathBuf, u64)>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name != MANIFEST && !keep.contains(&path) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push((path, size));
        }
    }
    removed.sort();
    Ok(removed)
}

/// Deletes the files of every key index that its manifest does not list:
/// the runs of an ingest that failed before committing them, and run files
/// cut off while being written. Returns them with sizes.
///
/// [`KeyIndex::open`] deletes the same files, but only when the next
/// ingest of that table starts; after a failure for a full disk that is
/// too late for everything else. An index whose manifest cannot be read
/// is left alone (its next open rebuilds it), and an index whose manifest
/// is behind its table catches up from the table's files at its next open.
/// Call only while holding the warehouse's writer lock: another ingest's
/// runs are unlisted until it commits.
pub fn discard_unlisted(wh: &Warehouse) -> Result<Vec<(PathBuf, u64)>> {
    let mut removed = Vec::new();
    for kind in KeyKind::ALL {
        let index = KeyIndex { kind, dir: index_dir(wh, kind), state: None, runs: Vec::new(), memory: 0 };
        if !index.dir.is_dir() {
            continue;
        }
        let Some(manifest) = index.read_manifest() else { continue };
        let keep: HashSet<PathBuf> = manifest.runs.iter().map(|r| index.dir.join(&r.file)).collect();
        removed.extend(remove_all_but(&index.dir, &keep)?);
    }
    Ok(removed)
}

impl KeyIndex {
    /// Opens the index of `kind`'s table, bringing it up to the table's
    /// current version (catching up on appended files, or rebuilding).
    /// `memory` bounds what a rebuild holds.
    pub async fn open(wh: &Warehouse, kind: KeyKind, memory: usize) -> Result<KeyIndex> {
        let table = kind.table();
        let dir = index_dir(wh, kind);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let state = wh.state(table).await?;
        let mut index = KeyIndex { kind, dir, state: None, runs: Vec::new(), memory };
        let manifest = index.read_manifest();
        let Some(current) = state else {
            // No table: nothing indexed (a stale index of a deleted table goes).
            index.write_manifest()?;
            index.remove_unreferenced()?;
            return Ok(index);
        };
        let usable = match &manifest {
            Some(m) => m.state.as_ref().is_some_and(|s| s.id == current.id && s.version <= current.version),
            None => false,
        };
        let opened = match (&manifest, usable) {
            (Some(m), true) => index.open_runs(m),
            _ => None,
        };
        match opened {
            Some(runs) => {
                let from = manifest.and_then(|m| m.state).map(|s| s.version).expect("usable manifest has a state");
                index.runs = runs;
                index.state = Some(TableState { version: from, id: current.id.clone() });
                if from < current.version {
                    match wh.appended_since(table, from, current.version)? {
                        Some(files) => {
                            let runs = index.runs_from_files(&files)?;
                            index.commit(runs, current)?;
                        }
                        None => index.rebuild(wh, current).await?,
                    }
                }
            }
            None => index.rebuild(wh, current).await?,
        }
        index.remove_unreferenced()?;
        Ok(index)
    }

    /// The table version the index reflects.
    pub fn state(&self) -> Option<&TableState> {
        self.state.as_ref()
    }

    /// Keys held (counting a replaced key once per run that has it).
    pub fn entries(&self) -> u64 {
        self.runs.iter().map(Run::len).sum()
    }

    /// The largest value held (a dictionary's largest member key); `None`
    /// when the index is empty.
    pub fn max_value(&self) -> Option<u64> {
        self.runs.iter().filter(|r| !r.is_empty()).map(Run::max_value).max()
    }

    /// Number of runs.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    fn read_manifest(&self) -> Option<Manifest> {
        let text = std::fs::read_to_string(self.dir.join(MANIFEST)).ok()?;
        let m: Manifest = serde_json::from_str(&text).ok()?;
        (m.format == FORMAT && m.table == self.kind.table().name()).then_some(m)
    }

    /// Opens the manifest's runs; `None` when any is missing or damaged.
    fn open_runs(&self, m: &Manifest) -> Option<Vec<Run>> {
        m.runs.iter().map(|r| Run::open(&self.dir.join(&r.file)).ok().filter(|run| run.len() == r.entries)).collect()
    }

    fn write_manifest(&self) -> Result<()> {
        let m = Manifest {
            format: FORMAT,
            table: self.kind.table().name().into(),
            state: self.state.clone(),
            runs: self
                .runs
                .iter()
                .map(|r| RunEntry {
                    file: r.path().file_name().expect("run file").to_string_lossy().into_owned(),
                    entries: r.len(),
                })
                .collect(),
        };
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join("manifest.json.tmp");
        let text = serde_json::to_string_pretty(&m).expect("manifest serializes");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(io_err(&path))
    }

    /// Deletes run files no manifest names (left by a killed ingest).
    fn remove_unreferenced(&self) -> Result<()> {
        let keep: HashSet<PathBuf> = self.runs.iter().map(|r| r.path().to_path_buf()).collect();
        remove_all_but(&self.dir, &keep).map(|_| ())
    }

    /// A fresh path for a new run in this index.
    pub fn new_run_path(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let seed = format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        self.dir.join(format!("{:016x}.run", xxhash_rust::xxh3::xxh3_64(seed.as_bytes())))
    }

    /// Writes sorted entries (ascending, unique keys) as a new run; it
    /// joins the index only with [`KeyIndex::commit`].
    pub fn write_run(&self, entries: impl ExactSizeIterator<Item = (u128, u64)>) -> Result<Run> {
        let mut w = RunWriter::create(&self.new_run_path(), self.kind.has_values(), entries.len() as u64)?;
        for (k, v) in entries {
            w.push(k, v)?;
        }
        w.finish()
    }

    /// Sorts `entries` and writes them as a new run: for equal keys the
    /// last one wins (a replaced entity's newest row).
    pub fn sort_into_run(&self, mut entries: Vec<(u128, u64)>) -> Result<Run> {
        // A stable sort keeps equal keys in arrival order; keep the last.
        entries.sort_by_key(|e| e.0);
        let mut out: Vec<(u128, u64)> = Vec::with_capacity(entries.len());
        for e in entries {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        self.write_run(out.into_iter())
    }

    /// Makes `runs` part of the index, recording that it now reflects
    /// `state`, then merges small runs if there are many.
    pub fn commit(&mut self, runs: Vec<Run>, state: TableState) -> Result<()> {
        self.runs.extend(runs.into_iter().filter(|r| !r.is_empty()));
        self.state = Some(state);
        self.write_manifest()?;
        self.compact()
    }

    /// For each of `probes` (sorted ascending), its value if the index holds
    /// it (`Some(0)` in indexes without values); the newest run wins.
    /// `use_bloom` suits probe sets that mostly miss.
    pub fn lookup(&self, probes: &[u128], use_bloom: bool) -> Result<Vec<Option<u64>>> {
        let mut found: Vec<Option<u64>> = vec![None; probes.len()];
        let mut open: Vec<usize> = (0..probes.len()).collect();
        for run in self.runs.iter().rev() {
            if open.is_empty() {
                break;
            }
            let keys: Vec<u128> = open.iter().map(|&i| probes[i]).collect();
            run.probe(&keys, use_bloom, |j, v| found[open[j]] = Some(v))?;
            open.retain(|&i| found[i].is_none());
        }
        Ok(found)
    }

    /// Keeps the Bloom filters of the newest runs in memory, up to `budget`
    /// bytes, for an ingest that probes them chunk after chunk.
    pub fn keep_blooms(&mut self, budget: u64) -> Result<()> {
        let mut left = budget;
        for run in self.runs.iter_mut().rev() {
            if run.bloom_bytes() > left {
                break;
            }
            left -= run.bloom_bytes();
            run.keep_bloom()?;
        }
        Ok(())
    }

    /// Bytes [`KeyIndex::resident`] takes: 20 an entry when every value
    /// fits 32 bits (a dictionary's member keys), 24 otherwise.
    pub fn resident_bytes(&self) -> u64 {
        self.entries() * (16 + if self.narrow_values() { 4 } else { 8 })
    }

    /// Whether every value fits 32 bits.
    fn narrow_values(&self) -> bool {
        self.max_value().is_none_or(|m| m <= u32::MAX as u64)
    }

    /// Every entry in memory, for lookups of many keys chunk after chunk
    /// (an ingest of a large file against a large dictionary): a lookup then
    /// costs a few cache misses per key instead of reading the runs again.
    pub fn resident(&self) -> Result<Resident> {
        let n = self.entries() as usize;
        let mut keys = Vec::with_capacity(n);
        let mut values = match self.narrow_values() {
            true => Values::Narrow(Vec::with_capacity(n)),
            false => Values::Wide(Vec::with_capacity(n)),
        };
        let mut cursors = self.runs.iter().map(Run::cursor).collect::<Result<Vec<_>>>()?;
        merge_cursors(&mut cursors, |key, sources| {
            keys.push(key);
            let value = sources.last().expect("one source at least").1;
            match &mut values {
                // narrow_values: every value fits.
                Values::Narrow(v) => v.push(value as u32),
                Values::Wide(v) => v.push(value),
            }
            Ok(())
        })?;
        Ok(Resident { keys, values })
    }

    /// Entries of the table files `files`, as sorted runs holding at most
    /// the memory budget each.
    fn runs_from_files(&self, files: &[PathBuf]) -> Result<Vec<Run>> {
        let cap = (self.memory / 2 / 24).max(1 << 16);
        let pending = Mutex::new(Vec::<(u128, u64)>::new());
        let runs = Mutex::new(Vec::<Run>::new());
        let wanted = self.kind.columns();
        scan::<_, Error>(self.kind.table(), files, &wanted, |batch| {
            let entries = self.kind.entries(batch)?;
            let full = {
                let mut p = pending.lock().expect("not poisoned");
                p.extend(entries);
                (p.len() >= cap).then(|| std::mem::take(&mut *p))
            };
            if let Some(full) = full {
                let run = self.sort_into_run(full)?;
                runs.lock().expect("not poisoned").push(run);
            }
            Ok(())
        })?;
        let mut runs = runs.into_inner().expect("not poisoned");
        let rest = pending.into_inner().expect("not poisoned");
        if !rest.is_empty() {
            runs.push(self.sort_into_run(rest)?);
        }
        Ok(runs)
    }

    /// Drops every run and indexes the table's current files again.
    async fn rebuild(&mut self, wh: &Warehouse, state: TableState) -> Result<()> {
        let files: Vec<PathBuf> = wh.files(self.kind.table()).await?.into_iter().map(|f| f.path).collect();
        self.runs.clear();
        let runs = self.runs_from_files(&files)?;
        if self.kind.replaces() && runs.len() > 1 {
            // Scan order is not table order: runs of one rebuild must not
            // hold a key twice (the table holds each entity once).
            let merged = self.merge(runs)?;
            return self.commit(vec![merged], state);
        }
        self.commit(runs, state)
    }

    /// Size-tiered merging: while [`MERGE_FAN_IN`] or more neighbouring runs
    /// share a size tier (a power of 4) below [`FINAL_RUN_KEYS`], merge the
    /// newest [`MERGE_FAN_IN`] of them into one. Merging neighbours keeps
    /// newer-wins order; merging a few at a time keeps each merge small.
    fn compact(&mut self) -> Result<()> {
        let tier = |n: u64| if n >= FINAL_RUN_KEYS { u32::MAX } else { (63 - n.max(1).leading_zeros()) / 2 };
        loop {
            let mut pick = None;
            let mut i = 0;
            while i < self.runs.len() {
                let t = tier(self.runs[i].len());
                let mut j = i;
                while j < self.runs.len() && tier(self.runs[j].len()) == t {
                    j += 1;
                }
                if t != u32::MAX && j - i >= MERGE_FAN_IN {
                    pick = Some((j - MERGE_FAN_IN, j));
                }
                i = j;
            }
            let Some((from, to)) = pick else { return Ok(()) };
            let group: Vec<Run> = self.runs.drain(from..to).collect();
            let old: Vec<PathBuf> = group.iter().map(|r| r.path().to_path_buf()).collect();
            let merged = self.merge(group)?;
            self.runs.insert(from, merged);
            self.write_manifest()?;
            for p in old {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
    }

    /// Merges runs (oldest first) into one; for a key in several, the
    /// newest run's entry wins.
    fn merge(&self, runs: Vec<Run>) -> Result<Run> {
        let total: u64 = runs.iter().map(Run::len).sum();
        let mut w = RunWriter::create(&self.new_run_path(), self.kind.has_values(), total)?;
        let mut cursors = runs.iter().map(Run::cursor).collect::<Result<Vec<_>>>()?;
        merge_cursors(&mut cursors, |key, sources| w.push(key, sources.last().expect("one source at least").1))?;
        w.finish()
    }
}

/// An index's entries in memory; see [`KeyIndex::resident`].
#[derive(Debug)]
pub struct Resident {
    keys: Vec<u128>,
    values: Values,
}

/// A resident index's values, in 32 bits when they all fit: a dictionary
/// of 40 M members then fits the 3/8 of a 2 GiB budget an ingest gives it
/// (805 MB; 33 M at 24 bytes a member).
#[derive(Debug)]
enum Values {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Values {
    fn get(&self, i: usize) -> u64 {
        match self {
            Values::Narrow(v) => v[i] as u64,
            Values::Wide(v) => v[i],
        }
    }
}

impl Resident {
    /// For each of `probes` (sorted ascending), its value if present. Each
    /// probe gallops forward from the previous one's position.
    pub fn lookup(&self, probes: &[u128]) -> Vec<Option<u64>> {
        let mut at = 0usize;
        probes
            .iter()
            .map(|p| {
                let mut step = 1;
                while at + step < self.keys.len() && self.keys[at + step] < *p {
                    step *= 2;
                }
                let lo = at + step / 2;
                let hi = (at + step + 1).min(self.keys.len());
                at = lo + self.keys[lo.min(hi)..hi].partition_point(|k| k < p);
                (at < self.keys.len() && self.keys[at] == *p).then(|| self.values.get(at))
            })
            .collect()
    }
}

/// K-way merge of cursors (oldest first) in key order: calls `each(key,
/// sources)` once per distinct key, `sources` being `(cursor, value)` of
/// every cursor that holds it, oldest first.
pub fn merge_cursors(cursors: &mut [run::Cursor], each: impl FnMut(u128, &[(usize, u64)]) -> Result<()>) -> Result<()> {
    let heads = cursors.iter_mut().map(run::Cursor::next_entry).collect::<Result<Vec<_>>>()?;
    merge_heads(cursors, heads, None, each)
}

/// [`merge_cursors`] over the keys `from..to` of `runs` only (`to: None`:
/// to the end): each run is read from the key block holding `from`, so
/// disjoint ranges of the same runs can be merged side by side.
pub fn merge_range(
    runs: &[Run],
    from: u128,
    to: Option<u128>,
    each: impl FnMut(u128, &[(usize, u64)]) -> Result<()>,
) -> Result<()> {
    let mut cursors = runs.iter().map(|r| r.cursor_near(from)).collect::<Result<Vec<_>>>()?;
    let mut heads = Vec::with_capacity(cursors.len());
    for c in &mut cursors {
        let mut head = c.next_entry()?;
        while head.is_some_and(|(k, _)| k < from) {
            head = c.next_entry()?;
        }
        heads.push(head);
    }
    merge_heads(&mut cursors, heads, to, each)
}

/// The merge itself, from each cursor's first entry (`heads`), stopping at
/// `to`.
fn merge_heads(
    cursors: &mut [run::Cursor],
    heads: Vec<Option<(u128, u64)>>,
    to: Option<u128>,
    mut each: impl FnMut(u128, &[(usize, u64)]) -> Result<()>,
) -> Result<()> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let below = |k: u128| to.is_none_or(|t| k < t);
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    for (i, head) in heads.into_iter().enumerate() {
        if let Some((k, v)) = head.filter(|(k, _)| below(*k)) {
            heap.push(Reverse((k, i, v)));
        }
    }
    let mut sources = Vec::new();
    while let Some(Reverse((key, i, value))) = heap.pop() {
        sources.clear();
        sources.push((i, value));
        if let Some((k, v)) = cursors[i].next_entry()?.filter(|(k, _)| below(*k)) {
            heap.push(Reverse((k, i, v)));
        }
        while let Some(Reverse((k, j, v))) = heap.peek().copied() {
            if k != key {
                break;
            }
            heap.pop();
            sources.push((j, v));
            if let Some((k2, v2)) = cursors[j].next_entry()?.filter(|(k, _)| below(*k)) {
                heap.push(Reverse((k2, j, v2)));
            }
        }
        each(key, &sources)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
