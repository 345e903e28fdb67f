//! When people shop: the order window and its weekly, seasonal and
//! time-of-day rhythms.
//!
//! Real retail demand is not uniform in time, and tags such as "weekend
//! shopper" or seasonal campaigns only make sense if the data shows it:
//! weekends are busier for most members (and dominate for families, while
//! passers-by who try the brand once come on workdays), November
//! (Singles' Day, 11-11) and December peak, 6-18 is a mid-year sale, and July
//! and August dip. Days are drawn exactly from cumulative tables over the
//! window (a binary search, no rejection loop), so the cost per order is
//! constant.

use chrono::{Datelike, NaiveDate, Weekday};

use crate::rng::{Rng, cumulative};

/// Day-of-week weights, Monday first, for most members.
const DOW_USUAL: [f64; 7] = [0.90, 0.85, 0.90, 0.95, 1.10, 1.50, 1.45];
/// Day-of-week weights for families, who shop when the children are free.
const DOW_FAMILY: [f64; 7] = [0.10, 0.10, 0.10, 0.10, 0.25, 1.50, 1.45];
/// Day-of-week weights for commuters and passers-by, who drop in on workdays.
const DOW_WORKDAY: [f64; 7] = [1.00, 1.00, 1.00, 1.00, 1.00, 0.08, 0.08];
/// Month weights, January first: summer dip, November/December peak.
const MONTH: [f64; 12] = [1.00, 0.90, 0.90, 0.90, 1.00, 1.10, 0.80, 0.80, 0.95, 1.05, 1.50, 1.35];
/// Sale days (month, day, multiplier).
const SALE_DAYS: [(u32, u32, f64); 3] = [(11, 11, 2.5), (6, 18, 2.0), (12, 12, 1.5)];

/// Store opening hours 10:00–21:59, with lunch and after-work peaks.
const HOURS_STORE: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.60, 0.80, 1.10, 1.10, 0.90, 0.85, 0.90, 1.00, 1.20, 1.30, 1.20,
    0.80, 0.0, 0.0,
];
/// Online ordering around the clock, peaking in the evening.
const HOURS_ONLINE: [f64; 24] = [
    0.35, 0.20, 0.10, 0.06, 0.05, 0.06, 0.15, 0.35, 0.55, 0.70, 0.80, 0.85, 1.00, 0.95, 0.85, 0.85, 0.85, 0.90, 0.95,
    1.10, 1.35, 1.45, 1.20, 0.80,
];

/// Which day-of-week rhythm a member follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rhythm {
    /// Weekend somewhat busier than weekdays (~39 % of orders on Sat/Sun).
    Usual = 0,
    /// Mostly Saturday and Sunday (~82 %).
    Family = 1,
    /// Mostly Monday to Friday (~3 % on weekends).
    Workday = 2,
}

/// The order window `[start, start + days)` and the sampling tables over it.
#[derive(Debug)]
pub(crate) struct Calendar {
    /// Days since 1970-01-01 of the first day of the window.
    pub(crate) start_day: i64,
    /// Length of the window in days.
    pub(crate) days: i64,
    /// Per rhythm: cumulative day weights, `days + 1` entries starting at 0.
    day_cum: [Vec<f64>; 3],
    hours_store: Vec<f64>,
    hours_online: Vec<f64>,
}

impl Calendar {
    /// The window of `days` days ending (exclusive) at `end`.
    pub(crate) fn new(end: NaiveDate, days: u32) -> Self {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        let end_day = (end - epoch).num_days();
        let start_day = end_day - i64::from(days);
        let mut cum = [vec![0.0], vec![0.0], vec![0.0]];
        for d in 0..i64::from(days) {
            let date = epoch + chrono::Duration::days(start_day + d);
            let dow = weekday_index(date.weekday());
            let mut season = MONTH[date.month0() as usize];
            for (m, day, mult) in SALE_DAYS {
                if date.month() == m && date.day() == day {
                    season *= mult;
                }
            }
            for (rhythm, dow_weights) in [DOW_USUAL, DOW_FAMILY, DOW_WORKDAY].iter().enumerate() {
                let last = *cum[rhythm].last().expect("starts non-empty");
                cum[rhythm].push(last + season * dow_weights[dow]);
            }
        }
        Self {
            start_day,
            days: i64::from(days),
            day_cum: cum,
            hours_store: cumulative(&HOURS_STORE),
            hours_online: cumulative(&HOURS_ONLINE),
        }
    }

