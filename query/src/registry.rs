//! The experiment registry: the `experiments` table, one row per arm of
//! every cohort export, holding that arm's members as a portable roaring
//! bitmap.
//!
//! Keeping the members themselves (not just the salt) means a report reads
//! exactly who was exported even after the audience's tags have moved, and
//! the `in_experiment` tag (members of experiments still running) costs one
//! OR. Its own module, below both: `export` records here, `tagset` reads
//! the running members here, and the analyses in `experiment` read both.

use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan};
use taglake_storage::{Table, Warehouse, WriterLock};

use crate::{Error, Result};

/// One arm of a recorded experiment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Arm {
    /// Arm name (`treatment`, `control`, `holdout`, …).
    pub name: String,
    /// Share of the split this arm was given (0–1; 0 for the holdout).
    pub share: f64,
    /// Members exported into the arm.
    pub members: u64,
    /// Their member keys.
    #[serde(skip)]
    pub bitmap: RoaringBitmap,
}

/// A recorded experiment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Experiment {
    /// Registry id (1, 2, …).
    pub id: i64,
    /// Name given at export.
    pub name: String,
    /// Audience expression exported.
    pub audience: String,
    /// Tag snapshot the audience was evaluated on.
    pub snapshot: i64,
    /// Salt of the arm assignment.
    pub salt: String,
    /// Tag family the split was stratified by.
    pub stratify_by: Option<String>,
    /// Share of the base held out globally.
    pub holdout_share: f64,
    /// Salt of the global holdout.
    pub holdout_salt: String,
    /// Arms in split order.
    pub arms: Vec<Arm>,
    /// When the experiment starts counting orders.
    pub launched_at: DateTime<Utc>,
    /// When it stops being "running" (`None`: open-ended).
    pub ends_at: Option<DateTime<Utc>>,
    /// When the export was made.
    pub created_at: DateTime<Utc>,
    /// File the cohort was written to.
    pub output: Option<String>,
}

