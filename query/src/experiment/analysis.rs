//! The uplift report: what each arm bought in the window, every arm against
//! the control, CUPED beside the plain estimates, the sample ratio check.
//!
//! [`analyse`] is the part that reads nothing: arms and what their members
//! bought ([`Activity`]) in, figures and comparisons out. The report, the
//! holdout report and the A/A simulation in `benches/` all go through it,
//! so what the simulation validates is exactly what a report prints.
//!
//! Each member is summarised by eight values, [`CoMoments`] over the arm:
//! bought (0/1), revenue (capped when `--cap` is on), orders and uncapped
//! revenue in the window, and the same four over the CUPED pre-period.
//! Members who bought nothing in either are merged as zeros, never listed.

use chrono::{DateTime, Utc};
use roaring::RoaringBitmap;
use taglake_storage::scan::table_files;
use taglake_storage::{ParamMessage, Table, Warehouse};

use super::{Experiment, from_micros, get, micros, window_end};
use crate::activity::{Activity, DAY_US, scan_activity};
use crate::stats::{self, CoMoments, Correction, Cuped, Srm, StatsError, Uplift};
use crate::{Error, Result};

const BOUGHT: usize = 0;
const REVENUE: usize = 1;
const ORDERS: usize = 2;
const SPEND: usize = 3;
/// Offset of the pre-period's values.
const PRE: usize = 4;

/// One member's values: the window's, then the pre-period's.
type Values = CoMoments<8>;

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
    /// Members who had bought by the end of each day of the window (day 1
    /// is the first 24 hours after launch), up to the newest order.
    pub cumulative_buyers: Vec<u64>,
    #[serde(skip)]
    values: Values,
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
    /// Conversion adjusted by CUPED (Welch's t-test over the adjusted
    /// values); `None` without a pre-period.
    pub conversion_cuped: Option<Cuped>,
    /// Revenue per member adjusted by CUPED.
    pub revenue_per_member_cuped: Option<Cuped>,
    /// Orders per member adjusted by CUPED.
    pub orders_per_member_cuped: Option<Cuped>,
    /// Average order value adjusted by CUPED (the delta method).
    pub average_order_value_cuped: Option<Cuped>,
    /// Why the average order value has no CUPED estimate with a
    /// pre-period (an arm without orders before launch), if it has none.
    pub average_order_value_cuped_note: Option<String>,
}

impl Comparison {
    /// The estimate a reader should take for `metric`: CUPED's when there
    /// is one, the plain one otherwise.
    pub fn headline(&self, metric: Metric) -> Option<&Uplift> {
        let (plain, cuped) = match metric {
            Metric::Conversion => (Some(&self.conversion), &self.conversion_cuped),
            Metric::Revenue => (Some(&self.revenue_per_member), &self.revenue_per_member_cuped),
            Metric::Orders => (Some(&self.orders_per_member), &self.orders_per_member_cuped),
            Metric::AverageOrderValue => (self.average_order_value.as_ref(), &self.average_order_value_cuped),
        };
        cuped.as_ref().map(|c| &c.uplift).or(plain)
    }
}

/// The pre-period CUPED adjusted by.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CupedPeriod {
    /// Its length in days (the `--cuped` lookback).
    pub days: f64,
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive): the launch.
    pub to: DateTime<Utc>,
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
    /// How many p-values were adjusted together (arms × metrics); the
    /// CUPED estimates are adjusted as a family of the same size.
    pub tests: usize,
    /// The metrics compared (and adjusted); the others' figures are still
    /// given, unadjusted.
    pub metrics: Vec<Metric>,
    /// Revenue per member's cap, when `--cap` set one.
    pub revenue_cap: Option<RevenueCap>,
    /// The pre-period of the CUPED estimates (`None`: CUPED off).
    pub cuped: Option<CupedPeriod>,
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

    /// Its name where there is room for one (charts, the studio's tables).
    pub fn label(self) -> &'static str {
        match self {
            Metric::Conversion => "Conversion",
            Metric::Revenue => "Revenue per member",
            Metric::Orders => "Orders per member",
            Metric::AverageOrderValue => "Average order value",
        }
    }
}

/// A p-value as reports print it: four decimals, and `< 0.0001` below that.
pub fn p_text(p: f64) -> String {
    if p < 1e-4 { "< 0.0001".into() } else { format!("{p:.4}") }
}

/// The default CUPED lookback: 30 days before launch.
pub const DEFAULT_CUPED_DAYS: i64 = 30;