    /// A day in `[lo, hi)` but outside `[gap_lo, gap_hi)` (window-relative,
    /// `lo <= gap_lo <= gap_hi <= hi`, `hi` within the window, and the allowed
    /// range non-empty), drawn with the rhythm's weights.
    pub(crate) fn sample_day(&self, rng: &mut Rng, rhythm: Rhythm, lo: i64, hi: i64, gap: (i64, i64)) -> i64 {
        let cum = &self.day_cum[rhythm as usize];
        let at = |d: i64| cum[d as usize];
        let first = at(gap.0) - at(lo);
        let total = first + at(hi) - at(gap.1);
        let x = rng.f64() * total;
        let target = if x < first { at(lo) + x } else { at(gap.1) + (x - first) };
        // The day d with cum[d] <= target < cum[d + 1].
        let d = cum.partition_point(|&c| c <= target) as i64 - 1;
        // Guard against rounding at the edges of the allowed ranges.
        let d = d.clamp(lo, hi - 1);
        if d >= gap.0 && d < gap.1 { if gap.0 > lo { gap.0 - 1 } else { gap.1 } } else { d }
    }

    /// Seconds after midnight for an order in a store (`true`) or online.
    pub(crate) fn sample_second_of_day(&self, rng: &mut Rng, in_store: bool) -> i64 {
        let table = if in_store { &self.hours_store } else { &self.hours_online };
        let hour = rng.pick_cumulative(table) as i64;
        hour * 3600 + rng.below(3600) as i64
    }
}

fn weekday_index(w: Weekday) -> usize {
    w.num_days_from_monday() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekend_share(cal: &Calendar, rhythm: Rhythm) -> f64 {
        let mut rng = Rng::from_key(5);
        let n = 50_000;
        let weekend = (0..n)
            .filter(|_| {
                let d = cal.sample_day(&mut rng, rhythm, 0, cal.days, (0, 0));
                let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(cal.start_day + d);
                date.weekday().num_days_from_monday() >= 5
            })
            .count();
        weekend as f64 / n as f64
    }

    #[test]
    fn window_ends_the_day_before_end_date() {
        let end = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let cal = Calendar::new(end, 730);
        assert_eq!(cal.days, 730);
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        assert_eq!(epoch + chrono::Duration::days(cal.start_day + 730), end);
    }

    #[test]
    fn weekly_rhythms_differ() {
        let cal = Calendar::new(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), 730);
        let usual = weekend_share(&cal, Rhythm::Usual);
        let family = weekend_share(&cal, Rhythm::Family);
        let workday = weekend_share(&cal, Rhythm::Workday);
        assert!((0.34..0.44).contains(&usual), "{usual}");
        assert!(family > 0.75, "{family}");
        assert!(workday < 0.06, "{workday}");
    }

    #[test]
    fn november_and_december_outsell_july_and_august() {
        let cal = Calendar::new(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), 730);
        let mut rng = Rng::from_key(3);
        let mut per_month = [0usize; 12];
        for _ in 0..100_000 {
            let d = cal.sample_day(&mut rng, Rhythm::Usual, 0, cal.days, (0, 0));
            let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(cal.start_day + d);
            per_month[date.month0() as usize] += 1;
        }
        let (summer, winter) = (per_month[6] + per_month[7], per_month[10] + per_month[11]);
        assert!(winter as f64 > 1.5 * summer as f64, "{per_month:?}");
        // 11-11 is the busiest day of the year.
        let mut per_day = vec![0usize; cal.days as usize];
        for _ in 0..200_000 {
            per_day[cal.sample_day(&mut rng, Rhythm::Usual, 0, cal.days, (0, 0)) as usize] += 1;
        }
        let busiest = (0..cal.days).max_by_key(|&d| per_day[d as usize]).unwrap();
        let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(cal.start_day + busiest);
        assert_eq!((date.month(), date.day()), (11, 11));
    }

    #[test]
    fn sampled_days_respect_range_and_gap() {
        let cal = Calendar::new(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), 730);
        let mut rng = Rng::from_key(9);
        for _ in 0..20_000 {
            let d = cal.sample_day(&mut rng, Rhythm::Usual, 100, 400, (200, 300));
            assert!((100..200).contains(&d) || (300..400).contains(&d), "{d}");
        }
        for _ in 0..1_000 {
            assert_eq!(cal.sample_day(&mut rng, Rhythm::Family, 5, 6, (5, 5)), 5);
        }
    }

    #[test]
    fn store_orders_are_within_opening_hours() {
        let cal = Calendar::new(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), 365);
        let mut rng = Rng::from_key(1);
        for _ in 0..10_000 {
            let s = cal.sample_second_of_day(&mut rng, true);
            assert!((10 * 3600..22 * 3600).contains(&s), "{s}");
            let o = cal.sample_second_of_day(&mut rng, false);
            assert!((0..86_400).contains(&o));
        }
    }
}
