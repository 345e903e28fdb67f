//! Mapping files: bringing any retailer's export into the canonical schema.
//!
//! Real exports never match our column names or formats. A mapping file
//! (TOML) says, per canonical column, where its value comes from and how to
//! read it, so a new layout needs a file, not code:
//!
//! ```toml
//! table = "orders"                       # optional; checked against the command
//!
//! [source]
//! delimiter = ","                        # CSV only; sniffed from the header when absent
//! timezone = "America/Chicago"           # zone of timestamps that carry none (default UTC)
//! null_values = ["", "NULL", "n/a"]      # values read as missing
//!
//! [options]
//! allow_returns = true                   # accept negative quantity / amount (returns)
//!
//! [columns]
//! member_id  = "household_key"           # shorthand: take this source column
//! order_id   = "BASKET_ID"
//! line_no    = { sequence = true }       # number lines 1, 2, … within each order
//! ordered_at = { from = ["DAY", "TRANS_TIME"], format = "days_since_epoch", epoch = "2023-01-01" }
//! channel    = { default = "store" }     # constant when the export has no such column
//! sku        = "PRODUCT_ID"
//! quantity   = "QUANTITY"
//! amount     = "SALES_VALUE"
//! discount   = { from = "RETAIL_DISC", scale = -1.0 }   # stored negative in the export
//! coupon_used = "COUPON_DISC"            # numbers read as booleans: 0 → false, other → true
//! ```
//!
//! Per column: `from` (one source column, or several joined by `join`,
//! default a space), `format` (for timestamps and dates: a chrono
//! `strftime` pattern, or `unix_s`, `unix_ms`, `unix_us`,
//! `days_since_epoch` with `epoch`, or `excel`), `timezone`, `scale`
//! (multiply numbers: unit conversion), `default` (when missing), `values`
//! (a table recoding source values, e.g. `{ "1" = "store", "2" = "app" }`)
//! and, for integer columns, `sequence`. A column not named in the file is
//! looked up by its canonical name, ignoring case and punctuation.
//!
//! [`Mapping::parse`] reads the file; [`Mapping::check`] validates it once
//! against the target table and yields a [`CheckedMapping`] that ingest uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{FixedOffset, NaiveDate};
use serde::Deserialize;
use taglake_base::suggest;
use taglake_storage::{ColumnType, Table};

use crate::scalar::parsed_default;
use crate::{Error, Result};

/// A mapping file as written (unchecked).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The table the mapping is written for.
    pub table: Option<String>,
    /// How to read the files.
    #[serde(default)]
    pub source: SourceSpec,
    /// Validation switches.
    #[serde(default)]
    pub options: OptionsSpec,
    /// Per canonical column: where and how.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

/// `[source]` of a mapping file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// CSV field delimiter (one character, `\t` for tab).
    pub delimiter: Option<String>,
    /// Zone of timestamps that carry none.
    pub timezone: Option<String>,
    /// Values read as missing (default: empty, `NULL`, `null`, `\N`).
    pub null_values: Option<Vec<String>>,
}

/// `[options]` of a mapping file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsSpec {
    /// Accept order lines with negative quantity or amount (returns).
    pub allow_returns: Option<bool>,
    /// Largest accepted absolute line amount (default 1e9).
    pub max_amount: Option<f64>,
    /// Fill an empty order-line `category` from the products table (default true).
    pub category_from_products: Option<bool>,
}

/// One entry of `[columns]`: a source column name or a full rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    /// Shorthand: the source column to take.
    From(String),
    /// A full rule.
    Rule(ColumnRuleSpec),
}

