//! What every taglake crate shares and none of them owns.
//!
//! Each piece here once lived as a private copy in two or three crates, and
//! the copies had drifted: three size and duration grammars, three
//! splitmix64 mixers behind two samplers that drew different members for the
//! same seed, two CSV quoting functions. One definition means a flag, a
//! config key and a SQL setting accept the same text, and a seed means the
//! same thing wherever it is given.
//!
//! - [`units`]: sizes (`512MiB`) and durations (`30s`, `14d`), parsed to
//!   plain numbers; each caller states its own bounds and error text.
//! - [`seeded`]: the splitmix64 mixer and generator, a seeded hash of a key
//!   and the seeded uniform sample built on it.
//! - [`names`]: "did you mean …?" for any name a person types.
//! - [`csv`]: a field of a CSV line, quoted when it must be.
//! - [`svg`]: charts as SVG text: escaped text, finite coordinates.
//!
//! The crate depends on nothing but `std`, so any crate may use it.
#![warn(missing_docs)]

pub mod csv;
pub mod names;
pub mod seeded;
pub mod svg;
pub mod units;

pub use names::suggest;
