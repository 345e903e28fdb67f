//! Significance tests for experiment uplift reports (treatment − control).
//!
//! Two tests, one per kind of metric:
//!
//! * **Conversion** (did a member buy?) is a proportion, so it gets the
//!   two-proportion z-test: the p-value uses the pooled standard error (the
//!   standard error under the null hypothesis that both arms convert alike),
//!   the 95 % confidence interval uses the unpooled (Wald) standard error.
//! * **Revenue per member** gets Welch's t-test rather than Student's: the two
//!   arms' variances differ (an offer changes who buys and how much), and
//!   revenue is heavily right-skewed with many zeros, so the equal-variance
//!   assumption of Student's test does not hold. Welch's test needs no such
//!   assumption; its degrees of freedom come from the Welch–Satterthwaite
//!   equation and the confidence interval uses the t quantile at those df.
//!
//! Per-member metrics are summarised as [`Moments`] (n, mean and the sum of
//! squared deviations, Welford's update and Chan's merge): one pass, merged
//! across partitions, and exact to the last digits where Σx² − Σx·mean
//! loses them to cancellation on large revenue sums.
//!
//! Around the tests:
//!
//! * **Sample ratio mismatch** ([`srm`]): a chi-square goodness-of-fit test
//!   of the arms' observed sizes against their configured shares. A split
//!   that went wrong (a bug in assignment, members lost on one side) makes
//!   every comparison meaningless, so a report checks it first.
//! * **Many comparisons** ([`adjust`]): with several arms or metrics, the
//!   p-values are adjusted, by Holm's step-down method (family-wise error)
//!   or Benjamini–Hochberg's step-up (false discovery rate).
//!
//! Degenerate inputs never yield NaN silently: arms without enough members are
//! a [`StatsError`], and a zero standard error is handled explicitly as
//! described on [`two_proportion`] and [`welch`].

use std::fmt;

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// 97.5 % quantile of the standard normal (`norm.ppf(0.975)`), for two-sided 95 % intervals.
const Z_975: f64 = 1.959963984540054;

/// Which arm of the experiment an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The arm that received the change.
    Treatment,
    /// The arm that did not.
    Control,
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Treatment => "treatment",
            Self::Control => "control",
        })
    }
}

/// Why a test could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// The arm has zero members.
    #[error("{0} has no members")]
    NoMembers(Arm),
    /// Welch's t-test needs a sample variance, hence at least 2 members per arm.
    #[error("{arm} has {n} member(s); Welch's t-test needs at least 2")]
    TooFewMembers {
        /// Which arm.
        arm: Arm,
        /// Its members.
        n: u64,
    },
    /// More buyers than members: the counts are inconsistent.
    #[error("{arm} has more buyers ({buyers}) than members ({n})")]
    BuyersExceedMembers {
        /// Which arm.
        arm: Arm,
        /// Its buyers.
        buyers: u64,
        /// Its members.
        n: u64,
    },
    /// A ratio metric's denominator is 0 in the arm (no orders).
    #[error("{0} has no orders, so its average order value is undefined")]
    NoDenominator(Arm),
    /// The mean or the sum of squared deviations is NaN or infinite.
    #[error("{0} has a non-finite mean or variance")]
    NonFinite(Arm),
}

/// Summary of one arm for a per-member metric: n members, the mean and the
/// sum of squared deviations from it (zeros included).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Moments {
    /// Number of members.
    pub n: u64,
    /// Mean over members (0 when there are none).
    pub mean: f64,
    /// Σ(x − mean)² over members.
    pub m2: f64,
}

impl Moments {
    /// `n` members whose value is 0 (members without revenue).
    pub fn zeros(n: u64) -> Moments {
        Moments { n, mean: 0.0, m2: 0.0 }
    }

    /// Adds one member's value (Welford's update).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Mean of the metric; `0.0` when there are no members.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Σx over members.
    pub fn sum(&self) -> f64 {
        self.mean * self.n as f64
    }

    /// Sample variance (denominator n − 1); `0.0` when n < 2.
    pub fn variance(&self) -> f64 {
        if self.n < 2 { 0.0 } else { (self.m2 / (self.n - 1) as f64).max(0.0) }
    }

    /// Adds another summary into this one, as if its values had been pushed
    /// here (Chan et al.'s pairwise merge).
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (a, b) = (self.n as f64, other.n as f64);
        let n = a + b;
        let delta = other.mean - self.mean;
        self.mean += delta * (b / n);
        self.m2 += other.m2 + delta * delta * (a * b / n);
        self.n += other.n;
    }

    fn finite(&self) -> bool {
        self.mean.is_finite() && self.m2.is_finite()
    }
}

