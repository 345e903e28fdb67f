//! Communities of members by k-means.
//!
//! Standardizes the `features` table, fits k-means (linfa, k-means++,
//! seeded), assigns every member to its nearest centroid and publishes the
//! communities as tags (`community_{n}`). Built in a later milestone; this
//! crate marks where that work lives.
