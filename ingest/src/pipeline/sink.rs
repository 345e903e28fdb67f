//! Parallel Parquet writers for one ingest, with a record of which rows
//! went into which file.
//!
//! Encoding Parquet is as much work as reading and checking the input, so
//! the rows an ingest keeps are spread over one writer task per core, each
//! cutting a file every [`ROWS_PER_FILE`] rows. Every row gets a sequence
//! number in the order it was handed over; each file records the ranges it
//! holds, so a row found to be a duplicate only after it was written (see
//! the orders path) can be taken out of its file before anything is
//! committed. Files stay invisible until the caller commits their `add`
//! actions. An ingest that fails first stops its writers ([`Sinks::stop`])
//! so that its caller can delete every file ([`crate::discard_failed`]);
//! one that is killed leaves them to `taglake vacuum`.

use std::path::PathBuf;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use taglake_storage::{PartWriter, Table, Warehouse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// Rows per data file.
pub const ROWS_PER_FILE: u64 = 2_000_000;

/// A finished data file of this ingest.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Its Delta `add` action (JSON).
    pub add: String,
    /// Its local path.
    pub path: PathBuf,
    /// The sequence numbers it holds, as `[start, end)` ranges in file order.
    pub seqs: Vec<(u64, u64)>,
}

/// Writer tasks fed round-robin, batch by batch.
pub struct Sinks {
    wh: Warehouse,
    table: Table,
    senders: Vec<mpsc::Sender<(u64, RecordBatch)>>,
    tasks: Vec<JoinHandle<Result<Vec<WrittenFile>>>>,
    next: usize,
    seq: u64,
}

impl Sinks {
    /// `writers` writer tasks for `table` with `schema`, each cutting a
    /// file every `rows_per_file` rows.
    pub fn new(wh: &Warehouse, table: Table, schema: SchemaRef, writers: usize, rows_per_file: u64) -> Result<Sinks> {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..writers.max(1) {
            let writer = wh.file_writer(table, schema.clone())?;
            let (tx, rx) = mpsc::channel(2);
            senders.push(tx);
            tasks.push(tokio::spawn(run_writer(wh.clone(), table, writer, rx, rows_per_file)));
        }
        Ok(Sinks { wh: wh.clone(), table, senders, tasks, next: 0, seq: 0 })
    }

