//! What to generate: [`GenerateConfig`], built and checked by
//! [`GenerateConfigBuilder`], and the output [`Format`].
//!
//! The builder is unchecked; [`GenerateConfigBuilder::build`] validates every
//! field once, so a [`GenerateConfig`] in hand is always valid and
//! [`generate`](crate::generate) never has to re-check it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// File format of every table written by [`generate`](crate::generate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Comma-separated values with a header row; timestamps in RFC 3339 UTC
    /// (`2025-03-01T10:15:00Z`), dates as `YYYY-MM-DD`, nulls as empty fields.
    Csv,
    /// One JSON object per line; null fields are omitted.
    Jsonl,
    /// Apache Parquet with Snappy compression.
    Parquet,
}

impl Format {
    /// The file extension without the dot: `csv`, `jsonl` or `parquet`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Parses `csv`, `jsonl`, `json` or `parquet`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "jsonl" | "json" => Ok(Format::Jsonl),
            "parquet" => Ok(Format::Parquet),
            _ => Err(Error::UnknownFormat(s.to_string())),
        }
    }
}

/// A validated description of the data set to generate.
///
/// The output is a pure function of these fields: the same configuration
/// always produces byte-identical files, whatever the number of threads.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    members: u64,
    years: u32,
    seed: u64,
    format: Format,
    out: PathBuf,
    end_date: NaiveDate,
    lines_per_member_year: f64,
    members_per_part: u64,
}

impl GenerateConfig {
    /// Default number of years of order history.
    pub const DEFAULT_YEARS: u32 = 2;
    /// Default seed.
    pub const DEFAULT_SEED: u64 = 1;
    /// Default average number of order lines per member and year.
    pub const DEFAULT_LINES_PER_MEMBER_YEAR: f64 = 10.0;
    /// Default number of members whose orders go into one `orders/part-NNNNN` file.
    pub const DEFAULT_MEMBERS_PER_PART: u64 = 100_000;
    /// Most members allowed: the generator keeps 4 bytes per member in
    /// memory (4 GB here), and a warehouse's member keys are 32-bit.
    pub const MAX_MEMBERS: u64 = 1_000_000_000;
    /// Most years of history allowed.
    pub const MAX_YEARS: u32 = 20;
    /// Largest `lines_per_member_year` allowed: an order id holds at most
    /// 9,999 orders per member.
    pub const MAX_LINES_PER_MEMBER_YEAR: f64 = 1_000.0;

    /// The default end of the order window: 2026-11-01.
    pub fn default_end_date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 1).expect("2026-11-01 is a valid date")
    }

    /// An unchecked builder with the defaults; `members` and `out` must be set.
    pub fn builder() -> GenerateConfigBuilder {
        GenerateConfigBuilder::default()
    }

    /// Number of members (rows of `members`).
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Years of order history before [`end_date`](Self::end_date).
    pub fn years(&self) -> u32 {
        self.years
    }

    /// The seed every random draw derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Output file format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Orders fall in `[end_date - years * 365 days, end_date)`, UTC.
    pub fn end_date(&self) -> NaiveDate {
        self.end_date
    }

    /// Target average order lines per member (over all members) and year.
    pub fn lines_per_member_year(&self) -> f64 {
        self.lines_per_member_year
    }

    /// Members per `orders/part-NNNNN` file.
    pub fn members_per_part(&self) -> u64 {
        self.members_per_part
    }

    /// Number of order part files: `ceil(members / members_per_part)`.
    pub fn parts(&self) -> u64 {
        self.members.div_ceil(self.members_per_part)
    }

    /// Length of the order window in days (`years * 365`).
    pub fn window_days(&self) -> u32 {
        self.years * 365
    }
}

/// Builder for [`GenerateConfig`]; nothing is checked until [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct GenerateConfigBuilder {
    members: Option<u64>,
    years: u32,
    seed: u64,
    format: Format,
    out: Option<PathBuf>,
    end_date: NaiveDate,
    lines_per_member_year: f64,
    members_per_part: u64,
}

impl Default for GenerateConfigBuilder {
    fn default() -> Self {
        Self {
            members: None,
            years: GenerateConfig::DEFAULT_YEARS,
            seed: GenerateConfig::DEFAULT_SEED,
            format: Format::Parquet,
            out: None,
            end_date: GenerateConfig::default_end_date(),
            lines_per_member_year: GenerateConfig::DEFAULT_LINES_PER_MEMBER_YEAR,
            members_per_part: GenerateConfig::DEFAULT_MEMBERS_PER_PART,
        }
    }
}

