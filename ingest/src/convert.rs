//! Turning raw columns into canonical, validated columns.
//!
//! Each canonical column is converted independently (in parallel) from its
//! bound source columns: text is trimmed, null markers become missing,
//! values are recoded, parsed into the column's type, scaled, range-checked
//! and defaulted. Every failure is recorded against the row with a message
//! that names the value and what was expected; a row is rejected for the
//! first failing column in schema order and the rest of the batch is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::{cast, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use rayon::prelude::*;
use taglake_storage::{ColumnType, Table};

use crate::mapping::{Binding, CheckedMapping, ColumnRule, DefaultValue, TimeFormat, Zone};
use crate::source::{self, RawBatch, RawBatches, ReadOptions, Reject};
use crate::{Error, Result};

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

/// The schema of converted batches: the table's input columns.
pub fn input_schema(table: Table) -> SchemaRef {
    Arc::new(Schema::new(
        table.input_columns().map(|c| Field::new(c.name, c.ty.arrow(), !c.required)).collect::<Vec<_>>(),
    ))
}

/// Result of converting one raw batch.
#[derive(Debug)]
pub struct Converted {
    /// The good rows, in the table's input schema.
    pub batch: RecordBatch,
    /// Row numbers of the good rows.
    pub rows: Vec<u64>,
    /// Rows rejected here or already by the reader.
    pub rejects: Vec<Reject>,
}

/// Converts the batches of one source file (it keeps per-file state, such
/// as generated line numbers).
pub struct Converter<'m> {
    mapping: &'m CheckedMapping,
    schema: SchemaRef,
    line_seq: HashMap<String, i32>,
}

impl<'m> Converter<'m> {
    /// A converter for one file.
    pub fn new(mapping: &'m CheckedMapping) -> Self {
        Converter { mapping, schema: input_schema(mapping.table), line_seq: HashMap::new() }
    }

    /// Converts one batch bound by `bindings` (from [`CheckedMapping::bind`]).
    pub fn convert(&mut self, raw: &RawBatch, bindings: &[Binding]) -> Result<Converted> {
        let n = raw.len();
        let m = self.mapping;
        let converted: Vec<(ArrayRef, Vec<(usize, String)>)> = m
            .rules
            .par_iter()
            .zip(bindings)
            .map(|(rule, binding)| {
                let source = match binding {
                    Binding::Absent | Binding::Sequence => None,
                    Binding::Source(idx) => Some(source_column(raw, idx, &rule.join)),
                };
                convert_column(m, rule, source.as_ref(), n)
            })
            .collect::<Result<_>>()?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(converted.len());
        let mut first_error: Vec<Option<(usize, String)>> = vec![None; n];
        for (ci, (array, errors)) in converted.into_iter().enumerate() {
            for (row, msg) in errors {
                if first_error[row].is_none() {
                    first_error[row] = Some((ci, msg));
                }
            }
            columns.push(array);
        }
        // Generated line numbers follow the order's own rows in file order;
        // rows already rejected do not take a number.
        if let Some(seq_col) = bindings.iter().position(|b| *b == Binding::Sequence) {
            let order_col = m.rules.iter().position(|r| r.name == "order_id").expect("orders have order_id");
            let ids = columns[order_col].as_string::<i32>();
            let mut b = Int32Builder::with_capacity(n);
            for (i, err) in first_error.iter().enumerate() {
                if err.is_some() || ids.is_null(i) {
                    b.append_null();
                } else {
                    let next = self.line_seq.entry(ids.value(i).to_string()).or_insert(0);
                    *next += 1;
                    b.append_value(*next);
                }
            }
            columns[seq_col] = Arc::new(b.finish());
        }
        let mut rejects = raw.rejects.clone();
        let mut keep = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        for (i, err) in first_error.into_iter().enumerate() {
            match err {
                None => {
                    keep.push(true);
                    rows.push(raw.rows[i]);
                }
                Some((ci, reason)) => {
                    keep.push(false);
                    rejects.push(Reject {
                        row: raw.rows[i],
                        column: Some(source_name(raw, &bindings[ci], m.rules[ci].name)),
                        reason,
                        raw: Some(raw.raw_row(i)),
                    });
                }
            }
        }
        rejects.sort_by_key(|r| r.row);
        let mask = arrow::array::BooleanArray::from(keep);
        let columns = columns
            .iter()
            .map(|c| filter(c, &mask))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::internal("filtering rows"))?;
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(Error::internal("assembling a batch"))?;
        Ok(Converted { batch, rows, rejects })
    }
}

