//! Tag snapshots in the warehouse `tags` table.
//!
//! A snapshot is one Delta commit that appends one row per tag: its
//! metadata, its cardinality and its bitmap in the portable roaring format
//! (readable by CRoaring, Java RoaringBitmap, pyroaring, ClickHouse).
//! The table is partitioned by `snapshot`, so reading one snapshot touches
//! only its files. A commit is atomic: a run killed before it leaves the
//! previous snapshots exactly as they were, and no reader ever sees part
//! of a snapshot. A snapshot's content never changes once committed.
//!
//! Writing one takes the warehouse [`WriterLock`], and the commit claims its
//! snapshot number (a Delta `txn` action), so two writers can never publish
//! the same number, even without the lock.
//!
//! # Shared bitmaps
//!
//! Most nights change only some tags, and `taglake cluster` adds its
//! community tags to a copy of the previous tags. Storing every bitmap
//! again would make a year of nights cost a year of full copies. So every
//! row carries `bitmap_digest`, the XXH3-128 of its serialized bitmap (32
//! hex digits), and a tag whose bytes equal those of the same tag in the
//! newest snapshot (or, for a tag the newest lacks, the newest snapshot
//! that has it) is stored as a *reference*: `bitmap` null and
//! `bitmap_snapshot` = the snapshot whose row of the same `name` holds the
//! bytes. A reference always names the holder itself, never another
//! reference, so a reader follows at most one step: to read tag `t` of
//! snapshot `s`, take `s`'s row of `t`; if its `bitmap` is null, take the
//! row of `t` in snapshot `bitmap_snapshot`, whose `bitmap` is set. (This
//! is what an external reader such as DuckDB or pyroaring does over
//! `warehouse/tags`; [`bitmaps`] and the SQL tag set do the same.) Rows
//! written before references existed have neither column and always hold
//! their bytes.
//!
//! [`prune`] deletes old snapshots under a retention policy; a kept
//! snapshot that refers to a deleted one takes its bytes over in the same
//! commit, so no reference ever dangles.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use arrow::array::{
    Array, AsArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use taglake_storage::{Table, Warehouse, WriterLock};

use crate::{Error, Result};
use taglake_storage::scan::{Wanted, scan};

mod prune;
pub use prune::{Kept, Pruned, Retention, prune};

/// One tag of a snapshot, without its bitmap.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TagInfo {
    /// Position in the catalog.
    pub position: i32,
    /// Tag name.
    pub name: String,
    /// Family.
    pub family: String,
    /// What the tag means.
    pub description: String,
    /// The rule (or how the tag is derived).
    pub rule: String,
    /// Members with the tag.
    pub members: i64,
    /// Members with the tag / members in the base.
    pub share: f64,
    /// Its value in its family's `members` column when the family is
    /// exclusive (`gold` for `tier_gold`), else `None`.
    pub value: Option<String>,
}

/// A snapshot's metadata and tags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    /// Snapshot version.
    pub snapshot: i64,
    /// The as-of date D.
    pub as_of: chrono::NaiveDate,
    /// Members in the base as of D.
    pub base_members: i64,
    /// Version of the `features` table computed in the same run.
    pub features_version: Option<i64>,
    /// Digest of the catalog text(s) used.
    pub catalog_digest: String,
    /// When the snapshot was committed.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The tags, in catalog order.
    pub tags: Vec<TagInfo>,
}

/// What a new snapshot holds.
pub struct NewSnapshot {
    /// The as-of date D.
    pub as_of: chrono::NaiveDate,
    /// Members in the base.
    pub base_members: i64,
    /// Version of `features` written in the same run.
    pub features_version: Option<i64>,
    /// Digest of the catalog.
    pub catalog_digest: String,
    /// Tags with their bitmaps, in catalog order.
    pub tags: Vec<(TagInfo, RoaringBitmap)>,
}

/// Snapshot versions present, ascending.
pub async fn versions(wh: &Warehouse) -> Result<Vec<i64>> {
    Ok(numbers(&wh.files(Table::Tags).await?))
}

