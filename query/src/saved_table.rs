//! The `audiences` table: saved audiences as rows, read back as their
//! history and as the definitions that stand (see [`crate::saved`] for
//! what a saved audience is). Apart from `saved` so that the tag set,
//! which carries the standing definitions for `audience:NAME`, reads them
//! without depending on the parser that checks a new one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use taglake_storage::{Table, Warehouse};

use crate::registry::{from_micros, micros};
use crate::{Error, Result};

/// Longest name of a saved audience.
pub const MAX_NAME: usize = 64;

/// Longest description of a saved audience.
pub const MAX_DESCRIPTION: usize = 1_000;

/// Longest expression of a saved audience (one typed or built by a person
/// is far shorter).
pub const MAX_EXPRESSION: usize = 10_000;

/// One save of a saved audience.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The audience's name (`vip_beauty`).
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The audience expression; `None` when this save removed the name.
    pub expression: Option<String>,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
    /// Who saved it (a studio user), when known.
    pub saved_by: Option<String>,
}

/// A saved audience as it stands: its latest save.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedAudience {
    /// The audience's name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The audience expression.
    pub expression: String,
    /// When it was last saved.
    pub saved_at: DateTime<Utc>,
    /// Who last saved it, when known.
    pub saved_by: Option<String>,
    /// How many times it was saved.
    pub revisions: usize,
}

/// Checks a saved audience's name: 1 to [`MAX_NAME`] lower-case letters,
/// digits and `_`, starting with a letter (it is written `audience:NAME`).
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let first_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let allowed = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if name.is_empty() {
        Err("the name is empty: give lower-case letters, digits and `_`, e.g. vip_beauty".into())
    } else if name.chars().count() > MAX_NAME {
        Err(format!("the name is longer than {MAX_NAME} characters"))
    } else if !first_letter || !allowed {
        Err(format!("`{name}` is not a name: use lower-case letters, digits and `_`, starting with a letter"))
    } else {
        Ok(())
    }
}

/// Every save of every saved audience, oldest first.
pub async fn history(wh: &Warehouse) -> Result<Vec<Revision>> {
    let t = Table::Audiences;
    if wh.version(t).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for b in wh.read(t, None).await? {
        let s = |name: &str| b.column_by_name(name).expect("audiences column").as_string::<i32>().clone();
        let (names, descriptions, expressions, by) = (s("name"), s("description"), s("expression"), s("saved_by"));
        let at = b.column_by_name("saved_at").expect("audiences column").as_primitive::<TimestampMicrosecondType>();
        let text = |a: &arrow::array::StringArray, r: usize| (!a.is_null(r)).then(|| a.value(r).to_string());
        for r in 0..b.num_rows() {
            out.push(Revision {
                name: names.value(r).to_string(),
                description: text(&descriptions, r),
                expression: text(&expressions, r),
                saved_at: from_micros(at.value(r)),
                saved_by: text(&by, r),
            });
        }
    }
    // Stable: saves with the same time keep the table's order.
    out.sort_by_key(|r| r.saved_at);
    Ok(out)
}

/// The saved audiences as they stand, by name (removed ones left out).
pub async fn list(wh: &Warehouse) -> Result<Vec<SavedAudience>> {
    Ok(standing(history(wh).await?))
}

/// The saved audiences as they stand after `history` (oldest first), by name.
pub fn standing(history: Vec<Revision>) -> Vec<SavedAudience> {
    let mut latest: HashMap<String, (Revision, usize)> = HashMap::new();
    for r in history {
        let n = latest.get(&r.name).map_or(0, |(_, n)| *n) + 1;
        latest.insert(r.name.clone(), (r, n));
    }
    let mut out: Vec<SavedAudience> = latest
        .into_values()
        .filter_map(|(r, revisions)| {
            Some(SavedAudience {
                expression: r.expression?,
                name: r.name,
                description: r.description,
                saved_at: r.saved_at,
                saved_by: r.saved_by,
                revisions,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Name → expression of the saved audiences as they stand (what
/// `audience:NAME` expands to).
pub async fn current(wh: &Warehouse) -> Result<HashMap<String, String>> {
    Ok(list(wh).await?.into_iter().map(|a| (a.name, a.expression)).collect())
}

/// Removes the saved audience `name` (its history stays). Fails when no
/// audience of that name stands.
pub async fn remove(wh: &Warehouse, name: &str, removed_by: Option<&str>) -> Result<()> {
    let standing = list(wh).await?;
    if !standing.iter().any(|a| a.name == name) {
        let hint = taglake_base::suggest(name, standing.iter().map(|a| a.name.as_str()))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(Error::Invalid(format!("no saved audience `{name}`{hint}")));
    }
    append(wh, name, None, None, removed_by).await?;
    Ok(())
}

/// Appends one row (one Delta commit); returns its `saved_at`.
pub(crate) async fn append(
    wh: &Warehouse,
    name: &str,
    description: Option<&str>,
    expression: Option<&str>,
    saved_by: Option<&str>,
) -> Result<DateTime<Utc>> {
    let now = Utc::now();
    let text = |v: Option<&str>| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let columns: Vec<ArrayRef> = vec![
        text(Some(name)),
        text(description),
        text(expression),
        Arc::new(TimestampMicrosecondArray::from(vec![micros(now)]).with_timezone("UTC")),
        text(saved_by),
    ];
    let batch = RecordBatch::try_new(Table::Audiences.arrow_schema(), columns)
        .map_err(|e| Error::Corrupt(format!("saved audience row: {e}")))?;
    let mut w = wh.append(Table::Audiences).await?;
    w.write(batch).await?;
    w.commit().await?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(name: &str, expression: Option<&str>, at: i64) -> Revision {
        Revision {
            name: name.into(),
            description: None,
            expression: expression.map(str::to_string),
            saved_at: from_micros(at),
            saved_by: None,
        }
    }

    #[test]
    fn the_latest_save_stands_and_a_removal_hides_the_name() {
        let h = vec![
            revision("a", Some("tier_gold"), 1),
            revision("b", Some("tier_regular"), 2),
            revision("a", Some("NOT tier_gold"), 3),
            revision("b", None, 4),
            revision("c", None, 5),
        ];
        let s = standing(h);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].name.as_str(), s[0].expression.as_str(), s[0].revisions), ("a", "NOT tier_gold", 2));
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "vip_beauty", "q4_2026"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "VIP", "4q", "_x", "a-b", "a b", "café", &"a".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
