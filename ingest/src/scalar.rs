//! One value at a time: the parsers of numbers, booleans, timestamps and
//! dates from text, the time zones and formats they are read in, and the
//! range checks of a converted value. Kept apart from the column conversion
//! (`convert`) because they are the part with rules of their own (the
//! accepted shapes, the exact error texts) and are used on their own by the
//! mapping check and the fuzz drivers; below both, so the mapping and the
//! conversion do not depend on each other in a circle.

use chrono::FixedOffset;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use taglake_storage::ColumnType;

/// Accepted range of timestamps (order and registration times).
const MIN_TS: (i32, u32, u32) = (1990, 1, 1);
/// Accepted range of dates (birthdays).
const MIN_DATE: (i32, u32, u32) = (1900, 1, 1);
/// Exclusive upper bound of both.
const MAX_YEAR: i32 = 2100;

fn days_from_ce(y: i32, m: u32, d: u32) -> i32 {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid constant").num_days_from_ce()
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A time zone for naive timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// A fixed offset from UTC (`+08:00`, `UTC`).
    Fixed(FixedOffset),
    /// A named IANA zone with daylight saving (`Europe/Paris`).
    Named(chrono_tz::Tz),
}

/// How a timestamp or date column is written in the source.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeFormat {
    /// RFC 3339 / ISO 8601 and common variants, detected per value.
    Auto,
    /// A chrono `strftime` pattern.
    Pattern(String),
    /// Seconds since 1970-01-01 UTC.
    UnixSeconds,
    /// Milliseconds since 1970-01-01 UTC.
    UnixMillis,
    /// Microseconds since 1970-01-01 UTC.
    UnixMicros,
    /// A day number counted from `epoch` (day 0), optionally followed by a
    /// time of day as `HHMM` or `HH:MM[:SS]`.
    DaysSinceEpoch(NaiveDate),
    /// Spreadsheet serial date (days since 1899-12-30, fraction = time).
    Excel,
}

/// Parses an integer, accepting `12`, `+12`, `12.0`; with a scale, the
/// scaled value must still be whole.
pub fn parse_int(v: &str, scale: Option<f64>) -> std::result::Result<i64, String> {
    let parsed = match v.parse::<i64>() {
        Ok(x) => Some(x),
        Err(_) => match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            Ok(f) if f.is_finite() && f.fract() == 0.0 => {
                return Err(format!("{v} is out of range for a 64-bit integer"));
            }
            _ => None,
        },
    };
    let Some(x) = parsed else {
        if !v.is_empty() && v.trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{v} is out of range for a 64-bit integer"));
        }
        return Err(format!("{v:?} is not an integer"));
    };
    match scale {
        None => Ok(x),
        Some(s) => {
            let y = x as f64 * s;
            if y.fract() != 0.0 || !y.is_finite() {
                Err(format!("{v} × {s} = {y} is not a whole number"))
            } else {
                Ok(y as i64)
            }
        }
    }
}

/// Parses a number; NaN and infinities are rejected.
pub fn parse_float(v: &str, scale: Option<f64>) -> std::result::Result<f64, String> {
    let x: f64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    let x = x * scale.unwrap_or(1.0);
    if !x.is_finite() {
        return Err(format!("{v} is not a finite number"));
    }
    Ok(x)
}

/// Parses a boolean: true/false, t/f, yes/no, y/n, and numbers (0 is false).
pub fn parse_bool(v: &str) -> std::result::Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" => Ok(true),
        "false" | "f" | "no" | "n" => Ok(false),
        other => match other.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x != 0.0),
            _ => Err(format!("{v:?} is not a boolean (expected true/false, yes/no or a number)")),
        },
    }
}

/// A timestamp (microseconds) or date (days) `default` of a mapping, read
/// and range-checked as a value of the file would be. The mapping check
/// and the conversion both use it.
pub(crate) fn parsed_default(s: &str, ty: ColumnType, zone: Zone) -> std::result::Result<i64, String> {
    match ty {
        ColumnType::Date => parse_date(s, &TimeFormat::Auto).and_then(check_date).map(i64::from),
        _ => parse_timestamp(s, &TimeFormat::Auto, zone).and_then(check_timestamp),
    }
}

