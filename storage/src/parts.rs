//! The Parquet files of streaming overwrites and appends, written past the
//! page cache.
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
//! count, and the minimum, maximum and null count of each integer, double,
//! date and text column that has Parquet statistics: what readers use to
//! skip files; Delta makes every other column's statistics optional).
//!
//! Appends (`Warehouse::append`: tag snapshots, audiences, experiments)
//! write their files the same way, one writer per partition value.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;

use crate::direct::DirectWriter;
use crate::schema::check_columns;
use crate::{Error, Result, Table};

/// One partition of a streaming overwrite, or the files of one partition
/// value of an append: files of about `target` bytes.
pub(crate) struct DirectParts {
    table: Table,
    dir: PathBuf,
    /// The files' directory under the table's, with its `/`: `snapshot=7/`
    /// for a partitioned table, empty otherwise.
    prefix: String,
    /// The `partitionValues` of every add.
    partition: std::collections::HashMap<String, Option<String>>,
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
        DirectParts {
            table,
            dir,
            prefix: String::new(),
            partition: Default::default(),
            schema,
            props,
            target,
            id,
            files: 0,
            current: None,
            adds: Vec::new(),
        }
    }

    /// Writes into the Hive-style directory of one partition value per
    /// partition column (`snapshot=7/`), as Delta lays out a partitioned
    /// table; `schema` then leaves the partition columns out, as Delta's
    /// data files do. Values are integers: text would need escaping.
    pub(crate) fn in_partition(mut self, values: &[(&str, i64)]) -> DirectParts {
        for (column, value) in values {
            self.prefix.push_str(&format!("{column}={value}/"));
            self.partition.insert(column.to_string(), Some(value.to_string()));
        }
        self.dir = self.dir.join(&self.prefix);
        self
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
        // Parquet's writer takes columns by position and panics on a type
        // it did not expect: a batch of another schema is an error here.
        check_columns(self.table, &batch.schema(), &self.schema, true)?;
        if self.current.is_none() {
            if self.files == 0 && !self.prefix.is_empty() {
                std::fs::create_dir_all(&self.dir).map_err(|source| Error::File { path: self.dir.clone(), source })?;
            }
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
            path: format!("{}{name}", self.prefix),
            partition_values: self.partition.clone(),
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

    /// Closes the last file; returns the `add` actions of every file, as
    /// JSON. When the last file cannot be closed, deletes them all.
    pub(crate) fn finish(mut self) -> Result<Vec<String>> {
        match self.close_file() {
            Ok(()) => Ok(self.adds),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
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

/// A column's bound in a file's Delta statistics.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Bound {
    fn json(self) -> serde_json::Value {
        match self {
            Bound::Int(v) => v.into(),
            Bound::Float(v) => v.into(),
            Bound::Text(v) => v.into(),
        }
    }
}

/// One row group's bounds and null count of a column; `None` when it has
/// no statistics a Delta reader could use (or bounds JSON cannot hold:
/// infinities, text that is not UTF-8).
fn row_group_bounds(stats: Option<&Statistics>) -> Option<(Option<(Bound, Bound)>, u64)> {
    let float = |v: &f64| v.is_finite().then_some(Bound::Float(*v));
    let text = |v: &parquet::data_type::ByteArray| v.as_utf8().ok().map(|t| Bound::Text(t.to_string()));
    let stats = stats?;
    let (lo, hi, nulls) = match stats {
        Statistics::Int32(s) => {
            (s.min_opt().map(|v| Bound::Int(*v as i64)), s.max_opt().map(|v| Bound::Int(*v as i64)), s.null_count_opt())
        }
        Statistics::Int64(s) => {
            (s.min_opt().map(|v| Bound::Int(*v)), s.max_opt().map(|v| Bound::Int(*v)), s.null_count_opt())
        }
        Statistics::Double(s) => (s.min_opt().and_then(float), s.max_opt().and_then(float), s.null_count_opt()),
        Statistics::ByteArray(s) => (s.min_opt().and_then(text), s.max_opt().and_then(text), s.null_count_opt()),
        _ => return None,
    };
    let nulls = nulls?;
    match (lo, hi, stats.min_bytes_opt().is_some()) {
        (Some(lo), Some(hi), _) => Some((Some((lo, hi)), nulls)),
        // Only nulls: no bounds to add.
        (None, None, false) => Some((None, nulls)),
        // Bounds JSON cannot hold.
        _ => None,
    }
}

/// A date column's bound (days since 1970) as Delta's `YYYY-MM-DD` text.
fn date(days: &Bound) -> Option<Bound> {
    let Bound::Int(days) = days else { return None };
    let day = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(*days))?;
    Some(Bound::Text(day.format("%Y-%m-%d").to_string()))
}

/// Delta statistics of a file: its row count, and the minimum, maximum and
/// null count of every integer, double and text column whose every row
/// group has Parquet statistics (Parquet's bounds of long text are
/// truncated, and still bounds).
fn stats(schema: &SchemaRef, metadata: &ParquetMetaData) -> String {
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    let mut nulls = serde_json::Map::new();
    let groups = metadata.row_groups();
    for (i, field) in schema.fields().iter().enumerate() {
        let kept = matches!(
            field.data_type(),
            DataType::Int32 | DataType::Int64 | DataType::Float64 | DataType::Utf8 | DataType::Date32
        );
        if !kept || groups.is_empty() {
            continue;
        }
        let mut range: Option<(Bound, Bound)> = None;
        let mut null_count = 0u64;
        let complete = groups.iter().all(|g| {
            let Some((bounds, n)) = row_group_bounds(g.columns().get(i).and_then(|c| c.statistics())) else {
                return false;
            };
            null_count += n;
            match bounds {
                Some((lo, hi)) => {
                    range = Some(match range.take() {
                        None => (lo, hi),
                        Some((a, b)) => (if lo < a { lo } else { a }, if hi > b { hi } else { b }),
                    });
                    true
                }
                None => n == g.num_rows() as u64,
            }
        });
        if !complete {
            continue;
        }
        if let Some((lo, hi)) = range {
            // Delta writes dates as `YYYY-MM-DD`; Parquet holds days.
            let (lo, hi) = match field.data_type() {
                DataType::Date32 => match (date(&lo), date(&hi)) {
                    (Some(lo), Some(hi)) => (lo, hi),
                    _ => continue,
                },
                _ => (lo, hi),
            };
            min.insert(field.name().clone(), lo.json());
            max.insert(field.name().clone(), hi.json());
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

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("member_key", DataType::Int64, false),
            Field::new("age", DataType::Int32, true),
            Field::new("spend", DataType::Float64, true),
            Field::new("city", DataType::Utf8, true),
        ]))
    }

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
    fn files_roll_at_the_target_and_their_adds_hold_the_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema();
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
                "minValues": {"member_key": 3, "age": 20, "spend": 1.5, "city": "x"},
                "maxValues": {"member_key": 7, "age": 40, "spend": 1.5, "city": "x"},
                "nullCount": {"member_key": 0, "age": 1, "spend": 0, "city": 0},
            })
        );
        // A column of nulls only has a null count and no bounds.
        assert_eq!(
            stats[1],
            serde_json::json!({
                "numRecords": 1,
                "minValues": {"member_key": 11, "spend": 1.5, "city": "x"},
                "maxValues": {"member_key": 11, "spend": 1.5, "city": "x"},
                "nullCount": {"member_key": 0, "age": 1, "spend": 0, "city": 0},
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
    fn row_group_bounds_keep_what_json_holds_and_nothing_else() {
        let text = |v: &[u8]| Some(parquet::data_type::ByteArray::from(v.to_vec()));
        let cases = [
            (
                Statistics::int32(Some(-3), Some(9), None, Some(2), false),
                Some((Some((Bound::Int(-3), Bound::Int(9))), 2)),
            ),
            (
                Statistics::double(Some(0.5), Some(2.0), None, Some(0), false),
                Some((Some((Bound::Float(0.5), Bound::Float(2.0))), 0)),
            ),
            (Statistics::double(Some(0.5), Some(f64::INFINITY), None, Some(0), false), None),
            (Statistics::double(None, None, None, Some(4), false), Some((None, 4))),
            (
                Statistics::byte_array(text(b"a"), text(b"z"), None, Some(1), false),
                Some((Some((Bound::Text("a".into()), Bound::Text("z".into()))), 1)),
            ),
            (Statistics::byte_array(text(b"a"), text(&[0xff, 0xfe]), None, Some(0), false), None),
            (Statistics::int64(Some(1), Some(2), None, None, false), None),
            (Statistics::boolean(Some(false), Some(true), None, Some(0), false), None),
        ];
        for (stats, expected) in cases {
            assert_eq!(row_group_bounds(Some(&stats)), expected, "{stats:?}");
        }
        assert_eq!(row_group_bounds(None), None);
    }

    #[test]
    fn a_column_without_statistics_in_some_row_group_has_none_in_the_add() {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema();
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
