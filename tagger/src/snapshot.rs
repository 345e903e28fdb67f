//! Tag snapshots in the warehouse `tags` table.
//!
//! A snapshot is one Delta commit that appends one row per tag: its
//! metadata, its cardinality and its bitmap in the portable roaring format
//! (readable by CRoaring, Java RoaringBitmap, pyroaring, ClickHouse).
//! The table is partitioned by `snapshot`, so reading one snapshot touches
//! only its files. A commit is atomic: a run killed before it leaves the
//! previous snapshots exactly as they were, and no reader ever sees part
//! of a snapshot. Snapshots are never rewritten.
//!
//! Writing one takes the warehouse [`WriterLock`], and the commit claims its
//! snapshot number (a Delta `txn` action), so two writers can never publish
//! the same number, even without the lock.

use std::sync::Arc;
use std::sync::Mutex;

use arrow::array::{
    Array, AsArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use roaring::RoaringBitmap;
use taglake_storage::{Table, Warehouse, WriterLock};

use crate::{Error, Result};
use taglake_storage::scan::{Wanted, scan};

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
    let stored = numbers(&writer.files()?).last().copied();
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
    let n = new.tags.len();
    let created = chrono::Utc::now().timestamp_micros();
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let as_of = (new.as_of - epoch).num_days() as i32;
    // Serialize each bitmap straight into the column and free it: the
    // snapshot never holds a tag twice in memory.
    let total: usize = new.tags.iter().map(|(_, b)| b.serialized_size()).sum();
    let mut column = arrow::array::BinaryBuilder::with_capacity(n, total);
    let mut tags = Vec::with_capacity(n);
    let mut buffer = Vec::new();
    for (info, bm) in new.tags {
        buffer.clear();
        bm.serialize_into(&mut buffer).map_err(|e| Error::Internal(format!("serializing a bitmap: {e}")))?;
        column.append_value(&buffer);
        tags.push(info);
    }
    let bitmaps = column.finish();
    let info = |f: fn(&TagInfo) -> &str| StringArray::from_iter_values(tags.iter().map(f));
    let batch = RecordBatch::try_new(
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
        ],
    )
    .map_err(|e| Error::Internal(format!("building the snapshot batch: {e}")))?;
    writer.claim(SNAPSHOT_CLAIM, snapshot);
    writer.write(batch).await?;
    writer.commit().await?;
    Ok(snapshot)
}

async fn snapshot_files(wh: &Warehouse, snapshot: Option<i64>) -> Result<(i64, Vec<std::path::PathBuf>)> {
    let all = versions(wh).await?;
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
    let files = wh
        .files(Table::Tags)
        .await?
        .into_iter()
        .filter(|f| f.partition_value("snapshot") == Some(v.to_string().as_str()))
        .map(|f| f.path)
        .collect();
    Ok((v, files))
}

fn list(v: &[i64]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// Reads a snapshot's metadata (the newest when `snapshot` is `None`).
pub async fn info(wh: &Warehouse, snapshot: Option<i64>) -> Result<SnapshotInfo> {
    let (v, files) = snapshot_files(wh, snapshot).await?;
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
    let wanted: Vec<Wanted> = names.iter().map(|n| Wanted::plain(t, n)).collect();
    let rows = Mutex::new(Vec::new());
    let meta = Mutex::new(None);
    tokio::task::block_in_place(|| {
        scan::<_, Error>(t, &files, &wanted, |b| {
            let s = |i: usize| b.column(i).as_string::<i32>().clone();
            let (name, family, desc, rule) = (s(1), s(2), s(3), s(4));
            let pos = b.column(0).as_primitive::<Int32Type>();
            let members = b.column(5).as_primitive::<Int64Type>();
            let share = b.column(6).as_primitive::<Float64Type>();
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
        as_of: chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(as_of as i64),
        base_members: base,
        features_version: fv,
        catalog_digest: digest,
        created_at: chrono::DateTime::from_timestamp_micros(created).unwrap_or_default(),
        tags,
    })
}

/// Reads the bitmaps of a snapshot (all tags, or the named ones), validating
/// the stored bytes. Returns the snapshot version and `(name, bitmap)` in
/// catalog order.
pub async fn bitmaps(
    wh: &Warehouse,
    snapshot: Option<i64>,
    only: Option<&[&str]>,
) -> Result<(i64, Vec<(String, RoaringBitmap)>)> {
    let (v, files) = snapshot_files(wh, snapshot).await?;
    let t = Table::Tags;
    let wanted = [Wanted::plain(t, "position"), Wanted::plain(t, "name"), Wanted::plain(t, "bitmap")];
    let out = Mutex::new(Vec::new());
    tokio::task::block_in_place(|| {
        scan::<_, Error>(t, &files, &wanted, |b| {
            let pos = b.column(0).as_primitive::<Int32Type>();
            let names = b.column(1).as_string::<i32>();
            let bytes = b.column(2).as_binary::<i32>();
            for r in 0..b.num_rows() {
                let name = names.value(r);
                if only.is_some_and(|o| !o.contains(&name)) {
                    continue;
                }
                let bm = RoaringBitmap::deserialize_from(bytes.value(r)).map_err(|e| Error::Bitmap {
                    snapshot: v,
                    tag: name.into(),
                    message: e.to_string(),
                })?;
                out.lock().expect("bitmaps").push((pos.value(r), name.to_string(), bm));
            }
            Ok(())
        })
    })?;
    let mut all = out.into_inner().expect("bitmaps");
    all.sort_by_key(|(p, _, _)| *p);
    if let Some(only) = only {
        for name in only {
            if !all.iter().any(|(_, n, _)| n == name) {
                let known = info(wh, Some(v)).await?.tags.into_iter().map(|t| t.name).collect::<Vec<_>>();
                return Err(Error::NotFound(format!(
                    "no tag `{name}` in snapshot {v}{}",
                    crate::suggest(name, known.iter().map(|s| s.as_str()))
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
/// only one snapshot count fully as entered or exited.
pub async fn diff(wh: &Warehouse, from: i64, to: i64) -> Result<Vec<TagDiff>> {
    let (_, old) = bitmaps(wh, Some(from), None).await?;
    let (_, new) = bitmaps(wh, Some(to), None).await?;
    let empty = RoaringBitmap::new();
    let mut out = Vec::new();
    for (name, n) in &new {
        let o = old.iter().find(|(on, _)| on == name).map(|(_, b)| b).unwrap_or(&empty);
        let entered = n.difference_len(o);
        let exited = o.difference_len(n);
        out.push(TagDiff { name: name.clone(), entered, exited, net: entered as i64 - exited as i64 });
    }
    for (name, o) in &old {
        if !new.iter().any(|(n, _)| n == name) {
            out.push(TagDiff { name: name.clone(), entered: 0, exited: o.len(), net: -(o.len() as i64) });
        }
    }
    Ok(out)
}

/// The external member ids of the keys in `keys`, in key order.
pub async fn member_ids(wh: &Warehouse, keys: &RoaringBitmap) -> Result<Vec<(u32, String)>> {
    let files = taglake_storage::scan::table_files(wh, Table::MemberIds).await?;
    let t = Table::MemberIds;
    let out = Mutex::new(Vec::new());
    tokio::task::block_in_place(|| {
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