/// The full form of a column rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRuleSpec {
    /// Source column(s).
    pub from: Option<OneOrMany>,
    /// Separator when `from` names several columns.
    pub join: Option<String>,
    /// Timestamp / date format.
    pub format: Option<String>,
    /// Zone for this column's naive timestamps.
    pub timezone: Option<String>,
    /// Day 0 of `days_since_epoch`.
    pub epoch: Option<String>,
    /// Factor applied to numbers.
    pub scale: Option<f64>,
    /// Value when missing.
    pub default: Option<toml::Value>,
    /// Recoding of source values.
    pub values: Option<BTreeMap<String, String>>,
    /// Number rows 1, 2, … within each order (integer columns of orders).
    pub sequence: Option<bool>,
}

/// One column name or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One column.
    One(String),
    /// Several columns, joined.
    Many(Vec<String>),
}

pub use crate::scalar::{TimeFormat, Zone};

/// A default value, already typed for its column.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Number.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Text parsed by the column's own parser (timestamps, dates).
    Parsed(String),
}

/// A validated rule for one canonical column.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// Canonical column name.
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
    /// Required in the warehouse.
    pub required: bool,
    /// Source columns named in the mapping (empty: look up by canonical name).
    pub from: Vec<String>,
    /// Join separator.
    pub join: String,
    /// Time format.
    pub format: TimeFormat,
    /// Zone for naive timestamps.
    pub zone: Zone,
    /// Numeric factor.
    pub scale: Option<f64>,
    /// Value when missing.
    pub default: Option<DefaultValue>,
    /// Recoding table.
    pub values: BTreeMap<String, String>,
    /// Generated as a sequence within each order.
    pub sequence: bool,
}

/// A mapping validated against its table, ready for ingest. Its fields
/// are private: the only ways to get one are [`Mapping::check`] and
/// [`CheckedMapping::canonical`], so a mapping in hand is always valid.
#[derive(Debug, Clone)]
pub struct CheckedMapping {
    pub(crate) table: Table,
    pub(crate) delimiter: Option<u8>,
    pub(crate) null_values: Vec<String>,
    pub(crate) allow_returns: bool,
    pub(crate) max_amount: f64,
    pub(crate) category_from_products: bool,
    pub(crate) rules: Vec<ColumnRule>,
}

