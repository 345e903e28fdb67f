//! Sizes and durations as people write them: `512MiB`, `2 GiB`, `1.5GB`;
//! `250ms`, `30s`, `5m`, `36h`, `14d`, `2w`.
//!
//! One grammar for every flag, config key and setting that takes one
//! (`--memory`, `--query-memory`, `--statement-timeout`, `--window`,
//! `--retain`, `--cuped` …): a non-negative decimal number, optional
//! spaces, then a unit. The parsers return plain numbers; each caller
//! checks its own bounds (a window must be whole hours, a memory budget at
//! least 64 MiB) and words its own error, because only it knows what the
//! value is for.

use std::time::Duration;

/// Why a size or a duration could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitError {
    /// Not a number followed by a known unit.
    Malformed,
    /// A well-formed value too large to represent (more than `u64` bytes
    /// or nanoseconds' worth of seconds).
    TooLarge,
}

impl std::fmt::Display for UnitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnitError::Malformed => "not a number followed by a unit",
            UnitError::TooLarge => "too large",
        })
    }
}

impl std::error::Error for UnitError {}

/// The number and the unit of `text`: digits with at most one `.`, then
/// the rest trimmed.
fn split(text: &str) -> Result<(f64, &str), UnitError> {
    let t = text.trim();
    let at = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(at);
    // `f64::from_str` also takes `inf`, `1e5` and signs; none of them can
    // reach here, as the number holds only digits and dots.
    let number: f64 = number.parse().map_err(|_| UnitError::Malformed)?;
    Ok((number, unit.trim()))
}

/// Bytes in `text`: a number and one of `B` (or none), `KB`/`K`, `MB`/`M`,
/// `GB`/`G`, `TB`/`T` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024), in any case. Fractions are rounded down to a byte.
pub fn size(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split(text)?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return Err(UnitError::Malformed),
    };
    let bytes = number * scale;
    if bytes.is_finite() && bytes < u64::MAX as f64 { Ok(bytes as u64) } else { Err(UnitError::TooLarge) }
}

/// [`size`] as a `usize`, `None` when it is malformed or does not fit.
pub fn parse_size(text: &str) -> Option<usize> {
    size(text).ok().and_then(|b| usize::try_from(b).ok()).filter(|&b| b < usize::MAX)
}

/// The duration in `text`: a number and one of `ms`, `s` (or none), `m` or
/// `min`, `h`, `d`, `w`. Units are case-sensitive (`m` is a minute, never a
/// month).
pub fn duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split(text)?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        "w" => number * 604_800.0,
        _ => return Err(UnitError::Malformed),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| UnitError::TooLarge)
}

/// [`duration`], `None` when it cannot be read.
pub fn parse_duration(text: &str) -> Option<Duration> {
    duration(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("2gib"), Some(2 << 30));
        assert_eq!(parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size(" 10 B "), Some(10));
        for bad in ["", "MiB", "-1MiB", "12 parsecs", "1e400", "1..5G", ".", "inf", "NaN", "+5MiB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(size("99999999999999999999999TiB"), Err(UnitError::TooLarge));
        assert_eq!(size("12 parsecs"), Err(UnitError::Malformed));
    }

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("36h"), Some(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("14d"), Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("1.5d"), Some(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "-1s", "-3s", "3 weeks", "1e999s", "5 fortnights", "1M", "1D", "1e3s", "inf", "1..2s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(duration("99999999999999999999999d"), Err(UnitError::TooLarge));
        assert_eq!(duration("5 fortnights"), Err(UnitError::Malformed));
    }

    proptest! {
        /// Whole numbers of every unit read back exactly.
        #[test]
        fn whole_values_read_back(n in 0u64..1_000_000, unit in 0usize..6) {
            let (suffix, seconds) = [("s", 1u64), ("m", 60), ("min", 60), ("h", 3600), ("d", 86_400), ("w", 604_800)][unit];
            prop_assert_eq!(duration(&format!("{n}{suffix}")), Ok(Duration::from_secs(n * seconds)));
            prop_assert_eq!(size(&format!("{n}KiB")), Ok(n * 1024));
            prop_assert_eq!(size(&format!("{n} MB")), Ok(n * 1_000_000));
        }

        /// Any text is read or refused, never a panic.
        #[test]
        fn any_text_is_read_or_refused(text in ".{0,24}") {
            let _ = size(&text);
            let _ = duration(&text);
        }
    }
}
