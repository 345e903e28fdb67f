//! Conditions on member attributes inside audience expressions:
//! `city = 'Shanghai'`, `points_balance >= 1000`,
//! `registered_at < '2024-01-01'`, `gender IN ('F', 'U')`,
//! `birthday IS NULL`.
//!
//! A marketer's audience mixes tags with who the members are, and the
//! audience must mean the same in the CLI, SQL `audience('…')`, an export,
//! a saved audience and the studio. So a condition is not a SQL filter
//! bolted on beside the tags: it is evaluated once per tag set into a
//! bitmap of member keys (one scan of `member_key` and the column over the
//! `members` files the tag set was opened on, so it agrees with the
//! universe), and from then on it is an operand of the same bitmap
//! algebra as a tag. [`crate::tagset::TagSet::attribute`] keeps the
//! evaluated conditions (at most [`KEPT`]), so a builder that recounts
//! after every keystroke scans once per condition, not once per count.
//!
//! Meaning, chosen for people who think in sets of members:
//! - A member whose value is missing (null) matches no comparison, not
//!   `!=` and not `NOT IN` either; `IS NULL` finds them. `NOT (city =
//!   'Shanghai')` is everyone else, members without a city included,
//!   as `NOT tag` is everyone without the tag.
//! - Text compares exactly (case and spaces count), in byte order for
//!   `<` and `>`.
//! - A date written for a timestamp column means that whole day (UTC):
//!   `registered_at = '2024-03-01'` is any time that day,
//!   `registered_at <= '2024-03-01'` includes it, `> '2024-03-01'` starts
//!   the next day. A full RFC 3339 time means that instant.
//! - Values are written as SQL writes them: text, dates and times in
//!   single quotes (`''` for a quote inside), integers bare.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, Utc};
use roaring::RoaringBitmap;
use taglake_storage::Table;
use taglake_storage::scan::{Wanted, scan};
use taglake_storage::schema::{Column, ColumnType};

use crate::bits::Bits;
use crate::{Error, Result};

/// Evaluated conditions a tag set keeps (each a bitmap of at most one bit
/// per member: ~5 MiB at 42 M members when dense).
pub const KEPT: usize = 32;

/// Most values one `IN ( … )` list may hold.
pub const MAX_VALUES: usize = 1_000;

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `!=` (or `<>`)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `IN ( … )`
    In,
    /// `NOT IN ( … )`
    NotIn,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    IsNotNull,
}

impl Cmp {
    /// The operator as written in an expression.
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::In => "IN",
            Cmp::NotIn => "NOT IN",
            Cmp::IsNull => "IS NULL",
            Cmp::IsNotNull => "IS NOT NULL",
        }
    }

    /// Every operator, in the order a form offers them.
    pub const ALL: [Cmp; 10] =
        [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::In, Cmp::NotIn, Cmp::IsNull, Cmp::IsNotNull];

    /// The operator whose [`Cmp::symbol`] is `s` (`<>` is `!=`).
    pub fn from_symbol(s: &str) -> Option<Cmp> {
        let s = s.trim();
        if s == "<>" {
            return Some(Cmp::Ne);
        }
        Cmp::ALL.into_iter().find(|c| c.symbol().eq_ignore_ascii_case(s))
    }

    /// How many values it takes: none, exactly one, or a list.
    pub fn arity(self) -> Arity {
        match self {
            Cmp::IsNull | Cmp::IsNotNull => Arity::None,
            Cmp::In | Cmp::NotIn => Arity::List,
            _ => Arity::One,
        }
    }
}

/// How many values an operator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// `IS NULL`, `IS NOT NULL`.
    None,
    /// A comparison.
    One,
    /// `IN`, `NOT IN`: one or more.
    List,
}

/// A value as written: in single quotes, or bare (a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// `'…'`, with `''` read as one quote.
    Quoted(String),
    /// Digits with an optional sign.
    Bare(String),
}

impl Literal {
    /// The value as it was written (quoted again when it was).
    fn written(&self) -> String {
        match self {
            Literal::Bare(s) => s.clone(),
            Literal::Quoted(s) => quote(s),
        }
    }
}

/// Why a condition is refused: the message, and which value it is about
/// (`None`: the column or the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The value at fault, by position in the list given.
    pub value: Option<usize>,
    /// What is wrong, in the words the CLI prints.
    pub message: String,
}

fn refused(value: Option<usize>, message: String) -> Refused {
    Refused { value, message }
}

