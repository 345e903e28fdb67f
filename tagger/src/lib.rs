//! Member features, tag catalog and tag snapshots.
//!
//! Turns the warehouse's `members` and `orders` tables into one row of
//! features per member (indexed by the dense `member_key`), evaluates the
//! declarative tag catalog over them in parallel, and commits one roaring
//! bitmap per tag as an immutable, versioned snapshot. Built in a later
//! milestone; this crate marks where that work lives.
