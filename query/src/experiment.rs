//! The experiment registry and the uplift report.
//!
//! Every cohort export is recorded in the `experiments` table, one row per
//! arm holding that arm's members as a portable roaring bitmap. Keeping the
//! members themselves (not just the salt) means a report reads exactly who
//! was exported even after the audience's tags have moved, and the
//! `in_experiment` tag (members of experiments still running) costs one OR.
//!
//! The report reads the order lines placed in `[launched_at, launched_at +
//! window)` by cohort members and compares every arm with the control arm:
//! conversion with a two-proportion z-test, revenue per member (zeros
//! included) with Welch's t-test.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan, table_files};
use taglake_storage::{Table, Warehouse, WriterLock};

use crate::stats::{self, Correction, Moments, RatioMoments, Srm, Uplift};
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

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
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
    tokio::task::block_in_place(|| {
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

use std::sync::Arc;

/// Figures of one arm over the report window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmResult {
    /// Arm name.
    pub arm: String,
    /// Members exported into the arm.
    pub members: u64,
    /// Of them, members still in the warehouse when the report was made
    /// (the sizes the sample ratio check compares).
    pub present: u64,
    /// Members with at least one order in the window.
    pub buyers: u64,
    /// buyers / members.
    pub conversion: f64,
    /// Distinct orders in the window.
    pub orders: u64,
    /// orders / members.
    pub orders_per_member: f64,
    /// Sum of line amounts in the window.
    pub revenue: f64,
    /// revenue / members.
    pub revenue_per_member: f64,
    /// revenue / orders (`None` without orders).
    pub average_order_value: Option<f64>,
    #[serde(skip)]
    moments: Moments,
    /// (revenue, orders) per member, for orders per member (its `x` side)
    /// and the average order value.
    #[serde(skip)]
    ratio: RatioMoments,
}

/// One arm against the control arm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// The arm compared.
    pub arm: String,
    /// The control arm.
    pub control: String,
    /// Conversion rate: two-proportion z-test.
    pub conversion: Uplift,
    /// Revenue per member: Welch's t-test.
    pub revenue_per_member: Uplift,
    /// Orders per member: Welch's t-test.
    pub orders_per_member: Uplift,
    /// Average order value (revenue ÷ orders): the delta method; `None`
    /// when an arm has no orders (see `average_order_value_note`).
    pub average_order_value: Option<Uplift>,
    /// Why there is no average order value comparison, if there is none.
    pub average_order_value_note: Option<String>,
}

/// An experiment report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The experiment.
    pub experiment: Experiment,
    /// Start of the window (launch).
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    pub window_end: DateTime<Utc>,
    /// The newest order in the warehouse, to tell a window not yet complete.
    pub newest_order: Option<DateTime<Utc>>,
    /// Per arm.
    pub arms: Vec<ArmResult>,
    /// Every other arm against the control.
    pub comparisons: Vec<Comparison>,
    /// The sample ratio check of the split: the arms with a share, their
    /// members present now against their shares (`None` with fewer than
    /// two such arms). `srm.mismatch` means the split itself went wrong
    /// and no comparison can be trusted.
    pub srm: Option<Srm>,
    /// The arms `srm` covers, in its order.
    pub srm_arms: Vec<String>,
    /// For an export stratified by a family: the same check inside each
    /// stratum (members by their stratum in the exported snapshot). Empty
    /// for an unstratified export.
    pub srm_strata: Vec<StratumSrm>,
    /// Why `srm_strata` is empty for a stratified export (its snapshot is
    /// gone), if it is.
    pub srm_strata_note: Option<String>,
    /// How the comparisons' p-values were adjusted (`p_adjusted`).
    pub correction: Correction,
    /// How many p-values were adjusted together (arms × metrics).
    pub tests: usize,
    /// The metrics compared (and adjusted); the others' figures are still
    /// given, unadjusted.
    pub metrics: Vec<Metric>,
    /// Revenue per member's cap, when `--cap` set one.
    pub revenue_cap: Option<RevenueCap>,
}