/// The values a condition compares with, in the column's terms.
#[derive(Debug, Clone)]
enum Values {
    /// Text values.
    Text(Vec<String>),
    /// Half-open ranges `[lo, hi)` of an ordered column's values (an
    /// integer, a day, an instant or a whole day of instants).
    Ranges(Vec<(i128, i128)>),
}

/// One checked condition on a `members` column. Two conditions are equal
/// when their canonical texts are: the text determines the rest.
#[derive(Debug, Clone)]
pub struct Condition {
    column: &'static Column,
    cmp: Cmp,
    values: Values,
    /// The values as written back.
    shown: Vec<String>,
    text: String,
}

impl PartialEq for Condition {
    fn eq(&self, other: &Condition) -> bool {
        self.text == other.text
    }
}

/// The `members` columns a condition may name (all but `member_key`,
/// which is taglake's own).
pub fn columns() -> impl Iterator<Item = &'static Column> {
    Table::Members.columns().iter().filter(|c| c.input)
}

/// The column `name`, or the error that lists them.
pub fn column(name: &str) -> std::result::Result<&'static Column, String> {
    let lower = name.to_ascii_lowercase();
    columns().find(|c| c.name == lower).ok_or_else(|| {
        let names: Vec<&str> = columns().map(|c| c.name).collect();
        let hint = taglake_base::suggest(&lower, names.iter().copied())
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        format!("`{name}` is not a member attribute; {hint}(attributes: {})", names.join(", "))
    })
}

impl Condition {
    /// Checks `column cmp values`: the column is a member attribute, the
    /// operator takes that many values, and each value is written as the
    /// column's type needs.
    pub fn new(column_name: &str, cmp: Cmp, values: &[Literal]) -> std::result::Result<Condition, Refused> {
        let column = column(column_name).map_err(|m| refused(None, m))?;
        let name = column.name;
        match (cmp.arity(), values.len()) {
            (Arity::None, 0) | (Arity::One, 1) => {}
            (Arity::List, n) if (1..=MAX_VALUES).contains(&n) => {}
            (Arity::List, 0) => {
                return Err(refused(None, format!("`{name} {}` needs at least one value", cmp.symbol())));
            }
            (Arity::List, n) => {
                return Err(refused(
                    Some(MAX_VALUES),
                    format!("`{name} {}` lists {n} values; an audience takes at most {MAX_VALUES}", cmp.symbol()),
                ));
            }
            (Arity::None, _) => {
                return Err(refused(Some(0), format!("`{name} {}` takes no value", cmp.symbol())));
            }
            (Arity::One, _) => {
                return Err(refused(None, format!("`{name} {}` compares with one value", cmp.symbol())));
            }
        }
        let mut shown = Vec::with_capacity(values.len());
        let values = match column.ty {
            ColumnType::Text => {
                let mut out = Vec::with_capacity(values.len());
                for (i, v) in values.iter().enumerate() {
                    match v {
                        Literal::Quoted(s) => {
                            shown.push(quote(s));
                            out.push(s.clone());
                        }
                        Literal::Bare(s) => {
                            return Err(refused(
                                Some(i),
                                format!("`{name}` is text: write the value in single quotes, as '{s}'"),
                            ));
                        }
                    }
                }
                Values::Text(out)
            }
            ColumnType::Int32 | ColumnType::Int64 => {
                let mut out = Vec::with_capacity(values.len());
                for (i, v) in values.iter().enumerate() {
                    let n = match v {
                        Literal::Bare(s) => s.parse::<i64>().ok(),
                        Literal::Quoted(_) => None,
                    };
                    let Some(n) = n else {
                        return Err(refused(
                            Some(i),
                            format!("`{name}` is an integer: write a whole number without quotes, not {}", v.written()),
                        ));
                    };
                    shown.push(n.to_string());
                    out.push((i128::from(n), i128::from(n) + 1));
                }
                Values::Ranges(out)
            }
            ColumnType::Date | ColumnType::Timestamp => {
                let timestamp = column.ty == ColumnType::Timestamp;
                let mut out = Vec::with_capacity(values.len());
                for (i, v) in values.iter().enumerate() {
                    let (range, text) = match v {
                        Literal::Quoted(s) => moment(s, timestamp),
                        Literal::Bare(_) => None,
                    }
                    .ok_or_else(|| {
                        let example = if timestamp {
                            "'2024-03-01' (that whole day, UTC) or '2024-03-01T09:30:00Z'"
                        } else {
                            "'2024-03-01'"
                        };
                        refused(
                            Some(i),
                            format!(
                                "`{name}` is {}: write it in quotes as {example}, not {}",
                                column.ty.describe(),
                                v.written()
                            ),
                        )
                    })?;
                    shown.push(text);
                    out.push(range);
                }
                Values::Ranges(out)
            }
            other => {
                return Err(refused(None, format!("`{name}` is {}: audiences cannot compare it", other.describe())));
            }
        };
        let text = write(name, cmp, &shown);
        Ok(Condition { column, cmp, values, shown, text })
    }

