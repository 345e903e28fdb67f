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
//! Its async functions that read tables scan through
//! [`taglake_storage::scan::blocking`], so they need tokio's multi-thread
//! runtime; on a current-thread runtime they return
//! `taglake_storage::Error::CurrentThreadRuntime` (wrapped) instead of
//! panicking.
//!
//! ```no_run
//! # async fn run() -> taglake_tagger::Result<()> {
//! use taglake_storage::{Wait, Warehouse};
//! use taglake_tagger::{RefreshOptions, refresh};
//! let wh = Warehouse::open("warehouse")?;
//! // Writers hold the warehouse writer lock for their whole run.
//! let lock = wh.lock_writer("nightly tag refresh", Wait::Yes)?;
//! let summary = refresh(&wh, &lock, &RefreshOptions::default()).await?;
//! println!("snapshot {}: {} tags, {:.1} per member", summary.snapshot, summary.tags, summary.tags_per_member());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod catalog;
mod error;
pub mod evaluate;
mod exclusive;
pub mod features;
mod refresh;
pub mod rule;
mod select;
pub mod snapshot;
mod tagdef;
#[cfg(test)]
mod tests;
mod union;

pub use error::{Error, Result};
pub use refresh::{
    Computed, RefreshOptions, RefreshOptionsBuilder, RefreshSummary, catalog_from, compute, evaluate_all,
    features_batch, features_schema, load_catalog, publish, read_catalog, refresh, snapshot_tags,
};

pub use union::Union;
