//! `taglake studio`: a web audience builder for marketers, served by the
//! taglake binary itself.
//!
//! Many of the people who build audiences do not write SQL. The studio
//! puts the warehouse in front of them in a browser: an overview of the
//! member base and its tags over the stored snapshots, a tag catalog, and
//! an audience builder that shows the exact count of every block and the
//! running total after each (a funnel) while they edit. Every number comes
//! from the same functions the CLI calls (`taglake_query::audience`,
//! `breakdown`, `survey`, `taglake_tagger::snapshot`), so a page cannot
//! disagree with `taglake audience count` or `taglake tags diff`.
//!
//! The core types: [`StudioConfig`] (validated settings, built only by
//! [`StudioConfigBuilder`]) and [`Studio`] (a running server).
//!
//! ```no_run
//! # async fn run() -> taglake_studio::Result<()> {
//! let config = taglake_studio::StudioConfig::builder("warehouse").listen("127.0.0.1:8080").build()?;
//! let studio = taglake_studio::Studio::start(config).await?;
//! println!("listening on {}", studio.local_addr());
//! studio.wait().await
//! # }
//! ```
//!
//! # Why these pieces
//!
//! - **axum** (0.8, the copy tonic already brings into the tree): routing
//!   and extractors on the tokio runtime and hyper the rest of taglake
//!   already uses; each page is a module with its own `Router`
//!   ([`pages`], merged in [`server::router`]), so later pages (saved audiences, exports, communities)
//!   slot in without touching the others. The server loop is our own
//!   ([`server`]): plain or TLS sockets, a bound on connections, a header
//!   timeout.
//! - **maud**: HTML templates checked at compile time, and every value
//!   interpolated into them is escaped unless explicitly marked as
//!   markup. The only markup ever marked is the SVG this crate draws
//!   itself through `taglake_base::svg`, which escapes its text too. No
//!   user string can become markup.
//! - **htmx** (2.0.4, vendored in `assets/`, served from the binary): the
//!   builder's live counts and the tag autocomplete are HTML fragments the
//!   server renders, swapped in by a few attributes; no front-end build,
//!   no framework, no inline script (the Content-Security-Policy is
//!   `default-src 'self'`).
//! - **SVG drawn on the server** (`taglake_base::svg`, shared with the
//!   communities' profile and the experiment report): charts are text in
//!   the page, readable without JavaScript, and need no charting library.
//!
//! # Security ([`config`], [`session`], [`app`])
//!
//! As `taglake serve`: loopback by default, and any other address needs a
//! users file (the same file and secrets as serve, checked by
//! `taglake_serve::Users::verify`). With users, a login form sets a
//! session cookie (a random 256-bit token, `HttpOnly`, `SameSite=Strict`,
//! `Secure` under TLS); every POST carries the session's CSRF token or is
//! refused with 403, with or without users. Responses carry a
//! Content-Security-Policy without inline scripts, `nosniff` and
//! `frame-ancestors 'none'`. Bodies, expressions and searches are bounded.
//! The studio only reads the warehouse.
#![warn(missing_docs)]

pub mod app;
pub mod assets;
pub mod builder;
pub mod charts;
pub mod config;
pub mod data;
pub mod html;
pub mod pages;
pub mod server;
pub mod session;

use std::path::PathBuf;

use taglake_storage::ParamMessage;

pub use config::{StudioConfig, StudioConfigBuilder};
pub use server::Studio;

/// Errors of the studio: its configuration, its files, the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid: the message names it apart from its text, for
    /// a program to show as its flag, and says why.
    #[error("{0}")]
    Parameter(#[source] ParamMessage),
    /// A file could not be read.
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
    /// The users file or the TLS files were refused, or the warehouse
    /// could not be served (`taglake_serve`'s own error).
    #[error(transparent)]
    Serve(#[from] taglake_serve::Error),
    /// A tag snapshot could not be read.
    #[error(transparent)]
    Tagger(#[from] taglake_tagger::Error),
    /// An audience or a query over the warehouse failed.
    #[error(transparent)]
    Query(#[from] taglake_query::Error),
    /// The warehouse could not be opened.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// The community model could not be read.
    #[error(transparent)]
    Cluster(#[from] taglake_cluster::Error),
}

impl From<ParamMessage> for Error {
    fn from(message: ParamMessage) -> Error {
        Error::Parameter(message)
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A log line on standard error, with the time (the studio's only log).
pub(crate) fn log(line: std::fmt::Arguments<'_>) {
    eprintln!("{} {line}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"));
}