    /// The column it names.
    pub fn column(&self) -> &'static str {
        self.column.name
    }

    /// The operator.
    pub fn cmp(&self) -> Cmp {
        self.cmp
    }

    /// The values as written back (quoted where the column needs quotes).
    pub fn values_text(&self) -> Vec<String> {
        self.shown.clone()
    }

    /// The condition as an audience expression writes it (its canonical
    /// text: the same condition always reads back as the same text).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a value (its text) matches.
    fn text_matches(&self, v: &str) -> bool {
        let Values::Text(values) = &self.values else { return false };
        match self.cmp {
            Cmp::Eq | Cmp::In => values.iter().any(|a| a == v),
            Cmp::Ne | Cmp::NotIn => values.iter().all(|a| a != v),
            Cmp::Lt => v < values[0].as_str(),
            Cmp::Le => v <= values[0].as_str(),
            Cmp::Gt => v > values[0].as_str(),
            Cmp::Ge => v >= values[0].as_str(),
            Cmp::IsNull => false,
            Cmp::IsNotNull => true,
        }
    }

    /// Whether an ordered value matches.
    fn ordered_matches(&self, x: i128) -> bool {
        let Values::Ranges(ranges) = &self.values else { return false };
        let within = |(lo, hi): &(i128, i128)| *lo <= x && x < *hi;
        match self.cmp {
            Cmp::Eq | Cmp::In => ranges.iter().any(within),
            Cmp::Ne | Cmp::NotIn => !ranges.iter().any(within),
            Cmp::Lt => x < ranges[0].0,
            Cmp::Le => x < ranges[0].1,
            Cmp::Gt => x >= ranges[0].1,
            Cmp::Ge => x >= ranges[0].0,
            Cmp::IsNull => false,
            Cmp::IsNotNull => true,
        }
    }

    /// The keys of the rows of `members` (its data files `files`) that
    /// match: one parallel scan of `member_key` and the column.
    pub fn evaluate(&self, files: &[PathBuf]) -> Result<RoaringBitmap> {
        let t = Table::Members;
        let value = match self.column.ty {
            // Dictionaries: a city is compared once per batch, not once per member.
            ColumnType::Text => Wanted {
                name: self.column.name.to_string(),
                ty: DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                optional: false,
            },
            _ => Wanted { name: self.column.name.to_string(), ty: self.column.ty.arrow(), optional: false },
        };
        let parts = Mutex::new(Vec::new());
        scan::<_, Error>(t, files, &[Wanted::plain(t, "member_key"), value], |b| {
            let keys = b.column(0).as_primitive::<Int64Type>();
            let values = b.column(1);
            let mut found = RoaringBitmap::new();
            let mut keep = |row: usize| -> Result<()> {
                found.insert(member_key(keys.value(row))?);
                Ok(())
            };
            let nulls_match = self.cmp == Cmp::IsNull;
            if let Some(dict) = values.as_dictionary_opt::<Int32Type>() {
                // Each distinct text is compared once per batch.
                let words = dict.values().as_string::<i32>();
                let verdict: Vec<bool> =
                    (0..words.len()).map(|i| words.is_valid(i) && self.text_matches(words.value(i))).collect();
                for (row, code) in dict.keys().iter().enumerate() {
                    let hit = match code {
                        None => nulls_match,
                        Some(code) => !nulls_match && verdict.get(code as usize).copied().unwrap_or(false),
                    };
                    if hit && !keys.is_null(row) {
                        keep(row)?;
                    }
                }
            } else {
                let ordered: Box<dyn Fn(usize) -> i128> = match values.data_type() {
                    DataType::Int64 => Box::new(|r| i128::from(values.as_primitive::<Int64Type>().value(r))),
                    DataType::Int32 => Box::new(|r| i128::from(values.as_primitive::<Int32Type>().value(r))),
                    DataType::Date32 => Box::new(|r| i128::from(values.as_primitive::<Date32Type>().value(r))),
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        Box::new(|r| i128::from(values.as_primitive::<TimestampMicrosecondType>().value(r)))
                    }
                    other => {
                        return Err(Error::Corrupt(format!(
                            "members column `{}` arrived as {other}, not {}",
                            self.column.name,
                            self.column.ty.describe()
                        )));
                    }
                };
                for row in 0..b.num_rows() {
                    let hit = if values.is_null(row) {
                        nulls_match
                    } else {
                        !nulls_match && self.ordered_matches(ordered(row))
                    };
                    if hit && !keys.is_null(row) {
                        keep(row)?;
                    }
                }
            }
            parts.lock().expect("condition parts").push(found);
            Ok(())
        })?;
        Ok(parts.into_inner().expect("condition parts").into_iter().fold(RoaringBitmap::new(), |a, b| a | b))
    }
}

