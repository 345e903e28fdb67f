//! Turning raw columns into canonical, validated columns.
//!
//! Each canonical column is converted independently (in parallel) from its
//! bound source columns: text is trimmed, null markers become missing,
//! values are recoded, parsed into the column's type, scaled, range-checked
//! and defaulted. Every failure is recorded against the row with a message
//! that names the value and what was expected; a row is rejected for the
//! first failing column in schema order and the rest of the batch is kept.
//! The parsers and range checks of single values are in `scalar`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::{cast, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use taglake_storage::{ColumnType, Table};

use crate::mapping::{Binding, CheckedMapping, ColumnRule, DefaultValue};
use crate::scalar::{check_date, check_timestamp, parsed_default};
pub use crate::scalar::{parse_bool, parse_date, parse_float, parse_int, parse_timestamp};
use crate::source::{self, RawBatch, RawBatches, ReadOptions, Reject};
use crate::{Error, Result};

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
            cause: None,
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
    if !rule.values.is_empty() || rule.scale.is_some() || matches!(rule.default, Some(DefaultValue::Parsed(_))) {
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
            if rule.required && rule.default.is_none() {
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
    match &rule.default {
        Some(d) if array.null_count() > 0 => with_default(&array, d),
        _ => Some(array),
    }
}

/// `array` with its missing values replaced by `default`, as the text path
/// fills them; `None` when the default is not of the array's type.
fn with_default(array: &ArrayRef, default: &DefaultValue) -> Option<ArrayRef> {
    use arrow::array::{BooleanArray, Float64Array, Int32Array, Int64Array, Scalar};
    let fill: ArrayRef = match (array.data_type(), default) {
        (DataType::Int32, DefaultValue::Int(x)) => Arc::new(Int32Array::from(vec![i32::try_from(*x).ok()?])),
        (DataType::Int64, DefaultValue::Int(x)) => Arc::new(Int64Array::from(vec![*x])),
        (DataType::Float64, DefaultValue::Float(x)) => Arc::new(Float64Array::from(vec![*x])),
        (DataType::Boolean, DefaultValue::Bool(b)) => Arc::new(BooleanArray::from(vec![*b])),
        (DataType::Utf8, DefaultValue::Text(t)) => Arc::new(StringArray::from(vec![t.as_str()])),
        _ => return None,
    };
    let present = arrow::compute::is_not_null(array.as_ref()).ok()?;
    arrow::compute::kernels::zip::zip(&present, array, &Scalar::new(fill)).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;

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

    proptest::proptest! {
        /// Typed Parquet-like columns (the fast path, defaults filled in
        /// place) convert exactly as the same values written as text.
        #[test]
        fn typed_columns_convert_as_their_text(
            rows in proptest::collection::vec(
                (
                    proptest::option::of(-3i32..5),
                    proptest::option::of(-1e3f64..1e3),
                    proptest::option::of(0f64..50.0),
                    proptest::option::of(proptest::bool::ANY),
                    proptest::option::of("[a-c ]{0,3}"),
                ),
                1..40,
            ),
        ) {
            use arrow::array::{BooleanArray, Float64Array, Int32Array};
            let mapping = CheckedMapping::canonical(Table::Orders);
            let headers: Vec<String> = ["order_id", "line_no", "member_id", "ordered_at", "channel", "sku", "quantity",
                "amount", "discount", "coupon_used"].map(String::from).to_vec();
            let n = rows.len();
            let text = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
            let fixed = |v: &str| text(vec![Some(v.to_string()); n]);
            let ids = text((0..n).map(|i| Some(format!("o{i}"))).collect());
            let shared = |ids: &ArrayRef, line: ArrayRef| {
                vec![ids.clone(), line, fixed("m1"), fixed("2026-01-01T10:00:00Z")]
            };
            let lines = Arc::new(Int32Array::from(vec![1; n])) as ArrayRef;
            let mut typed = shared(&ids, lines.clone());
            typed.extend([
                text(rows.iter().map(|r| r.4.clone()).collect()),
                fixed("s1"),
                Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef,
                Arc::new(Float64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            ]);
            let mut as_text = shared(&ids, text(vec![Some("1".into()); n]));
            as_text.extend([
                text(rows.iter().map(|r| r.4.clone()).collect()),
                fixed("s1"),
                text(rows.iter().map(|r| r.0.map(|x| x.to_string())).collect()),
                text(rows.iter().map(|r| r.1.map(|x| x.to_string())).collect()),
                text(rows.iter().map(|r| r.2.map(|x| x.to_string())).collect()),
                text(rows.iter().map(|r| r.3.map(|x| x.to_string())).collect()),
            ]);
            let batch = |columns| RawBatch {
                headers: Arc::new(headers.clone()),
                columns,
                rows: (1..=n as u64).collect(),
                rejects: vec![],
            };
            let bindings = mapping.bind(&headers).unwrap();
            let a = Converter::new(&mapping).convert(&batch(typed), &bindings).unwrap();
            let b = Converter::new(&mapping).convert(&batch(as_text), &bindings).unwrap();
            proptest::prop_assert_eq!(&a.batch, &b.batch);
            proptest::prop_assert_eq!(&a.rows, &b.rows);
            let shown = |c: &Converted| c.rejects.iter().map(|r| (r.row, r.column.clone(), r.reason.clone())).collect::<Vec<_>>();
            proptest::prop_assert_eq!(shown(&a), shown(&b));
        }
    }
}