/// A metric a report compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Bought at least once in the window: two-proportion z-test.
    Conversion,
    /// Revenue per member: Welch's t-test.
    Revenue,
    /// Orders per member: Welch's t-test.
    Orders,
    /// Revenue ÷ orders: the delta method.
    AverageOrderValue,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 4] = [Metric::Conversion, Metric::Revenue, Metric::Orders, Metric::AverageOrderValue];
}

/// What a report computes. Made by [`ReportOptions::new`] and its checked
/// setters, so a report never sees an empty metric list or a cap outside
/// (0, 100).
#[derive(Debug, Clone)]
pub struct ReportOptions {
    window: chrono::Duration,
    control: String,
    correction: Correction,
    metrics: Vec<Metric>,
    cap: Option<f64>,
}

impl ReportOptions {
    /// Orders from launch to launch + `window`, arms against `control`,
    /// every metric, Holm's adjustment, no cap.
    pub fn new(window: chrono::Duration, control: &str) -> ReportOptions {
        ReportOptions {
            window,
            control: control.to_string(),
            correction: Correction::Holm,
            metrics: Metric::ALL.to_vec(),
            cap: None,
        }
    }

    /// How the p-values are adjusted.
    pub fn correction(mut self, correction: Correction) -> ReportOptions {
        self.correction = correction;
        self
    }

    /// Only these metrics are compared (and adjusted together); at least one.
    pub fn metrics(mut self, metrics: &[Metric]) -> Result<ReportOptions> {
        if metrics.is_empty() {
            return Err(Error::Invalid("choose at least one metric".into()));
        }
        self.metrics = Metric::ALL.into_iter().filter(|m| metrics.contains(m)).collect();
        Ok(self)
    }

    /// Revenue per member winsorised at this percentile of the cohort's
    /// members' window revenue (zeros included): retail spend is heavy
    /// tailed, and one buyer of a sofa can decide a test.
    pub fn cap(mut self, percentile: Option<f64>) -> Result<ReportOptions> {
        if let Some(p) = percentile
            && !(p > 0.0 && p < 100.0)
        {
            return Err(Error::Invalid(format!("--cap {p}: a percentile above 0 and below 100, such as 99.9")));
        }
        self.cap = percentile;
        Ok(self)
    }
}

/// Revenue per member as compared: capped at a percentile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RevenueCap {
    /// The percentile asked for.
    pub percentile: f64,
    /// The revenue it falls at: no member counts for more.
    pub value: f64,
    /// Members whose window revenue was above it.
    pub capped_members: u64,
}

/// The sample ratio check inside one stratum of a stratified export.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StratumSrm {
    /// The stratum: the tag members were stratified by (`None`: members
    /// with no tag of the family).
    pub stratum: Option<String>,
    /// The check (`None`: fewer than two arms with members to compare).
    pub srm: Option<Srm>,
}