/// `column cmp values` as an expression writes it, the values as given
/// (one, a parenthesised list, or none, as `cmp` takes them).
pub fn write(column: &str, cmp: Cmp, values: &[String]) -> String {
    match cmp.arity() {
        Arity::None => format!("{column} {}", cmp.symbol()),
        Arity::One => format!("{column} {} {}", cmp.symbol(), values.first().map_or("", String::as_str)),
        Arity::List => format!("{column} {} ({})", cmp.symbol(), values.join(", ")),
    }
}

/// Whether values of `column` are written in quotes (all but integers).
pub fn quoted(column: &Column) -> bool {
    !matches!(column.ty, ColumnType::Int32 | ColumnType::Int64)
}

/// A `member_key` of `members` as the bitmaps hold it (dense keys fit
/// 32 bits; one that does not is damage). Here, below the tag set, which
/// reads the universe with it too.
pub(crate) fn member_key(k: i64) -> Result<u32> {
    u32::try_from(k).map_err(|_| Error::Corrupt(format!("members has a member_key out of range: {k}")))
}

/// `s` in single quotes, inner quotes doubled.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A date or time written for a date (`timestamp` false) or timestamp
/// column: the range of stored values it stands for and its canonical text.
fn moment(s: &str, timestamp: bool) -> Option<((i128, i128), String)> {
    let s = s.trim();
    const DAY_MICROS: i128 = 86_400_000_000;
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let days = i128::from(d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days());
        let text = quote(&d.format("%Y-%m-%d").to_string());
        return Some(if timestamp {
            ((days * DAY_MICROS, (days + 1) * DAY_MICROS), text)
        } else {
            ((days, days + 1), text)
        });
    }
    if !timestamp {
        return None;
    }
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    let micros = i128::from(t.timestamp_micros());
    Some(((micros, micros + 1), quote(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))))
}

/// A condition and, once a count needed it, its members as containers.
pub struct Attribute {
    condition: Condition,
    bits: OnceLock<Bits>,
}

impl std::fmt::Debug for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attribute({})", self.condition.text)
    }
}

impl PartialEq for Attribute {
    fn eq(&self, other: &Attribute) -> bool {
        self.condition == other.condition
    }
}

impl Attribute {
    /// A condition not evaluated yet.
    pub fn new(condition: Condition) -> Attribute {
        Attribute { condition, bits: OnceLock::new() }
    }

