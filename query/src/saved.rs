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

use taglake_storage::Warehouse;

use crate::tagset::TagSet;
use crate::{Error, Result};

pub use crate::saved_table::{
    MAX_DESCRIPTION, MAX_EXPRESSION, MAX_NAME, Revision, SavedAudience, check_name, current, history, list, remove,
    standing,
};

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
    let saved_at = crate::saved_table::append(wh, name, description, Some(expression), saved_by).await?;
    Ok(SavedAudience {
        name: name.to_string(),
        description: description.map(str::to_string),
        expression: expression.to_string(),
        saved_at,
        saved_by: saved_by.map(str::to_string),
        revisions: before + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::{self, tests::small_tags};

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