/// What a report computes. Made by [`ReportOptions::new`] and its checked
/// setters, so a report never sees an empty metric list, a cap outside
/// (0, 100) or a lookback that is not positive.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    window: chrono::Duration,
    control: String,
    correction: Correction,
    metrics: Vec<Metric>,
    cap: Option<f64>,
    cuped: Option<chrono::Duration>,
}

impl ReportOptions {
    /// Orders from launch to launch + `window`, arms against `control`,
    /// every metric, Holm's adjustment, no cap, CUPED over the 30 days
    /// before launch.
    pub fn new(window: chrono::Duration, control: &str) -> ReportOptions {
        ReportOptions {
            window,
            control: control.to_string(),
            correction: Correction::Holm,
            metrics: Metric::ALL.to_vec(),
            cap: None,
            cuped: Some(chrono::Duration::days(DEFAULT_CUPED_DAYS)),
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
            return Err(Error::Parameter(
                ParamMessage::param("cap").then_text(format!(" {p}: a percentile above 0 and below 100, such as 99.9")),
            ));
        }
        self.cap = percentile;
        Ok(self)
    }

    /// CUPED over this lookback before launch (`None`: off).
    pub fn cuped(mut self, lookback: Option<chrono::Duration>) -> Result<ReportOptions> {
        self.cuped = checked_lookback(lookback)?;
        Ok(self)
    }

    /// The report window.
    pub fn window(&self) -> chrono::Duration {
        self.window
    }

    /// The metrics compared.
    pub fn metrics_chosen(&self) -> &[Metric] {
        &self.metrics
    }

    /// The p-value adjustment.
    pub fn correction_chosen(&self) -> Correction {
        self.correction
    }

    /// The CUPED lookback, if CUPED is on.
    pub fn cuped_lookback(&self) -> Option<chrono::Duration> {
        self.cuped
    }
}

/// A CUPED lookback, which must be longer than zero (`None`: CUPED off).
pub(crate) fn checked_lookback(lookback: Option<chrono::Duration>) -> Result<Option<chrono::Duration>> {
    match lookback {
        Some(l) if l <= chrono::Duration::zero() => {
            Err(Error::Invalid("the CUPED lookback must be longer than zero".into()))
        }
        _ => Ok(lookback),
    }
}

/// Revenue per member as compared: capped at a percentile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RevenueCap {
    /// The percentile asked for.
    pub percentile: f64,
    /// The revenue it falls at: no member counts for more (in the window
    /// and, for CUPED, in the pre-period).
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

/// Per-arm figures and comparisons: what [`analyse`] returns.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Per arm (`present` is left equal to `members`).
    pub arms: Vec<ArmResult>,
    /// Every arm but the control against it.
    pub comparisons: Vec<Comparison>,
    /// P-values adjusted together per family.
    pub tests: usize,
    /// The revenue cap applied.
    pub revenue_cap: Option<RevenueCap>,
}