/// The snapshot numbers of `tags` files, ascending.
fn numbers(files: &[taglake_storage::DataFile]) -> Vec<i64> {
    let mut v: Vec<i64> =
        files.iter().filter_map(|f| f.partition_value("snapshot").and_then(|s| s.parse().ok())).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Application id under which a snapshot commit claims its number (see
/// [`taglake_storage::TableWriter::claim`]).
const SNAPSHOT_CLAIM: &str = "taglake.tags.snapshot";

/// Commits a new snapshot (one Delta commit) and returns its version.
///
/// The number is the newest + 1, read from the very table version the
/// commit appends to and claimed in the commit: a second writer that read
/// the same newest snapshot (one that does not hold the writer lock) fails
/// with a conflict instead of publishing a second snapshot of that number.
pub async fn write(wh: &Warehouse, lock: &WriterLock, new: NewSnapshot) -> Result<i64> {
    commit(wh, lock, None, new).await
}

/// [`write`] for a snapshot derived from snapshot `base` (it carries base's
/// tags): fails, committing nothing, unless `base` is still the newest, so
/// stale tags are never published over fresher ones.
pub async fn write_after(wh: &Warehouse, lock: &WriterLock, base: i64, new: NewSnapshot) -> Result<i64> {
    commit(wh, lock, Some(base), new).await
}

async fn commit(wh: &Warehouse, lock: &WriterLock, base: Option<i64>, new: NewSnapshot) -> Result<i64> {
    lock.check(wh)?;
    let mut writer = wh.append(Table::Tags).await?;
    let files = writer.files()?;
    let mut older = numbers(&files);
    let stored = older.pop();
    let newest = stored.max(writer.claimed(SNAPSHOT_CLAIM).await?);
    if let Some(base) = base.filter(|&b| Some(b) != newest) {
        return Err(taglake_storage::Error::Conflict {
            table: Table::Tags.name(),
            message: format!(
                "this run read tag snapshot {base}, but snapshot {} was committed meanwhile",
                newest.unwrap_or_default()
            ),
        }
        .into());
    }
    let snapshot = newest.unwrap_or(0) + 1;
    // The newest snapshot's digests, read from the very version this
    // commit appends to: a tag whose bytes equal its row there refers to
    // that row's holder instead of storing them again.
    let mut shared = match stored {
        Some(s) => holders(s, &files_of(&files, s))?,
        None => HashMap::new(),
    };
    // A tag the newest snapshot lacks (the community tags, which only
    // `cluster` writes, when the newest is a `tag` snapshot) is compared
    // with its row in the newest snapshot that has one.
    while let Some(v) = older.pop() {
        if new.tags.iter().all(|(t, _)| shared.contains_key(&t.name)) {
            break;
        }
        for (name, row) in holders(v, &files_of(&files, v))? {
            shared.entry(name).or_insert(row);
        }
    }
    writer.claim(SNAPSHOT_CLAIM, snapshot);
    // A few hundred tags at a time: the bitmaps are serialized, written and
    // freed block by block, never held twice whole.
    const WRITE_BLOCK: usize = 256;
    let created = chrono::Utc::now().timestamp_micros();
    let NewSnapshot { as_of, base_members, features_version, catalog_digest, tags } = new;
    let mut pending = tags.into_iter();
    loop {
        let block: Vec<(TagInfo, RoaringBitmap)> = pending.by_ref().take(WRITE_BLOCK).collect();
        if block.is_empty() {
            break;
        }
        let head =
            NewSnapshot { as_of, base_members, features_version, catalog_digest: catalog_digest.clone(), tags: block };
        writer.write(snapshot_batch(snapshot, created, head, &shared)?).await?;
    }
    writer.commit().await?;
    Ok(snapshot)
}

/// The digest and holder of every tag of snapshot `v` (its `files`) that has
/// a digest: `name → (digest, the snapshot whose row holds the bytes)`.
fn holders(v: i64, files: &[PathBuf]) -> Result<HashMap<String, (String, i64)>> {
    let t = Table::Tags;
    let wanted = [
        Wanted::plain(t, "name"),
        Wanted::plain(t, "bitmap_digest").or_null(),
        Wanted::plain(t, "bitmap_snapshot").or_null(),
    ];
    let out = Mutex::new(HashMap::new());
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, files, &wanted, |b| {
            let (names, digests) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
            let holder = b.column(2).as_primitive::<Int64Type>();
            let mut out = out.lock().expect("holders");
            for r in (0..b.num_rows()).filter(|&r| digests.is_valid(r)) {
                let h = if holder.is_valid(r) { holder.value(r) } else { v };
                out.insert(names.value(r).to_string(), (digests.value(r).to_string(), h));
            }
            Ok(())
        })
    })?;
    Ok(out.into_inner().expect("holders"))
}

