//! k-means communities of members.
//!
//! Members are clustered on their standardized features: [`Standardizer`]
//! learns each column's mean and spread, [`fit`] runs linfa's k-means
//! (k-means++ initialisation, seeded, so the same data and seed give the
//! same centroids) on a sample, and [`assign`] puts **every** member on its
//! nearest centroid in a blocked, rayon-parallel pass (linfa's own
//! prediction loop is scalar, and the full base is far larger than the
//! sample a fit needs).
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

mod kmeans;

pub use kmeans::{FitParams, Model, Standardizer, assign, fit};

/// Errors of the clustering layer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A parameter is out of range (named, with the allowed range).
    #[error("invalid clustering parameter: {0}")]
    Params(String),
    /// The data cannot be clustered as it is.
    #[error("{0}")]
    Data(String),
    /// linfa failed while fitting.
    #[error("k-means fit failed: {0}")]
    Fit(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
