//! `taglake serve`: the warehouse over the PostgreSQL wire protocol.
//!
//! Marketers use psql, DBeaver, Metabase and notebooks; all of them speak
//! PostgreSQL. This crate puts the same catalog as `taglake sql` (every
//! warehouse table, `members` with one boolean column per tag, the
//! `audience('…')` function) behind that protocol, so those tools build
//! audiences in SQL without knowing taglake exists.
//!
//! The protocol itself (messages, SCRAM, portals, the `pg_catalog` and
//! `information_schema` tables clients list tables from, Arrow ↔ PostgreSQL
//! encoding) comes from `pgwire` and `datafusion-postgres`. What this crate
//! adds is what a shared server needs and those crates leave out:
//!
//! - [`ServeConfig`]: a validated configuration, built only by its
//!   builder. A non-loopback address is refused unless users are
//!   configured ([`Users`], SCRAM-SHA-256; unknown names are answered like
//!   known ones), and every limit has a setting.
//! - [`policy`]: the server is read-only. Only queries, `EXPLAIN`, `SHOW`,
//!   `SET` and transaction/cursor statements run, the plan of each is
//!   checked for writes on every path, and `COPY … TO` writes only inside
//!   the configured export directory, up to a size cap ([`export`]).
//! - [`handler`]: every query runs under the statement timeout, both while
//!   planning and while rows stream out, in a memory pool inside its
//!   connection's ([`pool`]), and fails alone with a PostgreSQL error code
//!   clients understand. Results stream; cursors are the server's own
//!   ([`cursor`]).
//! - [`live`]: a new tag snapshot (or any new table version) becomes
//!   visible to new queries without a restart; running ones finish on what
//!   they started with.
//! - [`listen`] and [`connection`]: the accept loop (TLS, `--require-tls`,
//!   `--max-pending`) and each connection's message loop (login and idle
//!   timeouts, a panic ends one statement); bad bytes on one socket close
//!   that socket only. A connection takes one of `--max-connections` slots
//!   (error 53300) only once logged in, in [`handler::Startup`].
//! - [`fuzzing`]: the harness of the fuzz target for the message handling.
//!
//! ```no_run
//! # async fn run() -> taglake_serve::Result<()> {
//! let config = taglake_serve::ServeConfig::builder("warehouse")
//!     .listen("127.0.0.1:5433")
//!     .query_memory("512MiB")
//!     .build()?;
//! let server = taglake_serve::Server::start(config, None).await?;
//! println!("listening on {}", server.local_addr());
//! server.wait().await
//! # }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod cursor;
pub mod export;
pub mod fuzzing;
pub mod handler;
pub mod listen;
pub mod live;
pub mod policy;
pub mod pool;
pub mod reply;
pub mod users;

use std::path::PathBuf;

use taglake_storage::ParamMessage;

pub use config::{ServeConfig, ServeConfigBuilder};
pub use listen::Server;
pub use users::Users;

/// Errors of the server crate: its configuration, its files, the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server cannot be set up or run as configured (the message says why).
    #[error("{0}")]
    Config(String),
    /// A part of the server could not be set up: what, and the cause.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why it failed (DataFusion's error, a task's panic).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting is invalid: the message names it apart from its text, for
    /// a program to show as its flag, and says why.
    #[error("{0}")]
    Parameter(#[source] ParamMessage),
    /// The users file is malformed.
    #[error("{path}:{line}: {message}")]
    Users {
        /// The users file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The warehouse or its tags could not be read.
    #[error(transparent)]
    Query(#[from] taglake_query::Error),
    /// The warehouse could not be opened.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
}

impl From<ParamMessage> for Error {
    fn from(message: ParamMessage) -> Error {
        Error::Parameter(message)
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A file error with its path.
pub(crate) fn file_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::File { path, source }
}

/// A log line on standard error, with the time (the server's only log).
pub(crate) fn log(line: std::fmt::Arguments<'_>) {
    eprintln!("{} {line}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"));
}
