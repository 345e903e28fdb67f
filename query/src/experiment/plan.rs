//! Planning before launch: how small an effect an audience can show, or
//! how many of its members an effect needs.
//!
//! The answer depends on the metric's variance in this audience, which no
//! rule of thumb knows, so a plan measures it: the audience's members (as
//! tagged now, outside the global holdout, as an export would take them)
//! over the last [`HISTORY_WINDOWS`] whole windows of the planned length
//! before the launch (default: the newest order's day), and over the same
//! window 52 weeks before launch, each with its CUPED pre-period. CUPED's
//! gain comes from the correlation ρ between a window and its pre-period:
//! the adjusted variance is σ²(1 − ρ²).
//!
//! Retail is seasonal and trends: revenue per member can grow a tenth from
//! one fortnight to the next before the holidays, and a plan sized on the
//! average of the last windows then falls short of its power in the window
//! that follows. So a plan is sized on σ projected one window ahead by the
//! least-squares trend of the recent windows, and never below the noisiest
//! window measured (last year's season included); ρ is the weakest of the
//! recent windows', the baseline the most recent window's mean. Every
//! window is shown, so the trend is visible. The benchmark `experiment_sim` checks
//! that plans made this way keep their power out of sample.
//!
//! The sizes themselves are a two-sided z-test's ([`stats::power`]): what
//! statsmodels' `NormalIndPower` computes, with the effect in standard
//! deviations of the (adjusted) metric.

use taglake_storage::Warehouse;

use super::from_micros;
use crate::activity::{DAY_US, day_start, newest_order, scan_activity};
use crate::export::{Split, held_out};
use crate::stats::{self, CoMoments};
use crate::{Error, Result, audience};

/// Past windows a plan measures.
pub const HISTORY_WINDOWS: usize = 3;

/// The metric a plan sizes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanMetric {
    /// Bought at least once in the window.
    Conversion,
    /// Revenue per member in the window.
    Revenue,
}

/// An effect to detect.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// A share of the baseline (`0.02`: 2 %).
    Relative(f64),
    /// In the metric's unit (percentage points as a fraction for conversion).
    Absolute(f64),
}

impl Effect {
    /// Parses `2%` (relative) or `0.5` (absolute).
    pub fn parse(text: &str) -> Result<Effect> {
        let t = text.trim();
        let bad = || {
            Error::Invalid(format!(
                "`{text}` is not an effect: write a positive share such as 2% or an absolute value such as 0.5"
            ))
        };
        let (number, relative) = match t.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (t, false),
        };
        let v: f64 = number.parse().map_err(|_| bad())?;
        if !(v.is_finite() && v > 0.0) {
            return Err(bad());
        }
        Ok(if relative { Effect::Relative(v / 100.0) } else { Effect::Absolute(v) })
    }

    fn absolute(self, baseline: f64) -> f64 {
        match self {
            Effect::Relative(r) => r * baseline,
            Effect::Absolute(a) => a,
        }
    }
}

/// What a plan is for. Built by [`PlanOptions::new`] and checked setters.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    audience: String,
    metric: PlanMetric,
    window: chrono::Duration,
    split: Split,
    control: String,
    effect: Option<Effect>,
    power: f64,
    alpha: f64,
    cuped: Option<chrono::Duration>,
    holdout: (String, f64),
    until: Option<chrono::DateTime<chrono::Utc>>,
}

impl PlanOptions {
    /// Conversion over 14 days, treatment=50,control=50, 80 % power at
    /// α = 0.05, CUPED over 30 days, the default global holdout.
    pub fn new(audience: &str) -> PlanOptions {
        PlanOptions {
            audience: audience.to_string(),
            metric: PlanMetric::Conversion,
            window: chrono::Duration::days(14),
            split: Split(vec![("treatment".into(), 0.5), ("control".into(), 0.5)]),
            control: "control".into(),
            effect: None,
            power: 0.8,
            alpha: 0.05,
            cuped: Some(chrono::Duration::days(super::DEFAULT_CUPED_DAYS)),
            holdout: (crate::export::HOLDOUT_SALT.into(), crate::export::HOLDOUT_SHARE),
            until: None,
        }
    }

    /// The metric.
    pub fn metric(mut self, metric: PlanMetric) -> PlanOptions {
        self.metric = metric;
        self
    }

    /// The experiment's window (at least a day).
    pub fn window(mut self, window: chrono::Duration) -> Result<PlanOptions> {
        if window < chrono::Duration::days(1) {
            return Err(Error::Invalid("a plan's window is at least a day".into()));
        }
        self.window = window;
        Ok(self)
    }