impl Experiment {
    /// Whether the experiment runs at `now`.
    pub fn running(&self, now: DateTime<Utc>) -> bool {
        self.launched_at <= now && self.ends_at.is_none_or(|e| now < e)
    }
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

/// The time `v` µs after the epoch (the epoch itself if out of range).
pub fn from_micros_utc(v: i64) -> DateTime<Utc> {
    from_micros(v)
}

/// Every recorded experiment, by id.
pub async fn list(wh: &Warehouse) -> Result<Vec<Experiment>> {
    let t = Table::Experiments;
    if wh.version(t).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Experiment> = Vec::new();
    for b in wh.read(t, None).await? {
        let s = |name: &str| b.column_by_name(name).expect("experiments column").as_string::<i32>().clone();
        let i = |name: &str| b.column_by_name(name).expect("experiments column").as_primitive::<Int64Type>().clone();
        let f = |name: &str| b.column_by_name(name).expect("experiments column").as_primitive::<Float64Type>().clone();
        let ts = |name: &str| {
            b.column_by_name(name).expect("experiments column").as_primitive::<TimestampMicrosecondType>().clone()
        };
        let (id, snapshot, members) = (i("experiment_id"), i("snapshot"), i("members"));
        let (name, audience, salt, stratify, hsalt, arm, output) =
            (s("name"), s("audience"), s("salt"), s("stratify_by"), s("holdout_salt"), s("arm"), s("output"));
        let (hshare, share) = (f("holdout_share"), f("arm_share"));
        let (launched, ends, created) = (ts("launched_at"), ts("ends_at"), ts("created_at"));
        let bitmaps = b.column_by_name("bitmap").expect("experiments column").as_binary::<i32>().clone();
        for r in 0..b.num_rows() {
            let bitmap = RoaringBitmap::deserialize_from(bitmaps.value(r)).map_err(|e| {
                Error::Corrupt(format!(
                    "experiment {} arm {}: stored members unreadable: {e}",
                    id.value(r),
                    arm.value(r)
                ))
            })?;
            let a = Arm { name: arm.value(r).into(), share: share.value(r), members: members.value(r) as u64, bitmap };
            if let Some(e) = out.iter_mut().find(|e| e.id == id.value(r)) {
                e.arms.push(a);
                continue;
            }
            out.push(Experiment {
                id: id.value(r),
                name: name.value(r).into(),
                audience: audience.value(r).into(),
                snapshot: snapshot.value(r),
                salt: salt.value(r).into(),
                stratify_by: (!stratify.is_null(r)).then(|| stratify.value(r).into()),
                holdout_share: hshare.value(r),
                holdout_salt: hsalt.value(r).into(),
                arms: vec![a],
                launched_at: from_micros(launched.value(r)),
                ends_at: (!ends.is_null(r)).then(|| from_micros(ends.value(r))),
                created_at: from_micros(created.value(r)),
                output: (!output.is_null(r)).then(|| output.value(r).into()),
            });
        }
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

/// One experiment by id, with the known ids in the error.
pub async fn get(wh: &Warehouse, id: i64) -> Result<Experiment> {
    let all = list(wh).await?;
    let known = all.iter().map(|e| e.id.to_string()).collect::<Vec<_>>();
    all.into_iter().find(|e| e.id == id).ok_or_else(|| {
        Error::Invalid(if known.is_empty() {
            format!("no experiment {id}: none is recorded yet (`taglake export` records one)")
        } else {
            format!("no experiment {id}; recorded: {}", known.join(", "))
        })
    })
}

/// Members of every experiment running at `now`.
pub async fn running_members(wh: &Warehouse, now: DateTime<Utc>) -> Result<RoaringBitmap> {
    let mut all = RoaringBitmap::new();
    for e in list(wh).await?.iter().filter(|e| e.running(now)) {
        for a in &e.arms {
            all |= &a.bitmap;
        }
    }
    Ok(all)
}

/// Application id under which a registry commit claims its experiment id
/// (see [`taglake_storage::TableWriter::claim`]).
const EXPERIMENT_CLAIM: &str = "taglake.experiments.id";

/// Appends an experiment with the next free id (one Delta commit) and
/// returns the id. The id is the largest + 1, read from the very table
/// version the commit appends to and claimed in the commit: a second
/// writer that read the same largest id (one that does not hold the writer
/// lock) fails with a conflict instead of recording a duplicate id.
pub async fn record(wh: &Warehouse, lock: &WriterLock, mut e: Experiment) -> Result<i64> {
    lock.check(wh)?;
    let mut w = wh.append(Table::Experiments).await?;
    let files: Vec<std::path::PathBuf> = w.files()?.into_iter().map(|f| f.path).collect();
    let largest = Mutex::new(None::<i64>);
    let t = Table::Experiments;
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &[Wanted::plain(t, "experiment_id")], |b| {
            let ids = b.column(0).as_primitive::<Int64Type>();
            let max = arrow::compute::max(ids);
            let mut l = largest.lock().expect("largest id");
            *l = (*l).max(max);
            Ok(())
        })
    })?;
    let largest = largest.into_inner().expect("largest id").max(w.claimed(EXPERIMENT_CLAIM).await?);
    e.id = largest.unwrap_or(0) + 1;
    let n = e.arms.len();
    let text = |v: &str| Some(v.to_string());
    let mut bitmaps = Vec::with_capacity(n);
    for a in &e.arms {
        let mut bytes = Vec::with_capacity(a.bitmap.serialized_size());
        a.bitmap.serialize_into(&mut bytes).map_err(|err| Error::Corrupt(err.to_string()))?;
        bitmaps.push(bytes);
    }
    let ts = |v: Option<DateTime<Utc>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v.map(micros); n]).with_timezone("UTC"))
    };
    let strings = |v: Option<String>| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![e.id; n])),
        strings(text(&e.name)),
        strings(text(&e.audience)),
        Arc::new(Int64Array::from(vec![e.snapshot; n])),
        strings(text(&e.salt)),
        strings(e.stratify_by.clone()),
        Arc::new(Float64Array::from(vec![e.holdout_share; n])),
        strings(text(&e.holdout_salt)),
        Arc::new(StringArray::from_iter_values(e.arms.iter().map(|a| a.name.as_str()))),
        Arc::new(Float64Array::from_iter_values(e.arms.iter().map(|a| a.share))),
        Arc::new(Int64Array::from_iter_values(e.arms.iter().map(|a| a.members as i64))),
        ts(Some(e.launched_at)),
        ts(e.ends_at),
        ts(Some(e.created_at)),
        strings(e.output.clone()),
        Arc::new(BinaryArray::from_iter_values(bitmaps.iter())),
    ];
    let batch = RecordBatch::try_new(Table::Experiments.arrow_schema(), columns)
        .map_err(|err| Error::Corrupt(format!("experiment row: {err}")))?;
    w.claim(EXPERIMENT_CLAIM, e.id);
    w.write(batch).await?;
    w.commit().await?;
    Ok(e.id)
}
