//! Deterministic synthetic retail member bases with planted behaviour
//! personas — the data behind `taglake generate` and `taglake demo`.
//!
//! Real member exports cannot be shared, yet every stage of taglake (ingest,
//! tagging, clustering, SQL) has to be developed, tested and benchmarked on
//! data that looks like them: millions of members, heavy-tailed spend, weekly
//! and seasonal rhythms, dormant members, and interest communities to find.
//! This crate writes such a base in the canonical input schema (the
//! repository's DESIGN.md, "Canonical input schema"),
//! and alongside it the ground truth — each member's planted [`Persona`] —
//! so a clustering step can be scored against it.
//!
//! The core types:
//!
//! * [`GenerateConfig`], built and validated by [`GenerateConfig::builder`]:
//!   how many members, years of history, seed, output [`Format`] and folder.
//! * [`generate`] writes the tables and returns a [`GenerateSummary`].
//! * [`Persona`]: the planted behaviours (beauty lover, weekend family,
//!   sleeping member, …).
//!
//! Output is a pure function of the configuration: each member's profile and
//! order history derive from `(seed, member index)` through this crate's own
//! fixed random generator, so the same configuration gives byte-identical
//! files on any number of threads, and order parts are written in parallel
//! without shared state.
//!
//! ```
//! use taglake_datasets::{Format, GenerateConfig, generate};
//!
//! let out = std::env::temp_dir().join(format!("taglake-doc-{}", std::process::id()));
//! let cfg = GenerateConfig::builder()
//!     .members(500)
//!     .years(1)
//!     .seed(7)
//!     .format(Format::Csv)
//!     .out(&out)
//!     .build()?;
//! let summary = generate(&cfg, &|_lines| {})?;
//! assert_eq!(summary.members, 500);
//! assert!(out.join("orders/part-00000.csv").exists());
//! # std::fs::remove_dir_all(&out).unwrap();
//! # Ok::<(), taglake_datasets::Error>(())
//! ```
//!
//! Layout under `out/`: `members.{ext}`, `products.{ext}`, `personas.{ext}`
//! and `orders/part-00000.{ext}`, … (one part per `members_per_part` members).
#![warn(missing_docs)]

mod calendar;
mod catalog;
mod config;
mod error;
mod generate;
mod member;
mod persona;
mod rng;
mod write;

#[cfg(test)]
mod tests;

pub use config::{Format, GenerateConfig, GenerateConfigBuilder};
pub use error::{Error, Result};
pub use generate::{GenerateSummary, generate};
pub use persona::Persona;
pub use write::{members_schema, orders_schema, personas_schema, products_schema};