    /// The split and its control arm (which must be one of its arms, and
    /// not the only one).
    pub fn split(mut self, split: Split, control: &str) -> Result<PlanOptions> {
        if !split.0.iter().any(|(n, _)| n == control) {
            let names: Vec<&str> = split.0.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::Invalid(format!("the split has no arm `{control}` (arms: {})", names.join(", "))));
        }
        if split.0.len() < 2 {
            return Err(Error::Invalid("a plan compares at least two arms".into()));
        }
        self.split = split;
        self.control = control.to_string();
        Ok(self)
    }

    /// The effect to size for (`None`: report the minimum detectable effect).
    pub fn effect(mut self, effect: Option<Effect>) -> PlanOptions {
        self.effect = effect;
        self
    }

    /// Power and significance level: 0 < α < power < 1.
    pub fn levels(mut self, power: f64, alpha: f64) -> Result<PlanOptions> {
        if !(alpha > 0.0 && alpha < 1.0 && power > alpha && power < 1.0) {
            return Err(Error::Invalid(format!(
                "power {power} and alpha {alpha}: both between 0 and 1, power above alpha (e.g. 0.8 and 0.05)"
            )));
        }
        self.power = power;
        self.alpha = alpha;
        Ok(self)
    }

    /// CUPED over this lookback (`None`: off).
    pub fn cuped(mut self, lookback: Option<chrono::Duration>) -> Result<PlanOptions> {
        self.cuped = super::analysis::checked_lookback(lookback)?;
        Ok(self)
    }

    /// Measure the history up to this time (its day's start) instead of
    /// up to the newest order's day: a plan as it would have been made then.
    pub fn until(mut self, at: Option<chrono::DateTime<chrono::Utc>>) -> PlanOptions {
        self.until = at;
        self
    }

    /// The global holdout an export would leave out.
    pub fn holdout(mut self, salt: &str, share: f64) -> Result<PlanOptions> {
        crate::export::check_holdout_share(share)?;
        self.holdout = (salt.to_string(), share);
        Ok(self)
    }
}

/// The metric over one past window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryWindow {
    /// Start (inclusive).
    pub from: chrono::DateTime<chrono::Utc>,
    /// End (exclusive).
    pub to: chrono::DateTime<chrono::Utc>,
    /// Mean per member.
    pub mean: f64,
    /// Standard deviation per member.
    pub sd: f64,
    /// Correlation with the same metric over the CUPED lookback before
    /// `from` (0 without CUPED).
    pub correlation: f64,
    /// The window 52 weeks before launch (the same season last year).
    pub year_before: bool,
}

/// One treatment arm against the control.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmPlan {
    /// The arm.
    pub arm: String,
    /// Its members at the audience's size.
    pub members: u64,
    /// The control's.
    pub control_members: u64,
    /// The minimum detectable effect at this size, absolute (metric units).
    pub mde: f64,
    /// The same relative to the baseline.
    pub mde_relative: Option<f64>,
    /// The minimum detectable effect without CUPED.
    pub mde_without_cuped: f64,
    /// For the effect asked: members needed in all (every arm of the split).
    pub needed: Option<u64>,
    /// The same without CUPED.
    pub needed_without_cuped: Option<u64>,
}

/// A plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The audience expression.
    pub audience: String,
    /// The tag snapshot it was evaluated on.
    pub snapshot: i64,
    /// Its members now.
    pub audience_members: u64,
    /// Of them, outside the global holdout: what an export splits.
    pub eligible: u64,
    /// The metric.
    pub metric: PlanMetric,
    /// The window length in days.
    pub window_days: f64,
    /// The CUPED lookback in days (`None`: off).
    pub cuped_days: Option<f64>,
    /// The past windows measured, newest first.
    pub history: Vec<HistoryWindow>,
    /// The most recent window's mean: the baseline.
    pub baseline: f64,
    /// The largest standard deviation of the windows with orders.
    pub sd: f64,
    /// The correlation with the pre-period in the window `sd` comes from
    /// (0 without CUPED).
    pub correlation: f64,
    /// The standard deviation CUPED leaves: sd·√(1 − ρ²).
    pub sd_cuped: f64,
    /// Significance level.
    pub alpha: f64,
    /// Power.
    pub power: f64,
    /// The effect asked for, if any.
    pub effect: Option<Effect>,
    /// The effect asked for in metric units.
    pub effect_absolute: Option<f64>,
    /// Per treatment arm.
    pub arms: Vec<ArmPlan>,
    /// For the effect asked: members needed in all (the largest over arms)
    /// and their share of the eligible members (above 1: the audience is
    /// too small).
    pub needed: Option<u64>,
    /// `needed` ÷ `eligible`.
    pub needed_share: Option<f64>,
}

