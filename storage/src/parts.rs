//! The Parquet files of a streaming overwrite, written past the page cache.
//!
//! A tag refresh rewrites the whole `features` table every night (4.85 GB
//! at 42 M members) and `cluster` its `communities`. Through Delta's
//! writer every byte went through object_store's buffered file writes
//! into the page cache, at ~2 CPU-seconds a GB on the machine this
//! project is measured on (see [`crate::direct`]): 4.4 of the 41
//! CPU-seconds of a 10 M-member refresh were that copy. These files are
//! read by later queries, not by the run that writes them, so they are
//! written here with the table's Parquet settings into a
//! [`DirectWriter`], and each closed file becomes the Delta `add` action
//! Delta's writer would have made: its path, size and statistics (the row
//! count, and the minimum, maximum and null count of each integer column
//! that has Parquet statistics: what readers use to skip files; Delta
//! makes every other column's statistics optional).

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;

use crate::direct::DirectWriter;
use crate::{Error, Result, Table};

/// One partition of a streaming overwrite: files of about `target` bytes.
pub(crate) struct DirectParts {
    table: Table,
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    target: u64,
    /// Unique to this partition of this write: `part-<n>-<id>-c000.snappy.parquet`.
    id: String,
    files: usize,
    current: Option<(String, ArrowWriter<DirectWriter>)>,
    adds: Vec<String>,
}

impl DirectParts {
    pub(crate) fn new(
        table: Table,
        dir: PathBuf,
        schema: SchemaRef,
        props: WriterProperties,
        target: u64,
        id: String,
    ) -> DirectParts {
        DirectParts { table, dir, schema, props, target, id, files: 0, current: None, adds: Vec::new() }
    }

    fn parquet_err(&self, name: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
        let path = self.dir.join(name);
        move |e| Error::Parquet { table: self.table.name(), path: path.clone(), message: e.to_string() }
    }

    /// Writes one batch; closes the file once it reaches the target size.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            let name = self.name(self.files);
            self.files += 1;
            let path = self.dir.join(&name);
            let out = DirectWriter::create(&path).map_err(|source| Error::File { path: path.clone(), source })?;
            let writer = ArrowWriter::try_new(out, self.schema.clone(), Some(self.props.clone()))
                .map_err(self.parquet_err(&name))?;
            self.current = Some((name, writer));
        }
        let (name, writer) = self.current.as_mut().expect("opened above");
        if let Err(e) = writer.write(batch) {
            let name = name.clone();
            return Err(self.parquet_err(&name)(e));
        }
        if (writer.bytes_written() + writer.in_progress_size()) as u64 >= self.target {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<()> {
        let Some((name, mut writer)) = self.current.take() else { return Ok(()) };
        let path = self.dir.join(&name);
        let metadata = writer.finish().map_err(self.parquet_err(&name))?;
        let file = writer.inner_mut().finish().map_err(|source| Error::File { path: path.clone(), source })?;
        let size = file.metadata().map_err(|source| Error::File { path: path.clone(), source })?.len();
        let add = deltalake::kernel::Add {
            path: name,
            partition_values: Default::default(),
            size: size as i64,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats(&self.schema, &metadata)),
            ..Default::default()
        };
        self.adds.push(serde_json::to_string(&add).map_err(|e| Error::Parquet {
            table: self.table.name(),
            path,
            message: format!("its Delta add action: {e}"),
        })?);
        Ok(())
    }

    /// Closes the last file; returns the `add` actions of every file, as JSON.
    pub(crate) fn finish(mut self) -> Result<Vec<String>> {
        self.close_file()?;
        Ok(self.adds)
    }

    /// Deletes every file this writer made: a write that failed leaves
    /// nothing behind (a killed one leaves its files to `vacuum`).
    pub(crate) fn abort(mut self) {
        self.current = None;
        for n in 0..self.files {
            let _ = std::fs::remove_file(self.dir.join(self.name(n)));
        }
    }

    fn name(&self, n: usize) -> String {
        format!("part-{n:05}-{}-c000.snappy.parquet", self.id)
    }
}