pub(crate) fn check_timestamp(us: i64) -> std::result::Result<i64, String> {
    let lo = (days_from_ce(MIN_TS.0, MIN_TS.1, MIN_TS.2) - UNIX_EPOCH_DAYS_FROM_CE) as i64 * 86_400_000_000;
    let hi = (days_from_ce(MAX_YEAR, 1, 1) - UNIX_EPOCH_DAYS_FROM_CE) as i64 * 86_400_000_000;
    if us < lo || us >= hi {
        let shown = DateTime::from_timestamp_micros(us)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| us.to_string());
        return Err(format!("timestamp {shown} is outside the accepted range 1990-01-01 to 2099-12-31"));
    }
    Ok(us)
}

pub(crate) fn check_date(days: i32) -> std::result::Result<i32, String> {
    let lo = days_from_ce(MIN_DATE.0, MIN_DATE.1, MIN_DATE.2) - UNIX_EPOCH_DAYS_FROM_CE;
    let hi = days_from_ce(MAX_YEAR, 1, 1) - UNIX_EPOCH_DAYS_FROM_CE;
    if days < lo || days >= hi {
        let shown = NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE)
            .map(|d| d.to_string())
            .unwrap_or_else(|| days.to_string());
        return Err(format!("date {shown} is outside the accepted range 1900-01-01 to 2099-12-31"));
    }
    Ok(days)
}

fn local_to_utc_micros(dt: NaiveDateTime, zone: Zone) -> std::result::Result<i64, String> {
    let utc = match zone {
        Zone::Fixed(off) => off.from_local_datetime(&dt).single().map(|d| d.timestamp_micros()),
        // Ambiguous local times (the repeated hour when clocks go back) take
        // the earlier instant; skipped ones (clocks forward) are invalid.
        Zone::Named(tz) => tz.from_local_datetime(&dt).earliest().map(|d| d.timestamp_micros()),
    };
    utc.ok_or_else(|| format!("local time {dt} does not exist in the time zone"))
}

/// Fast parser for the ISO 8601 shapes nearly every export uses:
/// `YYYY-MM-DD[( |T)HH:MM[:SS[.f…]]][Z|±HH[:]MM]`. Returns the naive
/// date-time and the offset in seconds when one was given.
fn parse_iso(v: &str) -> Option<(NaiveDateTime, Option<i32>)> {
    let b = v.as_bytes();
    let num = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0u32, |a, d| a * 10 + (d - b'0') as u32))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(&b[0..4])? as i32, num(&b[5..7])?, num(&b[8..10])?)?;
    if b.len() == 10 {
        return Some((date.and_time(NaiveTime::MIN), None));
    }
    if b[10] != b'T' && b[10] != b' ' || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(&b[11..13])?, num(&b[14..16])?);
    let mut pos = 16;
    let mut sec = 0;
    let mut micros = 0u32;
    if b.len() >= 19 && b[16] == b':' {
        sec = num(&b[17..19])?;
        pos = 19;
        if pos < b.len() && b[pos] == b'.' {
            let start = pos + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let digits = &b[start..end.min(start + 6)];
            micros = num(digits)? * 10u32.pow(6 - digits.len() as u32);
            pos = end;
        }
    }
    let time = NaiveTime::from_hms_micro_opt(h, mi, sec, micros)?;
    let rest = &b[pos..];
    let offset = match rest {
        [] => None,
        [b'Z'] | [b'z'] => Some(0),
        [s @ (b'+' | b'-'), ..] => {
            let digits: Vec<u8> = rest[1..].iter().copied().filter(|c| *c != b':').collect();
            if digits.len() != 4 && digits.len() != 2 {
                return None;
            }
            let hh = num(&digits[0..2])? as i32;
            let mm = if digits.len() == 4 { num(&digits[2..4])? as i32 } else { 0 };
            Some(if *s == b'-' { -(hh * 3600 + mm * 60) } else { hh * 3600 + mm * 60 })
        }
        _ => return None,
    };
    Some((date.and_time(time), offset))
}