    /// The condition.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// The members of `files` that match, scanned on first use.
    pub fn bits(&self, files: &[PathBuf]) -> Result<&Bits> {
        if let Some(b) = self.bits.get() {
            return Ok(b);
        }
        let b = Bits::from_roaring(&self.condition.evaluate(files)?);
        Ok(self.bits.get_or_init(|| b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Literal {
        Literal::Quoted(s.into())
    }

    fn b(s: &str) -> Literal {
        Literal::Bare(s.into())
    }

    #[test]
    fn conditions_are_checked_and_written_back_canonically() {
        let c = Condition::new("City", Cmp::Eq, &[q("O'Hare")]).unwrap();
        assert_eq!(c.text(), "city = 'O''Hare'");
        assert_eq!(c.values_text(), ["'O''Hare'"]);
        let c = Condition::new("points_balance", Cmp::Ge, &[b("-20")]).unwrap();
        assert_eq!(c.text(), "points_balance >= -20");
        let c = Condition::new("gender", Cmp::In, &[q("F"), q("a, b")]).unwrap();
        assert_eq!(c.text(), "gender IN ('F', 'a, b')");
        assert_eq!(c.values_text(), ["'F'", "'a, b'"]);
        let c = Condition::new("registered_at", Cmp::Lt, &[q("2024-03-01")]).unwrap();
        assert_eq!(c.text(), "registered_at < '2024-03-01'");
        let c = Condition::new("registered_at", Cmp::Ge, &[q("2024-03-01T09:30:00+01:00")]).unwrap();
        assert_eq!(c.text(), "registered_at >= '2024-03-01T08:30:00Z'");
        assert_eq!(Condition::new("birthday", Cmp::IsNull, &[]).unwrap().text(), "birthday IS NULL");
        assert!(Condition::new("birthday", Cmp::IsNull, &[]).unwrap().values_text().is_empty());
    }

    #[test]
    fn bad_conditions_say_what_to_write() {
        let e = Condition::new("cty", Cmp::Eq, &[q("x")]).unwrap_err();
        assert!(e.message.contains("did you mean `city`?"), "{}", e.message);
        assert!(Condition::new("member_key", Cmp::Eq, &[b("1")]).is_err(), "taglake's own key is not an attribute");
        let e = Condition::new("city", Cmp::Eq, &[b("Shanghai")]).unwrap_err();
        assert_eq!(e.value, Some(0));
        assert!(e.message.contains("write the value in single quotes, as 'Shanghai'"), "{}", e.message);
        let e = Condition::new("points_balance", Cmp::Gt, &[q("10")]).unwrap_err();
        assert!(e.message.contains("whole number without quotes"), "{}", e.message);
        let e = Condition::new("points_balance", Cmp::Gt, &[b("99999999999999999999")]).unwrap_err();
        assert!(e.message.contains("is an integer"), "{}", e.message);
        let e = Condition::new("birthday", Cmp::Lt, &[q("2024-02-30")]).unwrap_err();
        assert!(e.message.contains("'2024-03-01'"), "{}", e.message);
        let e = Condition::new("registered_at", Cmp::Lt, &[b("2024")]).unwrap_err();
        assert!(e.message.contains("is a timestamp"), "{}", e.message);
        assert!(Condition::new("city", Cmp::In, &[]).is_err());
        assert!(Condition::new("city", Cmp::Eq, &[q("a"), q("b")]).is_err());
        assert!(Condition::new("city", Cmp::IsNull, &[q("a")]).is_err());
        let many: Vec<Literal> = (0..=MAX_VALUES).map(|i| q(&i.to_string())).collect();
        assert!(Condition::new("city", Cmp::In, &many).unwrap_err().message.contains("at most 1000"));
    }

    #[test]
    fn a_day_on_a_timestamp_column_is_the_whole_day() {
        let day = 19_783i128; // 2024-03-01
        let micros = |d: i128, s: i128| d * 86_400_000_000 + s * 1_000_000;
        let at = |cmp, x| Condition::new("registered_at", cmp, &[q("2024-03-01")]).unwrap().ordered_matches(x);
        assert!(at(Cmp::Eq, micros(day, 0)) && at(Cmp::Eq, micros(day, 86_399)));
        assert!(!at(Cmp::Eq, micros(day, 86_400)) && !at(Cmp::Eq, micros(day, -1)));
        assert!(at(Cmp::Le, micros(day, 86_399)) && !at(Cmp::Le, micros(day, 86_400)));
        assert!(!at(Cmp::Gt, micros(day, 86_399)) && at(Cmp::Gt, micros(day, 86_400)));
        assert!(at(Cmp::Lt, micros(day, -1)) && !at(Cmp::Lt, micros(day, 0)));
        assert!(at(Cmp::Ge, micros(day, 0)) && !at(Cmp::Ge, micros(day, -1)));
        assert!(at(Cmp::Ne, micros(day, 86_400)) && !at(Cmp::Ne, micros(day, 5)));
        let birthday = |cmp, x| Condition::new("birthday", cmp, &[q("2024-03-01")]).unwrap().ordered_matches(x);
        assert!(
            birthday(Cmp::Eq, day)
                && !birthday(Cmp::Eq, day + 1)
                && birthday(Cmp::Le, day)
                && birthday(Cmp::Gt, day + 1)
        );
    }

    #[test]
    fn operators_read_back_from_their_symbols() {
        for c in Cmp::ALL {
            assert_eq!(Cmp::from_symbol(c.symbol()), Some(c));
        }
        assert_eq!(Cmp::from_symbol("<>"), Some(Cmp::Ne));
        assert_eq!(Cmp::from_symbol("not in"), Some(Cmp::NotIn));
        assert_eq!(Cmp::from_symbol("=="), None);
    }
}
