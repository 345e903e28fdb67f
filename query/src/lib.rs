//! SQL over the warehouse.
//!
//! [`session`] opens a DataFusion `SessionContext` in which every warehouse
//! table that exists is registered under its own name (`members`, `orders`,
//! `products`, `features`, `communities`, `tags`, `member_ids`,
//! `quarantine`), each reading the current Delta version with projection
//! and filter pushdown into its Parquet files. `COPY (…) TO 'file'` writes
//! results locally.
//!
//! The next step of this crate is the `members` table with every tag of the
//! current snapshot as a boolean column, filters on tags answered from the
//! roaring bitmaps; until then tags are read from the `tags` table.
//!
//! ```no_run
//! # async fn run() -> taglake_query::Result<()> {
//! let wh = taglake_storage::Warehouse::open("warehouse")?;
//! let ctx = taglake_query::session(&wh).await?;
//! let batches = taglake_query::sql(&ctx, "SELECT community, count(*) FROM communities GROUP BY 1").await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use arrow::array::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use taglake_storage::{Table, Warehouse};

/// Errors of the query layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The warehouse could not be opened or read.
    #[error(transparent)]
    Storage(#[from] taglake_storage::Error),
    /// The SQL does not plan or fails while running; the message is
    /// DataFusion's, with a hint when it names a missing table.
    #[error("{0}")]
    Sql(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A session over the warehouse's existing tables.
pub async fn session(wh: &Warehouse) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    for table in Table::ALL {
        wh.register(table, &ctx).await?;
    }
    Ok(ctx)
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
    let frame = ctx.sql(text).await.map_err(|e| explain(ctx, &e.to_string()))?;
    frame.collect().await.map_err(|e| explain(ctx, &e.to_string()))
}

/// DataFusion's message, plus which tables exist when it names one that
/// does not (a warehouse table never written is not registered).
fn explain(ctx: &SessionContext, message: &str) -> Error {
    let message = message.trim().to_string();
    if let Some(rest) = message.split("table '").nth(1).filter(|_| message.contains("not found")) {
        let missing = rest.split('\'').next().unwrap_or_default();
        let missing = missing.rsplit('.').next().unwrap_or(missing);
        let have = tables(ctx);
        let hint = match Table::from_name(missing) {
            Some(t) => format!("; the warehouse has no `{t}` table yet"),
            None => taglake_storage::suggest(missing, have.iter().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default(),
        };
        return Error::Sql(format!("{message}{hint} (tables: {})", have.join(", ")));
    }
    Error::Sql(message)
}

#[cfg(test)]
mod tests {
    use super::*;

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