impl Extend<f64> for Moments {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, iter: I) {
        iter.into_iter().for_each(|x| self.push(x));
    }
}

impl FromIterator<f64> for Moments {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Self {
        let mut m = Self::default();
        m.extend(iter);
        m
    }
}

/// A difference treatment − control with its 95 % confidence interval and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Uplift {
    /// Treatment value (proportion or mean).
    pub treatment: f64,
    /// Control value (proportion or mean).
    pub control: f64,
    /// `treatment - control`.
    pub diff: f64,
    /// `diff / control`; `None` when `control == 0`.
    pub relative: Option<f64>,
    /// Lower end of the 95 % confidence interval for `diff`.
    pub ci_low: f64,
    /// Upper end of the 95 % confidence interval for `diff`.
    pub ci_high: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `p_value` adjusted for the report's other comparisons (see
    /// [`adjust`]); `None` where nothing adjusted it.
    pub p_adjusted: Option<f64>,
    /// Test statistic: z for [`two_proportion`], t for [`welch`].
    pub statistic: f64,
    /// Welch–Satterthwaite degrees of freedom for [`welch`]; `None` for the
    /// z-test, and for [`welch`] when both arms have zero variance (undefined).
    pub df: Option<f64>,
}

impl Uplift {
    fn new(treatment: f64, control: f64) -> Self {
        let diff = treatment - control;
        Self {
            treatment,
            control,
            diff,
            relative: (control != 0.0).then(|| diff / control),
            ci_low: diff,
            ci_high: diff,
            p_value: 1.0,
            p_adjusted: None,
            statistic: 0.0,
            df: None,
        }
    }
}

/// Two-proportion z-test: p-value from the pooled standard error; CI from the unpooled (Wald) standard error, z = 1.959963984540054.
///
/// When the pooled standard error is 0 (both proportions 0, or both 1) there
/// is no evidence of a difference: `p_value = 1.0`, `statistic = 0.0` and the
/// CI is `[diff, diff]` (i.e. `[0, 0]`). When only the unpooled standard error
/// is 0 (one arm at 0 %, the other at 100 %) the Wald CI collapses to
/// `[diff, diff]` while the p-value is still computed from the pooled error.
///
/// # Errors
/// [`StatsError::NoMembers`] if an arm has `n == 0`;
/// [`StatsError::BuyersExceedMembers`] if `buyers > n` in an arm.
pub fn two_proportion(buyers_t: u64, n_t: u64, buyers_c: u64, n_c: u64) -> Result<Uplift, StatsError> {
    for (arm, buyers, n) in [(Arm::Treatment, buyers_t, n_t), (Arm::Control, buyers_c, n_c)] {
        if n == 0 {
            return Err(StatsError::NoMembers(arm));
        }
        if buyers > n {
            return Err(StatsError::BuyersExceedMembers { arm, buyers, n });
        }
    }
    let (nt, nc) = (n_t as f64, n_c as f64);
    let (pt, pc) = (buyers_t as f64 / nt, buyers_c as f64 / nc);
    let mut up = Uplift::new(pt, pc);

    let pooled = (buyers_t + buyers_c) as f64 / (nt + nc);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / nt + 1.0 / nc)).sqrt();
    if se_pooled > 0.0 {
        let z = up.diff / se_pooled;
        up.statistic = z;
        up.p_value = (2.0 * Normal::standard().sf(z.abs())).min(1.0);
        let half = Z_975 * (pt * (1.0 - pt) / nt + pc * (1.0 - pc) / nc).sqrt();
        up.ci_low = up.diff - half;
        up.ci_high = up.diff + half;
    }
    Ok(up)
}

