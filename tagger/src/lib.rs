//! Member features, the tag catalog and tag snapshots.
//!
//! One `taglake tag` run turns the warehouse's `members` and `orders` into
//! one row of features per member ([`features`], stored as the `features`
//! table), evaluates the declarative tag catalog ([`catalog`], a TOML file:
//! rules, families, quantile scores, rank bands, lookups) over them in
//! parallel chunks of dense member keys ([`evaluate`]), and commits one
//! roaring bitmap per tag as an immutable, versioned snapshot
//! ([`snapshot`]). [`refresh`] runs the whole thing.
//!
//! ```no_run
//! # async fn run() -> taglake_tagger::Result<()> {
//! use taglake_storage::Warehouse;
//! use taglake_tagger::{RefreshOptions, refresh};
//! let wh = Warehouse::open("warehouse")?;
//! let summary = refresh(&wh, &RefreshOptions::default()).await?;
//! println!("snapshot {}: {} tags, {:.1} per member", summary.snapshot, summary.tags, summary.tags_per_member());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod catalog;
mod error;
pub mod evaluate;
pub mod features;
mod refresh;
pub mod rule;
mod scan;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use refresh::{
    RefreshOptions, RefreshSummary, evaluate_all, features_batch, features_schema, load_catalog, refresh,
};

/// The closest of `candidates` to `name` (edit distance ≤ 2 or a shared
/// prefix of 4+), for "did you mean" hints.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, cb) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + (ca != *cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 2 || (name.len() >= 4 && c.starts_with(&name[..4]) && *d <= name.len() / 2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