impl Mapping {
    /// Reads and parses a mapping file (unknown keys are errors: a typo must
    /// not silently do nothing).
    pub fn from_file(path: &Path) -> Result<Mapping> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Mapping {
            path: Some(path.into()),
            message: String::new(),
            cause: Some(e.into()),
        })?;
        let mut m = Mapping::parse(&text).map_err(|e| match e {
            Error::Mapping { message, cause, .. } => Error::Mapping { path: Some(path.into()), message, cause },
            other => other,
        })?;
        m.path = Some(path.into());
        Ok(m)
    }

    /// Parses mapping text.
    pub fn parse(text: &str) -> Result<Mapping> {
        toml::from_str(text).map_err(|e| Error::Mapping { path: None, message: String::new(), cause: Some(e.into()) })
    }

    fn err(&self, message: String) -> Error {
        Error::Mapping { path: self.path.clone(), message, cause: None }
    }

    // Long on purpose: one check per mapping section, in the order the file is documented, each adding to the
    // same rule list.
    /// Validates every field against the table and returns the rules.
    pub fn check(&self, table: Table) -> Result<CheckedMapping> {
        if let Some(t) = &self.table
            && t != table.name()
        {
            return Err(self.err(format!("written for table `{t}`, but ingesting `{}`", table.name())));
        }
        let delimiter = match self.source.delimiter.as_deref() {
            None => None,
            Some("\\t") | Some("\t") | Some("tab") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
            Some(d) => return Err(self.err(format!("source.delimiter must be one ASCII character, got {d:?}"))),
        };
        let zone = match &self.source.timezone {
            None => Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")),
            Some(z) => parse_zone(z).map_err(|m| self.err(format!("source.timezone: {m}")))?,
        };
        let max_amount = self.options.max_amount.unwrap_or(1e9);
        if !(max_amount.is_finite() && max_amount > 0.0) {
            return Err(self.err(format!("options.max_amount must be a positive number, got {max_amount}")));
        }
        for name in self.columns.keys() {
            match table.column(name) {
                Some(c) if c.input => {}
                _ => {
                    let names: Vec<&str> = table.input_columns().map(|c| c.name).collect();
                    let hint = suggest(name, names.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    return Err(self.err(format!(
                        "columns.{name}: `{}` has no column `{name}`{hint}; its columns are {}",
                        table.name(),
                        names.join(", ")
                    )));
                }
            }
        }
        let mut rules = Vec::new();
        for col in table.input_columns() {
            let spec = match self.columns.get(col.name) {
                None => ColumnRuleSpec::default(),
                Some(ColumnSpec::From(s)) => {
                    ColumnRuleSpec { from: Some(OneOrMany::One(s.clone())), ..Default::default() }
                }
                Some(ColumnSpec::Rule(r)) => r.clone(),
            };
            let at = |m: String| self.err(format!("columns.{}: {m}", col.name));
            let from = match spec.from {
                None => Vec::new(),
                Some(OneOrMany::One(s)) => vec![s],
                Some(OneOrMany::Many(v)) if v.is_empty() => return Err(at("`from` lists no column".into())),
                Some(OneOrMany::Many(v)) => v,
            };
            let is_time = matches!(col.ty, ColumnType::Timestamp | ColumnType::Date);
            let format = match spec.format.as_deref() {
                None => TimeFormat::Auto,
                Some(_) if !is_time => {
                    return Err(at(format!("`format` applies to timestamps and dates, not {}", col.ty.describe())));
                }
                Some(f) => parse_format(f, spec.epoch.as_deref()).map_err(at)?,
            };
            if spec.epoch.is_some() && !matches!(format, TimeFormat::DaysSinceEpoch(_)) {
                return Err(at("`epoch` goes with format = \"days_since_epoch\"".into()));
            }
            let col_zone = match &spec.timezone {
                None => zone,
                Some(_) if col.ty != ColumnType::Timestamp => {
                    return Err(at("`timezone` applies to timestamps only".into()));
                }
                Some(z) => parse_zone(z).map_err(at)?,
            };
            if let Some(s) = spec.scale {
                if !matches!(col.ty, ColumnType::Float64 | ColumnType::Int32 | ColumnType::Int64) {
                    return Err(at(format!("`scale` applies to numbers, not {}", col.ty.describe())));
                }
                if !s.is_finite() || s == 0.0 {
                    return Err(at(format!("`scale` must be a finite non-zero number, got {s}")));
                }
            }
            let sequence = spec.sequence.unwrap_or(false);
            if sequence && !(table == Table::Orders && col.name == "line_no") {
                return Err(at("`sequence` applies to orders.line_no only".into()));
            }
            if sequence && !from.is_empty() {
                return Err(at("`sequence` and `from` exclude each other".into()));
            }
            let default = match spec.default {
                // The canonical defaults (DESIGN.md, "Canonical input schema").
                None if table == Table::Orders && col.name == "discount" => Some(DefaultValue::Float(0.0)),
                None if table == Table::Orders && col.name == "coupon_used" => Some(DefaultValue::Bool(false)),
                None => None,
                Some(v) => Some(typed_default(col.ty, v).map_err(at)?),
            };
            // A timestamp or date default is read as a value of the file
            // would be, so a bad one fails here and not on the first batch.
            if let Some(DefaultValue::Parsed(s)) = &default {
                parsed_default(s, col.ty, col_zone).map_err(|msg| at(format!("`default` {msg}")))?;
            }
            rules.push(ColumnRule {
                name: col.name,
                ty: col.ty,
                required: col.required,
                from,
                join: spec.join.unwrap_or_else(|| " ".into()),
                format,
                zone: col_zone,
                scale: spec.scale,
                default,
                values: spec.values.unwrap_or_default(),
                sequence,
            });
        }
        Ok(CheckedMapping {
            table,
            delimiter,
            null_values: self
                .source
                .null_values
                .clone()
                .unwrap_or_else(|| vec!["".into(), "NULL".into(), "null".into(), "\\N".into()]),
            allow_returns: self.options.allow_returns.unwrap_or(false),
            max_amount,
            category_from_products: self.options.category_from_products.unwrap_or(true),
            rules,
        })
    }
}

