//! What a connection keeps between statements: its memory pool, its
//! cursors (`DECLARE … CURSOR`) and how many results it holds open.
//!
//! `datafusion-postgres`'s cursors run their query without the statement
//! timeout or the read-only check, in a memory pool of their own, as many
//! as a client likes, and `FETCH n` pre-allocates room for `n` rows (a
//! `FETCH 10000000000000` aborts the process). The server therefore keeps
//! its own:
//!
//! - a cursor's query is planned and checked like any other and runs in a
//!   [`QueryPool`](crate::pool::QueryPool) inside the connection's pool;
//! - `FETCH` streams rows as they are encoded (the count is a loop bound,
//!   never an allocation) under the statement timeout of that `FETCH`;
//! - one connection holds at most `--max-cursors` open results: cursors
//!   and portals suspended by an `Execute` with a row limit. Each holds an
//!   [`OpenGuard`]; dropping the result (CLOSE, end of rows, `COMMIT` for a
//!   cursor without `WITH HOLD`, the connection ending) frees its place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion_postgres::arrow_pg::datatypes::encode_recordbatch;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::FieldInfo;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::messages::data::DataRow;
use futures::{Stream, StreamExt, stream};

use crate::pool::connection_pool;
use crate::reply::{Bounded, timed_out, user_error};

/// One connection's state, kept in its session extensions.
pub struct Connection {
    pool: Arc<dyn MemoryPool>,
    open: Arc<AtomicUsize>,
    cursors: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Cursor>>>>,
}

impl Connection {
    /// The state of `client`'s connection (created on first use).
    pub fn of<C: ClientInfo + ?Sized>(client: &C, memory: usize) -> Arc<Connection> {
        client.session_extensions().get_or_insert_with(|| Connection {
            pool: connection_pool(memory),
            open: Arc::new(AtomicUsize::new(0)),
            cursors: Mutex::new(HashMap::new()),
        })
    }

    /// The connection's memory pool.
    pub fn pool(&self) -> &Arc<dyn MemoryPool> {
        &self.pool
    }

    /// A place for one more open result, or SQLSTATE 53400 past `max`.
    pub fn open(&self, max: usize) -> PgWireResult<OpenGuard> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= max {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(user_error(
                "ERROR",
                "53400",
                format!(
                    "this connection already holds {max} open cursors or suspended portals (taglake serve \
                     --max-cursors {max}): CLOSE one, or read it to the end"
                ),
            ));
        }
        Ok(OpenGuard(self.open.clone()))
    }

    fn cursors(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Cursor>>>> {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a cursor; a name already open is SQLSTATE 42P03.
    pub fn declare(&self, name: &str, cursor: Cursor) -> PgWireResult<()> {
        let mut all = self.cursors();
        if all.contains_key(name) {
            return Err(user_error("ERROR", "42P03", format!("cursor \"{name}\" already exists")));
        }
        all.insert(name.to_string(), Arc::new(tokio::sync::Mutex::new(cursor)));
        Ok(())
    }

    /// A cursor by name, or SQLSTATE 34000.
    pub fn cursor(&self, name: &str) -> PgWireResult<Arc<tokio::sync::Mutex<Cursor>>> {
        self.cursors()
            .get(name)
            .cloned()
            .ok_or_else(|| user_error("ERROR", "34000", format!("cursor \"{name}\" does not exist")))
    }

    /// Closes one cursor; whether it existed.
    pub fn close(&self, name: &str) -> bool {
        self.cursors().remove(name).is_some()
    }

    /// Closes every cursor (`CLOSE ALL`), or those without `WITH HOLD`
    /// (the end of a transaction); returns their names.
    pub fn close_all(&self, held_too: bool) -> Vec<String> {
        let mut all = self.cursors();
        let names: Vec<String> = all
            .iter()
            .filter(|(_, c)| held_too || c.try_lock().map_or(true, |c| !c.hold))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            all.remove(n);
        }
        names
    }
}

/// One open result's place in its connection's count.
#[derive(Debug)]
pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A declared cursor: its running query and the rows of a batch not yet fetched.
pub struct Cursor {
    schema: SchemaRef,
    rows: Bounded,
    held: Option<RecordBatch>,
    hold: bool,
    _open: OpenGuard,
}

impl Cursor {
    /// A cursor over a started query.
    pub fn new(schema: SchemaRef, rows: Bounded, hold: bool, open: OpenGuard) -> Cursor {
        Cursor { schema, rows, held: None, hold, _open: open }
    }

    /// The schema of its rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// Up to `count` rows of a cursor (all that are left for `None`), encoded
/// as they are sent; reading stops at `deadline` with SQLSTATE 57014.
pub fn fetch(
    cursor: tokio::sync::OwnedMutexGuard<Cursor>,
    count: Option<u64>,
    fields: Arc<Vec<FieldInfo>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send {
    type Rows = Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send>;
    stream::unfold(Some((cursor, count)), move |state| {
        let fields = fields.clone();
        async move {
            let (mut c, left) = state?;
            if left == Some(0) {
                return None;
            }
            let batch = match c.held.take() {
                Some(b) => b,
                None => match tokio::time::timeout_at(deadline, c.rows.next()).await {
                    Err(_) => return Some((Box::new(std::iter::once(Err(timed_out(timeout)))) as Rows, None)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => return Some((Box::new(std::iter::once(Err(e))) as Rows, None)),
                    Ok(Some(Ok(b))) => b,
                },
            };
            let take =
                left.map_or(batch.num_rows(), |l| usize::try_from(l).unwrap_or(usize::MAX).min(batch.num_rows()));
            if take < batch.num_rows() {
                c.held = Some(batch.slice(take, batch.num_rows() - take));
            }
            let rows: Rows = Box::new(encode_recordbatch(fields, batch.slice(0, take)));
            Some((rows, Some((c, left.map(|l| l - take as u64)))))
        }
    })
    .flat_map(stream::iter)
}

/// A FETCH count: `None` for all, an error for anything but forward.
pub fn fetch_count(direction: &datafusion::sql::sqlparser::ast::FetchDirection) -> PgWireResult<Option<u64>> {
    use datafusion::sql::sqlparser::ast::{FetchDirection as D, Value};
    let backward = || {
        user_error(
            "ERROR",
            "55000",
            "cursor can only scan forward (taglake serve runs FETCH NEXT, FETCH n, FETCH FORWARD n|ALL, FETCH ALL)"
                .into(),
        )
    };
    let number = |v: &Value| -> PgWireResult<Option<u64>> {
        let Value::Number(text, _) = v else {
            return Err(user_error("ERROR", "42601", format!("FETCH count must be a number, got {v}")));
        };
        match text.parse::<i64>() {
            Ok(0) => Err(user_error(
                "ERROR",
                "0A000",
                "FETCH 0 (re-read the current row) is not supported: cursors here only move forward".into(),
            )),
            Ok(n) if n < 0 => Err(backward()),
            Ok(n) => Ok(Some(n as u64)),
            Err(_) => Err(user_error("ERROR", "22003", format!("FETCH count {text} is out of range for type bigint"))),
        }
    };
    match direction {
        D::Next | D::Forward { limit: None } => Ok(Some(1)),
        D::Forward { limit: Some(v) } | D::Count { limit: v } => number(v),
        D::ForwardAll | D::All => Ok(None),
        _ => Err(backward()),
    }
}
