//! Retention of tag snapshots: which to keep, and deleting the rest.
//!
//! A nightly tag run adds a snapshot every day; without pruning, a year of
//! nights keeps 365 of them. [`prune`] keeps what people look back at: the
//! newest snapshots, the last snapshot of each recent day and of each
//! recent month, every snapshot an experiment was exported from (its
//! report compares against it), and always the newest. Days and months are
//! those of the snapshot's as-of date; a day's (or month's) last snapshot
//! is the highest-numbered one with that date, so the night's `cluster`
//! snapshot wins over its `tag` snapshot. A snapshot holding bytes a kept
//! one refers to also stays while its day is in the daily window (the
//! night's `tag` snapshot, whose bitmaps the `cluster` snapshot shares):
//! deleting it would save nothing but rewrite its bytes.
//!
//! Deleting is one Delta commit that removes the deleted snapshots' files.
//! A kept snapshot may refer to bytes a deleted one holds (see the module
//! docs of [`super`]): the same commit rewrites it so that the first kept
//! referrer of each such bitmap holds the bytes and later referrers point
//! there. Readers therefore never meet a dangling reference, and a prune
//! killed at any moment leaves the table as it was. The files stay on
//! disk, readable by time travel, until `taglake vacuum` deletes them after
//! its retention period.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, BinaryBuilder, Int64Array, RecordBatch};
use arrow::datatypes::{Date32Type, Int64Type};
use chrono::{Datelike, NaiveDate};
use taglake_storage::scan::{Wanted, file_batches, scan, table_files};
use taglake_storage::{DataFile, Table, Warehouse, WriterLock};

use super::{SNAPSHOT_CLAIM, each_held, files_of, numbers};
use crate::{Error, Result};

/// Which snapshots [`prune`] keeps; the newest is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// The newest this many snapshots.
    pub keep_last: usize,
    /// The last snapshot of each of the newest this many as-of days.
    pub keep_daily: usize,
    /// The last snapshot of each of the newest this many as-of months.
    pub keep_monthly: usize,
}

impl Default for Retention {
    /// Five weeks of days and two years of months.
    fn default() -> Self {
        Retention { keep_last: 1, keep_daily: 35, keep_monthly: 24 }
    }
}

/// A snapshot [`prune`] keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    /// Snapshot version.
    pub snapshot: i64,
    /// Its as-of date.
    pub as_of: NaiveDate,
    /// The rules that keep it: `newest`, `last`, `daily`, `monthly`,
    /// `experiment`, `holder` (holds bytes a kept snapshot refers to, and
    /// its day is in the daily window).
    pub reasons: Vec<&'static str>,
}

/// What [`prune`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pruned {
    /// Snapshots kept, ascending.
    pub kept: Vec<Kept>,
    /// Snapshots deleted, ascending, with their as-of dates.
    pub deleted: Vec<(i64, NaiveDate)>,
    /// Kept snapshots rewritten to take over bitmaps a deleted one held.
    pub rewritten: Vec<i64>,
    /// Bitmaps taken over.
    pub taken_over: usize,
    /// Bytes of the files the commit removes from the table.
    pub bytes_removed: u64,
    /// Bytes of the files it adds (the rewritten snapshots; in a dry run
    /// not known, 0).
    pub bytes_added: u64,
    /// The `tags` version committed; `None` for a dry run or when nothing
    /// was deleted.
    pub version: Option<u64>,
}

/// One stored snapshot as retention sees it.
pub(super) struct Stored {
    pub(super) as_of: NaiveDate,
    /// `(name, holder)` of each row that refers to another snapshot.
    pub(super) references: Vec<(String, i64)>,
}