/// The digest stored in `bitmap_digest`: XXH3-128 of the serialized bitmap.
pub fn digest(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Rows of snapshot `snapshot` (committed at `created`, in microseconds):
/// each tag's bytes, or a reference to the holder `shared` names for it
/// when its digest equals the one there.
fn snapshot_batch(
    snapshot: i64,
    created: i64,
    new: NewSnapshot,
    shared: &HashMap<String, (String, i64)>,
) -> Result<RecordBatch> {
    let n = new.tags.len();
    let as_of = crate::features::date_to_day(new.as_of);
    // Serialize each bitmap straight into the column and free it: the
    // snapshot never holds a tag twice in memory.
    let mut column = arrow::array::BinaryBuilder::with_capacity(n, 0);
    let mut digests = Vec::with_capacity(n);
    let mut references = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    // Serialized and digested a few tags at a time on every core, so at
    // most a block of tags is held twice.
    const BLOCK: usize = 16;
    let mut pending = new.tags.into_iter();
    loop {
        let block: Vec<(TagInfo, RoaringBitmap)> = pending.by_ref().take(BLOCK).collect();
        if block.is_empty() {
            break;
        }
        let serialized: Vec<Result<(TagInfo, Vec<u8>, String)>> = block
            .into_par_iter()
            .map(|(info, bm)| {
                let mut bytes = Vec::with_capacity(bm.serialized_size());
                bm.serialize_into(&mut bytes).map_err(|e| Error::Internal(format!("serializing a bitmap: {e}")))?;
                let d = digest(&bytes);
                Ok((info, bytes, d))
            })
            .collect();
        for one in serialized {
            let (info, bytes, d) = one?;
            match shared.get(&info.name) {
                Some((old, holder)) if *old == d => {
                    column.append_null();
                    references.push(Some(*holder));
                }
                _ => {
                    column.append_value(&bytes);
                    references.push(None);
                }
            }
            digests.push(d);
            tags.push(info);
        }
    }
    let bitmaps = column.finish();
    let info = |f: fn(&TagInfo) -> &str| StringArray::from_iter_values(tags.iter().map(f));
    RecordBatch::try_new(
        Table::Tags.arrow_schema(),
        vec![
            Arc::new(Int64Array::from(vec![snapshot; n])),
            Arc::new(Int32Array::from_iter_values(tags.iter().map(|t| t.position))),
            Arc::new(info(|t| &t.name)),
            Arc::new(info(|t| &t.family)),
            Arc::new(info(|t| &t.description)),
            Arc::new(info(|t| &t.rule)),
            Arc::new(Int64Array::from_iter_values(tags.iter().map(|t| t.members))),
            Arc::new(Float64Array::from_iter_values(tags.iter().map(|t| t.share))),
            Arc::new(bitmaps),
            Arc::new(Date32Array::from(vec![as_of; n])),
            Arc::new(Int64Array::from(vec![new.base_members; n])),
            Arc::new(Int64Array::from(vec![new.features_version; n])),
            Arc::new(StringArray::from(vec![new.catalog_digest.as_str(); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![created; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(digests)),
            Arc::new(Int64Array::from(references)),
            Arc::new(StringArray::from_iter(tags.iter().map(|t| t.value.as_deref()))),
        ],
    )
    .map_err(|e| Error::Internal(format!("building the snapshot batch: {e}")))
}

/// The files of snapshot `v` among the files of one `tags` version.
pub fn files_of(files: &[taglake_storage::DataFile], v: i64) -> Vec<PathBuf> {
    let value = v.to_string();
    files.iter().filter(|f| f.partition_value("snapshot") == Some(value.as_str())).map(|f| f.path.clone()).collect()
}

/// The snapshot `snapshot` names (checked; the newest when `None`) and the
/// files of the `tags` version it was found in: its own and those of the
/// snapshots its references name.
async fn snapshot_files(wh: &Warehouse, snapshot: Option<i64>) -> Result<(i64, Vec<taglake_storage::DataFile>)> {
    let files = wh.files(Table::Tags).await?;
    let all = numbers(&files);
    let v = match snapshot {
        Some(v) if all.contains(&v) => v,
        Some(v) => {
            return Err(Error::NotFound(format!(
                "no tag snapshot {v}; snapshots are {}",
                if all.is_empty() { "none yet (run `taglake tag`)".to_string() } else { list(&all) }
            )));
        }
        None => *all.last().ok_or_else(|| Error::NotFound("no tag snapshot yet; run `taglake tag` first".into()))?,
    };
    Ok((v, files))
}

fn list(v: &[i64]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// Reads a snapshot's metadata (the newest when `snapshot` is `None`).
pub async fn info(wh: &Warehouse, snapshot: Option<i64>) -> Result<SnapshotInfo> {
    let (v, all) = snapshot_files(wh, snapshot).await?;
    let files = files_of(&all, v);
    let t = Table::Tags;
    let names = [
        "position",
        "name",
        "family",
        "description",
        "rule",
        "members",
        "share",
        "as_of",
        "base_members",
        "features_version",
        "catalog_digest",
        "created_at",
    ];
    let mut wanted: Vec<Wanted> = names.iter().map(|n| Wanted::plain(t, n)).collect();
    // Added later: older snapshots read it as null (no exclusive families).
    wanted.push(Wanted::plain(t, "value").or_null());
    let rows = Mutex::new(Vec::new());
    let meta = Mutex::new(None);
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &wanted, |b| {
            let s = |i: usize| b.column(i).as_string::<i32>().clone();
            let (name, family, desc, rule) = (s(1), s(2), s(3), s(4));
            let pos = b.column(0).as_primitive::<Int32Type>();
            let members = b.column(5).as_primitive::<Int64Type>();
            let share = b.column(6).as_primitive::<Float64Type>();
            let value = b.column(12).as_string::<i32>();
            let mut out = rows.lock().expect("rows");
            for r in 0..b.num_rows() {
                out.push(TagInfo {
                    position: pos.value(r),
                    name: name.value(r).into(),
                    family: family.value(r).into(),
                    description: desc.value(r).into(),
                    rule: rule.value(r).into(),
                    members: members.value(r),
                    share: share.value(r),
                    value: value.is_valid(r).then(|| value.value(r).to_string()),
                });
            }
            if b.num_rows() > 0 {
                let fv = b.column(9).as_primitive::<Int64Type>();
                *meta.lock().expect("meta") = Some((
                    b.column(7).as_primitive::<Date32Type>().value(0),
                    b.column(8).as_primitive::<Int64Type>().value(0),
                    if fv.is_null(0) { None } else { Some(fv.value(0)) },
                    b.column(10).as_string::<i32>().value(0).to_string(),
                    b.column(11).as_primitive::<TimestampMicrosecondType>().value(0),
                ));
            }
            Ok(())
        })
    })?;
    let mut tags = rows.into_inner().expect("rows");
    tags.sort_by_key(|t| t.position);
    let (as_of, base, fv, digest, created) =
        meta.into_inner().expect("meta").ok_or_else(|| Error::NotFound(format!("tag snapshot {v} is empty")))?;
    Ok(SnapshotInfo {
        snapshot: v,
        as_of: crate::features::day_to_date(as_of),
        base_members: base,
        features_version: fv,
        catalog_digest: digest,
        created_at: chrono::DateTime::from_timestamp_micros(created).unwrap_or_default(),
        tags,
    })
}

/// Calls `each(position, name, bitmap)` for every tag of snapshot `v`
/// that `only` admits, validating the stored bytes and following
/// references to their holders among `all` (the files of one `tags`
/// version); from several threads, without keeping the bitmaps.
fn each_bitmap(
    v: i64,
    all: &[taglake_storage::DataFile],
    only: Option<&[&str]>,
    each: impl Fn(i32, &str, RoaringBitmap) + Sync,
) -> Result<()> {
    let t = Table::Tags;
    let wanted = [
        Wanted::plain(t, "position"),
        Wanted::plain(t, "name"),
        Wanted::plain(t, "bitmap"),
        Wanted::plain(t, "bitmap_snapshot").or_null(),
    ];
    let damaged = |snapshot: i64, tag: &str, cause: Box<dyn std::error::Error + Send + Sync>| Error::Bitmap {
        snapshot,
        tag: tag.into(),
        cause,
    };
    // Referenced tags by holder: name → position in `v`.
    let referenced: Mutex<HashMap<i64, HashMap<String, i32>>> = Mutex::new(HashMap::new());
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files_of(all, v), &wanted, |b| {
            let pos = b.column(0).as_primitive::<Int32Type>();
            let names = b.column(1).as_string::<i32>();
            let bytes = b.column(2).as_binary::<i32>();
            let holder = b.column(3).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                let name = names.value(r);
                if only.is_some_and(|o| !o.contains(&name)) {
                    continue;
                }
                if bytes.is_null(r) {
                    if holder.is_null(r) {
                        return Err(damaged(v, name, "the row has neither a bitmap nor a reference".into()));
                    }
                    let mut refs = referenced.lock().expect("references");
                    refs.entry(holder.value(r)).or_default().insert(name.to_string(), pos.value(r));
                    continue;
                }
                let bm = RoaringBitmap::deserialize_from(bytes.value(r)).map_err(|e| damaged(v, name, e.into()))?;
                each(pos.value(r), name, bm);
            }
            Ok(())
        })
    })?;
    for (h, positions) in referenced.into_inner().expect("references") {
        let names: Vec<&str> = positions.keys().map(String::as_str).collect();
        each_held(v, h, &files_of(all, h), &names, |name, bytes| {
            let bm = RoaringBitmap::deserialize_from(bytes).map_err(|e| damaged(h, name, e.into()))?;
            each(positions[name], name, bm);
            Ok(())
        })?;
    }
    Ok(())
}