/// One source file read and converted batch by batch. The mapping is bound
/// to the file's columns once, and again whenever they change (JSON lines
/// may add keys mid-file).
pub struct ConvertedFile<'m> {
    path: PathBuf,
    mapping: &'m CheckedMapping,
    reader: RawBatches,
    converter: Converter<'m>,
    bound: Option<(Arc<Vec<String>>, Vec<Binding>)>,
}

impl<'m> ConvertedFile<'m> {
    /// Opens a file for conversion with `mapping`.
    pub fn open(path: &Path, mapping: &'m CheckedMapping, opts: &ReadOptions) -> Result<Self> {
        Ok(ConvertedFile {
            path: path.to_path_buf(),
            mapping,
            reader: source::open(path, opts)?,
            converter: Converter::new(mapping),
            bound: None,
        })
    }

    fn next_batch(&mut self, raw: Result<RawBatch>) -> Result<(u64, Converted)> {
        let raw = raw?;
        let same = matches!(&self.bound, Some((h, _)) if Arc::ptr_eq(h, &raw.headers) || **h == *raw.headers);
        if !same {
            let b = self.mapping.bind(&raw.headers).map_err(|m| Error::source(&self.path, m))?;
            self.bound = Some((raw.headers.clone(), b));
        }
        let (_, bindings) = self.bound.as_ref().expect("bound above");
        let read = (raw.len() + raw.rejects.len()) as u64;
        Ok((read, self.converter.convert(&raw, bindings)?))
    }
}

impl Iterator for ConvertedFile<'_> {
    /// Rows read (good and unreadable) and the converted batch.
    type Item = Result<(u64, Converted)>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.reader.next()?;
        Some(self.next_batch(raw))
    }
}

/// The name a person sees for a column: the source column(s) it came from,
/// with the canonical name when they differ.
fn source_name(raw: &RawBatch, binding: &Binding, canonical: &str) -> String {
    match binding {
        Binding::Source(idx) => {
            let names: Vec<&str> = idx.iter().map(|&i| raw.headers[i].as_str()).collect();
            let joined = names.join("+");
            if joined == canonical { joined } else { format!("{joined} ({canonical})") }
        }
        _ => canonical.to_string(),
    }
}

/// The source array for a rule: one column as stored, or several joined as text.
fn source_column(raw: &RawBatch, idx: &[usize], join: &str) -> ArrayRef {
    if idx.len() == 1 {
        return raw.columns[idx[0]].clone();
    }
    let parts: Vec<ArrayRef> = idx.iter().map(|&i| as_text(&raw.columns[i])).collect();
    let parts: Vec<&StringArray> = parts.iter().map(|a| a.as_string::<i32>()).collect();
    let mut b = StringBuilder::with_capacity(raw.len(), raw.len() * 16);
    let mut s = String::new();
    for row in 0..raw.len() {
        s.clear();
        let mut any = false;
        for p in &parts {
            if p.is_valid(row) && !p.value(row).trim().is_empty() {
                if any {
                    s.push_str(join);
                }
                s.push_str(p.value(row).trim());
                any = true;
            }
        }
        if any { b.append_value(&s) } else { b.append_null() }
    }
    Arc::new(b.finish())
}

fn as_text(a: &ArrayRef) -> ArrayRef {
    match a.data_type() {
        DataType::Utf8 => a.clone(),
        // Casting any scalar type to text succeeds; nested types render as JSON-like text.
        _ => cast(a, &DataType::Utf8).unwrap_or_else(|_| Arc::new(StringArray::new_null(a.len()))),
    }
}

type Errors = Vec<(usize, String)>;

fn convert_column(
    m: &CheckedMapping,
    rule: &ColumnRule,
    source: Option<&ArrayRef>,
    n: usize,
) -> Result<(ArrayRef, Errors)> {
    let mut errors = Errors::new();
    // Typed fast paths for Parquet sources that already hold the target type.
    if let Some(src) = source
        && let Some(done) = typed_fast_path(m, rule, src, &mut errors)
    {
        return Ok((done, errors));
    }
    let text = source.map(as_text);
    let values = TextValues { m, rule, text: text.as_ref().map(|a| a.as_string::<i32>()) };
    let array = parse_column(&values, n, &mut errors)?;
    Ok((array, errors))
}