// Long on purpose: the plan's measurements (windows, trend, CUPED correlation) feed its sizing in this order.
/// Plans an experiment on `o.audience`.
pub async fn plan(wh: &Warehouse, o: &PlanOptions) -> Result<Plan> {
    let (_, tags) = crate::open(wh).await?;
    let (tags, snapshot) = crate::tagset::tagged(tags)?;
    let node = audience::parse(&o.audience, &tags)?;
    let selected = audience::evaluate(&node, &tags)?;
    let held = held_out(wh, &selected, &o.holdout.0, o.holdout.1).await?;
    let eligible = &selected - &held;
    let newest = newest_order(wh)
        .await?
        .ok_or_else(|| Error::Invalid("the warehouse has no orders: a plan measures the audience's history".into()))?;
    let end = day_start(o.until.map_or(newest, |u| super::micros(u).min(newest)));
    let w = o.window.num_microseconds().unwrap_or(i64::MAX);
    let look = o.cuped.map(|l| l.num_microseconds().unwrap_or(i64::MAX));
    let mut windows = Vec::new();
    let year = 364 * DAY_US;
    let starts = (0..HISTORY_WINDOWS as i64).map(|k| end.checked_sub((k + 1).saturating_mul(w)));
    for from in starts.chain([end.checked_sub(year)]) {
        let Some(from) = from else { break };
        windows.push((from, from.saturating_add(w)));
        windows.push((from.saturating_sub(look.unwrap_or(0)), from));
    }
    let activity = scan_activity(wh, &eligible, &windows).await?;
    let value = |c: &crate::activity::Cell| match o.metric {
        PlanMetric::Conversion => f64::from(u8::from(c.orders > 0)),
        PlanMetric::Revenue => c.revenue,
    };
    let mut per_window = vec![CoMoments::<2>::default(); windows.len() / 2];
    let mut pushed = 0u64;
    for (_, cells) in activity.members() {
        for (k, m) in per_window.iter_mut().enumerate() {
            m.push([value(&cells[2 * k]), value(&cells[2 * k + 1])]);
        }
        pushed += 1;
    }
    for m in &mut per_window {
        m.merge(&CoMoments::zeros(eligible.len() - pushed));
    }
    let mut history: Vec<HistoryWindow> = per_window
        .iter()
        .zip(windows.chunks(2))
        .map(|(m, w)| {
            let (vy, vx) = (m.c[0][0], m.c[1][1]);
            let correlation = if look.is_some() && vy > 0.0 && vx > 0.0 { m.c[0][1] / (vy * vx).sqrt() } else { 0.0 };
            HistoryWindow {
                from: from_micros(w[0].0),
                to: from_micros(w[0].1),
                mean: m.mean[0],
                sd: m.moments(0).variance().sqrt(),
                correlation,
                year_before: false,
            }
        })
        .collect();
    if let Some(last) = history.get_mut(HISTORY_WINDOWS) {
        last.year_before = true;
    }
    let baseline = history.first().map_or(0.0, |h| h.mean);
    let recent = &history[..history.len().min(HISTORY_WINDOWS)];
    let sd = history.iter().map(|h| h.sd).fold(projected(recent.iter().map(|h| h.sd)), f64::max);
    let correlation = recent.iter().map(|h| h.correlation).min_by(|a, b| a.abs().total_cmp(&b.abs())).unwrap_or(0.0);
    let sd_cuped = sd * (1.0 - correlation * correlation).max(0.0).sqrt();
    let effect_absolute = o.effect.map(|e| e.absolute(baseline));
    let control = o.split.0.iter().position(|(n, _)| *n == o.control).expect("checked by PlanOptions::split");
    let n = eligible.len() as f64;
    let (sc, power_err) = (o.split.0[control].1, |e: stats::PowerError| Error::Invalid(e.to_string()));
    let mut arms = Vec::new();
    for (i, (name, st)) in o.split.0.iter().enumerate() {
        if i == control {
            continue;
        }
        let (nt, nc) = (n * st, n * sc);
        let mde_sd = if nt >= 1.0 && nc >= 1.0 {
            stats::minimum_effect(nt, nc, o.alpha, o.power).map_err(power_err)?
        } else {
            f64::INFINITY
        };
        let needed = |sd: f64| -> Result<Option<u64>> {
            match effect_absolute {
                Some(e) if sd > 0.0 => {
                    let pair = stats::members_needed(e / sd, *st, sc, o.alpha, o.power).map_err(power_err)?;
                    Ok(Some((pair / (st + sc)).ceil() as u64))
                }
                Some(_) => Ok(Some(0)),
                None => Ok(None),
            }
        };
        arms.push(ArmPlan {
            arm: name.clone(),
            members: nt.round() as u64,
            control_members: nc.round() as u64,
            mde: mde_sd * sd_cuped,
            mde_relative: (baseline > 0.0).then(|| mde_sd * sd_cuped / baseline),
            mde_without_cuped: mde_sd * sd,
            needed: needed(sd_cuped)?,
            needed_without_cuped: needed(sd)?,
        });
    }
    let needed = arms.iter().filter_map(|a| a.needed).max();
    Ok(Plan {
        audience: o.audience.clone(),
        snapshot,
        audience_members: selected.len(),
        eligible: eligible.len(),
        metric: o.metric,
        window_days: w as f64 / DAY_US as f64,
        cuped_days: look.map(|l| l as f64 / DAY_US as f64),
        history,
        baseline,
        sd,
        correlation,
        sd_cuped,
        alpha: o.alpha,
        power: o.power,
        effect: o.effect,
        effect_absolute,
        arms,
        needed,
        needed_share: needed.filter(|_| !eligible.is_empty()).map(|x| x as f64 / eligible.len() as f64),
    })
}

