//! Ingest: retail exports into the taglake warehouse.
//!
//! Exports arrive as CSV, JSON lines or Parquet, in whatever layout the
//! retailer's systems produce, with the usual share of broken rows. Ingest
//! reads them ([`source`]), maps their columns onto the canonical schema
//! ([`mapping`]), parses and validates every value ([`convert`]), gives each
//! member a dense key ([`MemberDictionary`]) and commits the good rows to
//! the Delta tables while bad rows go to the `quarantine` table with file,
//! row, column and reason. Running the same ingest twice changes nothing.
//!
//! ```no_run
//! # async fn run() -> taglake_ingest::Result<()> {
//! use std::sync::Arc;
//! use taglake_ingest::{ingest, CheckedMapping, IngestOptions, NoProgress};
//! use taglake_storage::{Table, Warehouse};
//!
//! let wh = Warehouse::open("warehouse")?;
//! let files = taglake_ingest::source::expand_inputs(&["data/orders/*.parquet"])?;
//! let opts = IngestOptions::builder(CheckedMapping::canonical(Table::Orders)).build()?;
//! let summary = ingest(&wh, &files, &opts, Arc::new(NoProgress)).await?;
//! println!("{} rows in, {} quarantined", summary.inserted, summary.quarantined);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod convert;
mod dictionary;
mod error;
#[cfg(test)]
mod fuzz_drivers;
pub mod keys;
pub mod mapping;
mod pipeline;
mod scalar;
pub mod source;

pub use dictionary::MemberDictionary;
pub use error::{Error, Result};
pub use mapping::{CheckedMapping, Mapping};
pub use pipeline::{
    DEFAULT_MEMORY, Discarded, IngestOptions, IngestOptionsBuilder, IngestSummary, MIN_MEMORY, NoProgress, Progress,
    discard_failed, ingest,
};
