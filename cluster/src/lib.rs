//! k-means communities of members.
//!
//! Brands market to "communities": beauty lovers, snack lovers, weekend
//! families, hoarders. This crate finds them in the `features` table:
//! [`spec`] picks and transforms the columns, [`run::cluster`] samples,
//! fits, assigns every member and writes the `communities` table, the
//! [`model`] file and `community_{n}` tags, and [`profile`] describes each
//! community (size, lifts, a generated name, a chart).
//!
//! Members are clustered on their standardized features: [`Standardizer`]
//! learns each column's mean and spread, [`fit`] seeds k-means with greedy
//! k-means++ ([`greedy_kmeans_pp`]; seeded, so the same data and seed give
//! the same centroids), keeps the best of several starts and iterates on a
//! sample, and [`assign`] puts **every** member on its
//! nearest centroid in a blocked, vectorised, rayon-parallel pass. linfa's
//! own assignment loop is scalar; it is what made a linfa-only fit
//! ([`fit_linfa`], kept for comparison) slower than scikit-learn. A refit
//! keeps the previous model's community numbers where communities match
//! ([`align`]).
//!
//! [`cluster`], the one async function, scans through
//! [`taglake_storage::scan::blocking`], so it needs tokio's multi-thread
//! runtime; on a current-thread runtime it returns
//! `taglake_storage::Error::CurrentThreadRuntime` (wrapped) instead of
//! panicking.
//!
//! ```
//! use ndarray::array;
//! use taglake_cluster::{FitParams, assign, fit};
//! let data = array![[0.0, 0.0], [0.1, 0.0], [9.0, 9.0], [9.1, 9.0]];
//! let model = fit(data.view(), &FitParams::new(2).seed(7)).unwrap();
//! let (labels, _) = assign(data.view(), model.centroids.view());
//! assert_eq!(labels[0], labels[1]);
//! assert_ne!(labels[0], labels[2]);
//! ```
#![warn(missing_docs)]

pub mod align;
mod kmeans;
pub mod model;
pub mod profile;
pub mod run;
pub mod spec;

pub use kmeans::{
    FitParams, Model, START_ROWS, Standardizer, assign, fit, fit_linfa, greedy_kmeans_pp, silhouette,
    silhouette_with_error,
};
pub use run::{ClusterOptions, ClusterOptionsBuilder, ClusterSummary, KChoice, cluster, standardized_matrix};

/// Errors of the clustering layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of range (named, with the allowed range; a
    /// program shows the name as its flag).
    #[error("invalid clustering parameter: {0}")]
    Params(#[source] taglake_storage::ParamMessage),
    /// The data cannot be clustered as it is.
    #[error("{0}")]
    Data(String),
    /// linfa failed while fitting.
    #[error("k-means fit failed: {0}")]
    Fit(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Something asked for (the saved model) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The warehouse could not be read or written.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// Tag snapshots could not be read or written.
    #[error(transparent)]
    Tagger(#[from] taglake_tagger::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PartialEq for Error {
    /// Errors compare by message (tests assert exact messages).
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
