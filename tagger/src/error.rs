use std::path::PathBuf;

use crate::rule::RuleError;

/// Errors of the tagger. Catalog errors name the file, the tag and the
/// position in its rule; data errors name the table and file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The warehouse could not be read or written.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tag catalog file is not valid TOML or has unknown/missing keys.
    #[error("tag catalog {source_name}: {message}")]
    Catalog {
        /// The catalog file (or "built-in default").
        source_name: String,
        /// What is wrong, with the key or tag it concerns.
        message: String,
    },
    /// A tag's rule does not parse or does not type-check.
    #[error("tag catalog {source_name}, tag `{tag}`, position {}: {}", error.pos, error.render(rule))]
    Rule {
        /// The catalog file (or "built-in default").
        source_name: String,
        /// The tag (after family expansion).
        tag: String,
        /// The rule text the position refers to.
        rule: String,
        /// Position and message.
        error: RuleError,
    },
    /// The warehouse data cannot be tagged as it is.
    #[error("{0}")]
    Data(String),
    /// An option of the run is invalid or missing: the message names it
    /// apart from its text, for a program to show as its flag.
    #[error("{0}")]
    Parameter(#[source] taglake_storage::ParamMessage),
    /// A snapshot, tag or member asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A stored bitmap does not deserialize: the snapshot is damaged.
    #[error("tag snapshot {snapshot}, tag `{tag}`: the stored bitmap is damaged: {cause}")]
    Bitmap {
        /// Snapshot version.
        snapshot: i64,
        /// Tag name.
        tag: String,
        /// What roaring reported, or what is missing.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A broken internal invariant.
    #[error("{0} (this is likely a bug in taglake)")]
    Internal(String),
    /// The `features` writer stopped before the evaluation ended; its own
    /// error says why.
    #[error("the features writer stopped")]
    WriterStopped,
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