// Long on purpose: one pass per metric family over the same arms, in the order the report prints them; each
// part reads the figures the previous one computed.
/// Figures and comparisons of `arms` (name, members; disjoint) against arm
/// `control`, from what their members bought: `activity`'s first window is
/// the experiment's, its second (if any) the CUPED pre-period.
pub fn analyse(
    arms: &[(&str, &RoaringBitmap)],
    control: usize,
    activity: &Activity,
    options: &ReportOptions,
) -> Result<Analysis> {
    let windows = activity.windows();
    let Some(&(from, to)) = windows.first() else {
        return Err(Error::Invalid("an analysis needs the experiment's window".into()));
    };
    let with_pre = windows.len() > 1;
    let cohort: u64 = arms.iter().map(|a| a.1.len()).sum();
    let revenue_cap = options.cap.and_then(|percentile| {
        let mut spent: Vec<f64> = activity.members().map(|(_, c)| c[0].revenue.max(0.0)).filter(|&r| r > 0.0).collect();
        spent.sort_by(f64::total_cmp);
        let zeros = cohort.saturating_sub(spent.len() as u64);
        stats::percentile_with_zeros(zeros, &spent, percentile).map(|value| RevenueCap {
            percentile,
            value,
            capped_members: spent.iter().filter(|&&r| r > value).count() as u64,
        })
    });
    let capped = |revenue: f64| revenue_cap.map_or(revenue, |c| revenue.min(c.value));
    // Days of the window with orders in the warehouse, for the daily curve.
    let last = activity.newest.map_or(from, |n| n.saturating_add(1)).min(to);
    let days = usize::try_from(((last - from).max(0) as u64).div_ceil(DAY_US as u64)).unwrap_or(0);
    let mut results: Vec<ArmResult> = arms
        .iter()
        .map(|(name, bitmap)| ArmResult {
            arm: name.to_string(),
            members: bitmap.len(),
            present: bitmap.len(),
            buyers: 0,
            conversion: 0.0,
            orders: 0,
            orders_per_member: 0.0,
            revenue: 0.0,
            revenue_per_member: 0.0,
            average_order_value: None,
            cumulative_buyers: vec![0; days],
            values: Values::default(),
        })
        .collect();
    // Members come in key order, so the floating-point sums never depend on
    // how the scan was split.
    for (key, cells) in activity.members() {
        let Some(i) = arms.iter().position(|a| a.1.contains(key)) else { continue };
        let r = &mut results[i];
        let (now, pre) = (cells[0], if with_pre { cells[1] } else { Default::default() });
        if now.orders > 0 {
            r.buyers += 1;
            r.orders += u64::from(now.orders);
            r.revenue += now.revenue;
            if let Ok(day) = usize::try_from((now.first_at - from) / DAY_US)
                && day < days
            {
                r.cumulative_buyers[day] += 1;
            }
        }
        let bought = |c: &crate::activity::Cell| if c.orders > 0 { 1.0 } else { 0.0 };
        r.values.push([
            bought(&now),
            capped(now.revenue),
            f64::from(now.orders),
            now.revenue,
            bought(&pre),
            capped(pre.revenue),
            f64::from(pre.orders),
            pre.revenue,
        ]);
    }
    for r in &mut results {
        // The members who bought nothing in either period count as zeros.
        let idle = r.members - r.values.n;
        r.values.merge(&Values::zeros(idle));
        let mut running = 0;
        for d in &mut r.cumulative_buyers {
            running += *d;
            *d = running;
        }
        r.average_order_value = (r.orders > 0).then(|| r.revenue / r.orders as f64);
        let n = r.members.max(1) as f64;
        r.conversion = r.buyers as f64 / n;
        r.orders_per_member = r.orders as f64 / n;
        r.revenue_per_member = r.revenue / n;
    }
    let c = &results[control];
    let mut comparisons = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if i == control {
            continue;
        }
        let (t, cv) = (&r.values, &c.values);
        let aov = stats::delta_ratio(&t.ratio(SPEND, ORDERS), &cv.ratio(SPEND, ORDERS));
        let mut note = None;
        let mut cuped = |got: std::result::Result<Cuped, StatsError>| match got {
            Ok(c) => Some(c),
            Err(e) => {
                note = Some(e.to_string());
                None
            }
        };
        // The mean metrics' CUPED fails exactly where their plain tests do
        // (too few members): an error, as theirs. The ratio's can also lack
        // a pre-period denominator: a note.
        let (cc, rc, oc, ac) = if with_pre {
            (
                Some(stats::cuped_welch(t, cv, BOUGHT, PRE + BOUGHT)?),
                Some(stats::cuped_welch(t, cv, REVENUE, PRE + REVENUE)?),
                Some(stats::cuped_welch(t, cv, ORDERS, PRE + ORDERS)?),
                cuped(stats::cuped_delta_ratio(t, cv, (SPEND, ORDERS), (PRE + SPEND, PRE + ORDERS))),
            )
        } else {
            (None, None, None, None)
        };
        comparisons.push(Comparison {
            arm: r.arm.clone(),
            control: c.arm.clone(),
            conversion: stats::two_proportion(r.buyers, r.members, c.buyers, c.members)?,
            revenue_per_member: stats::welch(&t.moments(REVENUE), &cv.moments(REVENUE))?,
            orders_per_member: stats::welch(&t.moments(ORDERS), &cv.moments(ORDERS))?,
            average_order_value: aov.as_ref().ok().copied(),
            average_order_value_note: aov.err().map(|e| e.to_string()),
            conversion_cuped: cc,
            revenue_per_member_cuped: rc,
            orders_per_member_cuped: oc,
            average_order_value_cuped: ac,
            average_order_value_cuped_note: note,
        });
    }
    // Every p-value of the report is one test of its family; the plain and
    // the CUPED estimates are two families of the same tests.
    let chosen = |m: Metric| options.metrics.contains(&m);
    let plain: Vec<&mut Uplift> = comparisons
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
    let tests = plain.len();
    adjust(plain, options.correction);
    let adjusted: Vec<&mut Uplift> = comparisons
        .iter_mut()
        .flat_map(|c| {
            [
                c.conversion_cuped.as_mut().filter(|_| chosen(Metric::Conversion)),
                c.revenue_per_member_cuped.as_mut().filter(|_| chosen(Metric::Revenue)),
                c.orders_per_member_cuped.as_mut().filter(|_| chosen(Metric::Orders)),
                c.average_order_value_cuped.as_mut().filter(|_| chosen(Metric::AverageOrderValue)),
            ]
        })
        .flatten()
        .map(|c| &mut c.uplift)
        .collect();
    adjust(adjusted, options.correction);
    Ok(Analysis { arms: results, comparisons, tests, revenue_cap })
}

