//! Saved audiences: named audience expressions kept in the warehouse, so a
//! marketer's "VIP beauty lovers" is written once and used everywhere an
//! audience is (`audience:vip_beauty` in the CLI, in SQL `audience('…')`,
//! on the server and in the studio).
//!
//! They live in the Delta table `audiences`, one row per save: a name's
//! current definition is its latest row, and the rows before it are its
//! history (who changed it, when, from what). Removing a name appends a
//! row without an expression, so the history survives the removal too.
//!
//! A saved audience stores its expression as text, not as members: it
//! follows the tags, so `audience:vip_beauty` in tomorrow's snapshot means
//! tomorrow's VIP beauty lovers. Its expression is checked when it is saved
//! (it must parse against the newest snapshot, and must not refer back to
//! itself through other saved audiences), and checked again wherever it is
//! used, with the error naming the saved audience.
//!
//! Saving does not take the warehouse writer lock: it allocates no id and
//! commits one table, and Delta never conflicts on two blind appends, so a
//! save made during a night's ingest lands at once instead of waiting for
//! it. Two saves of one name at once both land in the history; the one
//! with the later `saved_at` is current.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use taglake_storage::{Table, Warehouse};

use crate::registry::{from_micros, micros};
use crate::tagset::TagSet;
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

/// Saves `expression` as the audience `name` (a new one, or a new
/// revision of it), after checking the name, the description and the
/// expression against `tags` (the newest snapshot, with the saved
/// audiences as they stand). Returns the saved audience.
pub async fn save(
    wh: &Warehouse,
    tags: &TagSet,
    name: &str,
    description: Option<&str>,
    expression: &str,
    saved_by: Option<&str>,
) -> Result<SavedAudience> {
    check_name(name).map_err(Error::Invalid)?;
    let description = description.map(str::trim).filter(|d| !d.is_empty());
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(Error::Invalid(format!("the description is longer than {MAX_DESCRIPTION} characters")));
    }
    let expression = expression.trim();
    if expression.chars().count() > MAX_EXPRESSION {
        return Err(Error::Invalid(format!("the expression is longer than {MAX_EXPRESSION} characters")));
    }
    crate::audience::parse_definition(expression, tags, name)?;
    let before = list(wh).await?.into_iter().find(|a| a.name == name).map_or(0, |a| a.revisions);
    let saved_at = append(wh, name, description, Some(expression), saved_by).await?;
    Ok(SavedAudience {
        name: name.to_string(),
        description: description.map(str::to_string),
        expression: expression.to_string(),
        saved_at,
        saved_by: saved_by.map(str::to_string),
        revisions: before + 1,
    })
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
async fn append(
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
    use crate::audience::{self, tests::small_tags};

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

    fn with_saved(pairs: &[(&str, &str)]) -> TagSet {
        small_tags().with_saved(pairs.iter().map(|(n, e)| (n.to_string(), e.to_string())).collect())
    }

    #[test]
    fn a_reference_means_its_expression_in_parentheses() {
        let tags = with_saved(&[("gold_or_beauty", "tier_gold OR category_lover_beauty")]);
        let by_name = audience::parse("audience:gold_or_beauty AND NOT tier_regular", &tags).unwrap();
        let spelled = audience::parse("(tier_gold OR category_lover_beauty) AND NOT tier_regular", &tags).unwrap();
        assert_eq!(audience::evaluate(&by_name, &tags).unwrap(), audience::evaluate(&spelled, &tags).unwrap());
        // Keywords are case-insensitive; so is the prefix.
        assert!(audience::parse("AUDIENCE:gold_or_beauty", &tags).is_ok());
    }

    #[test]
    fn references_nest_and_cycles_are_refused() {
        let tags = with_saved(&[
            ("a", "tier_gold"),
            ("b", "audience:a OR tier_regular"),
            ("x", "audience:y"),
            ("y", "audience:x"),
        ]);
        let b = audience::parse("audience:b", &tags).unwrap();
        let spelled = audience::parse("tier_gold OR tier_regular", &tags).unwrap();
        assert_eq!(audience::evaluate(&b, &tags).unwrap(), audience::evaluate(&spelled, &tags).unwrap());
        let err = audience::parse("tier_gold AND audience:x", &tags).unwrap_err();
        assert!(err.message.contains("refers to itself: x → y → x"), "{}", err.message);
        assert_eq!(err.position, "tier_gold AND ".len());
        // Saving a = audience:b would make a → b → a.
        let err = audience::parse_definition("audience:b", &tags, "a").unwrap_err();
        assert!(err.message.contains("refers to itself: a → b → a"), "{}", err.message);
    }

    #[test]
    fn unknown_and_broken_references_name_the_saved_audience() {
        let tags = with_saved(&[("gold", "tier_gold"), ("broken", "tier_gold AND nonsense_tag")]);
        let err = audience::parse("audience:glod", &tags).unwrap_err();
        assert!(err.message.contains("no saved audience `glod`; did you mean `audience:gold`?"), "{}", err.message);
        let err = audience::parse("NOT audience:broken", &tags).unwrap_err();
        assert!(
            err.message.starts_with("saved audience `broken` (tier_gold AND nonsense_tag): unknown tag `nonsense_tag`"),
            "{}",
            err.message
        );
        assert_eq!((err.position, err.width), (4, "audience:broken".len()));
        let err = audience::parse("audience:", &tags).unwrap_err();
        assert!(err.message.contains("needs the name of a saved audience"), "{}", err.message);
        let none = small_tags();
        let err = audience::parse("audience:gold", &none).unwrap_err();
        assert!(err.message.contains("none is saved yet"), "{}", err.message);
    }

    #[test]
    fn references_that_double_at_every_level_are_refused_not_expanded() {
        // d_i = d_(i-1) OR d_(i-1): 2^40 tags once expanded.
        let mut pairs: Vec<(String, String)> = vec![("d0".into(), "tier_gold".into())];
        for i in 1..=40 {
            pairs.push((format!("d{i}"), format!("audience:d{0} OR audience:d{0}", i - 1)));
        }
        let tags = small_tags().with_saved(pairs.into_iter().collect());
        assert!(audience::parse("audience:d5", &tags).is_ok());
        let err = audience::parse("audience:d40", &tags).unwrap_err();
        assert!(err.message.contains("saved audiences it refers to expand to more than"), "{}", err.message);
    }

    #[test]
    fn a_chain_of_references_counts_toward_the_depth_limit() {
        let mut pairs: Vec<(String, String)> = vec![("s0".into(), "tier_gold".into())];
        for i in 1..=audience::MAX_DEPTH + 1 {
            pairs.push((format!("s{i}"), format!("audience:s{}", i - 1)));
        }
        let tags = small_tags().with_saved(pairs.into_iter().collect());
        assert!(audience::parse("audience:s10", &tags).is_ok());
        let err = audience::parse(&format!("audience:s{}", audience::MAX_DEPTH + 1), &tags).unwrap_err();
        assert!(err.message.contains("nested too deeply"), "{}", err.message);
    }
}
