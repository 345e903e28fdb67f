//! The taglake warehouse: Delta Lake tables under one directory.
//!
//! Every stage of taglake reads and writes the same small set of tables,
//! each a Delta Lake table in its own folder under the warehouse directory
//! (`<warehouse>/members`, `<warehouse>/orders`, …). Delta gives us atomic
//! commits (a half-written ingest is never visible), time travel, and files
//! that Spark, DuckDB and Polars read without taglake.
//!
//! The core types:
//! - [`Table`] names a warehouse table and owns its schema ([`schema`]): the
//!   canonical input columns (the repository's DESIGN.md, "Canonical input
//!   schema") plus what taglake adds (the dense `member_key`).
//! - [`Warehouse`] opens the directory, reads tables back as Arrow batches in
//!   their canonical types, and writes them with one commit per call
//!   ([`Warehouse::append`] streams any number of batches into one commit).
//! - [`WriterLock`] ([`lock`]): one writing command at a time per
//!   warehouse; library functions that allocate ids or commit several
//!   tables take it as proof. [`Warehouse::vacuum`] reclaims the files no
//!   version needs any more, including those killed runs left.
//!
//! ```no_run
//! # async fn run() -> taglake_storage::Result<()> {
//! use taglake_storage::{Table, Warehouse};
//! let wh = Warehouse::open("warehouse")?;
//! let members = wh.read(Table::Members, Some(&["member_id", "member_key"])).await?;
//! println!("{} batches", members.len());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod changes;
pub mod direct;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod lock;
pub mod param;
mod parts;
pub mod scan;
pub mod schema;
mod warehouse;

pub use changes::TableState;
pub use direct::DirectWriter;
pub use error::{Error, Result};
pub use lock::{Wait, WriterLock};
pub use param::ParamMessage;
pub use schema::{Column, ColumnType, Table};
pub use warehouse::{BatchReceiver, DataFile, PartWriter, Sorted, TableWriter, Vacuumed, Warehouse};