/// Sets each uplift's `p_adjusted` for the family they form.
fn adjust(mut family: Vec<&mut Uplift>, correction: Correction) {
    let p: Vec<f64> = family.iter().map(|u| u.p_value).collect();
    for (u, adjusted) in family.iter_mut().zip(stats::adjust(&p, correction)) {
        u.p_adjusted = Some(adjusted);
    }
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

/// Windows `[from, to)` in µs since the epoch.
type Windows = Vec<(i64, i64)>;

/// The windows a report or plan reads: `[start, end)` and, with a CUPED
/// lookback, `[start − lookback, start)`; and the pre-period as shown.
pub(crate) fn windows_of(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    lookback: Option<chrono::Duration>,
) -> Result<(Windows, Option<CupedPeriod>)> {
    let mut windows = vec![(micros(start), micros(end))];
    let Some(look) = lookback else { return Ok((windows, None)) };
    let from = start
        .checked_sub_signed(look)
        .ok_or_else(|| Error::Invalid(format!("{start} minus a lookback of {look} is before the first date")))?;
    windows.push((micros(from), micros(start)));
    Ok((windows, Some(CupedPeriod { days: look.num_seconds() as f64 / 86_400.0, from, to: start })))
}

/// Reads the orders in the window (and the CUPED pre-period) and computes
/// the report.
pub async fn report(wh: &Warehouse, id: i64, options: &ReportOptions) -> Result<Report> {
    let (window, control) = (options.window, options.control.as_str());
    let e = get(wh, id).await?;
    let Some(ci) = e.arms.iter().position(|a| a.name == control) else {
        let names = e.arms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>();
        return Err(Error::Parameter(
            ParamMessage::text(format!(
                "experiment {id} has no arm `{control}` (arms: {}); choose the control with ",
                names.join(", ")
            ))
            .then_param("control"),
        ));
    };
    if window <= chrono::Duration::zero() {
        return Err(Error::Invalid("the window must be longer than zero".into()));
    }
    let (start, end) = (e.launched_at, window_end(e.launched_at, window)?);
    let (windows, cuped) = windows_of(start, end, options.cuped)?;
    let member_files = table_files(wh, Table::Members).await?;
    let present = taglake_storage::scan::blocking(|| crate::tagset::member_keys(&member_files))?;
    let mut cohort = RoaringBitmap::new();
    e.arms.iter().for_each(|a| cohort |= &a.bitmap);
    let activity = scan_activity(wh, &cohort, &windows).await?;
    let arms: Vec<(&str, &RoaringBitmap)> = e.arms.iter().map(|a| (a.name.as_str(), &a.bitmap)).collect();
    let mut analysis = analyse(&arms, ci, &activity, options)?;
    for (r, a) in analysis.arms.iter_mut().zip(&e.arms) {
        r.present = a.bitmap.intersection_len(&present);
    }
    let results = &analysis.arms;
    let split: Vec<usize> = (0..e.arms.len()).filter(|&i| e.arms[i].share > 0.0).collect();
    let shares: Vec<f64> = split.iter().map(|&i| e.arms[i].share).collect();
    let srm = stats::srm(&split.iter().map(|&i| results[i].present).collect::<Vec<_>>(), &shares);
    let srm_arms = if srm.is_some() { split.iter().map(|&i| results[i].arm.clone()).collect() } else { Vec::new() };
    let (srm_strata, srm_strata_note) = strata_srm(wh, &e, &split, &shares, &present).await?;
    Ok(Report {
        window_start: start,
        window_end: end,
        newest_order: activity.newest.map(from_micros),
        experiment: e,
        arms: analysis.arms,
        tests: analysis.tests,
        comparisons: analysis.comparisons,
        srm,
        srm_arms,
        srm_strata,
        srm_strata_note,
        correction: options.correction,
        metrics: options.metrics.clone(),
        revenue_cap: analysis.revenue_cap,
        cuped,
    })
}
