use std::path::PathBuf;

/// Errors of the warehouse layer. Each names the table and its folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Delta Lake library failed reading or committing a table.
    #[error("warehouse table `{table}` at {}: {source}", path.display())]
    Delta {
        /// Table name.
        table: &'static str,
        /// Folder of the table.
        path: PathBuf,
        /// What Delta reported.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// The table on disk does not have the columns taglake expects.
    #[error(
        "warehouse table `{table}` at {}: {message}{} (was it written by another tool or an older taglake?)",
        path.display(),
        cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
    )]
    Schema {
        /// Table name.
        table: &'static str,
        /// Folder of the table (or the log file).
        path: PathBuf,
        /// What is wrong.
        message: String,
        /// The error that showed it (Arrow's cast, the JSON parser), if any.
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A batch handed to a writer does not match the table schema: a bug in
    /// the caller, not bad input data.
    #[error(
        "batch for warehouse table `{table}` does not match its schema: {message} (this is likely a bug in taglake)"
    )]
    BatchSchema {
        /// Table name.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An operation the table does not support (the message says why).
    #[error("warehouse table `{table}`: {message}")]
    Unsupported {
        /// Table name.
        table: &'static str,
        /// What cannot be done.
        message: String,
    },
    /// The warehouse directory itself cannot be used.
    #[error("warehouse directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file of a table does not hold what is asked of it.
    #[error("warehouse table `{table}`, file {}: {message}", path.display())]
    Parquet {
        /// Table name.
        table: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The Parquet reader failed on a file of a table (its footer, its
    /// layout).
    #[error("warehouse table `{table}`, file {}: {source}", path.display())]
    ParquetDecode {
        /// Table name.
        table: &'static str,
        /// The file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A batch of a Parquet file of a table could not be decoded.
    #[error("warehouse table `{table}`, file {}: {source}", path.display())]
    ArrowDecode {
        /// Table name.
        table: &'static str,
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Another process holds the warehouse writer lock.
    #[error("warehouse {} is being written by {holder}; {queue}", warehouse.display())]
    Locked {
        /// The warehouse directory.
        warehouse: PathBuf,
        /// Who holds the lock: command, pid, host and since when.
        holder: String,
        /// How to queue behind it instead: the `wait` parameter.
        #[source]
        queue: crate::ParamMessage,
    },
    /// A writer lock of one warehouse was handed to a write of another.
    #[error(
        "the writer lock of warehouse {} does not cover warehouse {} (this is likely a bug in taglake)",
        locked.display(),
        warehouse.display()
    )]
    WrongLock {
        /// The warehouse the lock is held on.
        locked: PathBuf,
        /// The warehouse written to.
        warehouse: PathBuf,
    },
    /// Another writer committed to the table meanwhile in a way this commit
    /// cannot be reconciled with (it claimed the same id, or replaced what
    /// this commit read). Nothing was committed; running again is safe.
    #[error("warehouse table `{table}`: {message}; nothing was committed, run the command again")]
    Conflict {
        /// Table name.
        table: &'static str,
        /// What collided.
        message: String,
    },
    /// What fed a streaming write failed; the write stopped and nothing
    /// was committed.
    #[error("writing warehouse table `{table}` stopped: {message}; nothing was committed")]
    Producer {
        /// Table name.
        table: &'static str,
        /// The producer's error.
        message: String,
    },
    /// Blocking work (a scan) was started on a current-thread tokio
    /// runtime, where it cannot run (see [`crate::scan::blocking`]).
    #[error(
        "taglake's scans need tokio's multi-thread runtime, but this was called on a current-thread runtime \
         (build the runtime with Runtime::new, #[tokio::main] or #[tokio::test(flavor = \"multi_thread\")])"
    )]
    CurrentThreadRuntime,
    /// A data file of a table could not be opened.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