impl CheckedMapping {
    /// The identity mapping: canonical names, default formats.
    pub fn canonical(table: Table) -> CheckedMapping {
        Mapping::default().check(table).expect("the empty mapping is valid for every table")
    }

    /// Target table.
    pub fn table(&self) -> Table {
        self.table
    }

    /// CSV delimiter, when fixed (otherwise sniffed from the header).
    pub fn delimiter(&self) -> Option<u8> {
        self.delimiter
    }

    /// Values read as missing.
    pub fn null_values(&self) -> &[String] {
        &self.null_values
    }

    /// Whether returns (negative quantity or amount) are accepted.
    pub fn allow_returns(&self) -> bool {
        self.allow_returns
    }

    /// Largest accepted absolute amount.
    pub fn max_amount(&self) -> f64 {
        self.max_amount
    }

    /// Whether an empty order-line category is filled from products.
    pub fn category_from_products(&self) -> bool {
        self.category_from_products
    }

    /// One rule per canonical input column, in schema order.
    pub fn rules(&self) -> &[ColumnRule] {
        &self.rules
    }

    /// Binds every rule to the columns of a source. Fails (for the whole
    /// file) when a required column has no source, no default and is not
    /// generated, naming the columns the file does have.
    pub fn bind(&self, headers: &[String]) -> std::result::Result<Vec<Binding>, String> {
        let mut out = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            if rule.sequence {
                out.push(Binding::Sequence);
                continue;
            }
            if !rule.from.is_empty() {
                let mut idx = Vec::new();
                for f in &rule.from {
                    match find_header(headers, f) {
                        Some(i) => idx.push(i),
                        None => {
                            let hint = suggest(f, headers.iter().map(String::as_str))
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default();
                            return Err(format!(
                                "column `{f}` (mapped to `{}`) not found{hint}; the file's columns are: {}",
                                rule.name,
                                headers.join(", ")
                            ));
                        }
                    }
                }
                out.push(Binding::Source(idx));
                continue;
            }
            match find_header(headers, rule.name) {
                Some(i) => out.push(Binding::Source(vec![i])),
                None if !rule.required || rule.default.is_some() => out.push(Binding::Absent),
                None => {
                    let hint = suggest(rule.name, headers.iter().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(format!(
                        "required column `{}` not found{hint}; the file's columns are: {}. Map it with a mapping file: [columns] {} = \"<source column>\"",
                        rule.name,
                        headers.join(", "),
                        rule.name
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Where a canonical column's values come from in one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// These source columns (joined when several).
    Source(Vec<usize>),
    /// Not in the source: default or null.
    Absent,
    /// Generated line numbers.
    Sequence,
}

fn normalize(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Exact name first, then ignoring case, then ignoring case and punctuation.
fn find_header(headers: &[String], name: &str) -> Option<usize> {
    headers
        .iter()
        .position(|h| h == name)
        .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(name)))
        .or_else(|| {
            let n = normalize(name);
            headers.iter().position(|h| normalize(h) == n)
        })
}

fn parse_zone(z: &str) -> std::result::Result<Zone, String> {
    let t = z.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") {
        return Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")));
    }
    if let Ok(off) = t.parse::<FixedOffset>() {
        return Ok(Zone::Fixed(off));
    }
    t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
        format!("unknown time zone {z:?} (use an IANA name like \"Asia/Shanghai\" or an offset like \"+08:00\")")
    })
}

fn parse_format(f: &str, epoch: Option<&str>) -> std::result::Result<TimeFormat, String> {
    Ok(match f {
        "auto" => TimeFormat::Auto,
        "unix_s" | "unix_seconds" => TimeFormat::UnixSeconds,
        "unix_ms" | "unix_millis" => TimeFormat::UnixMillis,
        "unix_us" | "unix_micros" => TimeFormat::UnixMicros,
        "excel" => TimeFormat::Excel,
        "days_since_epoch" => {
            let e = epoch.ok_or("format = \"days_since_epoch\" needs `epoch = \"YYYY-MM-DD\"` (the date of day 0)")?;
            TimeFormat::DaysSinceEpoch(
                NaiveDate::parse_from_str(e, "%Y-%m-%d")
                    .map_err(|_| format!("`epoch` must be a date YYYY-MM-DD, got {e:?}"))?,
            )
        }
        p if p.contains('%') => {
            use chrono::format::{Item, StrftimeItems};
            if StrftimeItems::new(p).any(|i| matches!(i, Item::Error)) {
                return Err(format!("`format` {p:?} is not a valid strftime pattern"));
            }
            TimeFormat::Pattern(p.to_string())
        }
        other => {
            return Err(format!(
                "unknown `format` {other:?}: use a strftime pattern such as \"%d/%m/%Y %H:%M\", or auto, unix_s, unix_ms, unix_us, days_since_epoch, excel"
            ));
        }
    })
}

fn typed_default(ty: ColumnType, v: toml::Value) -> std::result::Result<DefaultValue, String> {
    use toml::Value as V;
    let bad = |v: &V| format!("`default` {v} is not {}", ty.describe());
    Ok(match (ty, &v) {
        (ColumnType::Text, V::String(s)) => DefaultValue::Text(s.clone()),
        (ColumnType::Text, V::Integer(i)) => DefaultValue::Text(i.to_string()),
        (ColumnType::Int32, V::Integer(i)) if i32::try_from(*i).is_ok() => DefaultValue::Int(*i),
        (ColumnType::Int64, V::Integer(i)) => DefaultValue::Int(*i),
        (ColumnType::Float64, V::Float(f)) if f.is_finite() => DefaultValue::Float(*f),
        (ColumnType::Float64, V::Integer(i)) => DefaultValue::Float(*i as f64),
        (ColumnType::Bool, V::Boolean(b)) => DefaultValue::Bool(*b),
        (ColumnType::Timestamp | ColumnType::Date, V::String(s)) => DefaultValue::Parsed(s.clone()),
        (ColumnType::Timestamp, V::Datetime(d)) => DefaultValue::Parsed(d.to_string()),
        (ColumnType::Date, V::Datetime(d)) => DefaultValue::Parsed(d.to_string()),
        _ => return Err(bad(&v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, table: Table) -> std::result::Result<CheckedMapping, String> {
        Mapping::parse(text).and_then(|m| m.check(table)).map_err(|e| e.to_string())
    }

    #[test]
    fn household_layout_maps() {
        let m = check(
            r#"
            table = "orders"
            [source]
            timezone = "America/Chicago"
            [options]
            allow_returns = true
            [columns]
            member_id = "household_key"
            order_id = "BASKET_ID"
            line_no = { sequence = true }
            ordered_at = { from = ["DAY", "TRANS_TIME"], format = "days_since_epoch", epoch = "2023-01-01" }
            channel = { default = "store" }
            sku = "PRODUCT_ID"
            quantity = "QUANTITY"
            amount = "SALES_VALUE"
            discount = { from = "RETAIL_DISC", scale = -1.0 }
            coupon_used = "COUPON_DISC"
            "#,
            Table::Orders,
        )
        .unwrap();
        assert!(m.allow_returns);
        let headers: Vec<String> = [
            "household_key",
            "BASKET_ID",
            "DAY",
            "TRANS_TIME",
            "PRODUCT_ID",
            "QUANTITY",
            "SALES_VALUE",
            "RETAIL_DISC",
            "COUPON_DISC",
            "STORE_ID",
        ]
        .map(String::from)
        .to_vec();
        let b = m.bind(&headers).unwrap();
        assert_eq!(b[0], Binding::Source(vec![1])); // order_id
        assert_eq!(b[1], Binding::Sequence);
        assert_eq!(b[3], Binding::Source(vec![2, 3])); // ordered_at
        assert_eq!(b[4], Binding::Absent); // channel, defaulted
        assert_eq!(b[5], Binding::Source(vec![9])); // store_id found ignoring case
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("table = \"members\"", "written for table `members`, but ingesting `orders`"),
            (
                "[columns]\nquantty = \"q\"",
                "columns.quantty: `orders` has no column `quantty` (did you mean `quantity`?)",
            ),
            ("[columns]\nmember_key = \"q\"", "columns.member_key: `orders` has no column `member_key`"),
            ("[source]\ndelimiter = \";;\"", "source.delimiter must be one ASCII character"),
            ("[source]\ntimezone = \"Mars/Base\"", "source.timezone: unknown time zone \"Mars/Base\""),
            ("[columns]\nordered_at = { format = \"%Y-%\" }", "is not a valid strftime pattern"),
            ("[columns]\nordered_at = { format = \"days_since_epoch\" }", "needs `epoch"),
            ("[columns]\nordered_at = { format = \"weird\" }", "unknown `format` \"weird\""),
            (
                "[columns]\namount = { format = \"%Y\" }",
                "columns.amount: `format` applies to timestamps and dates, not a number",
            ),
            ("[columns]\nsku = { scale = 2.0 }", "columns.sku: `scale` applies to numbers, not text"),
            ("[columns]\namount = { scale = 0.0 }", "`scale` must be a finite non-zero number"),
            ("[columns]\nquantity = { sequence = true }", "`sequence` applies to orders.line_no only"),
            (
                "[columns]\nquantity = { default = \"many\" }",
                "columns.quantity: `default` \"many\" is not a 32-bit integer",
            ),
            (
                "[columns]\nordered_at = { default = \"store\" }",
                "columns.ordered_at: `default` \"store\" is not a timestamp",
            ),
            (
                "[columns]\nordered_at = { default = \"1900-01-01\" }",
                "columns.ordered_at: `default` timestamp 1900-01-01T00:00:00Z is outside the accepted range",
            ),
            ("[options]\nmax_amount = -1.0", "options.max_amount must be a positive number"),
            ("[columns]\nsku = { frm = \"x\" }", "data did not match any variant"),
            ("[colums]\nsku = \"x\"", "unknown field `colums`"),
        ];
        for (text, want) in cases {
            let err = check(text, Table::Orders).unwrap_err();
            assert!(err.contains(want), "{text}\n  got: {err}\n want: {want}");
        }
    }

    #[test]
    fn missing_required_column_lists_what_exists() {
        let m = CheckedMapping::canonical(Table::Members);
        let err = m.bind(&["memberid".into(), "registerd_at".into()]).unwrap_err();
        assert_eq!(
            err,
            "required column `registered_at` not found; did you mean `registerd_at`?; the file's columns are: memberid, registerd_at. Map it with a mapping file: [columns] registered_at = \"<source column>\""
        );
        // `memberid` matched `member_id` ignoring punctuation.
        let ok = m.bind(&["MemberID".into(), "Registered At".into()]).unwrap();
        assert_eq!(ok[0], Binding::Source(vec![0]));
        assert_eq!(ok[1], Binding::Source(vec![1]));
    }

    #[test]
    fn zones() {
        assert!(matches!(parse_zone("+08:00"), Ok(Zone::Fixed(o)) if o.local_minus_utc() == 8 * 3600));
        assert!(matches!(parse_zone("Asia/Shanghai"), Ok(Zone::Named(_))));
        assert!(matches!(parse_zone("utc"), Ok(Zone::Fixed(o)) if o.local_minus_utc() == 0));
    }
}