/// The value one step after the newest of `newest_first` on their
/// least-squares line (0 for no values, the value itself for one).
fn projected(newest_first: impl Iterator<Item = f64>) -> f64 {
    // x = 0, −1, −2, … for the newest, the one before, …; the line at x = 1.
    let points: Vec<(f64, f64)> = newest_first.enumerate().map(|(i, y)| (-(i as f64), y)).collect();
    let n = points.len() as f64;
    if points.len() < 2 {
        return points.first().map_or(0.0, |p| p.1);
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    my + sxy / sxx * (1.0 - mx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trend_is_projected_one_window_ahead() {
        assert_eq!(projected([].into_iter()), 0.0);
        assert_eq!(projected([3.0].into_iter()), 3.0);
        assert!((projected([3.0, 2.0, 1.0].into_iter()) - 4.0).abs() < 1e-12);
        assert!((projected([1.0, 2.0, 3.0].into_iter()) - 0.0).abs() < 1e-12);
        // numpy.polyfit([0, -1, -2], [154.2, 142.1, 138.4], 1) at x = 1: 160.70000000000005
        assert!((projected([154.2, 142.1, 138.4].into_iter()) - 160.70000000000005).abs() < 1e-9);
    }

    #[test]
    fn effects_parse_and_bad_ones_are_explained() {
        assert_eq!(Effect::parse("2%").unwrap(), Effect::Relative(0.02));
        assert_eq!(Effect::parse(" 0.5 ").unwrap(), Effect::Absolute(0.5));
        assert_eq!(Effect::parse("1.5 %").unwrap(), Effect::Relative(0.015));
        for bad in ["", "%", "-2%", "0", "0%", "two", "NaN", "inf%", "2%%"] {
            let e = Effect::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not an effect"), "{bad}: {e}");
        }
    }

    #[test]
    fn options_refuse_what_cannot_be_planned() {
        let o = || PlanOptions::new("true");
        assert!(o().levels(0.8, 0.05).is_ok());
        for (power, alpha) in [(0.8, 0.0), (0.04, 0.05), (1.0, 0.05), (f64::NAN, 0.05)] {
            assert!(o().levels(power, alpha).is_err(), "{power} {alpha}");
        }
        let split = Split::parse("a=90,b=10").unwrap();
        assert!(o().split(split.clone(), "control").unwrap_err().to_string().contains("no arm `control` (arms: a, b)"));
        assert!(o().split(split, "b").is_ok());
        assert!(o().split(Split::parse("control=1").unwrap(), "control").is_err());
        assert!(o().window(chrono::Duration::hours(3)).is_err());
        assert!(o().cuped(Some(chrono::Duration::zero())).is_err());
        assert!(o().holdout("s", 1.0).is_err());
    }
}