/// Deletes the snapshots `policy` does not keep, in one commit, or with
/// `dry_run` only says which. Takes the writer lock; the commit also claims
/// the newest snapshot number, so a snapshot written meanwhile without the
/// lock makes one of the two fail instead of referring to deleted bytes.
pub async fn prune(wh: &Warehouse, lock: &WriterLock, policy: &Retention, dry_run: bool) -> Result<Pruned> {
    lock.check(wh)?;
    let all = wh.files(Table::Tags).await?;
    let versions = numbers(&all);
    let Some(&newest) = versions.last() else { return Ok(Pruned::default()) };
    let stored: BTreeMap<i64, Stored> = taglake_storage::scan::blocking(|| {
        versions.iter().map(|&v| Ok((v, read_stored(v, &files_of(&all, v))?))).collect::<Result<_>>()
    })?;
    let experiments = experiment_snapshots(wh).await?;
    let reasons = keep(&stored, newest, policy, &experiments);
    let mut out = Pruned::default();
    for (&v, s) in &stored {
        match reasons.get(&v) {
            Some(r) => out.kept.push(Kept { snapshot: v, as_of: s.as_of, reasons: r.clone() }),
            None => out.deleted.push((v, s.as_of)),
        }
    }
    if out.deleted.is_empty() {
        return Ok(out);
    }
    let deleted: BTreeSet<i64> = out.deleted.iter().map(|(v, _)| *v).collect();
    // The new holder of each deleted bitmap that a kept snapshot needs:
    // its first kept referrer (snapshots ascend, so that is the first seen).
    // Every kept snapshot with such a reference is rewritten.
    let mut new_holder: HashMap<(i64, String), i64> = HashMap::new();
    let mut rewritten: BTreeSet<i64> = BTreeSet::new();
    for (&v, s) in stored.iter().filter(|(v, _)| !deleted.contains(v)) {
        for (name, h) in s.references.iter().filter(|(_, h)| deleted.contains(h)) {
            new_holder.entry((*h, name.clone())).or_insert(v);
            rewritten.insert(v);
        }
    }
    out.rewritten = rewritten.iter().copied().collect();
    out.taken_over = new_holder.len();
    let mut removes: Vec<PathBuf> = Vec::new();
    for f in all.iter() {
        let v: Option<i64> = f.partition_value("snapshot").and_then(|s| s.parse().ok());
        if v.is_some_and(|v| deleted.contains(&v) || rewritten.contains(&v)) {
            out.bytes_removed += f.size;
            removes.push(f.path.clone());
        }
    }
    if dry_run {
        return Ok(out);
    }
    let mut adds = Vec::new();
    for &k in &rewritten {
        adds.extend(rewrite(wh, &all, k, &deleted, &new_holder).await?);
    }
    for a in &adds {
        let path = wh.added_file(Table::Tags, a)?;
        out.bytes_added += std::fs::metadata(&path).map_err(|source| Error::Io { path, source })?.len();
    }
    out.version = wh.commit_files_claiming(Table::Tags, &removes, &adds, &[(SNAPSHOT_CLAIM, newest)]).await?;
    Ok(out)
}

/// The snapshots to keep, each with the rules that keep it.
pub(super) fn keep(
    stored: &BTreeMap<i64, Stored>,
    newest: i64,
    policy: &Retention,
    experiments: &BTreeSet<i64>,
) -> BTreeMap<i64, Vec<&'static str>> {
    let mut keep: BTreeMap<i64, Vec<&'static str>> = BTreeMap::new();
    keep.entry(newest).or_default().push("newest");
    for &v in stored.keys().rev().take(policy.keep_last) {
        keep.entry(v).or_default().push("last");
    }
    // The last snapshot of each of the newest `n` periods; returns those
    // periods.
    let mut by_period = |period: &dyn Fn(NaiveDate) -> i64, n: usize, reason: &'static str| {
        // Snapshots ascend: the last one inserted for a period is its last.
        let last: BTreeMap<i64, i64> = stored.iter().map(|(&v, s)| (period(s.as_of), v)).collect();
        let newest: Vec<(i64, i64)> = last.into_iter().rev().take(n).collect();
        for &(_, v) in &newest {
            keep.entry(v).or_default().push(reason);
        }
        newest.into_iter().map(|(p, _)| p).collect::<BTreeSet<i64>>()
    };
    let day = |d: NaiveDate| d.num_days_from_ce() as i64;
    let window = by_period(&day, policy.keep_daily, "daily");
    by_period(&|d| d.year() as i64 * 12 + d.month0() as i64, policy.keep_monthly, "monthly");
    for v in experiments.iter().filter(|v| stored.contains_key(v)) {
        keep.entry(*v).or_default().push("experiment");
    }
    // A snapshot whose bytes a kept one refers to stays while its day is
    // in the daily window: deleting it would only move its bytes into the
    // referrer (a night's `cluster` snapshot refers to nearly every bitmap
    // of the `tag` snapshot before it), rewriting them and leaving the old
    // files until a vacuum, for no space saved.
    let holders: BTreeSet<i64> = keep
        .keys()
        .flat_map(|k| stored[k].references.iter().map(|(_, h)| *h))
        .filter(|h| stored.get(h).is_some_and(|s| window.contains(&day(s.as_of))))
        .collect();
    for h in holders {
        keep.entry(h).or_default().push("holder");
    }
    keep
}

