//! SQL and audiences over the warehouse.
//!
//! [`session`] opens a DataFusion `SessionContext` in which every warehouse
//! table that exists is registered under its own name (`orders`,
//! `products`, `features`, `communities`, `experiments`, `tags`,
//! `member_ids`, `quarantine`), each reading the current Delta version with
//! projection and filter pushdown into its Parquet files. `members` carries
//! the member attributes and one boolean column per tag of the current
//! snapshot, with tag filters answered from the roaring bitmaps
//! ([`members`]); `audience('…')` is a table function over the same
//! ([`function`]). `COPY (…) TO 'file'` writes results locally.
//!
//! SQL text is parsed by [`parse`] before DataFusion plans it, and
//! [`balance`] keeps the optimizer from undoing its work, so that no
//! statement, however long, can overflow a stack on the way.
//!
//! The audience language ([`audience`]), overlaps and samples of audiences
//! ([`survey`]), cohort exports with salted splits ([`export`]) and
//! experiment reports ([`experiment`], [`stats`]) live here too, so the CLI
//! and the SQL server share them.
//!
//! Its async functions that read tables scan through
//! [`taglake_storage::scan::blocking`], so they need tokio's multi-thread
//! runtime; on a current-thread runtime they return
//! `taglake_storage::Error::CurrentThreadRuntime` (wrapped) instead of
//! panicking.
//!
//! ```no_run
//! # async fn run() -> taglake_query::Result<()> {
//! let wh = taglake_storage::Warehouse::open("warehouse")?;
//! let ctx = taglake_query::session(&wh).await?;
//! let batches = taglake_query::sql(&ctx, "SELECT community, count(*) FROM communities GROUP BY 1").await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod activity;
pub mod attribute;
pub mod audience;
pub mod balance;
pub mod bits;
pub mod breakdown;
pub mod cache;
pub mod count;
pub mod experiment;
pub mod export;
pub mod function;
pub mod members;
pub mod narrow;
mod node;
pub mod parse;
mod registry;
pub mod saved;
mod saved_table;
pub mod stats;
pub mod survey;
pub mod tagset;

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use taglake_storage::{Table, Warehouse};

pub use audience::{AudienceError, Node};
pub use tagset::TagSet;