/// The sample ratio check per stratum of `e`'s split arms (indexes
/// `split`, with their `shares`), members as `present` now, strata as in
/// the export: a member's first tag of the family in catalog order, or none.
async fn strata_srm(
    wh: &Warehouse,
    e: &Experiment,
    split: &[usize],
    shares: &[f64],
    present: &RoaringBitmap,
) -> Result<(Vec<StratumSrm>, Option<String>)> {
    let Some(family) = &e.stratify_by else { return Ok((Vec::new(), None)) };
    let tags = match crate::tagset::TagSet::load(wh, Some(e.snapshot)).await {
        Ok(Some(tags)) => tags,
        Ok(None) | Err(Error::Invalid(_)) => {
            return Ok((
                Vec::new(),
                Some(format!("tag snapshot {} is gone, so the strata of `{family}` cannot be checked", e.snapshot)),
            ));
        }
        Err(err) => return Err(err),
    };
    let arms: Vec<RoaringBitmap> = split.iter().map(|&i| &e.arms[i].bitmap & present).collect();
    let mut seen = RoaringBitmap::new();
    let mut out = Vec::new();
    let check = |members: &dyn Fn(&RoaringBitmap) -> u64| {
        let observed: Vec<u64> = arms.iter().map(members).collect();
        stats::srm(&observed, shares)
    };
    for t in tags.family(family) {
        let bitmap = tags.bitmap(t)?.to_roaring() - &seen;
        out.push(StratumSrm {
            stratum: Some(tags.tag(t).name.clone()),
            srm: check(&|arm| arm.intersection_len(&bitmap)),
        });
        seen |= bitmap;
    }
    out.push(StratumSrm { stratum: None, srm: check(&|arm| arm.len() - arm.intersection_len(&seen)) });
    // Strata nobody of the cohort is in say nothing.
    out.retain(|s| s.srm.is_some());
    Ok((out, None))
}

