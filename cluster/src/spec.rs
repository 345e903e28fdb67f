//! Which `features` columns a clustering uses and how each is transformed.
//!
//! k-means measures plain Euclidean distance, so the columns must be made
//! comparable first: counts and money are heavy-tailed (a few members
//! spend a hundred times the median), which would let them decide every
//! cluster on their own. They go through `log1p`; shares already lie in
//! 0..1 and stay as they are. Every column is then z-scored.
//!
//! A feature list is what `--features` takes: comma-separated items, each
//! a column name or a `*` pattern over the stored columns, optionally with
//! `:log1p`, `:sqrt` or `:raw` to override the transform, and the word
//! `default` for the default set:
//!
//! ```
//! use taglake_cluster::spec::{FeatureSpec, Transform};
//! let stored = ["member_key", "recency_days", "spend_share_beauty", "spend_share_toys", "city"];
//! let numeric = |c: &str| c != "city";
//! let spec = FeatureSpec::parse("recency_days, spend_share_*:raw", &stored, numeric).unwrap();
//! assert_eq!(spec.features[1].name, "spend_share_beauty");
//! assert_eq!(spec.features[1].transform, Transform::Raw);
//! assert_eq!(spec.features[0].transform, Transform::Log1p);
//! ```

use serde::{Deserialize, Serialize};

use taglake_storage::ParamMessage;

use crate::{Error, Result};

/// How a raw column value becomes a clustering coordinate (before z-scoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// `ln(1 + max(x, 0))`: for counts, money and days.
    Log1p,
    /// `sqrt(max(x, 0))`: spreads small shares apart.
    Sqrt,
    /// The value as it is.
    Raw,
}

impl Transform {
    /// Applies the transform.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Transform::Log1p => x.max(0.0).ln_1p(),
            Transform::Sqrt => x.max(0.0).sqrt(),
            Transform::Raw => x,
        }
    }

    fn parse(s: &str) -> Option<Transform> {
        match s {
            "log1p" => Some(Transform::Log1p),
            "sqrt" => Some(Transform::Sqrt),
            "raw" => Some(Transform::Raw),
            _ => None,
        }
    }

    /// The transform a column gets when none is given: shares get `sqrt`,
    /// every other number (counts, money, days) is log-scaled.
    pub fn default_for(column: &str) -> Transform {
        if column.ends_with("_share") || column.contains("_share_") { Transform::Sqrt } else { Transform::Log1p }
    }
}

/// One clustering coordinate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// The `features` column.
    pub name: String,
    /// Its transform.
    pub transform: Transform,
}

/// The default feature set: recency, frequency, monetary value, average
/// order value and basket size, spend share of every category, order share
/// of every channel, weekend and promotion shares.
pub const DEFAULT_FEATURES: &str = "recency_days, orders_total, spend_total, avg_order_value, items_per_order, \
                                    spend_share_*, order_share_*, weekend_share, promotion_share";

/// The resolved, ordered list of features (no column twice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// The features, in the order given.
    pub features: Vec<Feature>,
}

impl FeatureSpec {
    /// Resolves a feature list against the stored columns of `features`.
    /// `numeric(c)` says whether column `c` holds numbers.
    /// Errors name the item and suggest the nearest column.
    pub fn parse<'a>(list: &str, stored: &'a [&'a str], numeric: impl Fn(&str) -> bool) -> Result<FeatureSpec> {
        let candidates: Vec<&str> =
            stored.iter().copied().filter(|c| numeric(c) && !NOT_FEATURES.contains(c)).collect();
        let mut features: Vec<Feature> = Vec::new();
        let mut push = |name: &str, transform: Transform| {
            if let Some(f) = features.iter_mut().find(|f| f.name == name) {
                f.transform = transform;
            } else {
                features.push(Feature { name: name.to_string(), transform });
            }
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (pattern, transform) = match item.split_once(':') {
                Some((p, t)) => {
                    let t = Transform::parse(t.trim()).ok_or_else(|| {
                        Error::Params(
                            format!("feature `{item}`: unknown transform `{}`; use log1p, sqrt or raw", t.trim())
                                .into(),
                        )
                    })?;
                    (p.trim(), Some(t))
                }
                None => (item, None),
            };
            if pattern == "default" {
                for sub in DEFAULT_FEATURES.split(',').map(str::trim) {
                    for name in matching(sub, &candidates) {
                        push(name, transform.unwrap_or(Transform::default_for(name)));
                    }
                }
                continue;
            }
            let names = matching(pattern, &candidates);
            if names.is_empty() {
                return Err(unknown(pattern, stored, &candidates, &numeric));
            }
            for name in names {
                push(name, transform.unwrap_or(Transform::default_for(name)));
            }
        }
        if features.is_empty() {
            return Err(Error::Params(
                format!("no features selected from `{list}`; numeric columns are {}", candidates.join(", ")).into(),
            ));
        }
        Ok(FeatureSpec { features })
    }