/// Calls `each(name, bytes)` with the bytes of every tag in `names` from
/// its row in holder snapshot `h` (`files`), on which snapshot `v`'s
/// references rely: a tag whose row there is missing or holds no bytes
/// itself is an error naming `v` and the tag.
fn each_held(
    v: i64,
    h: i64,
    files: &[PathBuf],
    names: &[&str],
    each: impl Fn(&str, &[u8]) -> Result<()> + Sync,
) -> Result<()> {
    let t = Table::Tags;
    let damaged = |tag: &str, message: String| Error::Bitmap { snapshot: v, tag: tag.into(), cause: message.into() };
    let wanted: HashSet<&str> = names.iter().copied().collect();
    let found = Mutex::new(HashSet::new());
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, files, &[Wanted::plain(t, "name"), Wanted::plain(t, "bitmap")], |b| {
            let (names, bytes) = (b.column(0).as_string::<i32>(), b.column(1).as_binary::<i32>());
            for r in (0..b.num_rows()).filter(|&r| wanted.contains(names.value(r))) {
                let name = names.value(r);
                if bytes.is_null(r) {
                    let message = format!("its bytes are in snapshot {h}, whose row refers on instead of holding them");
                    return Err(damaged(name, message));
                }
                each(name, bytes.value(r))?;
                found.lock().expect("found").insert(name.to_string());
            }
            Ok(())
        })
    })?;
    let found = found.into_inner().expect("found");
    match names.iter().find(|n| !found.contains(**n)) {
        Some(name) => Err(damaged(name, format!("its bytes are in snapshot {h}, which holds no such tag"))),
        None => Ok(()),
    }
}