/// Reads the orders in the window and computes the report. `control` names
/// the control arm.
pub async fn report(wh: &Warehouse, id: i64, options: &ReportOptions) -> Result<Report> {
    let (window, control, correction) = (options.window, options.control.as_str(), options.correction);
    let e = get(wh, id).await?;
    let Some(ci) = e.arms.iter().position(|a| a.name == control) else {
        let names = e.arms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>();
        return Err(Error::Invalid(format!(
            "experiment {id} has no arm `{control}` (arms: {}); choose the control with --control",
            names.join(", ")
        )));
    };
    if window <= chrono::Duration::zero() {
        return Err(Error::Invalid("the window must be longer than zero".into()));
    }
    let (start, end) = (e.launched_at, window_end(e.launched_at, window)?);
    let (from, to) = (micros(start), micros(end));
    let t = Table::Orders;
    let files = table_files(wh, t).await?;
    let member_files = table_files(wh, Table::Members).await?;
    let present = tokio::task::block_in_place(|| crate::tagset::member_keys(&member_files))?;
    let wanted = [
        Wanted::plain(t, "member_key"),
        Wanted::plain(t, "order_id"),
        Wanted::plain(t, "ordered_at"),
        Wanted::plain(t, "amount"),
    ];
    // Per member in the cohort: revenue and distinct order ids.
    type PerMember = HashMap<u32, (f64, HashSet<String>)>;
    let seen: Mutex<(PerMember, i64)> = Mutex::new((HashMap::new(), i64::MIN));
    let arms = &e.arms;
    tokio::task::block_in_place(|| {
        scan::<_, Error>(t, &files, &wanted, |b| {
            let keys = b.column(0).as_primitive::<Int64Type>();
            let ids = b.column(1).as_string::<i32>();
            let at = b.column(2).as_primitive::<TimestampMicrosecondType>();
            let amount = b.column(3).as_primitive::<Float64Type>();
            let mut local: PerMember = HashMap::new();
            let mut newest = i64::MIN;
            for r in 0..b.num_rows() {
                let when = at.value(r);
                newest = newest.max(when);
                if when < from || when >= to {
                    continue;
                }
                let Ok(key) = u32::try_from(keys.value(r)) else { continue };
                if !arms.iter().any(|a| a.bitmap.contains(key)) {
                    continue;
                }
                let m = local.entry(key).or_default();
                m.0 += amount.value(r);
                m.1.insert(ids.value(r).to_string());
            }
            let mut all = seen.lock().expect("orders");
            all.1 = all.1.max(newest);
            for (k, (rev, orders)) in local {
                let m = all.0.entry(k).or_default();
                m.0 += rev;
                m.1.extend(orders);
            }
            Ok(())
        })
    })?;
    let (per_member, newest) = seen.into_inner().expect("orders");
    let mut results: Vec<ArmResult> = e
        .arms
        .iter()
        .map(|a| ArmResult {
            arm: a.name.clone(),
            members: a.bitmap.len(),
            present: a.bitmap.intersection_len(&present),
            buyers: 0,
            conversion: 0.0,
            orders: 0,
            orders_per_member: 0.0,
            revenue: 0.0,
            revenue_per_member: 0.0,
            average_order_value: None,
            moments: Moments::default(),
            ratio: RatioMoments::default(),
        })
        .collect();
    // Members are summed in key order so the floating-point sums do not
    // depend on hash-map order.
    let mut keys: Vec<&u32> = per_member.keys().collect();
    keys.sort_unstable();
    let revenue_cap = match options.cap {
        None => None,
        Some(percentile) => {
            let cohort: u64 = e.arms.iter().map(|a| a.bitmap.len()).sum();
            let mut spent: Vec<f64> = per_member.values().map(|(r, _)| r.max(0.0)).collect();
            spent.sort_by(f64::total_cmp);
            let zeros = cohort.saturating_sub(spent.len() as u64);
            stats::percentile_with_zeros(zeros, &spent, percentile).map(|value| RevenueCap {
                percentile,
                value,
                capped_members: spent.iter().filter(|&&r| r > value).count() as u64,
            })
        }
    };
    let capped = |revenue: f64| revenue_cap.map_or(revenue, |c| revenue.min(c.value));
    for key in keys {
        let (revenue, orders) = &per_member[key];
        let Some(i) = e.arms.iter().position(|a| a.bitmap.contains(*key)) else { continue };
        let r = &mut results[i];
        r.buyers += 1;
        r.orders += orders.len() as u64;
        r.revenue += revenue;
        r.moments.push(capped(*revenue));
        r.ratio.push(*revenue, orders.len() as f64);
    }
    for r in &mut results {
        // The members without an order in the window count as zeros.
        let idle = r.members - r.buyers;
        r.moments.merge(&Moments::zeros(idle));
        r.ratio.merge(&RatioMoments::zeros(idle));
        r.average_order_value = (r.orders > 0).then(|| r.revenue / r.orders as f64);
        let n = r.members.max(1) as f64;
        r.conversion = r.buyers as f64 / n;
        r.orders_per_member = r.orders as f64 / n;
        r.revenue_per_member = r.revenue / n;
    }
    let c = results[ci].clone();
    let mut comparisons = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if i == ci {
            continue;
        }
        let aov = stats::delta_ratio(&r.ratio, &c.ratio);
        comparisons.push(Comparison {
            arm: r.arm.clone(),
            control: c.arm.clone(),
            conversion: stats::two_proportion(r.buyers, r.members, c.buyers, c.members)?,
            revenue_per_member: stats::welch(&r.moments, &c.moments)?,
            orders_per_member: stats::welch(&r.ratio.x, &c.ratio.x)?,
            average_order_value: aov.as_ref().ok().copied(),
            average_order_value_note: aov.err().map(|e| e.to_string()),
        });
    }
    // Every p-value of the report is one test of the family.
    let chosen = |m: Metric| options.metrics.contains(&m);
    let mut uplifts: Vec<&mut Uplift> = comparisons
        .iter_mut()
        .flat_map(|c| {
            [
                Some(&mut c.conversion).filter(|_| chosen(Metric::Conversion)),
                Some(&mut c.revenue_per_member).filter(|_| chosen(Metric::Revenue)),
                Some(&mut c.orders_per_member).filter(|_| chosen(Metric::Orders)),
                c.average_order_value.as_mut().filter(|_| chosen(Metric::AverageOrderValue)),
            ]
        })
        .flatten()
        .collect();
    let p: Vec<f64> = uplifts.iter().map(|u| u.p_value).collect();
    for (u, adjusted) in uplifts.iter_mut().zip(stats::adjust(&p, correction)) {
        u.p_adjusted = Some(adjusted);
    }
    let split: Vec<usize> = (0..e.arms.len()).filter(|&i| e.arms[i].share > 0.0).collect();
    let shares: Vec<f64> = split.iter().map(|&i| e.arms[i].share).collect();
    let srm = stats::srm(&split.iter().map(|&i| results[i].present).collect::<Vec<_>>(), &shares);
    let srm_arms = if srm.is_some() { split.iter().map(|&i| results[i].arm.clone()).collect() } else { Vec::new() };
    let (srm_strata, srm_strata_note) = strata_srm(wh, &e, &split, &shares, &present).await?;
    Ok(Report {
        window_start: start,
        window_end: end,
        newest_order: (newest != i64::MIN).then(|| from_micros(newest)),
        experiment: e,
        arms: results,
        tests: p.len(),
        comparisons,
        srm,
        srm_arms,
        srm_strata,
        srm_strata_note,
        correction,
        metrics: options.metrics.clone(),
        revenue_cap,
    })
}