    /// The sequence number the next row written gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Hands a batch to the next writer; its rows get the next sequence numbers.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let first = self.seq;
        self.seq += batch.num_rows() as u64;
        let i = self.next;
        self.next = (self.next + 1) % self.senders.len();
        if self.senders[i].send((first, batch)).await.is_err() {
            // The writer stopped: its error comes out of `finish`.
            return Err(self.fail().await);
        }
        Ok(())
    }

    async fn fail(&mut self) -> Error {
        match self.join().await {
            Err(e) => e,
            Ok(_) => Error::Spill { path: self.wh.table_path(self.table), source: "a data file writer stopped".into() },
        }
    }

    /// Closes every writer and waits for all of them, even after one
    /// failed (the first error is returned): none is left running.
    async fn join(&mut self) -> Result<Vec<WrittenFile>> {
        self.senders.clear();
        let mut files = Vec::new();
        let mut failed = None;
        for t in std::mem::take(&mut self.tasks) {
            match t.await {
                Ok(Ok(written)) => files.extend(written),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(e) => {
                    failed.get_or_insert(writer_panicked(e));
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(files),
        }
    }

    /// Stops every writer after an error and waits for it, its rows
    /// written: every file of this ingest exists once this returns, so
    /// that its caller can delete them all (`discard_failed`). Writers
    /// stopped halfway (aborted) could leave a file behind the deletion.
    pub async fn stop(&mut self) {
        let _ = self.join().await;
    }

    /// Closes every writer; the files, in no particular order.
    pub async fn finish(mut self) -> Result<Vec<WrittenFile>> {
        self.join().await
    }
}

/// Writers still running when the ingest unwinds without [`Sinks::stop`]
/// (a panic) are aborted rather than left to write on, unobserved.
impl Drop for Sinks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn writer_panicked(e: tokio::task::JoinError) -> Error {
    Error::Spill { path: PathBuf::from("(data file writer)"), source: format!("writer task failed: {e}").into() }
}

async fn run_writer(
    wh: Warehouse,
    table: Table,
    mut writer: PartWriter,
    mut rx: mpsc::Receiver<(u64, RecordBatch)>,
    rows_per_file: u64,
) -> Result<Vec<WrittenFile>> {
    let mut files = Vec::new();
    let mut seqs: Vec<(u64, u64)> = Vec::new();
    let mut rows = 0u64;
    while let Some((first, batch)) = rx.recv().await {
        let n = batch.num_rows() as u64;
        writer.write(batch).await?;
        match seqs.last_mut() {
            Some(last) if last.1 == first => last.1 += n,
            _ => seqs.push((first, first + n)),
        }
        rows += n;
        if rows >= rows_per_file {
            close_file(&wh, table, &mut writer, &mut seqs, &mut files).await?;
            rows = 0;
        }
    }
    if rows > 0 {
        close_file(&wh, table, &mut writer, &mut seqs, &mut files).await?;
    }
    Ok(files)
}

async fn close_file(
    wh: &Warehouse,
    table: Table,
    writer: &mut PartWriter,
    seqs: &mut Vec<(u64, u64)>,
    files: &mut Vec<WrittenFile>,
) -> Result<()> {
    for add in writer.flush().await? {
        let path = wh.added_file(table, &add)?;
        files.push(WrittenFile { add, path, seqs: std::mem::take(seqs) });
    }
    Ok(())
}

/// Takes the rows with sequence numbers in `drop` (sorted) out of `files`:
/// each file holding any is rewritten without them (and the old file
/// deleted; none of them is committed yet).
pub async fn remove_rows(wh: &Warehouse, table: Table, files: &mut [WrittenFile], drop: &[u64]) -> Result<()> {
    if drop.is_empty() {
        return Ok(());
    }
    for file in files.iter_mut() {
        let positions: Vec<bool> =
            file.seqs.iter().flat_map(|&(a, b)| a..b).map(|seq| drop.binary_search(&seq).is_err()).collect();
        if positions.iter().all(|keep| *keep) {
            continue;
        }
        let path = file.path.clone();
        let spill = |e: Box<dyn std::error::Error + Send + Sync>| Error::Spill { path: path.clone(), source: e };
        let reader = std::fs::File::open(&path).map_err(|e| spill(e.into()))?;
        let batches = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(reader)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| spill(e.into()))?;
        let mut writer = wh.file_writer(table, table.arrow_schema())?;
        let mut at = 0usize;
        for batch in batches {
            let batch = batch.map_err(|e| spill(e.into()))?;
            let n = batch.num_rows();
            let mask = BooleanArray::from(positions[at..at + n].to_vec());
            at += n;
            let kept = arrow::compute::filter_record_batch(&batch, &mask).map_err(Error::internal("removing rows"))?;
            let kept = RecordBatch::try_new(table.arrow_schema(), kept.columns().to_vec())
                .map_err(Error::internal("removing rows"))?;
            writer.write(kept).await?;
        }
        let adds = writer.finish().await?;
        let new_seqs: Vec<(u64, u64)> = file
            .seqs
            .iter()
            .flat_map(|&(a, b)| a..b)
            .filter(|seq| drop.binary_search(seq).is_err())
            .map(|s| (s, s + 1))
            .collect();
        std::fs::remove_file(&file.path).map_err(|e| spill(e.into()))?;
        match adds.into_iter().next() {
            Some(add) => {
                file.path = wh.added_file(table, &add)?;
                file.add = add;
                file.seqs = new_seqs;
            }
            None => {
                // Every row went: the file is simply gone.
                file.add.clear();
                file.seqs.clear();
            }
        }
    }
    Ok(())
}