/// Parses a timestamp into microseconds since the Unix epoch (UTC).
pub fn parse_timestamp(v: &str, format: &TimeFormat, zone: Zone) -> std::result::Result<i64, String> {
    let from_naive = |dt: NaiveDateTime| local_to_utc_micros(dt, zone);
    match format {
        TimeFormat::Auto => {
            if let Some((dt, off)) = parse_iso(v) {
                return match off {
                    Some(o) => Ok(dt.and_utc().timestamp_micros() - o as i64 * 1_000_000),
                    None => from_naive(dt),
                };
            }
            if let Ok(d) = DateTime::parse_from_rfc2822(v) {
                return Ok(d.timestamp_micros());
            }
            for f in ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y%m%d %H%M%S", "%Y%m%dT%H%M%S"] {
                if let Ok(dt) = NaiveDateTime::parse_from_str(v, f) {
                    return from_naive(dt);
                }
            }
            for f in ["%Y/%m/%d", "%Y%m%d"] {
                if let Ok(d) = NaiveDate::parse_from_str(v, f) {
                    return from_naive(d.and_time(NaiveTime::MIN));
                }
            }
            Err(format!(
                "{v:?} is not a timestamp (expected e.g. 2026-03-01T10:15:00Z or 2026-03-01 10:15:00; set a `format` in the mapping for other layouts)"
            ))
        }
        TimeFormat::Pattern(p) => {
            if let Ok(d) = DateTime::parse_from_str(v, p) {
                return Ok(d.timestamp_micros());
            }
            if let Ok(dt) = NaiveDateTime::parse_from_str(v, p) {
                return from_naive(dt);
            }
            if let Ok(d) = NaiveDate::parse_from_str(v, p) {
                return from_naive(d.and_time(NaiveTime::MIN));
            }
            Err(format!("{v:?} does not match the format {p:?}"))
        }
        TimeFormat::UnixSeconds | TimeFormat::UnixMillis | TimeFormat::UnixMicros => {
            let per = match format {
                TimeFormat::UnixSeconds => 1_000_000.0,
                TimeFormat::UnixMillis => 1_000.0,
                _ => 1.0,
            };
            let x: f64 = v.parse().map_err(|_| format!("{v:?} is not a Unix time"))?;
            let us = x * per;
            if !us.is_finite() || us.abs() > 9.0e18 {
                return Err(format!("{v} is out of range for a Unix time"));
            }
            Ok(us.round() as i64)
        }
        TimeFormat::DaysSinceEpoch(epoch) => {
            let mut parts = v.split_whitespace();
            let day: i64 =
                parts.next().and_then(|d| d.parse().ok()).ok_or_else(|| format!("{v:?} is not a day number"))?;
            let date = epoch
                .checked_add_signed(
                    chrono::Duration::try_days(day).ok_or_else(|| format!("day {day} is out of range"))?,
                )
                .ok_or_else(|| format!("day {day} is out of range"))?;
            let time = match parts.next() {
                None => NaiveTime::MIN,
                Some(t) => parse_time_of_day(t)
                    .ok_or_else(|| format!("{t:?} in {v:?} is not a time of day (expected HHMM or HH:MM[:SS])"))?,
            };
            from_naive(date.and_time(time))
        }
        TimeFormat::Excel => {
            let x: f64 = v.parse().map_err(|_| format!("{v:?} is not a spreadsheet date number"))?;
            if !(x.is_finite() && (0.0..2_958_466.0).contains(&x)) {
                return Err(format!("{v} is out of range for a spreadsheet date"));
            }
            let base = NaiveDate::from_ymd_opt(1899, 12, 30).expect("valid").and_time(NaiveTime::MIN);
            let dt = base + chrono::Duration::microseconds((x * 86_400_000_000.0).round() as i64);
            from_naive(dt)
        }
    }
}

