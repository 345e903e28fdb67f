//! Memory per query *and* per connection.
//!
//! A query's sorts, joins and aggregations reserve memory from a pool of
//! `--query-memory` bytes. A connection may hold several queries at once
//! (open cursors, suspended portals, the running statement), so each
//! query's pool also reserves every byte from its connection's pool of
//! `--connection-memory` bytes: whichever limit is reached first fails
//! that query (SQLSTATE 53200), and a client cannot multiply the
//! per-query limit by opening more cursors.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};

/// The words that start a connection-limit error ([`crate::handler`] maps
/// it to 53200).
pub(crate) const CONNECTION_LIMIT: &str = "the connection's queries and open cursors would need more than";

/// The memory of one connection, shared by all its queries.
pub fn connection_pool(limit: usize) -> Arc<dyn MemoryPool> {
    Arc::new(GreedyMemoryPool::new(limit))
}

/// One query's pool: at most `limit` bytes, each also reserved in the
/// connection's pool.
#[derive(Debug)]
pub struct QueryPool {
    query: TrackConsumersPool<GreedyMemoryPool>,
    connection: Mutex<MemoryReservation>,
    connection_limit: usize,
    connection_setting: String,
}

impl QueryPool {
    /// A pool of `limit` bytes inside `connection` (of `connection_limit`
    /// bytes, a limit its error names as `connection_setting`).
    pub fn new(
        limit: usize,
        connection: &Arc<dyn MemoryPool>,
        connection_limit: usize,
        connection_setting: String,
    ) -> QueryPool {
        QueryPool {
            query: TrackConsumersPool::new(GreedyMemoryPool::new(limit), std::num::NonZeroUsize::MIN.saturating_add(2)),
            connection: Mutex::new(MemoryConsumer::new("taglake query").register(connection)),
            connection_limit,
            connection_setting,
        }
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, MemoryReservation> {
        // A reservation's arithmetic cannot be left half-done by a panic.
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} within a connection of {} bytes", self.query, self.connection_limit)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "taglake query"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.query.register(consumer)
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.query.unregister(consumer)
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.query.grow(reservation, additional);
        self.connection().grow(additional);
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.query.shrink(reservation, shrink);
        self.connection().shrink(shrink);
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.query.try_grow(reservation, additional)?;
        let connection = self.connection();
        if let Err(e) = connection.try_grow(additional) {
            drop(connection);
            self.query.shrink(reservation, additional);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{CONNECTION_LIMIT} its {} MiB ({}); close cursors you no longer read (CLOSE name): {e}",
                self.connection_limit >> 20,
                self.connection_setting
            )));
        }
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.query.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.query.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_share_their_connections_memory() {
        let connection = connection_pool(10 << 20);
        let a: Arc<dyn MemoryPool> =
            Arc::new(QueryPool::new(6 << 20, &connection, 10 << 20, "connection_memory".into()));
        let b: Arc<dyn MemoryPool> =
            Arc::new(QueryPool::new(6 << 20, &connection, 10 << 20, "connection_memory".into()));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(6 << 20).unwrap();
        let e = ra.try_grow(1).unwrap_err().to_string();
        assert!(e.contains("Resources exhausted"), "the per-query limit: {e}");
        rb.try_grow(4 << 20).unwrap();
        let e = rb.try_grow(1 << 20).unwrap_err().to_string();
        assert!(e.contains(CONNECTION_LIMIT) && e.contains("10 MiB (connection_memory)"), "{e}");
        assert_eq!(b.reserved(), 4 << 20, "a refused reservation leaves nothing behind");
        assert_eq!(connection.reserved(), 10 << 20);
        drop(ra);
        drop(a);
        assert_eq!(connection.reserved(), 4 << 20, "a finished query gives its memory back");
        rb.try_grow(5 << 20).unwrap_err(); // still the per-query limit of 6 MiB
        rb.try_grow(2 << 20).unwrap();
        drop(rb);
        drop(b);
        assert_eq!(connection.reserved(), 0);
    }
}