/// Welch's t-test on means; CI uses the t quantile at the Welch–Satterthwaite df.
///
/// With t = diff / se, se² = s_t²/n_t + s_c²/n_c and
/// df = se⁴ / ((s_t²/n_t)²/(n_t−1) + (s_c²/n_c)²/(n_c−1)).
///
/// If both arms have zero variance (se = 0), df is undefined and reported as
/// `None`, the CI is `[diff, diff]`, and:
/// * equal means: `p_value = 1.0`, `statistic = 0.0`;
/// * different means: `p_value = 0.0`, `statistic = ±∞` (sign of `diff`).
///   Note that `serde_json` serialises an infinite `f64` as `null`.
///
/// # Errors
/// [`StatsError::TooFewMembers`] (or [`StatsError::NoMembers`] for n = 0) if
/// an arm has fewer than 2 members; [`StatsError::NonFinite`] if an arm's mean
/// or sum of squared deviations is NaN or infinite.
pub fn welch(t: &Moments, c: &Moments) -> Result<Uplift, StatsError> {
    for (arm, m) in [(Arm::Treatment, t), (Arm::Control, c)] {
        match m.n {
            0 => return Err(StatsError::NoMembers(arm)),
            1 => return Err(StatsError::TooFewMembers { arm, n: 1 }),
            _ if !m.finite() => return Err(StatsError::NonFinite(arm)),
            _ => {}
        }
    }
    let mut up = Uplift::new(t.mean(), c.mean());
    let (vt, vc) = (t.variance() / t.n as f64, c.variance() / c.n as f64);
    let se2 = vt + vc;
    if se2 == 0.0 {
        if up.diff != 0.0 {
            up.statistic = f64::INFINITY.copysign(up.diff);
            up.p_value = 0.0;
        }
        return Ok(up);
    }
    let se = se2.sqrt();
    // Welch–Satterthwaite with the arms' shares of se², which cannot under- or overflow:
    // df lies between min(n_t, n_c) − 1 and n_t + n_c − 2.
    let (wt, wc) = (vt / se2, vc / se2);
    let df = 1.0 / (wt * wt / (t.n - 1) as f64 + wc * wc / (c.n - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).expect("df is finite and >= 1");
    let stat = up.diff / se;
    let half = dist.inverse_cdf(0.975) * se;
    up.statistic = stat;
    up.p_value = (2.0 * dist.sf(stat.abs())).min(1.0);
    up.ci_low = up.diff - half;
    up.ci_high = up.diff + half;
    up.df = Some(df);
    Ok(up)
}

/// Paired per-member values of a ratio metric's numerator `y` and
/// denominator `x` (revenue and orders for the average order value): each
/// side's [`Moments`] and their co-moment, updated and merged alike.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct RatioMoments {
    /// The numerator's moments.
    pub y: Moments,
    /// The denominator's moments (the same members).
    pub x: Moments,
    /// Σ(y − ȳ)(x − x̄).
    pub c_xy: f64,
}

impl RatioMoments {
    /// Adds one member's numerator and denominator.
    pub fn push(&mut self, y: f64, x: f64) {
        let dy = y - self.y.mean;
        self.y.push(y);
        self.x.push(x);
        self.c_xy += dy * (x - self.x.mean);
    }

    /// Adds another summary (Chan's merge, with the co-moment).
    pub fn merge(&mut self, o: &RatioMoments) {
        let (a, b) = (self.y.n as f64, o.y.n as f64);
        let (dy, dx) = (o.y.mean - self.y.mean, o.x.mean - self.x.mean);
        let cross = if a + b > 0.0 { dy * dx * (a * b / (a + b)) } else { 0.0 };
        self.y.merge(&o.y);
        self.x.merge(&o.x);
        self.c_xy += o.c_xy + cross;
    }

    /// `n` members whose numerator and denominator are both 0.
    pub fn zeros(n: u64) -> RatioMoments {
        RatioMoments { y: Moments::zeros(n), x: Moments::zeros(n), c_xy: 0.0 }
    }

    /// ȳ / x̄ and its variance by the delta method:
    /// (s_y²/x̄² − 2·ȳ·s_xy/x̄³ + ȳ²·s_x²/x̄⁴) / n, sample (n − 1) moments.
    fn ratio(&self) -> (f64, f64) {
        let (n, my, mx) = (self.y.n as f64, self.y.mean, self.x.mean);
        let (vy, vx, cxy) = (self.y.variance(), self.x.variance(), self.c_xy / (n - 1.0).max(1.0));
        let var = (vy / (mx * mx) - 2.0 * my * cxy / (mx * mx * mx) + my * my * vx / (mx * mx * mx * mx)) / n;
        (my / mx, var.max(0.0))
    }
}

/// A ratio metric (the average order value: revenue ÷ orders over an
/// arm's members) compared by the delta method: each arm's ratio of means
/// with its delta-method variance, then a z-test of the difference. A
/// naive t-test over per-order values would treat the orders of one member
/// as independent; this does not.
///
/// # Errors
/// [`StatsError::TooFewMembers`] (or `NoMembers`) with fewer than 2
/// members in an arm; [`StatsError::NoDenominator`] when an arm's
/// denominator is 0 (no orders: no average); [`StatsError::NonFinite`].
pub fn delta_ratio(t: &RatioMoments, c: &RatioMoments) -> Result<Uplift, StatsError> {
    for (arm, m) in [(Arm::Treatment, t), (Arm::Control, c)] {
        match m.y.n {
            0 => return Err(StatsError::NoMembers(arm)),
            1 => return Err(StatsError::TooFewMembers { arm, n: 1 }),
            _ if !(m.y.finite() && m.x.finite() && m.c_xy.is_finite()) => return Err(StatsError::NonFinite(arm)),
            _ if m.x.mean == 0.0 => return Err(StatsError::NoDenominator(arm)),
            _ => {}
        }
    }
    let ((rt, vt), (rc, vc)) = (t.ratio(), c.ratio());
    let mut up = Uplift::new(rt, rc);
    let se = (vt + vc).sqrt();
    if se > 0.0 {
        let z = up.diff / se;
        up.statistic = z;
        up.p_value = (2.0 * Normal::standard().sf(z.abs())).min(1.0);
        up.ci_low = up.diff - Z_975 * se;
        up.ci_high = up.diff + Z_975 * se;
    } else if up.diff != 0.0 {
        up.statistic = f64::INFINITY.copysign(up.diff);
        up.p_value = 0.0;
    }
    Ok(up)
}