fn parse_time_of_day(t: &str) -> Option<NaiveTime> {
    if t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = t.parse().ok()?;
        return NaiveTime::from_hms_opt(n / 100, n % 100, 0);
    }
    NaiveTime::parse_from_str(t, "%H:%M:%S").or_else(|_| NaiveTime::parse_from_str(t, "%H:%M")).ok()
}

/// Parses a date into days since the Unix epoch.
pub fn parse_date(v: &str, format: &TimeFormat) -> std::result::Result<i32, String> {
    let days = |d: NaiveDate| d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE;
    match format {
        TimeFormat::Auto => {
            if let Some((dt, _)) = parse_iso(v) {
                return Ok(days(dt.date()));
            }
            for f in ["%Y/%m/%d", "%Y%m%d", "%Y.%m.%d"] {
                if let Ok(d) = NaiveDate::parse_from_str(v, f) {
                    return Ok(days(d));
                }
            }
            Err(format!("{v:?} is not a date (expected YYYY-MM-DD; set a `format` in the mapping for other layouts)"))
        }
        TimeFormat::Pattern(p) => NaiveDate::parse_from_str(v, p)
            .or_else(|_| NaiveDateTime::parse_from_str(v, p).map(|dt| dt.date()))
            .map(days)
            .map_err(|_| format!("{v:?} does not match the format {p:?}")),
        _ => {
            let utc = Zone::Fixed(chrono::FixedOffset::east_opt(0).expect("zero"));
            let us = parse_timestamp(v, format, utc)?;
            Ok(us.div_euclid(86_400_000_000) as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use proptest::prelude::*;

    use super::*;

    fn utc() -> Zone {
        Zone::Fixed(chrono::FixedOffset::east_opt(0).unwrap())
    }

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn timestamps_in_common_shapes() {
        let a = TimeFormat::Auto;
        assert_eq!(parse_timestamp("2026-03-01T10:15:00Z", &a, utc()), Ok(ts("2026-03-01T10:15:00Z")));
        assert_eq!(parse_timestamp("2026-03-01 10:15:00", &a, utc()), Ok(ts("2026-03-01T10:15:00Z")));
        assert_eq!(
            parse_timestamp("2026-03-01T10:15:00.123456+08:00", &a, utc()),
            Ok(ts("2026-03-01T02:15:00.123456Z"))
        );
        assert_eq!(parse_timestamp("2026-03-01T10:15:00.5-0130", &a, utc()), Ok(ts("2026-03-01T11:45:00.5Z")));
        assert_eq!(parse_timestamp("2026-03-01", &a, utc()), Ok(ts("2026-03-01T00:00:00Z")));
        assert_eq!(parse_timestamp("2026/03/01 10:15", &a, utc()), Ok(ts("2026-03-01T10:15:00Z")));
        let sh = Zone::Named("Asia/Shanghai".parse().unwrap());
        assert_eq!(parse_timestamp("2026-03-01 10:15:00", &a, sh), Ok(ts("2026-03-01T02:15:00Z")));
        assert_eq!(
            parse_timestamp("01/03/2026 10:15", &TimeFormat::Pattern("%d/%m/%Y %H:%M".into()), utc()),
            Ok(ts("2026-03-01T10:15:00Z"))
        );
        assert_eq!(parse_timestamp("1772360100", &TimeFormat::UnixSeconds, utc()), Ok(ts("2026-03-01T10:15:00Z")));
        let day = TimeFormat::DaysSinceEpoch(NaiveDate::from_ymd_opt(2023, 1, 1).unwrap());
        assert_eq!(parse_timestamp("31 1631", &day, utc()), Ok(ts("2023-02-01T16:31:00Z")));
        assert_eq!(parse_timestamp("0", &day, utc()), Ok(ts("2023-01-01T00:00:00Z")));
        assert_eq!(parse_timestamp("45000.5", &TimeFormat::Excel, utc()), Ok(ts("2023-03-15T12:00:00Z")));
    }

    #[test]
    fn timestamp_errors_are_exact() {
        let a = TimeFormat::Auto;
        assert_eq!(
            parse_timestamp("yesterday", &a, utc()),
            Err("\"yesterday\" is not a timestamp (expected e.g. 2026-03-01T10:15:00Z or 2026-03-01 10:15:00; set a `format` in the mapping for other layouts)".into())
        );
        assert_eq!(
            parse_timestamp("2026-02-30 10:00:00", &a, utc()).unwrap_err(),
            "\"2026-02-30 10:00:00\" is not a timestamp (expected e.g. 2026-03-01T10:15:00Z or 2026-03-01 10:15:00; set a `format` in the mapping for other layouts)"
        );
        assert_eq!(
            check_timestamp(ts("1969-12-31T00:00:00Z")),
            Err("timestamp 1969-12-31T00:00:00Z is outside the accepted range 1990-01-01 to 2099-12-31".into())
        );
        assert_eq!(
            check_timestamp(ts("2100-01-01T00:00:00Z")).unwrap_err(),
            "timestamp 2100-01-01T00:00:00Z is outside the accepted range 1990-01-01 to 2099-12-31"
        );
        assert_eq!(
            check_date(parse_date("1850-05-01", &TimeFormat::Auto).unwrap()),
            Err("date 1850-05-01 is outside the accepted range 1900-01-01 to 2099-12-31".into())
        );
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(parse_int("12", None), Ok(12));
        assert_eq!(parse_int("+12", None), Ok(12));
        assert_eq!(parse_int("12.0", None), Ok(12));
        assert_eq!(parse_int("12.5", None), Err("\"12.5\" is not an integer".into()));
        assert_eq!(parse_int("abc", None), Err("\"abc\" is not an integer".into()));
        assert_eq!(
            parse_int("99999999999999999999", None),
            Err("99999999999999999999 is out of range for a 64-bit integer".into())
        );
        assert_eq!(parse_int("250", Some(0.01)), Err("250 × 0.01 = 2.5 is not a whole number".into()));
        assert_eq!(parse_float("1.5", Some(-1.0)), Ok(-1.5));
        assert_eq!(parse_float("NaN", None), Err("NaN is not a finite number".into()));
        assert_eq!(parse_float("inf", None), Err("inf is not a finite number".into()));
        assert_eq!(parse_float("1e400", None), Err("1e400 is not a finite number".into()));
        assert_eq!(parse_float("12,50", None), Err("\"12,50\" is not a number".into()));
        assert_eq!(parse_bool("Yes"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert_eq!(parse_bool("-0.55"), Ok(true));
        assert_eq!(
            parse_bool("maybe"),
            Err("\"maybe\" is not a boolean (expected true/false, yes/no or a number)".into())
        );
    }

    proptest! {
        /// The hand-written ISO parser agrees with chrono on every instant it prints.
        #[test]
        fn iso_fast_path_matches_chrono(secs in 631_152_000i64..4_102_444_800i64, micros in 0u32..1_000_000, off_min in -720i32..840) {
            let off = chrono::FixedOffset::east_opt(off_min * 60).unwrap();
            let dt = DateTime::from_timestamp(secs, micros * 1000).unwrap().with_timezone(&off);
            for text in [dt.to_rfc3339(), dt.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string(), dt.format("%Y-%m-%dT%H:%M:%S%.f%z").to_string()] {
                prop_assert_eq!(parse_timestamp(&text, &TimeFormat::Auto, utc()), Ok(dt.timestamp_micros()), "{}", text);
            }
        }

        /// Any text either parses to an integer that prints back the same, or is rejected: never a panic.
        #[test]
        fn int_parser_total(s in "\\PC{0,24}") {
            if let Ok(x) = parse_int(s.trim(), None) {
                let reparsed: f64 = s.trim().parse().unwrap();
                prop_assert_eq!(x as f64, reparsed);
            }
        }
    }
}
