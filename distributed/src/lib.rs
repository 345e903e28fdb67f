//! taglake on a Ballista cluster.
//!
//! One warehouse outgrows one machine long before its SQL changes, so the
//! cluster runs the same catalog, the same SQL and the same audience
//! language as an embedded session, on Apache DataFusion Ballista (the
//! distributed engine of DataFusion 55): a user switches with
//! `--cluster df://HOST:PORT`, nothing else.
//!
//! - [`process`] embeds Ballista's scheduler and executor with taglake's
//!   plan codecs ([`codec`]) registered, so plans over `members` (tag
//!   columns, bitmap pushdown), `audience('…')` and the warehouse tables
//!   travel between processes.
//! - [`connect`] opens a client session whose tables are pinned to the
//!   files of their current Delta version ([`files`]), so every process
//!   reads what the client saw.
//!
//! The warehouse must be at the same path on every machine (a shared
//! volume), because plans carry file paths.
//!
//! The refresh tasks and the plan codecs scan through
//! [`taglake_storage::scan::blocking`], so they need tokio's multi-thread
//! runtime; on a current-thread runtime they fail with
//! `taglake_storage::Error::CurrentThreadRuntime` (wrapped) instead of
//! panicking. The scheduler and executors run on that runtime.
#![warn(missing_docs)]

pub mod codec;
pub mod files;
pub mod process;
pub mod refresh;
mod session;
mod wire;

pub use session::{ClusterUrl, connect, providers, remote_state};

/// Errors of the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The warehouse could not be read.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// The query layer failed (SQL, tags, audiences).
    #[error(transparent)]
    Query(#[from] taglake_query::Error),
    /// An argument is invalid (the message says which and why).
    #[error("{0}")]
    Invalid(String),
    /// An option is invalid: the message names it apart from its text,
    /// for a program to show as its flag.
    #[error("{0}")]
    Parameter(#[source] taglake_storage::ParamMessage),
    /// The scheduler could not be reached.
    #[error("cannot reach the taglake scheduler at {url}: {cause} (is `taglake scheduler` running there?)")]
    Unreachable {
        /// The cluster address.
        url: String,
        /// What failed: the connection's error, or the wait that ran out.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Ballista, DataFusion or Arrow failed.
    #[error("{context}: {source}")]
    Engine {
        /// What was being done.
        context: String,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// The engine's error `e` while doing `context`.
    pub(crate) fn engine<E>(context: impl Into<String>) -> impl FnOnce(E) -> Error
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let context = context.into();
        move |e| Error::Engine { context, source: e.into() }
    }
}

/// The warehouse at `root` as a cluster process opens it: it must already
/// be there (mounted at the same path as on the client), not created empty.
pub(crate) fn shared_warehouse(root: &str) -> Result<taglake_storage::Warehouse> {
    let path = std::path::Path::new(root);
    if !path.join(taglake_storage::Table::Members.name()).is_dir() {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "this machine".into());
        return Err(Error::Invalid(format!(
            "the warehouse {root} is not on {host}: every scheduler and executor must see it at the same path as the client (a shared volume)"
        )));
    }
    Ok(taglake_storage::Warehouse::open(path)?)
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
