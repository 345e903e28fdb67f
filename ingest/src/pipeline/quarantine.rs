//! The quarantine table: bad rows with file, row, column and reason.
//!
//! An entry is recorded once: running the same ingest again adds nothing.
//! Entries are recognised by their content ([`crate::keys::quarantine_key`]:
//! table, file, row and the raw record), not by position alone, so a daily
//! export rewritten under the same name with new bad rows gets them
//! recorded even where an earlier version of the file had a bad row at the
//! same line. Known entries are found through the quarantine's key index.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use taglake_storage::{PartWriter, Table, Warehouse};

use crate::keys::{KeyIndex, KeyKind, quarantine_key};
use crate::source::Reject;
use crate::{Error, Result};

/// Recording the bad rows of one ingest.
pub struct Quarantine {
    table: Table,
    index: KeyIndex,
    /// Keys recorded by this run.
    seen: HashSet<u128>,
    writer: PartWriter,
    /// Entries written by this run.
    pub written: u64,
    now_us: i64,
}

impl Quarantine {
    /// Opens the quarantine for rows of `table`.
    pub async fn open(wh: &Warehouse, table: Table, memory: usize) -> Result<Self> {
        let index = KeyIndex::open(wh, KeyKind::Quarantine, memory).await?;
        let writer = wh.file_writer(Table::Quarantine, Table::Quarantine.arrow_schema())?;
        Ok(Quarantine {
            table,
            index,
            seen: HashSet::new(),
            writer,
            written: 0,
            now_us: chrono::Utc::now().timestamp_micros(),
        })
    }

    /// Records the rejects of `file` not recorded before.
    pub async fn add(&mut self, file: &str, rejects: &[Reject]) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        let table = self.table.name();
        let keys: Vec<u128> = rejects
            .iter()
            .map(|r| quarantine_key(table, file, r.row as i64, r.column.as_deref(), &r.reason, r.raw.as_deref()))
            .collect();
        let mut sorted: Vec<u128> = keys.iter().copied().filter(|k| !self.seen.contains(k)).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let stored = self.index.lookup(&sorted, true)?;
        let known: HashSet<u128> = sorted.iter().zip(stored).filter(|(_, s)| s.is_some()).map(|(k, _)| *k).collect();
        let fresh: Vec<&Reject> = rejects
            .iter()
            .zip(&keys)
            .filter(|(_, k)| !known.contains(k) && self.seen.insert(**k))
            .map(|(r, _)| r)
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let n = fresh.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![table; n])),
            Arc::new(StringArray::from(vec![file; n])),
            Arc::new(Int64Array::from_iter_values(fresh.iter().map(|r| r.row as i64))),
            Arc::new(StringArray::from_iter(fresh.iter().map(|r| r.column.as_deref()))),
            Arc::new(StringArray::from_iter_values(fresh.iter().map(|r| r.reason.as_str()))),
            Arc::new(StringArray::from_iter(fresh.iter().map(|r| r.raw.as_deref()))),
            Arc::new(TimestampMicrosecondArray::from(vec![self.now_us; n]).with_timezone("UTC")),
        ];
        let batch = RecordBatch::try_new(Table::Quarantine.arrow_schema(), columns)
            .map_err(Error::internal("building quarantine rows"))?;
        self.writer.write(batch).await?;
        self.written += n as u64;
        Ok(())
    }

    /// Commits the entries of this run (one commit, none without any;
    /// an empty table is created when there is none yet),
    /// then records them in the index.
    pub async fn commit(mut self, wh: &Warehouse) -> Result<()> {
        let adds = self.writer.finish().await?;
        if self.written == 0 {
            return Ok(wh.ensure_table(Table::Quarantine).await?);
        }
        wh.commit_files(Table::Quarantine, &[], &adds).await?;
        let state = wh.state(Table::Quarantine).await?.expect("just committed");
        let run = self.index.sort_into_run(self.seen.drain().map(|k| (k, 0)).collect())?;
        self.index.commit(vec![run], state)
    }
}