/// The values of one source column as text: trimmed, null markers as
/// missing, recoded by the rule's `values`.
struct TextValues<'a> {
    m: &'a CheckedMapping,
    rule: &'a ColumnRule,
    /// `None` when the column has no source (every value is missing).
    text: Option<&'a StringArray>,
}

impl<'a> TextValues<'a> {
    fn at(&self, i: usize) -> Option<&'a str> {
        let t = self.text?;
        if t.is_null(i) {
            return None;
        }
        let v = t.value(i).trim();
        if self.m.null_values.iter().any(|nv| nv == v) {
            return None;
        }
        Some(match self.rule.values.get(v) {
            Some(mapped) => mapped.as_str(),
            None => v,
        })
    }
}

/// The column of `n` values parsed into the rule's type, with the checks
/// of the type and the rule (range, scale), the default where missing.
fn parse_column(values: &TextValues<'_>, n: usize, errors: &mut Errors) -> Result<ArrayRef> {
    let (m, rule) = (values.m, values.rule);
    Ok(match rule.ty {
        ColumnType::Text => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Text(s) => Ok(s.clone()),
                _ => Err("is not text".to_string()),
            };
            fill(values, n, from_default, |v| Ok(v.to_string()), errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        ColumnType::Int32 => {
            let mut b = Int32Builder::with_capacity(n);
            let parse = |v: &str| {
                parse_int(v, rule.scale).and_then(|x| {
                    let x = i32::try_from(x).map_err(|_| format!("{x} is out of range for a 32-bit integer"))?;
                    check_int(m, rule, x as i64)?;
                    Ok(x)
                })
            };
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Int(i) => Ok(*i as i32),
                _ => Err("is not an integer".to_string()),
            };
            fill(values, n, from_default, parse, errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        ColumnType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Int(i) => Ok(*i),
                _ => Err("is not an integer".to_string()),
            };
            fill(values, n, from_default, |v| parse_int(v, rule.scale), errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        ColumnType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            let parse = |v: &str| parse_float(v, rule.scale).and_then(|x| check_float(m, rule, x).map(|_| x));
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Float(f) => Ok(*f),
                _ => Err("is not a number".to_string()),
            };
            fill(values, n, from_default, parse, errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        ColumnType::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Bool(b) => Ok(*b),
                _ => Err("is not a boolean".to_string()),
            };
            fill(values, n, from_default, parse_bool, errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            let parse = |v: &str| parse_timestamp(v, &rule.format, rule.zone).and_then(check_timestamp);
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Parsed(s) => parsed_default(s, ColumnType::Timestamp, rule.zone),
                _ => Err("is not a timestamp".to_string()),
            };
            fill(values, n, from_default, parse, errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        // No input column is binary; raw bytes of the text, should one ever be.
        ColumnType::Binary => {
            let mut b = arrow::array::BinaryBuilder::with_capacity(n, n * 8);
            let from_default =
                |_: &DefaultValue| -> std::result::Result<Vec<u8>, String> { Err("is not bytes".into()) };
            fill(values, n, from_default, |v| Ok(v.as_bytes().to_vec()), errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
        ColumnType::Date => {
            let mut b = Date32Builder::with_capacity(n);
            let parse = |v: &str| parse_date(v, &rule.format).and_then(check_date);
            let from_default = |d: &DefaultValue| match d {
                DefaultValue::Parsed(s) => parsed_default(s, ColumnType::Date, rule.zone).map(|d| d as i32),
                _ => Err("is not a date".to_string()),
            };
            fill(values, n, from_default, parse, errors, |x| b.append_option(x))?;
            Arc::new(b.finish())
        }
    })
}

/// Appends the `n` values parsed by `parse` (`None` and an error for a
/// value that does not parse), the default (from the rule's `default` by
/// `from_default`) where a value is missing, and `None` where there is no
/// default (an error when the column is required and not generated).
fn fill<T: Clone>(
    values: &TextValues<'_>,
    n: usize,
    from_default: impl Fn(&DefaultValue) -> std::result::Result<T, String>,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
    errors: &mut Errors,
    mut append: impl FnMut(Option<T>),
) -> Result<()> {
    let rule = values.rule;
    let default = match &rule.default {
        None => None,
        Some(d) => Some(from_default(d).map_err(|msg: String| Error::Mapping {
            path: None,
            message: format!("columns.{}: `default` {msg}", rule.name),
        })?),
    };
    for i in 0..n {
        match values.at(i) {
            Some(v) => match parse(v) {
                Ok(x) => append(Some(x)),
                Err(msg) => {
                    errors.push((i, msg));
                    append(None);
                }
            },
            None => match &default {
                Some(x) => append(Some(x.clone())),
                None => {
                    if rule.required && !rule.sequence {
                        errors.push((i, "required value is missing".to_string()));
                    }
                    append(None);
                }
            },
        }
    }
    Ok(())
}

/// Parquet columns that already have the warehouse type skip text parsing,
/// but still get null handling, defaults and the same checks.
fn typed_fast_path(m: &CheckedMapping, rule: &ColumnRule, src: &ArrayRef, errors: &mut Errors) -> Option<ArrayRef> {
    if !rule.values.is_empty() || rule.scale.is_some() || rule.default.is_some() {
        return None;
    }
    let want = rule.ty.arrow();
    let array: ArrayRef = match (rule.ty, src.data_type()) {
        (_, t) if *t == want => src.clone(),
        (ColumnType::Timestamp, DataType::Timestamp(_, Some(_))) => cast(src, &want).ok()?,
        (
            ColumnType::Int64,
            DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::UInt32 | DataType::UInt16 | DataType::UInt8,
        ) => cast(src, &want).ok()?,
        (ColumnType::Float64, DataType::Float32 | DataType::Int32 | DataType::Int64) => cast(src, &want).ok()?,
        (ColumnType::Int32, DataType::Int16 | DataType::Int8 | DataType::UInt8 | DataType::UInt16) => {
            cast(src, &want).ok()?
        }
        _ => return None,
    };
    for i in 0..array.len() {
        if array.is_null(i) {
            if rule.required {
                errors.push((i, "required value is missing".into()));
            }
            continue;
        }
        let check = match rule.ty {
            ColumnType::Int32 => {
                check_int(m, rule, array.as_primitive::<arrow::datatypes::Int32Type>().value(i) as i64)
            }
            ColumnType::Float64 => {
                let x = array.as_primitive::<arrow::datatypes::Float64Type>().value(i);
                if x.is_finite() { check_float(m, rule, x) } else { Err(format!("{x} is not a finite number")) }
            }
            ColumnType::Timestamp => {
                check_timestamp(array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(i)).map(|_| ())
            }
            ColumnType::Date => check_date(array.as_primitive::<arrow::datatypes::Date32Type>().value(i)).map(|_| ()),
            ColumnType::Text => {
                let v = array.as_string::<i32>().value(i).trim();
                if rule.required && m.null_values.iter().any(|nv| nv == v) {
                    Err("required value is missing".into())
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        };
        if let Err(msg) = check {
            errors.push((i, msg));
        }
    }
    if rule.ty == ColumnType::Text {
        // Trim and null markers need a rebuilt array; only when something would change.
        let s = array.as_string::<i32>();
        let needs = (0..s.len()).any(|i| {
            s.is_valid(i) && {
                let v = s.value(i);
                v.trim().len() != v.len() || m.null_values.iter().any(|nv| nv == v)
            }
        });
        if needs {
            return None;
        }
    }
    Some(array)
}

// ---------------------------------------------------------------- parsers

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

fn check_int(m: &CheckedMapping, rule: &ColumnRule, x: i64) -> std::result::Result<(), String> {
    if m.table != Table::Orders {
        return Ok(());
    }
    match rule.name {
        "quantity" if x <= 0 && !m.allow_returns => {
            Err(format!("quantity must be positive, got {x} (returns need options.allow_returns = true)"))
        }
        "quantity" if x == 0 => Err("quantity must not be zero".into()),
        "line_no" if x < 0 => Err(format!("line_no must not be negative, got {x}")),
        _ => Ok(()),
    }
}

fn check_float(m: &CheckedMapping, rule: &ColumnRule, x: f64) -> std::result::Result<(), String> {
    if m.table != Table::Orders {
        return Ok(());
    }
    match rule.name {
        "amount" if x.abs() > m.max_amount => {
            Err(format!("amount {x} exceeds the maximum of {} (options.max_amount)", m.max_amount))
        }
        "amount" if x < 0.0 && !m.allow_returns => {
            Err(format!("amount must not be negative, got {x} (returns need options.allow_returns = true)"))
        }
        "discount" if x < 0.0 => Err(format!("discount must not be negative, got {x}")),
        "discount" if x.abs() > m.max_amount => {
            Err(format!("discount {x} exceeds the maximum of {} (options.max_amount)", m.max_amount))
        }
        _ => Ok(()),
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

fn check_timestamp(us: i64) -> std::result::Result<i64, String> {
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

fn check_date(days: i32) -> std::result::Result<i32, String> {
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
    use super::*;
    use crate::mapping::Mapping;
    use proptest::prelude::*;

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

    #[test]
    fn converter_keeps_good_rows_and_names_the_column() {
        let mapping = Mapping::parse("[columns]\namount = \"SALES\"").unwrap().check(Table::Orders).unwrap();
        let headers: Vec<String> =
            ["order_id", "line_no", "member_id", "ordered_at", "channel", "sku", "quantity", "SALES"]
                .map(String::from)
                .to_vec();
        let rows: [[&str; 8]; 4] = [
            ["o1", "1", "m1", "2026-01-01 10:00:00", "store", "s1", "2", "9.5"],
            ["o1", "2", "m1", "2026-01-01 10:00:00", "store", "s2", "-1", "3"],
            ["o2", "1", "m2", "not a time", "app", "s1", "1", "3"],
            ["o3", "1", "", "2026-01-02 10:00:00", "app", "s1", "1", "NaN"],
        ];
        let columns: Vec<ArrayRef> = (0..8)
            .map(|c| Arc::new(StringArray::from(rows.iter().map(|r| r[c]).collect::<Vec<_>>())) as ArrayRef)
            .collect();
        let raw = RawBatch { headers: Arc::new(headers.clone()), columns, rows: vec![2, 3, 4, 5], rejects: vec![] };
        let bindings = mapping.bind(&headers).unwrap();
        let out = Converter::new(&mapping).convert(&raw, &bindings).unwrap();
        assert_eq!(out.rows, [2]);
        assert_eq!(out.batch.num_rows(), 1);
        let got: Vec<(u64, Option<String>, String)> =
            out.rejects.iter().map(|r| (r.row, r.column.clone(), r.reason.clone())).collect();
        assert_eq!(
            got,
            [
                (3, Some("quantity".into()), "quantity must be positive, got -1 (returns need options.allow_returns = true)".into()),
                (4, Some("ordered_at".into()), "\"not a time\" is not a timestamp (expected e.g. 2026-03-01T10:15:00Z or 2026-03-01 10:15:00; set a `format` in the mapping for other layouts)".into()),
                (5, Some("member_id".into()), "required value is missing".into()),
            ]
        );
        // Defaults filled: discount 0, coupon_used false.
        let b = &out.batch;
        assert_eq!(b.column_by_name("discount").unwrap().as_primitive::<arrow::datatypes::Float64Type>().value(0), 0.0);
        assert!(!b.column_by_name("coupon_used").unwrap().as_boolean().value(0));
        assert_eq!(
            out.rejects[0].raw.as_deref(),
            Some(
                "order_id=o1, line_no=2, member_id=m1, ordered_at=2026-01-01 10:00:00, channel=store, sku=s2, quantity=-1, SALES=3"
            )
        );
    }

    #[test]
    fn sequence_numbers_lines_per_order_across_batches() {
        let mapping = Mapping::parse("[columns]\nline_no = { sequence = true }\nchannel = { default = \"store\" }")
            .unwrap()
            .check(Table::Orders)
            .unwrap();
        let headers: Vec<String> =
            ["order_id", "member_id", "ordered_at", "sku", "quantity", "amount"].map(String::from).to_vec();
        let mk = |ids: &[&str]| {
            let col = |v: &str| Arc::new(StringArray::from(vec![v; ids.len()])) as ArrayRef;
            RawBatch {
                headers: Arc::new(headers.clone()),
                columns: vec![
                    Arc::new(StringArray::from(ids.to_vec())),
                    col("m"),
                    col("2026-01-01"),
                    col("s"),
                    col("1"),
                    col("1"),
                ],
                rows: (0..ids.len() as u64).collect(),
                rejects: vec![],
            }
        };
        let bindings = mapping.bind(&headers).unwrap();
        let mut conv = Converter::new(&mapping);
        let a = conv.convert(&mk(&["a", "a", "b"]), &bindings).unwrap();
        let b = conv.convert(&mk(&["a", "b"]), &bindings).unwrap();
        let lines = |c: &Converted| {
            c.batch.column_by_name("line_no").unwrap().as_primitive::<arrow::datatypes::Int32Type>().values().to_vec()
        };
        assert_eq!(lines(&a), [1, 2, 1]);
        assert_eq!(lines(&b), [3, 2]);
        assert_eq!(a.batch.column_by_name("channel").unwrap().as_string::<i32>().value(0), "store");
    }
}