/// Reads the bitmaps of a snapshot (all tags, or the named ones), validating
/// the stored bytes. Returns the snapshot version and `(name, bitmap)` in
/// catalog order.
pub async fn bitmaps(
    wh: &Warehouse,
    snapshot: Option<i64>,
    only: Option<&[&str]>,
) -> Result<(i64, Vec<(String, RoaringBitmap)>)> {
    let (v, all) = snapshot_files(wh, snapshot).await?;
    let out = Mutex::new(Vec::new());
    each_bitmap(v, &all, only, |pos, name, bm| out.lock().expect("bitmaps").push((pos, name.to_string(), bm)))?;
    let mut all = out.into_inner().expect("bitmaps");
    all.sort_by_key(|(p, _, _)| *p);
    if let Some(only) = only {
        for name in only {
            if !all.iter().any(|(_, n, _)| n == name) {
                let known = info(wh, Some(v)).await?.tags.into_iter().map(|t| t.name).collect::<Vec<_>>();
                return Err(Error::NotFound(format!(
                    "no tag `{name}` in snapshot {v}{}",
                    taglake_base::suggest(name, known.iter().map(|s| s.as_str()))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default()
                )));
            }
        }
    }
    Ok((v, all.into_iter().map(|(_, n, b)| (n, b)).collect()))
}

