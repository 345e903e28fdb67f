//! SQL over the warehouse with tags as columns.
//!
//! A DataFusion `SessionContext` whose `members` table exposes every tag of
//! the current snapshot as a boolean column, with filters on tags pushed down
//! into roaring-bitmap algebra. Built in a later milestone; this crate marks
//! where that work lives.