impl GenerateConfigBuilder {
    /// Number of members to generate (required, at least 1).
    pub fn members(mut self, members: u64) -> Self {
        self.members = Some(members);
        self
    }

    /// Years of order history, 1 to 20 (default 2).
    pub fn years(mut self, years: u32) -> Self {
        self.years = years;
        self
    }

    /// Seed of every random draw (default 1).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Output format (default Parquet).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Output directory (required); created if missing.
    pub fn out(mut self, out: impl Into<PathBuf>) -> Self {
        self.out = Some(out.into());
        self
    }

    /// End of the order window, exclusive (default 2026-11-01).
    pub fn end_date(mut self, end_date: NaiveDate) -> Self {
        self.end_date = end_date;
        self
    }

    /// Average order lines per member and year, over all members including
    /// those who never buy (default 10; more than 0, at most 1,000).
    pub fn lines_per_member_year(mut self, lines: f64) -> Self {
        self.lines_per_member_year = lines;
        self
    }

    /// Members whose orders go into one part file (default 100,000; at least 1).
    pub fn members_per_part(mut self, members_per_part: u64) -> Self {
        self.members_per_part = members_per_part;
        self
    }

    /// Checks every field and returns the valid configuration, or the first
    /// invalid parameter with the value given and the range allowed.
    pub fn build(self) -> Result<GenerateConfig> {
        let members = match self.members {
            None => return Err(Error::invalid("members", "not set; it is required")),
            Some(0) => return Err(Error::invalid("members", "got 0, need at least 1")),
            Some(m) if m > GenerateConfig::MAX_MEMBERS => {
                return Err(Error::invalid(
                    "members",
                    format!("got {m}, need at most {}", GenerateConfig::MAX_MEMBERS),
                ));
            }
            Some(m) => m,
        };
        if !(1..=GenerateConfig::MAX_YEARS).contains(&self.years) {
            return Err(Error::invalid(
                "years",
                format!("got {}, need 1 to {}", self.years, GenerateConfig::MAX_YEARS),
            ));
        }
        let lines = self.lines_per_member_year;
        if !lines.is_finite() || lines <= 0.0 || lines > GenerateConfig::MAX_LINES_PER_MEMBER_YEAR {
            return Err(Error::invalid(
                "lines_per_member_year",
                format!(
                    "got {lines}, need a finite number above 0 and at most {}",
                    GenerateConfig::MAX_LINES_PER_MEMBER_YEAR
                ),
            ));
        }
        if self.members_per_part == 0 {
            return Err(Error::invalid("members_per_part", "got 0, need at least 1"));
        }
        let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");
        let latest = NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid date");
        if self.end_date < earliest || self.end_date > latest {
            return Err(Error::invalid(
                "end_date",
                format!("got {}, need a date from {earliest} to {latest}", self.end_date),
            ));
        }
        let out = match self.out {
            None => return Err(Error::invalid("out", "not set; it is required")),
            Some(p) if p.as_os_str().is_empty() => {
                return Err(Error::invalid("out", "got an empty path"));
            }
            Some(p) => p,
        };
        Ok(GenerateConfig {
            members,
            years: self.years,
            seed: self.seed,
            format: self.format,
            out,
            end_date: self.end_date,
            lines_per_member_year: lines,
            members_per_part: self.members_per_part,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GenerateConfigBuilder {
        GenerateConfig::builder().members(10).out("/tmp/x")
    }

    fn rejected(builder: GenerateConfigBuilder) -> (&'static str, String) {
        match builder.build() {
            Err(Error::InvalidConfig { parameter, reason }) => (parameter, reason),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let cfg = valid().build().unwrap();
        assert_eq!(cfg.members(), 10);
        assert_eq!(cfg.years(), 2);
        assert_eq!(cfg.seed(), 1);
        assert_eq!(cfg.format(), Format::Parquet);
        assert_eq!(cfg.out(), Path::new("/tmp/x"));
        assert_eq!(cfg.end_date(), NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        assert_eq!(cfg.lines_per_member_year(), 10.0);
        assert_eq!(cfg.members_per_part(), 100_000);
        assert_eq!(cfg.parts(), 1);
        assert_eq!(cfg.window_days(), 730);
    }

    #[test]
    fn setters_are_kept() {
        let end = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let cfg = valid()
            .members(250)
            .years(20)
            .seed(9)
            .format(Format::Csv)
            .end_date(end)
            .lines_per_member_year(0.5)
            .members_per_part(100)
            .build()
            .unwrap();
        assert_eq!((cfg.members(), cfg.years(), cfg.seed(), cfg.format()), (250, 20, 9, Format::Csv));
        assert_eq!((cfg.end_date(), cfg.lines_per_member_year()), (end, 0.5));
        assert_eq!((cfg.members_per_part(), cfg.parts()), (100, 3));
    }

    #[test]
    fn members_missing_is_rejected() {
        let (p, r) = rejected(GenerateConfig::builder().out("/tmp/x"));
        assert_eq!((p, r.as_str()), ("members", "not set; it is required"));
    }

    #[test]
    fn members_zero_is_rejected() {
        let (p, r) = rejected(valid().members(0));
        assert_eq!((p, r.as_str()), ("members", "got 0, need at least 1"));
    }

    #[test]
    fn members_beyond_the_maximum_are_rejected() {
        let (p, r) = rejected(valid().members(1_000_000_000_000_000));
        assert_eq!((p, r.as_str()), ("members", "got 1000000000000000, need at most 1000000000"));
        assert!(valid().members(GenerateConfig::MAX_MEMBERS).build().is_ok());
    }

    #[test]
    fn years_zero_is_rejected() {
        let (p, r) = rejected(valid().years(0));
        assert_eq!((p, r.as_str()), ("years", "got 0, need 1 to 20"));
    }

    #[test]
    fn years_above_twenty_is_rejected() {
        assert_eq!(rejected(valid().years(21)).0, "years");
    }

    #[test]
    fn lines_per_member_year_not_positive_is_rejected() {
        for bad in [0.0, -1.0] {
            let (p, r) = rejected(valid().lines_per_member_year(bad));
            assert_eq!(p, "lines_per_member_year");
            assert!(r.contains("above 0"), "{r}");
        }
    }

    #[test]
    fn lines_per_member_year_not_finite_is_rejected() {
        for bad in [f64::NAN, f64::INFINITY] {
            assert_eq!(rejected(valid().lines_per_member_year(bad)).0, "lines_per_member_year");
        }
    }

    #[test]
    fn lines_per_member_year_too_large_is_rejected() {
        assert_eq!(rejected(valid().lines_per_member_year(1000.5)).0, "lines_per_member_year");
        assert!(valid().lines_per_member_year(1000.0).build().is_ok());
    }

    #[test]
    fn members_per_part_zero_is_rejected() {
        let (p, r) = rejected(valid().members_per_part(0));
        assert_eq!((p, r.as_str()), ("members_per_part", "got 0, need at least 1"));
    }

    #[test]
    fn out_missing_is_rejected() {
        let (p, r) = rejected(GenerateConfig::builder().members(1));
        assert_eq!((p, r.as_str()), ("out", "not set; it is required"));
    }

    #[test]
    fn out_empty_is_rejected() {
        assert_eq!(rejected(valid().out("")).0, "out");
    }

    #[test]
    fn end_date_out_of_range_is_rejected() {
        let (p, r) = rejected(valid().end_date(NaiveDate::from_ymd_opt(1899, 12, 31).unwrap()));
        assert_eq!(p, "end_date");
        assert_eq!(r, "got 1899-12-31, need a date from 1900-01-01 to 9999-12-31");
    }

    #[test]
    fn error_message_names_parameter_and_range() {
        let err = valid().years(42).build().unwrap_err();
        assert_eq!(err.to_string(), "invalid generate parameter `years`: got 42, need 1 to 20");
    }

    #[test]
    fn format_parses_and_names_extension() {
        assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
        assert_eq!("JSONL".parse::<Format>().unwrap(), Format::Jsonl);
        assert_eq!("json".parse::<Format>().unwrap(), Format::Jsonl);
        assert_eq!("Parquet".parse::<Format>().unwrap(), Format::Parquet);
        assert_eq!(Format::Jsonl.extension(), "jsonl");
        assert_eq!(Format::Parquet.to_string(), "parquet");
        let err = "xlsx".parse::<Format>().unwrap_err();
        assert_eq!(err.to_string(), "unknown output format \"xlsx\": expected one of csv, jsonl (or json), parquet");
    }
}