    /// The column names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.features.iter().map(|f| f.name.as_str()).collect()
    }
}

/// Columns of `features` that identify or date a row rather than describe
/// behaviour.
const NOT_FEATURES: &[&str] = &["member_key", "as_of"];

fn matching<'a>(pattern: &str, candidates: &[&'a str]) -> Vec<&'a str> {
    candidates.iter().copied().filter(|c| glob(pattern, c)).collect()
}

fn unknown(pattern: &str, stored: &[&str], candidates: &[&str], numeric: &impl Fn(&str) -> bool) -> Error {
    if pattern.contains('*') {
        return Error::Params(format!("feature pattern `{pattern}` matches no numeric column of `features`").into());
    }
    if stored.contains(&pattern) {
        let why = if !numeric(pattern) { "is not numeric" } else { "identifies a row" };
        return Error::Params(format!("feature `{pattern}` {why} and cannot be clustered on").into());
    }
    let hint = taglake_base::suggest(pattern, candidates.iter().copied())
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Error::Params(
        ParamMessage::text(format!("unknown feature `{pattern}`{hint} ("))
            .then_param("features")
            .then_text(" takes the numeric columns of the `features` table)"),
    )
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &[&str] = &[
        "member_key",
        "as_of",
        "recency_days",
        "orders_total",
        "spend_total",
        "avg_order_value",
        "items_per_order",
        "spend_share_beauty",
        "spend_share_snacks",
        "order_share_app",
        "weekend_share",
        "promotion_share",
        "city",
    ];

    fn numeric(c: &str) -> bool {
        c != "city"
    }

    fn parse(list: &str) -> Result<FeatureSpec> {
        FeatureSpec::parse(list, STORED, numeric)
    }

    #[test]
    fn the_default_set_expands_patterns_and_picks_transforms() {
        let spec = parse("default").unwrap();
        // Every numeric column of the fixture except the two that identify
        // a row, in the default set's order (which is the fixture's).
        assert_eq!(spec.names(), STORED[2..12]);
        assert_eq!(spec.features[0].transform, Transform::Log1p);
        assert_eq!(spec.features[5].transform, Transform::Sqrt);
        assert_eq!(spec.features[8].transform, Transform::Sqrt);
    }

    #[test]
    fn later_items_override_the_transform_without_duplicating() {
        let spec = parse("default, spend_share_*:raw, recency_days:raw").unwrap();
        assert_eq!(spec.features.len(), 10);
        assert_eq!(spec.features[0].transform, Transform::Raw);
        assert_eq!(spec.features[6].transform, Transform::Raw);
        assert_eq!(spec.features[7].transform, Transform::Sqrt);
    }

    #[test]
    fn bad_lists_are_explained() {
        let err = |l: &str| parse(l).unwrap_err().to_string();
        assert_eq!(
            err("recency_dayz"),
            "invalid clustering parameter: unknown feature `recency_dayz`; did you mean `recency_days`? \
             (`features` takes the numeric columns of the `features` table)"
        );
        assert_eq!(
            err("city"),
            "invalid clustering parameter: feature `city` is not numeric and cannot be clustered on"
        );
        assert_eq!(
            err("member_key"),
            "invalid clustering parameter: feature `member_key` identifies a row and cannot be clustered on"
        );
        assert_eq!(
            err("category_share_*"),
            "invalid clustering parameter: feature pattern `category_share_*` matches no numeric column of `features`"
        );
        assert_eq!(
            err("spend_total:log"),
            "invalid clustering parameter: feature `spend_total:log`: unknown transform `log`; use log1p, sqrt or raw"
        );
        assert!(err(" , ").starts_with("invalid clustering parameter: no features selected from ` , `"));
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("spend_share_*", "spend_share_beauty"));
        assert!(glob("*_share", "weekend_share"));
        assert!(glob("*share*", "order_share_app"));
        assert!(glob("a*b*c", "a_b_c"));
        assert!(!glob("a*b*c", "a_c_b"));
        assert!(!glob("ab*ba", "aba"));
        assert!(!glob("spend_share_*", "order_share_app"));
    }

    #[test]
    fn transforms_clamp_negative_values() {
        assert_eq!(Transform::Log1p.apply(-3.0), 0.0);
        assert_eq!(Transform::Sqrt.apply(4.0), 2.0);
        assert_eq!(Transform::Raw.apply(-3.0), -3.0);
    }
}
