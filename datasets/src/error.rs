//! The crate's one error type.
//!
//! Errors say who is at fault: [`Error::InvalidConfig`] and
//! [`Error::UnknownFormat`] are the caller's (a bad parameter, named with the
//! value that was given and the range that is allowed); [`Error::Io`],
//! [`Error::Arrow`] and [`Error::Parquet`] happened while writing and name the
//! file that was being written.

use std::path::PathBuf;

/// Everything that can go wrong while configuring or generating a data set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A [`GenerateConfig`](crate::GenerateConfig) parameter is out of range.
    #[error("invalid generate parameter `{parameter}`: {reason}")]
    InvalidConfig {
        /// The builder setter that received the bad value, e.g. `members`.
        parameter: &'static str,
        /// What was given and what is allowed.
        reason: String,
    },

    /// A format name that is not one of `csv`, `jsonl` (or `json`), `parquet`.
    #[error("unknown output format {0:?}: expected one of csv, jsonl (or json), parquet")]
    UnknownFormat(String),

    /// Creating a directory or writing, renaming or removing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory being worked on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Arrow failed to build a batch or to encode it as CSV or JSON.
    #[error("Arrow error while writing {path}: {source}")]
    Arrow {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// The Parquet writer failed.
    #[error("Parquet error while writing {path}: {source}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn arrow(path: impl Into<PathBuf>, source: arrow::error::ArrowError) -> Self {
        Self::Arrow { path: path.into(), source }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Self::Parquet { path: path.into(), source }
    }

    pub(crate) fn invalid(parameter: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig { parameter, reason: reason.into() }
    }
}
