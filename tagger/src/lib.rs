//! Member features, tag catalog and tag snapshots.
#![warn(missing_docs)]

pub mod rule;