/// Errors of the query layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The warehouse could not be opened or read.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// The SQL text cannot be read or run (the message says why).
    #[error("{0}")]
    Sql(String),
    /// DataFusion failed planning or running SQL: its message, and what
    /// taglake adds to it (`hint`: which tables exist when it names a
    /// missing one).
    #[error("{}{hint}", .source.to_string().trim())]
    DataFusion {
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
        /// Added to DataFusion's message (empty: nothing).
        hint: String,
    },
    /// A tag snapshot could not be read.
    #[error(transparent)]
    Tags(#[from] taglake_tagger::Error),
    /// An audience expression does not parse.
    #[error("{0}")]
    Audience(#[from] AudienceError),
    /// A SQL text is past a limit of [`parse`] (its length, its nesting);
    /// the message names the limit.
    #[error("{0}")]
    TooComplex(String),
    /// A command's arguments are invalid (the message says which and why).
    #[error("{0}")]
    Invalid(String),
    /// A parameter of the call is invalid: the message names it apart
    /// from its text, for a program to show as its flag.
    #[error("{0}")]
    Parameter(#[source] taglake_storage::ParamMessage),
    /// Stored data breaks an invariant the warehouse guarantees.
    #[error("the warehouse is damaged: {0}")]
    Corrupt(String),
    /// An experiment's figures cannot be computed.
    #[error(transparent)]
    Stats(#[from] stats::StatsError),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong: the file system's, Arrow's or Parquet's error,
        /// or what the file lacks.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The cause an error keeps as its source: another error, or a text.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A session over the warehouse's existing tables, with the newest tag
/// snapshot as columns of `members`.
pub async fn session(wh: &Warehouse) -> Result<SessionContext> {
    Ok(open(wh).await?.0)
}

/// A session and the tags it answers from (`None` before any ingest).
/// Needs tokio's multi-thread runtime (see the crate docs).
pub async fn open(wh: &Warehouse) -> Result<(SessionContext, Option<Arc<TagSet>>)> {
    let config =
        SessionConfig::new().with_information_schema(true).with_extension(Arc::new(cache::PlanCache::default()));
    let ctx = SessionContext::new_with_config(config);
    let tags = TagSet::load(wh, None).await?.map(Arc::new);
    Catalog::load(wh, &ctx, tags.clone()).await?.register(&ctx)?;
    Ok((ctx, tags))
}

/// What a session over the warehouse registers: every existing table,
/// `members` with a column per tag, and `audience()`. Built apart from the
/// session so a long-lived server can build the next one (a new snapshot,
/// new table versions) while queries run, then swap it in at once.
pub struct Catalog {
    /// Each existing table under its name (`members` with tag columns).
    pub tables: Vec<(&'static str, Arc<dyn TableProvider>)>,
    /// The `audience('…')` function, when there are members and tags.
    pub audience: Option<Arc<function::AudienceFunction>>,
    /// The tags `members` answers from.
    pub tags: Option<Arc<TagSet>>,
}

impl Catalog {
    /// Providers over the current version of every table, with `tags` as
    /// the columns of `members` (`None`: the plain attribute table).
    pub async fn load(wh: &Warehouse, ctx: &SessionContext, tags: Option<Arc<TagSet>>) -> Result<Catalog> {
        let mut providers = Vec::new();
        for table in Table::ALL {
            if let Some(provider) = wh.provider(table, ctx).await? {
                providers.push((table, provider));
            }
        }
        Ok(Catalog::from_providers(providers, tags))
    }

    /// The catalog over given readers of the existing tables (a cluster
    /// session reads pinned file lists instead of Delta providers), with
    /// `members` wrapped to carry `tags` as columns.
    pub fn from_providers(providers: Vec<(Table, Arc<dyn TableProvider>)>, tags: Option<Arc<TagSet>>) -> Catalog {
        let mut tables = Vec::new();
        let mut audience = None;
        for (table, provider) in providers {
            let provider: Arc<dyn TableProvider> = match (&tags, table) {
                (Some(tags), Table::Members) => {
                    let members = Arc::new(members::MembersTable::new(tags.clone(), provider));
                    audience = Some(Arc::new(function::AudienceFunction::new(members.clone())));
                    members
                }
                _ => provider,
            };
            tables.push((table.name(), provider));
        }
        Catalog { tables, audience, tags }
    }

    /// Registers (or replaces) every table and the function in `ctx`, and
    /// keeps its optimizer from building deep chains ([`balance::install`]).
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        // The breakdown rule first, so balancing puts its pass after it too.
        breakdown::install(ctx);
        balance::install(ctx);
        for (name, provider) in &self.tables {
            ctx.deregister_table(*name).map_err(Error::datafusion)?;
            ctx.register_table(*name, provider.clone()).map_err(Error::datafusion)?;
        }
        if let Some(f) = &self.audience {
            ctx.register_udtf("audience", f.clone());
        }
        Ok(())
    }
}

/// The tables registered in a session, by name.
pub fn tables(ctx: &SessionContext) -> Vec<String> {
    let mut names: Vec<String> = Table::ALL
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| ctx.table_exist(n.as_str()).unwrap_or(false))
        .collect();
    names.sort();
    names
}

/// Runs one SQL statement and collects its result.
pub async fn sql(ctx: &SessionContext, text: &str) -> Result<Vec<RecordBatch>> {
    let frame = dataframe(ctx, text).await?;
    frame.collect().await.map_err(|e| explained(ctx, e))
}

/// Plans one SQL statement (what `SessionContext::sql` does, with the text
/// parsed by [`parse::statements`]).
pub async fn dataframe(ctx: &SessionContext, text: &str) -> Result<DataFrame> {
    let state = ctx.state();
    if let Some(plan) = cache::kept(&state, text).await {
        return ctx.execute_logical_plan(plan).await.map_err(|e| explained(ctx, e));
    }
    let mut statements = parse::statements(&state, text)?;
    if statements.len() > 1 {
        return Err(Error::Sql(format!(
            "the text holds {} statements; give one at a time (the prompt, `taglake sql` without a statement, \
             runs several)",
            statements.len()
        )));
    }
    let statement = statements.pop_front().ok_or_else(|| Error::Sql("the SQL text holds no statement".into()))?;
    let plan = cache::plan(&state, text, statement).await.map_err(|e| explained(ctx, e))?;
    ctx.execute_logical_plan(plan).await.map_err(|e| explained(ctx, e))
}

/// Runs a statement whose answer is one number (a count, a max): the first
/// column of the first row, as `i64`. `None` when there is no row or the
/// value is null; an error when it is not a number.
pub async fn sql_number(ctx: &SessionContext, text: &str) -> Result<Option<i64>> {
    let batches = sql(ctx, text).await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let strict = arrow::compute::CastOptions { safe: false, ..Default::default() };
    let column = arrow::compute::cast_with_options(batch.column(0), &arrow::datatypes::DataType::Int64, &strict)
        .map_err(|e| Error::Sql(format!("{text}: the answer is not a number ({e})")))?;
    let column = column.as_any().downcast_ref::<arrow::array::Int64Array>().expect("cast to Int64 gives Int64");
    Ok((!arrow::array::Array::is_null(column, 0)).then(|| column.value(0)))
}

/// DataFusion's message, plus which tables exist when it names one that
/// does not (a warehouse table never written is not registered).
pub fn explain(ctx: &SessionContext, message: &str) -> Error {
    let message = message.trim();
    Error::Sql(format!("{message}{}", hint(ctx, message)))
}

/// [`explain`] keeping DataFusion's error as the source.
fn explained(ctx: &SessionContext, e: DataFusionError) -> Error {
    let hint = hint(ctx, e.to_string().trim());
    Error::DataFusion { source: Box::new(e), hint }
}

impl Error {
    /// DataFusion's error as this crate's, with nothing added.
    pub(crate) fn datafusion(e: DataFusionError) -> Error {
        Error::DataFusion { source: Box::new(e), hint: String::new() }
    }
}

/// What [`explain`] adds to DataFusion's `message`: which tables exist
/// when it names a missing one, with the nearest name.
fn hint(ctx: &SessionContext, message: &str) -> String {
    if let Some(rest) = message.split("table '").nth(1).filter(|_| message.contains("not found")) {
        let missing = rest.split('\'').next().unwrap_or_default();
        let missing = missing.rsplit('.').next().unwrap_or(missing);
        let have = tables(ctx);
        let hint = match Table::from_name(missing) {
            Some(t) => format!("; the warehouse has no `{t}` table yet"),
            None => taglake_base::suggest(missing, have.iter().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default(),
        };
        return format!("{hint} (tables: {})", have.join(", "));
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn sql_number_reads_one_value_or_none() {
        let ctx = SessionContext::new();
        assert_eq!(sql_number(&ctx, "SELECT count(*) FROM (VALUES (1), (2), (3))").await.unwrap(), Some(3));
        assert_eq!(sql_number(&ctx, "SELECT CAST(NULL AS BIGINT)").await.unwrap(), None);
        assert_eq!(sql_number(&ctx, "SELECT 1 WHERE false").await.unwrap(), None);
        let err = sql_number(&ctx, "SELECT 'abc'").await.unwrap_err().to_string();
        assert!(err.contains("not a number"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_empty_warehouse_has_no_tables_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let ctx = session(&wh).await.unwrap();
        assert!(tables(&ctx).is_empty());
        let err = sql(&ctx, "SELECT count(*) FROM members").await.unwrap_err().to_string();
        assert!(err.contains("the warehouse has no `members` table yet"), "{err}");
    }
}