/// Per-tag movement between two snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TagDiff {
    /// Tag name.
    pub name: String,
    /// Members in the tag in the newer snapshot but not the older.
    pub entered: u64,
    /// Members in the older snapshot's tag but not the newer's.
    pub exited: u64,
    /// entered − exited.
    pub net: i64,
}

/// Who entered and left each tag between two snapshots. Tags present in
/// only one snapshot count fully as entered or exited. Holds the older
/// snapshot's bitmaps and one tag of the newer at a time.
pub async fn diff(wh: &Warehouse, from: i64, to: i64) -> Result<Vec<TagDiff>> {
    let (_, old) = bitmaps(wh, Some(from), None).await?;
    let by_name: HashMap<&str, &RoaringBitmap> = old.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let (v, all) = snapshot_files(wh, Some(to)).await?;
    let empty = RoaringBitmap::new();
    let rows = Mutex::new(Vec::new());
    each_bitmap(v, &all, None, |pos, name, n| {
        let o = by_name.get(name).copied().unwrap_or(&empty);
        let (entered, exited) = (n.difference_len(o), o.difference_len(&n));
        let d = TagDiff { name: name.to_string(), entered, exited, net: entered as i64 - exited as i64 };
        rows.lock().expect("diff").push((pos, d));
    })?;
    let mut rows = rows.into_inner().expect("diff");
    rows.sort_by_key(|(p, _)| *p);
    let mut out: Vec<TagDiff> = rows.into_iter().map(|(_, d)| d).collect();
    let new: HashSet<&str> = out.iter().map(|d| d.name.as_str()).collect();
    let gone: Vec<TagDiff> = old
        .iter()
        .filter(|(name, _)| !new.contains(name.as_str()))
        .map(|(name, o)| TagDiff { name: name.clone(), entered: 0, exited: o.len(), net: -(o.len() as i64) })
        .collect();
    out.extend(gone);
    Ok(out)
}

/// Which way members moved through a tag between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// In the tag in the newer snapshot, not in the older.
    Entered,
    /// In the tag in the older snapshot, not in the newer.
    Exited,
}

/// The members (key and external id, in key order) who entered or exited
/// `tag` between snapshots `from` and `to`: the trigger list `taglake
/// tags diff --tag --who` writes and the studio downloads.
pub async fn movers(wh: &Warehouse, from: i64, to: i64, tag: &str, movement: Movement) -> Result<Vec<(u32, String)>> {
    let (_, old) = bitmaps(wh, Some(from), Some(&[tag])).await?;
    let (_, new) = bitmaps(wh, Some(to), Some(&[tag])).await?;
    let (o, n) = (&old[0].1, &new[0].1);
    let keys = if movement == Movement::Entered { n - o } else { o - n };
    member_ids(wh, &keys).await
}

/// [`movers`] as CSV: a `member_id,member_key` header, then one line per member.
pub fn write_movers_csv(out: &mut dyn std::io::Write, ids: &[(u32, String)]) -> std::io::Result<()> {
    writeln!(out, "member_id,member_key")?;
    for (k, id) in ids {
        writeln!(out, "{},{k}", taglake_base::csv::field(id))?;
    }
    Ok(())
}

/// The external member ids of the keys in `keys`, in key order.
pub async fn member_ids(wh: &Warehouse, keys: &RoaringBitmap) -> Result<Vec<(u32, String)>> {
    let files = taglake_storage::scan::table_files(wh, Table::MemberIds).await?;
    let t = Table::MemberIds;
    let out = Mutex::new(Vec::new());
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &[Wanted::plain(t, "member_key"), Wanted::plain(t, "member_id")], |b| {
            let k = b.column(0).as_primitive::<Int64Type>();
            let id = b.column(1).as_string::<i32>();
            let mut o = out.lock().expect("ids");
            for r in 0..b.num_rows() {
                let key = k.value(r);
                if (0..=u32::MAX as i64).contains(&key) && keys.contains(key as u32) {
                    o.push((key as u32, id.value(r).to_string()));
                }
            }
            Ok(())
        })
    })?;
    let mut v = out.into_inner().expect("ids");
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests;
