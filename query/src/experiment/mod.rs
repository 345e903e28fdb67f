//! Experiments: the registry (re-exported from its own module, which
//! `export` records into) and the uplift report.
//!
//! Every cohort export is recorded in the `experiments` table, one row per
//! arm holding that arm's members as a portable roaring bitmap.
//!
//! The report (module `analysis`) reads the order lines placed in `[launched_at,
//! launched_at + window)` by cohort members, and for CUPED the lines of a
//! lookback before launch, and compares every arm with the control arm;
//! [`plan`] sizes an experiment before launch from the audience's history,
//! and [`holdout`] measures the global holdout against everyone else.

use crate::{Error, Result};

mod analysis;
pub mod chart;
pub mod holdout;
pub mod plan;
pub use crate::registry::{Arm, Experiment, from_micros_utc, get, list, record, running_members};
use crate::registry::{from_micros, micros};
pub use analysis::{
    Analysis, ArmResult, Comparison, CupedPeriod, DEFAULT_CUPED_DAYS, Metric, Report, ReportOptions, RevenueCap,
    StratumSrm, analyse, p_text, report,
};

/// The longest window [`parse_window`] accepts, in days (100 years): a
/// longer one is a typo, and past about 290,000 years it would not fit a
/// duration at all.
pub const MAX_WINDOW_DAYS: i64 = 36_525;

/// Parses a window such as `14d`, `2w`, `36h` (a [`taglake_base::units`]
/// duration of whole hours, above zero), of at most [`MAX_WINDOW_DAYS`].
pub fn parse_window(text: &str) -> Result<chrono::Duration> {
    use taglake_base::units::{UnitError, duration};
    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
    let too_long =
        || Error::Invalid(format!("`{text}` is too long a window: at most {MAX_WINDOW_DAYS} days (100 years)"));
    let d = match duration(text) {
        Ok(d) => d,
        Err(UnitError::TooLarge) => return Err(too_long()),
        Err(UnitError::Malformed) => return Err(bad_window(text)),
    };
    // A window is a whole number of its unit (`1.5d` is written `36h`).
    if d.is_zero() || d.as_nanos() % HOUR.as_nanos() != 0 || text.contains('.') {
        return Err(bad_window(text));
    }
    if d > HOUR * 24 * MAX_WINDOW_DAYS as u32 {
        return Err(too_long());
    }
    chrono::Duration::from_std(d).map_err(|_| too_long())
}

/// `at + window`, or an error naming what overflowed (dates end in the year 262,143).
pub fn window_end(
    at: chrono::DateTime<chrono::Utc>,
    window: chrono::Duration,
) -> Result<chrono::DateTime<chrono::Utc>> {
    at.checked_add_signed(window)
        .ok_or_else(|| Error::Invalid(format!("{at} plus a window of {window} is past the last representable date")))
}

/// An instant as people write one: a date (midnight UTC, `2026-03-01`) or
/// an RFC 3339 time (`2026-03-01T09:00:00Z`).
pub fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let text = text.trim();
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&chrono::Utc)).map_err(|_| {
        Error::Invalid(format!("`{text}`: write a date (2026-03-01) or an RFC 3339 time (2026-03-01T09:00:00Z)"))
    })
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
