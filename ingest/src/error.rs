use std::path::PathBuf;

/// Errors of the ingest layer.
///
/// Row-level problems are not errors: they become quarantine rows and the
/// ingest goes on. These are the failures that stop a whole file or the
/// whole command, each naming the file (and line) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source file cannot be read at all (missing, not a CSV/JSON/Parquet
    /// file, a required column absent, …).
    #[error("{}: {}", path.display(), joined(message, cause))]
    Source {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, or where (`line 12`) the cause struck.
        message: String,
        /// The error that showed it (the file system's, the CSV, JSON or
        /// Parquet reader's), if any.
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The mapping file is invalid.
    #[error(
        "mapping {}: {}",
        path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(inline)".into()),
        joined(message, cause)
    )]
    Mapping {
        /// The mapping file, when it came from one.
        path: Option<PathBuf>,
        /// What is wrong, naming the key (empty when the cause says it all).
        message: String,
        /// The error that showed it (the file system's, the TOML parser's).
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An option of the ingest is unusable: the message names it apart
    /// from its text, for a program to show as its flag.
    #[error("{0}")]
    Parameter(#[source] taglake_storage::ParamMessage),
    /// An input pattern matched no file.
    #[error("no input file matches `{0}`")]
    NoFiles(String),
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// The key index next to the warehouse (which keys each table holds)
    /// cannot be read or written. A damaged index is rebuilt from its table;
    /// this is reported only when that fails too, or the disk does.
    #[error("key index {}: {source}", path.display())]
    Index {
        /// The index file or folder.
        path: PathBuf,
        /// What went wrong: the file system's or the decoder's error, or
        /// what is wrong with the index.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A temporary spill file of an ingest cannot be written or read back.
    #[error("spill file {}: {source}", path.display())]
    Spill {
        /// The file.
        path: PathBuf,
        /// What went wrong: the file system's or the codec's error, or
        /// what stopped.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The thread reading the input stopped in the middle of a file (a
    /// panic in a decoder, or in the caller's [`crate::Progress`]). The
    /// ingest then commits nothing: before, the rows read so far were
    /// committed as if the input had ended there.
    #[error("reading {} stopped: {message}; nothing was committed (this is likely a bug)", path.display())]
    ReaderStopped {
        /// The file being read.
        path: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// An Arrow kernel failed on data ingest had already validated: a bug.
    #[error("internal error while {context}: {source} (this is likely a bug in taglake)")]
    Internal {
        /// What ingest was doing.
        context: &'static str,
        /// The Arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
}

/// `message: cause`, or whichever of the two there is.
pub(crate) fn joined(message: &str, cause: &Option<Box<dyn std::error::Error + Send + Sync>>) -> String {
    match cause {
        Some(c) if message.is_empty() => c.to_string().trim_end().to_string(),
        Some(c) => format!("{message}: {}", c.to_string().trim_end()),
        None => message.to_string(),
    }
}

impl Error {
    pub(crate) fn source(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Source { path: path.into(), message: message.into(), cause: None }
    }

    /// A file that cannot be read because of `cause`, struck at `at`
    /// (`line 12`; empty: anywhere).
    pub(crate) fn unreadable(
        path: impl Into<PathBuf>,
        at: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Source { path: path.into(), message: at.into(), cause: Some(cause.into()) }
    }

    pub(crate) fn internal(context: &'static str) -> impl FnOnce(arrow::error::ArrowError) -> Error {
        move |source| Error::Internal { context, source }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
