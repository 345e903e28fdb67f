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
//! Per-member metrics are summarised as [`Moments`] (n, Σx, Σx²), which can be
//! accumulated in one pass and merged across partitions.
//!
//! Degenerate inputs never yield NaN silently: arms without enough members are
//! a [`StatsError`], and a zero standard error is handled explicitly as
//! described on [`two_proportion`] and [`welch`].

use std::fmt;

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

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
    /// The sum or sum of squares is NaN or infinite.
    #[error("{0} has a non-finite sum or sum of squares")]
    NonFinite(Arm),
}

/// Summary of one arm for a per-member metric: n members, sum and sum of squares of the metric (zeros included).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Moments {
    /// Number of members.
    pub n: u64,
    /// Σx over members.
    pub sum: f64,
    /// Σx² over members.
    pub sum_sq: f64,
}

impl Moments {
    /// Adds one member's value (push `0.0` for members without revenue).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// Mean of the metric; `0.0` when there are no members.
    pub fn mean(&self) -> f64 {
        if self.n == 0 { 0.0 } else { self.sum / self.n as f64 }
    }

    /// Sample variance (denominator n − 1); `0.0` when n < 2.
    ///
    /// Computed as (Σx² − Σx·mean)/(n − 1) and clamped at 0, since rounding can
    /// make it slightly negative when all values are (nearly) equal.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        ((self.sum_sq - self.sum * self.mean()) / (self.n - 1) as f64).max(0.0)
    }

    /// Adds another summary into this one, as if its values had been pushed here.
    pub fn merge(&mut self, other: &Moments) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
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
/// an arm has fewer than 2 members; [`StatsError::NonFinite`] if an arm's sum
/// or sum of squares is NaN or infinite.
pub fn welch(t: &Moments, c: &Moments) -> Result<Uplift, StatsError> {
    for (arm, m) in [(Arm::Treatment, t), (Arm::Control, c)] {
        match m.n {
            0 => return Err(StatsError::NoMembers(arm)),
            1 => return Err(StatsError::TooFewMembers { arm, n: 1 }),
            _ if !(m.sum.is_finite() && m.sum_sq.is_finite()) => return Err(StatsError::NonFinite(arm)),
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
            close(m.sum, all.iter().sum());
            close(m.sum_sq, all.iter().map(|x| x * x).sum());
            close(m.mean(), mean);
            close(m.variance(), var);
        }
        let mut empty = Moments::default();
        empty.merge(&Moments::default());
        assert_eq!((empty.mean(), empty.variance()), (0.0, 0.0));
        let one: Moments = [5.0].into_iter().collect();
        assert_eq!((one.mean(), one.variance()), (5.0, 0.0));
        // Constant values: the Σx² formula must not go negative through rounding.
        let constant: Moments = std::iter::repeat_n(0.1, 1000).collect();
        assert!(constant.variance() >= 0.0 && constant.variance() < 1e-12);
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
        assert_eq!(NonFinite(Arm::Control).to_string(), "control has a non-finite sum or sum of squares");
    }
}