/// The as-of date and references of snapshot `v`.
fn read_stored(v: i64, files: &[PathBuf]) -> Result<Stored> {
    let t = Table::Tags;
    let wanted = [Wanted::plain(t, "name"), Wanted::plain(t, "as_of"), Wanted::plain(t, "bitmap_snapshot").or_null()];
    let found = Mutex::new((None, Vec::new()));
    scan::<_, Error>(t, files, &wanted, |b| {
        let names = b.column(0).as_string::<i32>();
        let as_of = b.column(1).as_primitive::<Date32Type>();
        let holder = b.column(2).as_primitive::<Int64Type>();
        let mut found = found.lock().expect("stored");
        if b.num_rows() > 0 {
            found.0 = Some(as_of.value(0));
        }
        for r in (0..b.num_rows()).filter(|&r| holder.is_valid(r)) {
            found.1.push((names.value(r).to_string(), holder.value(r)));
        }
        Ok(())
    })?;
    let (as_of, references) = found.into_inner().expect("stored");
    let as_of = as_of.ok_or_else(|| Error::NotFound(format!("tag snapshot {v} is empty")))?;
    Ok(Stored { as_of: crate::features::day_to_date(as_of), references })
}

/// The snapshots experiments were exported from.
async fn experiment_snapshots(wh: &Warehouse) -> Result<BTreeSet<i64>> {
    let t = Table::Experiments;
    let files = table_files(wh, t).await?;
    let out = Mutex::new(BTreeSet::new());
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &[Wanted::plain(t, "snapshot")], |b| {
            out.lock().expect("experiments").extend(b.column(0).as_primitive::<Int64Type>().iter().flatten());
            Ok(())
        })
    })?;
    Ok(out.into_inner().expect("experiments"))
}

/// Writes kept snapshot `k` again with the bitmaps it takes over from
/// deleted snapshots (`new_holder` says which it holds from now on and
/// where its other references point); returns the `add` actions. Holds
/// the bytes it takes over and one batch of `k`'s rows at a time.
async fn rewrite(
    wh: &Warehouse,
    all: &[DataFile],
    k: i64,
    deleted: &BTreeSet<i64>,
    new_holder: &HashMap<(i64, String), i64>,
) -> Result<Vec<String>> {
    let t = Table::Tags;
    let mut wanted_bytes: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for ((h, name), _) in new_holder.iter().filter(|(_, to)| **to == k) {
        wanted_bytes.entry(*h).or_default().push(name);
    }
    let mut bytes: HashMap<(i64, String), Vec<u8>> = HashMap::new();
    for (h, names) in wanted_bytes {
        let found = Mutex::new(Vec::new());
        each_held(k, h, &files_of(all, h), &names, |name, b| {
            found.lock().expect("bytes").push(((h, name.to_string()), b.to_vec()));
            Ok(())
        })?;
        bytes.extend(found.into_inner().expect("bytes"));
    }
    let schema = t.arrow_schema();
    let stored: Vec<Wanted> = t
        .columns()
        .iter()
        .filter(|c| !t.partition_columns().contains(&c.name))
        .map(|c| if c.required { Wanted::plain(t, c.name) } else { Wanted::plain(t, c.name).or_null() })
        .collect();
    let index = |name: &str| schema.index_of(name).expect("tags column");
    let (name_at, bitmap_at, holder_at) = (index("name"), index("bitmap"), index("bitmap_snapshot"));
    let mut writer = wh.part_writer(t, schema.clone())?;
    for path in files_of(all, k) {
        for b in file_batches(t, &path, &stored)? {
            let b = b?;
            // The stored columns lack the partition column `snapshot`,
            // which comes first in the table's schema.
            let mut columns = vec![Arc::new(Int64Array::from(vec![k; b.num_rows()])) as arrow::array::ArrayRef];
            columns.extend(b.columns().iter().cloned());
            let names = columns[name_at].as_string::<i32>().clone();
            let old_bytes = columns[bitmap_at].as_binary::<i32>().clone();
            let old_holder = columns[holder_at].as_primitive::<Int64Type>().clone();
            let mut bitmap = BinaryBuilder::new();
            let mut holder = Vec::with_capacity(b.num_rows());
            for r in 0..b.num_rows() {
                let h = old_holder.is_valid(r).then(|| old_holder.value(r));
                match h.filter(|h| deleted.contains(h)) {
                    None => {
                        if old_bytes.is_valid(r) {
                            bitmap.append_value(old_bytes.value(r))
                        } else {
                            bitmap.append_null()
                        }
                        holder.push(h);
                    }
                    Some(h) => {
                        let key = (h, names.value(r).to_string());
                        let to = *new_holder.get(&key).expect("every reference into a deleted snapshot has a holder");
                        if to == k {
                            bitmap.append_value(bytes.get(&key).expect("each_held found every tag asked for"));
                            holder.push(None);
                        } else {
                            bitmap.append_null();
                            holder.push(Some(to));
                        }
                    }
                }
            }
            columns[bitmap_at] = Arc::new(bitmap.finish());
            columns[holder_at] = Arc::new(Int64Array::from(holder));
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("rewriting tag snapshot {k}: {e}")))?;
            writer.write(batch).await?;
        }
    }
    Ok(writer.finish().await?)
}