/// The longest window [`parse_window`] accepts, in days (100 years): a
/// longer one is a typo, and past about 290,000 years it would not fit a
/// duration at all.
pub const MAX_WINDOW_DAYS: i64 = 36_525;

/// Parses a window such as `14d`, `2w`, `36h`, of at most [`MAX_WINDOW_DAYS`].
pub fn parse_window(text: &str) -> Result<chrono::Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let hours_per_unit = match unit {
        "d" => 24,
        "w" => 7 * 24,
        "h" => 1,
        _ => return Err(bad_window(text)),
    };
    if digits.is_empty() || digits.bytes().all(|b| b == b'0') {
        return Err(bad_window(text));
    }
    let too_long =
        || Error::Invalid(format!("`{text}` is too long a window: at most {MAX_WINDOW_DAYS} days (100 years)"));
    // Any number of digits: too many for an i64 is too long, not "not a number".
    let n: i64 = digits.parse().map_err(|_| too_long())?;
    match n.checked_mul(hours_per_unit) {
        Some(hours) if hours <= MAX_WINDOW_DAYS * 24 => Ok(chrono::Duration::hours(hours)),
        _ => Err(too_long()),
    }
}

/// `at + window`, or an error naming what overflowed (dates end in the year 262,143).
pub fn window_end(
    at: chrono::DateTime<chrono::Utc>,
    window: chrono::Duration,
) -> Result<chrono::DateTime<chrono::Utc>> {
    at.checked_add_signed(window)
        .ok_or_else(|| Error::Invalid(format!("{at} plus a window of {window} is past the last representable date")))
}

fn bad_window(text: &str) -> Error {
    Error::Invalid(format!(
        "`{text}` is not a window: write a positive number of days, weeks or hours, e.g. 14d, 2w, 36h"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_bad_ones_are_explained() {
        assert_eq!(parse_window("14d").unwrap(), chrono::Duration::days(14));
        assert_eq!(parse_window("2w").unwrap(), chrono::Duration::days(14));
        assert_eq!(parse_window("36h").unwrap(), chrono::Duration::hours(36));
        for bad in ["", "14", "d", "0d", "000h", "-3d", "14 days", "1.5d", "+3d"] {
            let e = parse_window(bad).unwrap_err().to_string();
            assert!(e.contains("is not a window"), "{bad}: {e}");
        }
        // Absurd lengths are errors, never a panic of the duration arithmetic.
        assert_eq!(parse_window("36525d").unwrap(), chrono::Duration::days(36_525));
        for long in ["36526d", "5218w", "876601h", "100000000d", "200000000000d", "99999999999999999999999d"] {
            let e = parse_window(long).unwrap_err().to_string();
            assert!(e.contains("is too long a window: at most 36525 days"), "{long}: {e}");
        }
        let last = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        let e = window_end(last, chrono::Duration::days(1)).unwrap_err().to_string();
        assert!(e.contains("past the last representable date"), "{e}");
    }
}