/// The `q`-th percentile (0–100) of `zeros` zeros and the non-negative
/// `values`, sorted ascending, by linear interpolation between the closest
/// ranks (numpy's default). `None` when there are no values at all.
pub fn percentile_with_zeros(zeros: u64, values: &[f64], q: f64) -> Option<f64> {
    let n = zeros + values.len() as u64;
    if n == 0 {
        return None;
    }
    let at = |i: u64| if i < zeros { 0.0 } else { values[(i - zeros) as usize] };
    let h = (n - 1) as f64 * q.clamp(0.0, 100.0) / 100.0;
    let (lo, hi) = (h.floor() as u64, h.ceil() as u64);
    Some(at(lo) + (h - lo as f64) * (at(hi) - at(lo)))
}

/// The p-value below which a sample ratio mismatch is reported: strict,
/// because a report checks it every time it is read (as GrowthBook and
/// Optimizely do).
pub const SRM_ALPHA: f64 = 0.001;

/// A chi-square goodness-of-fit test of arm sizes against their shares.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Srm {
    /// Members observed per arm.
    pub observed: Vec<u64>,
    /// Members expected per arm: the total split by the configured shares.
    pub expected: Vec<f64>,
    /// Σ (observed − expected)² / expected.
    pub chi2: f64,
    /// Degrees of freedom (arms − 1).
    pub df: u64,
    /// P(χ² ≥ chi2) under the configured split.
    pub p_value: f64,
    /// `p_value < SRM_ALPHA`: the split itself went wrong.
    pub mismatch: bool,
}

/// Tests `observed` arm sizes against `shares` (any positive weights; they
/// are normalised). `None` with fewer than two arms, a non-positive or
/// non-finite share, or no members at all.
pub fn srm(observed: &[u64], shares: &[f64]) -> Option<Srm> {
    if observed.len() != shares.len() || observed.len() < 2 || shares.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return None;
    }
    let total: u64 = observed.iter().sum();
    if total == 0 {
        return None;
    }
    let weight: f64 = shares.iter().sum();
    let expected: Vec<f64> = shares.iter().map(|s| total as f64 * s / weight).collect();
    let chi2 = observed.iter().zip(&expected).map(|(&o, &e)| (o as f64 - e).powi(2) / e).sum::<f64>();
    let df = observed.len() as u64 - 1;
    let dist = ChiSquared::new(df as f64).expect("df >= 1");
    let p_value = dist.sf(chi2).clamp(0.0, 1.0);
    Some(Srm { observed: observed.to_vec(), expected, chi2, df, p_value, mismatch: p_value < SRM_ALPHA })
}

/// How p-values of many comparisons are adjusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Correction {
    /// Holm's step-down method: controls the family-wise error rate, never
    /// less powerful than Bonferroni.
    #[default]
    Holm,
    /// Benjamini–Hochberg's step-up method: controls the false discovery rate.
    BenjaminiHochberg,
    /// No adjustment.
    None,
}

