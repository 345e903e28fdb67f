//! What the server answers with besides rows: PostgreSQL errors with their
//! SQLSTATE codes, the result stream that stops at a statement's deadline,
//! the prepared-statement type the protocol layer stores, and the error
//! log.
//!
//! Its own module because the statement handler ([`crate::handler`]), the
//! cursors ([`crate::cursor`]) and the connection loop
//! ([`crate::connection`]) all answer this way, and the handler uses the
//! other two: kept in the handler, these made the three depend on each
//! other in a circle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use futures::{Stream, StreamExt};

use crate::live::Live;
use crate::log;
use crate::pool::CONNECTION_LIMIT;

/// A prepared statement as `datafusion-postgres` keeps it: the SQL, and the
/// parsed statement with its plan.
pub type Prepared = (String, Option<(Statement, LogicalPlan)>);

/// Turns DataFusion errors into PostgreSQL ones.
#[derive(Clone)]
pub(crate) struct Errors {
    pub(crate) query_memory: usize,
    /// How the per-query limit is named to the client.
    pub(crate) query_setting: String,
    pub(crate) live: Arc<Live>,
}

impl Errors {
    pub(crate) fn map(&self, e: DataFusionError) -> PgWireError {
        let root = e.find_root();
        let text = root.to_string();
        let (code, message) = match root {
            DataFusionError::ResourcesExhausted(m) if m.contains(CONNECTION_LIMIT) => ("53200", m.clone()),
            DataFusionError::ResourcesExhausted(_) => (
                "53200",
                format!(
                    "the query needs more memory than the per-query limit of {} MiB ({}): {text}",
                    self.query_memory >> 20,
                    self.query_setting
                ),
            ),
            DataFusionError::SQL(..) => ("42601", text),
            DataFusionError::SchemaError(..) => ("42703", text),
            DataFusionError::NotImplemented(_) => ("0A000", text),
            DataFusionError::Plan(m) if m.contains("table '") && m.contains("not found") => {
                ("42P01", taglake_query::explain(self.live.context(), &text).to_string())
            }
            DataFusionError::Plan(_) => ("42000", text),
            _ => ("XX000", text),
        };
        user_error("ERROR", code, message)
    }
}

/// A PostgreSQL error with a severity, a SQLSTATE and a message.
pub fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.into(), code.into(), message)))
}

/// SQLSTATE 57014 for a statement past its deadline.
pub fn timed_out(limit: Duration) -> PgWireError {
    user_error("ERROR", "57014", format!("canceling statement due to statement timeout ({:.3}s)", limit.as_secs_f64()))
}

/// A query's batches until its deadline; DataFusion stops (its tasks are
/// dropped) when this is dropped or the deadline passes.
pub struct Bounded {
    pub(crate) inner: Option<SendableRecordBatchStream>,
    /// The first item, read ahead (`Some(None)`: the stream was empty).
    pub(crate) first: Option<Option<PgWireResult<datafusion::arrow::array::RecordBatch>>>,
    /// `None` for a portal or a cursor: their reader applies a deadline
    /// per `Execute` or `FETCH`.
    pub(crate) deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(crate) timeout: Duration,
    pub(crate) errors: Errors,
}

impl Bounded {
    pub(crate) fn without_deadline(mut self) -> Bounded {
        self.deadline = None;
        self
    }
}

impl Stream for Bounded {
    type Item = PgWireResult<datafusion::arrow::array::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(first);
        }
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => return Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Err(e))) => {
                self.inner = None;
                return Poll::Ready(Some(Err(self.errors.map(e))));
            }
            Poll::Ready(None) => {
                self.inner = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if self.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
            self.inner = None;
            return Poll::Ready(Some(Err(timed_out(self.timeout))));
        }
        Poll::Pending
    }
}

/// Logs what the server answers with an error, with the peer.
pub struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        log(format_args!("{}: {error}", client.socket_addr()));
    }
}