/// Delta statistics of a file: its row count, and the minimum, maximum and
/// null count of every integer column whose every row group has Parquet
/// statistics.
fn stats(schema: &SchemaRef, metadata: &ParquetMetaData) -> String {
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    let mut nulls = serde_json::Map::new();
    let groups = metadata.row_groups();
    for (i, field) in schema.fields().iter().enumerate() {
        if !matches!(field.data_type(), DataType::Int32 | DataType::Int64) || groups.is_empty() {
            continue;
        }
        let mut range: Option<(i64, i64)> = None;
        let mut null_count = 0u64;
        let complete = groups.iter().all(|g| {
            let Some(column) = g.columns().get(i) else { return false };
            let (lo, hi, n) = match column.statistics() {
                Some(Statistics::Int32(s)) => {
                    (s.min_opt().map(|v| *v as i64), s.max_opt().map(|v| *v as i64), s.null_count_opt())
                }
                Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied(), s.null_count_opt()),
                _ => return false,
            };
            let Some(n) = n else { return false };
            null_count += n;
            match (lo, hi) {
                (Some(lo), Some(hi)) => {
                    range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                    true
                }
                // Only nulls in this row group: no bounds to add.
                (None, None) => n == g.num_rows() as u64,
                _ => false,
            }
        });
        if !complete {
            continue;
        }
        if let Some((lo, hi)) = range {
            min.insert(field.name().clone(), lo.into());
            max.insert(field.name().clone(), hi.into());
        }
        nulls.insert(field.name().clone(), null_count.into());
    }
    serde_json::json!({
        "numRecords": metadata.file_metadata().num_rows(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(schema: &SchemaRef, keys: Vec<Option<i64>>, ages: Vec<Option<i32>>) -> RecordBatch {
        let n = keys.len();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(Int32Array::from(ages)),
                Arc::new(Float64Array::from(vec![1.5; n])),
                Arc::new(StringArray::from(vec!["x"; n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn files_roll_at_the_target_and_their_adds_hold_integer_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("member_key", DataType::Int64, false),
            Field::new("age", DataType::Int32, true),
            Field::new("spend", DataType::Float64, true),
            Field::new("city", DataType::Utf8, true),
        ]));
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(2)).build();
        // A target of one byte closes a file after every batch.
        let mut parts = DirectParts::new(Table::Features, dir.path().into(), schema.clone(), props, 1, "t".into());
        parts.write(&batch(&schema, vec![Some(7), Some(3), Some(5)], vec![None, Some(40), Some(20)])).unwrap();
        parts.write(&batch(&schema, vec![Some(11)], vec![None])).unwrap();
        parts.write(&batch(&schema, vec![], vec![])).unwrap();
        let adds: Vec<deltalake::kernel::Add> =
            parts.finish().unwrap().iter().map(|a| serde_json::from_str(a).unwrap()).collect();
        assert_eq!(adds.len(), 2);
        let stats: Vec<serde_json::Value> =
            adds.iter().map(|a| serde_json::from_str(a.stats.as_deref().unwrap()).unwrap()).collect();
        assert_eq!(
            stats[0],
            serde_json::json!({
                "numRecords": 3,
                "minValues": {"member_key": 3, "age": 20},
                "maxValues": {"member_key": 7, "age": 40},
                "nullCount": {"member_key": 0, "age": 1},
            })
        );
        // A column of nulls only has a null count and no bounds.
        assert_eq!(
            stats[1],
            serde_json::json!({
                "numRecords": 1,
                "minValues": {"member_key": 11},
                "maxValues": {"member_key": 11},
                "nullCount": {"member_key": 0, "age": 1},
            })
        );
        for add in &adds {
            let path = dir.path().join(&add.path);
            assert_eq!(std::fs::metadata(&path).unwrap().len() as i64, add.size);
            let file = std::fs::File::open(&path).unwrap();
            let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum();
            assert_eq!(
                rows as i64,
                serde_json::from_str::<serde_json::Value>(add.stats.as_deref().unwrap()).unwrap()["numRecords"]
            );
        }
    }

    #[test]
    fn a_column_without_statistics_in_some_row_group_has_none_in_the_add() {
        let dir = tempfile::tempdir().unwrap();
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("member_key", DataType::Int64, false),
            Field::new("age", DataType::Int32, true),
            Field::new("spend", DataType::Float64, true),
            Field::new("city", DataType::Utf8, true),
        ]));
        let props = WriterProperties::builder()
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .set_column_statistics_enabled("member_key".into(), parquet::file::properties::EnabledStatistics::Chunk)
            .build();
        let mut parts =
            DirectParts::new(Table::Features, dir.path().into(), schema.clone(), props, 1 << 30, "u".into());
        parts.write(&batch(&schema, vec![Some(1), Some(2)], vec![Some(9), Some(8)])).unwrap();
        let adds = parts.finish().unwrap();
        let add: deltalake::kernel::Add = serde_json::from_str(&adds[0]).unwrap();
        let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
        assert_eq!(
            stats,
            serde_json::json!({
                "numRecords": 2,
                "minValues": {"member_key": 1},
                "maxValues": {"member_key": 2},
                "nullCount": {"member_key": 0},
            })
        );
    }
}