/// `p` adjusted by `correction`, in the same order (what statsmodels'
/// `multipletests(p, method="holm" | "fdr_bh")` returns).
pub fn adjust(p: &[f64], correction: Correction) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    match correction {
        Correction::None => out.copy_from_slice(p),
        Correction::Holm => {
            let mut running = 0.0f64;
            for (rank, &i) in order.iter().enumerate() {
                running = running.max(((m - rank) as f64 * p[i]).min(1.0));
                out[i] = running;
            }
        }
        Correction::BenjaminiHochberg => {
            let mut running = 1.0f64;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min((m as f64 / (rank + 1) as f64 * p[i]).min(1.0));
                out[i] = running;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts |a − b| ≤ 1e-9·|b| (absolute 1e-12 when b is 0).
    #[track_caller]
    fn close(a: f64, b: f64) {
        let tol = (1e-9 * b.abs()).max(1e-12);
        assert!((a - b).abs() <= tol, "{a} != {b} (|Δ| = {:e})", (a - b).abs());
    }

    // Expected values from scipy 1.17.1 (/work/main/benches/.venv/bin/python):
    //   import math; from scipy.stats import norm
    //   xt, nt, xc, nc = 120, 1000, 90, 1000
    //   pt, pc = xt/nt, xc/nc; p = (xt+xc)/(nt+nc)
    //   z = (pt-pc)/math.sqrt(p*(1-p)*(1/nt+1/nc)); pv = 2*norm.sf(abs(z))
    //   se = math.sqrt(pt*(1-pt)/nt + pc*(1-pc)/nc); zc = norm.ppf(0.975)
    //   print(repr(z), repr(pv), repr(pt-pc-zc*se), repr(pt-pc+zc*se), repr(zc))
    // -> 2.1882658846227234 0.028650240398448473 0.003162087844242642 0.056837912155757356 1.959963984540054
    #[test]
    fn conversion_120_vs_90_of_1000() {
        let u = two_proportion(120, 1000, 90, 1000).unwrap();
        assert_eq!((u.treatment, u.control), (0.12, 0.09));
        close(u.diff, 0.03);
        close(u.relative.unwrap(), 1.0 / 3.0);
        close(u.statistic, 2.1882658846227234);
        close(u.p_value, 0.028650240398448473);
        close(u.ci_low, 0.003162087844242642);
        close(u.ci_high, 0.056837912155757356);
        assert_eq!(u.df, None);
    }

    const REV_T: [f64; 11] = [0.0, 0.0, 12.5, 0.0, 48.0, 7.25, 0.0, 103.9, 0.0, 22.0, 15.5];
    const REV_C: [f64; 8] = [0.0, 9.99, 0.0, 0.0, 31.0, 0.0, 5.5, 0.0];

    // Expected values from scipy 1.17.1:
    //   from scipy.stats import ttest_ind
    //   t = [0, 0, 12.5, 0, 48.0, 7.25, 0, 103.9, 0, 22.0, 15.5]
    //   c = [0, 9.99, 0, 0, 31.0, 0, 5.5, 0]
    //   r = ttest_ind(t, c, equal_var=False); ci = r.confidence_interval(0.95)
    //   print(repr(r.statistic), repr(r.df), repr(r.pvalue), repr(ci.low), repr(ci.high))
    // -> 1.2818881614169773 12.987154512518648 0.22229399811825296 -9.049858830349983 35.45463155762271
    #[test]
    fn welch_revenue_per_member() {
        let t: Moments = REV_T.into_iter().collect();
        let c: Moments = REV_C.into_iter().collect();
        let u = welch(&t, &c).unwrap();
        close(u.treatment, 209.15 / 11.0);
        close(u.control, 46.49 / 8.0);
        close(u.statistic, 1.2818881614169773);
        close(u.df.unwrap(), 12.987154512518648);
        close(u.p_value, 0.22229399811825296);
        close(u.ci_low, -9.049858830349983);
        close(u.ci_high, 35.45463155762271);
        // Swapping the arms mirrors everything but the p-value and df.
        let s = welch(&c, &t).unwrap();
        close(s.statistic, -u.statistic);
        close(s.p_value, u.p_value);
        close(s.ci_low, -u.ci_high);
        close(s.ci_high, -u.ci_low);
    }

    // A clearly significant difference (small p-value, non-integer df ≈ 9.2):
    //   t = [0, 40.0, 55.5, 0, 61.25, 38.0, 72.0, 49.9, 0, 58.0]
    //   c = [0, 0, 3.5, 0, 0, 12.0, 0, 0, 4.25, 0, 0, 0, 7.0, 0]
    //   r = ttest_ind(t, c, equal_var=False); ci = r.confidence_interval(0.95)
    //   print(repr(r.statistic), repr(r.df), repr(r.pvalue), repr(ci.low), repr(ci.high))
    // -> 4.042256962885073 9.223267241754419 0.0027752942135594117 15.73031746448828 55.37825396408314
    #[test]
    fn welch_significant() {
        let t: Moments = [0.0, 40.0, 55.5, 0.0, 61.25, 38.0, 72.0, 49.9, 0.0, 58.0].into_iter().collect();
        let c: Moments = [0.0, 0.0, 3.5, 0.0, 0.0, 12.0, 0.0, 0.0, 4.25, 0.0, 0.0, 0.0, 7.0, 0.0].into_iter().collect();
        let u = welch(&t, &c).unwrap();
        close(u.statistic, 4.042256962885073);
        close(u.df.unwrap(), 9.223267241754419);
        close(u.p_value, 0.0027752942135594117);
        close(u.ci_low, 15.73031746448828);
        close(u.ci_high, 55.37825396408314);
    }

    // Welch is scale-invariant: tiny revenues (whose squared standard errors underflow
    // when squared again) give the same t, df and p, and a CI scaled by the same factor.
    #[test]
    fn welch_scale_invariant() {
        let u = welch(&REV_T.into_iter().collect(), &REV_C.into_iter().collect()).unwrap();
        let tiny = |xs: &[f64]| xs.iter().map(|x| x * 1e-100).collect::<Moments>();
        let s = welch(&tiny(&REV_T), &tiny(&REV_C)).unwrap();
        close(s.statistic, u.statistic);
        close(s.df.unwrap(), u.df.unwrap());
        close(s.p_value, u.p_value);
        close(s.ci_low, u.ci_low * 1e-100);
        close(s.ci_high, u.ci_high * 1e-100);
    }

    #[test]
    fn moments_push_and_merge_match_direct_computation() {
        let all: Vec<f64> = REV_T.iter().chain(&REV_C).copied().collect();
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);

        let mut pushed = Moments::default();
        all.iter().for_each(|&x| pushed.push(x));
        let mut merged: Moments = REV_T.into_iter().collect();
        merged.merge(&REV_C.into_iter().collect());

        for m in [pushed, merged] {
            assert_eq!(m.n, 19);
            close(m.sum(), all.iter().sum());
            close(m.mean(), mean);
            close(m.variance(), var);
        }
        // Members without revenue merged in as zeros, as a report does.
        let mut buyers: Moments = REV_T.iter().copied().filter(|&x| x > 0.0).collect();
        buyers.merge(&Moments::zeros(REV_T.iter().filter(|&&x| x == 0.0).count() as u64));
        let direct: Moments = REV_T.into_iter().collect();
        assert_eq!(buyers.n, direct.n);
        close(buyers.mean(), direct.mean());
        close(buyers.variance(), direct.variance());
        let mut empty = Moments::default();
        empty.merge(&Moments::default());
        assert_eq!((empty.mean(), empty.variance()), (0.0, 0.0));
        let one: Moments = [5.0].into_iter().collect();
        assert_eq!((one.mean(), one.variance()), (5.0, 0.0));
        // Constant values: the Σx² formula must not go negative through rounding.
        let constant: Moments = std::iter::repeat_n(0.1, 1000).collect();
        assert!(constant.variance() >= 0.0 && constant.variance() < 1e-12);
    }

    // Large values with a small spread, where Σx² − Σx·mean cancels to
    // nothing. numpy: x = 1e9 + np.array([4.0, 7.0, 13.0, 16.0]);
    // np.var(x, ddof=1) -> 30.0, np.mean(x) -> 1000000010.0
    #[test]
    fn moments_keep_the_variance_of_large_values() {
        let xs = [4.0, 7.0, 13.0, 16.0].map(|d| 1e9 + d);
        let pushed: Moments = xs.into_iter().collect();
        close(pushed.variance(), 30.0);
        close(pushed.mean(), 1_000_000_010.0);
        let mut merged: Moments = xs[..1].iter().copied().collect();
        merged.merge(&xs[1..].iter().copied().collect());
        close(merged.variance(), 30.0);
        // The textbook formula loses it: shown here so the test says why.
        let (sum, sum_sq) = (xs.iter().sum::<f64>(), xs.iter().map(|x| x * x).sum::<f64>());
        let naive = (sum_sq - sum * sum / 4.0) / 3.0;
        assert!((naive - 30.0).abs() > 1.0, "the naive variance happened to be right: {naive}");
    }

    // scipy 1.17.1: from scipy.stats import chisquare
    //   chisquare([52000, 48000], [50000, 50000])        -> 160.0 1.1314837902433038e-36
    //   chisquare([3310, 3405, 3285], [10000/3] * 3)      -> 2.405 0.3004421668304642
    //   chisquare([9021, 979], [9000, 1000])              -> 0.49 0.48392730444614596
    #[test]
    fn sample_ratio_mismatch_equals_scipy_chisquare() {
        let broken = srm(&[52_000, 48_000], &[0.5, 0.5]).unwrap();
        close(broken.chi2, 160.0);
        close(broken.p_value, 1.1314837902433038e-36);
        assert!(broken.mismatch, "52/48 configured as 50/50 at 100k members is a mismatch");
        let three = srm(&[3310, 3405, 3285], &[1.0, 1.0, 1.0]).unwrap();
        close(three.chi2, 2.405);
        close(three.p_value, 0.3004421668304642);
        assert_eq!((three.df, three.mismatch), (2, false));
        let ninety = srm(&[9021, 979], &[0.9, 0.1]).unwrap();
        close(ninety.chi2, 0.49);
        close(ninety.p_value, 0.48392730444614596);
        close(ninety.expected[0], 9000.0);
        assert!(!ninety.mismatch);
        // Nothing to test: one arm, no members, a zero or non-finite share.
        assert_eq!(srm(&[10], &[1.0]), None);
        assert_eq!(srm(&[0, 0], &[0.5, 0.5]), None);
        assert_eq!(srm(&[10, 5], &[1.0, 0.0]), None);
        assert_eq!(srm(&[10, 5], &[1.0, f64::NAN]), None);
        assert_eq!(srm(&[10, 5], &[1.0]), None);
    }

    // statsmodels 0.15.0: from statsmodels.stats.multitest import multipletests
    //   p = [0.01, 0.04, 0.03, 0.005, 0.20, 0.04]
    //   multipletests(p, method="holm")[1]   -> 0.05 0.12 0.12 0.03 0.2 0.12
    //   multipletests(p, method="fdr_bh")[1] -> 0.03 0.048 0.048 0.03 0.2 0.048
    #[test]
    fn holm_and_benjamini_hochberg_equal_statsmodels() {
        let p = [0.01, 0.04, 0.03, 0.005, 0.20, 0.04];
        for (got, want) in adjust(&p, Correction::Holm).iter().zip([0.05, 0.12, 0.12, 0.03, 0.2, 0.12]) {
            close(*got, want);
        }
        let bh = [0.030000000000000002, 0.048, 0.048, 0.030000000000000002, 0.2, 0.048];
        for (got, want) in adjust(&p, Correction::BenjaminiHochberg).iter().zip(bh) {
            close(*got, want);
        }
        assert_eq!(adjust(&p, Correction::None), p.to_vec());
        assert_eq!(adjust(&[], Correction::Holm), Vec::<f64>::new());
        // Capped at 1.
        assert_eq!(adjust(&[0.6, 0.7], Correction::Holm), vec![1.0, 1.0]);
    }

    // numpy / scipy 1.17.1, the delta method for ȳ/x̄ (Deng et al. 2018):
    //   def dm(y, x):
    //       y, x = np.array(y, float), np.array(x, float); n = len(y)
    //       my, mx = y.mean(), x.mean(); vy, vx = y.var(ddof=1), x.var(ddof=1)
    //       cxy = np.cov(y, x, ddof=1)[0, 1]
    //       return my/mx, (vy/mx**2 - 2*my*cxy/mx**3 + my**2*vx/mx**4)/n
    //   z = (ra - rb)/sqrt(va + vb); p = 2*norm.sf(abs(z)); CI ± norm.ppf(0.975)*se
    // -> 15.794545454545455 20.9 2.513543929148753 24.677485714285723
    //    -0.9790876833396801 0.3275366567896152 -15.325690387524276 5.114781296615188
    #[test]
    fn average_order_value_by_the_delta_method_equals_numpy() {
        let a_y = [12.0, 0.0, 30.5, 7.25, 0.0, 55.0, 18.0, 0.0, 9.99, 41.0];
        let a_x = [1.0, 0.0, 2.0, 1.0, 0.0, 3.0, 1.0, 0.0, 1.0, 2.0];
        let b_y = [0.0, 22.0, 0.0, 0.0, 14.5, 60.0, 0.0, 8.0];
        let b_x = [0.0, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0];
        let moments = |y: &[f64], x: &[f64]| {
            let mut m = RatioMoments::default();
            y.iter().zip(x).for_each(|(&y, &x)| m.push(y, x));
            m
        };
        let (a, b) = (moments(&a_y, &a_x), moments(&b_y, &b_x));
        close(a.ratio().0, 15.794545454545455);
        close(a.ratio().1, 2.513543929148753);
        close(b.ratio().1, 24.677485714285723);
        let u = delta_ratio(&a, &b).unwrap();
        close(u.treatment, 15.794545454545455);
        close(u.control, 20.9);
        close(u.statistic, -0.9790876833396801);
        close(u.p_value, 0.3275366567896152);
        close(u.ci_low, -15.325690387524276);
        close(u.ci_high, 5.114781296615188);
        // Merged halves, and non-buyers merged in as zeros, give the same.
        let mut merged = moments(&a_y[..4], &a_x[..4]);
        merged.merge(&moments(&a_y[4..], &a_x[4..]));
        close(merged.ratio().1, a.ratio().1);
        let mut buyers = moments(&[12.0, 30.5, 7.25, 55.0, 18.0, 9.99, 41.0], &[1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0]);
        buyers.merge(&RatioMoments::zeros(3));
        close(buyers.ratio().0, a.ratio().0);
        close(buyers.ratio().1, a.ratio().1);
        // No orders in an arm: no average.
        let none = moments(&[0.0, 0.0], &[0.0, 0.0]);
        assert_eq!(delta_ratio(&a, &none), Err(StatsError::NoDenominator(Arm::Control)));
        assert_eq!(
            StatsError::NoDenominator(Arm::Control).to_string(),
            "control has no orders, so its average order value is undefined"
        );
    }

    // numpy: np.percentile([0, 0, 1, 5, 9, 100], 50) -> 3.0, (…, 99.9) ->
    // 99.54500000000009; np.percentile([3.5], 99.9) -> 3.5;
    // np.percentile([40, 20, 60, 15] + [0] * 36, 95) -> 20.999999999999943
    #[test]
    fn percentiles_with_zeros_equal_numpy() {
        close(percentile_with_zeros(2, &[1.0, 5.0, 9.0, 100.0], 50.0).unwrap(), 3.0);
        close(percentile_with_zeros(2, &[1.0, 5.0, 9.0, 100.0], 99.9).unwrap(), 99.54500000000009);
        close(percentile_with_zeros(0, &[3.5], 99.9).unwrap(), 3.5);
        close(percentile_with_zeros(36, &[15.0, 20.0, 40.0, 60.0], 95.0).unwrap(), 20.999999999999943);
        assert_eq!(percentile_with_zeros(0, &[], 50.0), None);
        assert_eq!(percentile_with_zeros(3, &[], 99.0), Some(0.0));
    }

    #[test]
    fn two_proportion_degenerate() {
        for (b, n_t, n_c) in [(0, 500, 700), (1, 1, 1)] {
            let (bt, bc) = (b * n_t, b * n_c);
            let u = two_proportion(bt, n_t, bc, n_c).unwrap();
            assert_eq!((u.diff, u.p_value, u.statistic), (0.0, 1.0, 0.0));
            assert_eq!((u.ci_low, u.ci_high), (0.0, 0.0));
        }
        assert_eq!(two_proportion(0, 10, 0, 10).unwrap().relative, None);
        // 100 % vs 0 %: pooled SE > 0 so z is finite; the Wald CI collapses.
        let u = two_proportion(10, 10, 0, 10).unwrap();
        assert!(u.statistic.is_finite() && u.p_value < 0.001);
        assert_eq!((u.ci_low, u.ci_high, u.relative), (1.0, 1.0, None));
    }

    #[test]
    fn welch_degenerate() {
        let zeros: Moments = [0.0; 5].into_iter().collect();
        let u = welch(&zeros, &zeros).unwrap();
        assert_eq!((u.p_value, u.statistic, u.ci_low, u.ci_high, u.df), (1.0, 0.0, 0.0, 0.0, None));

        let twos: Moments = [2.0; 3].into_iter().collect();
        let u = welch(&zeros, &twos).unwrap();
        assert_eq!((u.p_value, u.statistic, u.df), (0.0, f64::NEG_INFINITY, None));
        assert_eq!((u.diff, u.ci_low, u.ci_high, u.relative), (-2.0, -2.0, -2.0, Some(-1.0)));

        // Only one arm constant: df = n − 1 of the other arm, everything finite.
        let t: Moments = REV_T.into_iter().collect();
        let u = welch(&t, &zeros).unwrap();
        close(u.df.unwrap(), 10.0);
        assert!(u.p_value.is_finite() && u.ci_low.is_finite() && u.relative.is_none());
    }

    #[test]
    fn errors() {
        use StatsError::*;
        assert_eq!(two_proportion(0, 0, 1, 10), Err(NoMembers(Arm::Treatment)));
        assert_eq!(two_proportion(1, 10, 0, 0), Err(NoMembers(Arm::Control)));
        assert_eq!(two_proportion(1, 10, 11, 10), Err(BuyersExceedMembers { arm: Arm::Control, buyers: 11, n: 10 }));
        let two: Moments = [1.0, 2.0].into_iter().collect();
        let one: Moments = [1.0].into_iter().collect();
        assert_eq!(welch(&Moments::default(), &two), Err(NoMembers(Arm::Treatment)));
        assert_eq!(welch(&two, &one), Err(TooFewMembers { arm: Arm::Control, n: 1 }));
        let inf: Moments = [1.0, f64::INFINITY].into_iter().collect();
        assert_eq!(welch(&inf, &two), Err(NonFinite(Arm::Treatment)));

        assert_eq!(NoMembers(Arm::Control).to_string(), "control has no members");
        assert_eq!(
            TooFewMembers { arm: Arm::Treatment, n: 1 }.to_string(),
            "treatment has 1 member(s); Welch's t-test needs at least 2"
        );
        assert_eq!(
            BuyersExceedMembers { arm: Arm::Treatment, buyers: 3, n: 2 }.to_string(),
            "treatment has more buyers (3) than members (2)"
        );
        assert_eq!(NonFinite(Arm::Control).to_string(), "control has a non-finite mean or variance");
    }
}
