//! Parallel reads of a few columns of a warehouse table.
//!
//! The tagger reads 10 of the 13 order columns of every line, once; the
//! clustering step reads a few dozen feature columns of every member.
//! Going through DataFusion would work, but reading the Delta table's Parquet
//! files directly lets every row group be decoded on its own rayon task,
//! lets low-cardinality text columns (channel, category, store) stay
//! dictionary-encoded all the way (we map each batch's few distinct values
//! to global codes instead of hashing every row), and keeps memory at one
//! row group per thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Error, Result, Table, Warehouse};
use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use rayon::prelude::*;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

/// A column to read and the type it should arrive in.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Column name.
    pub name: String,
    /// Arrow type the column arrives in (cast if stored otherwise).
    pub ty: DataType,
    /// Whether a file without the column reads it as null instead of
    /// failing: a column added to the table after the file was written.
    pub optional: bool,
}

impl Wanted {
    /// A column in its warehouse type.
    pub fn plain(table: Table, name: &'static str) -> Wanted {
        let ty = table.column(name).expect("known column").ty.arrow();
        Wanted { name: name.to_string(), ty, optional: false }
    }

    /// Reads files written before the column existed as null rows instead
    /// of failing on them.
    pub fn or_null(self) -> Wanted {
        Wanted { optional: true, ..self }
    }

    /// A column (e.g. a data-dependent one) in the given type.
    pub fn typed(name: impl Into<String>, ty: DataType) -> Wanted {
        Wanted { name: name.into(), ty, optional: false }
    }

    /// A text column read as `Dictionary(Int32, Utf8)`.
    pub fn dictionary(name: &'static str) -> Wanted {
        Wanted {
            name: name.to_string(),
            ty: DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            optional: false,
        }
    }
}

/// The current Parquet files of a table.
pub async fn table_files(wh: &Warehouse, table: Table) -> Result<Vec<PathBuf>> {
    Ok(wh.files(table).await?.into_iter().map(|f| f.path).collect())
}

/// How the rows of a table lie along the member key space, from the
/// `member_key` statistics of its row groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpread {
    /// The share of the key space a row group spans, averaged over rows:
    /// about `1 / row_groups` in `member_key` order (each row group a
    /// narrow band), near 1 when every row group holds members from
    /// everywhere (an export sorted by time).
    pub spread: f64,
    /// Row groups with statistics.
    pub row_groups: usize,
}

impl KeySpread {
    /// From `(min key, max key, rows)` per row group; `None` without any.
    pub fn of(groups: &[(i64, i64, i64)]) -> Option<KeySpread> {
        let lo = groups.iter().map(|g| g.0).min()?;
        let hi = groups.iter().map(|g| g.1).max()?;
        let space = (hi - lo) as f64 + 1.0;
        let rows: f64 = groups.iter().map(|g| g.2 as f64).sum();
        let spanned: f64 = groups.iter().map(|g| ((g.1 - g.0) as f64 + 1.0) / space * g.2 as f64).sum();
        Some(KeySpread { spread: if rows > 0.0 { spanned / rows } else { 0.0 }, row_groups: groups.len() })
    }

    /// Whether a reader of a member range reads far more than its share:
    /// the spread is over a quarter of the key space and over 4 times what
    /// the same row groups in key order would span. A few row groups, or
    /// small appends after a sorted history, do not count.
    pub fn scattered(&self) -> bool {
        self.spread > 0.25 && self.spread > 4.0 / self.row_groups as f64
    }
}

/// The [`KeySpread`] of `files`, read from their footers only. `None` when
/// no row group has `member_key` statistics.
pub fn member_key_spread(table: Table, files: &[PathBuf]) -> Result<Option<KeySpread>> {
    Ok(KeySpread::of(&member_key_bands(table, files)?))
}

/// `(min member_key, max member_key, rows)` of every row group of `files`
/// that has `member_key` statistics, from the footers.
pub fn member_key_bands(table: Table, files: &[PathBuf]) -> Result<Vec<(i64, i64, i64)>> {
    let mut bands = Vec::new();
    for path in files {
        let meta = footer(table, path)?;
        let Some(leaf) = key_leaf(&meta) else { continue };
        for rg in meta.metadata().row_groups() {
            if let Some((lo, hi)) = key_bounds(rg.column(leaf).statistics()) {
                bands.push((lo, hi, rg.num_rows()));
            }
        }
    }
    Ok(bands)
}

/// The leaf column of `member_key` in a file, if it has one.
fn key_leaf(meta: &ArrowReaderMetadata) -> Option<usize> {
    leaf(meta, "member_key")
}

/// The leaf column of top-level column `column` in a file, if it has one.
fn leaf(meta: &ArrowReaderMetadata, column: &str) -> Option<usize> {
    meta.parquet_schema().columns().iter().position(|c| c.path().parts() == [column])
}

/// A row group's `member_key` (min, max), when its statistics have both.
fn key_bounds(stats: Option<&parquet::file::statistics::Statistics>) -> Option<(i64, i64)> {
    match stats {
        Some(parquet::file::statistics::Statistics::Int64(s)) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// The largest value of the 64-bit integer (or timestamp) column `column`
/// in `files`, `i64::MIN` when it holds none. Read from the row-group
/// statistics of the footers (a tag run's newest order at 42 M members
/// without reading 420 M timestamps), or from a scan of the column when a
/// row group with values has no exact maximum (an older writer,
/// statistics off).
pub fn column_max(table: Table, files: &[PathBuf], column: &str) -> Result<i64> {
    if let Some(max) = max_from_footers(table, files, column)? {
        return Ok(max);
    }
    let max = std::sync::atomic::AtomicI64::new(i64::MIN);
    scan::<_, Error>(table, files, &[Wanted::typed(column, DataType::Int64)], |b| {
        if let Some(m) =
            arrow::compute::max(arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b.column(0)))
        {
            max.fetch_max(m, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    })?;
    Ok(max.into_inner())
}

/// [`column_max`] from the footers alone: `None` when they cannot tell.
fn max_from_footers(table: Table, files: &[PathBuf], column: &str) -> Result<Option<i64>> {
    let mut max = i64::MIN;
    for path in files {
        let meta = footer(table, path)?;
        let Some(leaf) = leaf(&meta, column) else {
            return Ok(None);
        };
        for rg in meta.metadata().row_groups() {
            let chunk = rg.column(leaf);
            match chunk.statistics() {
                Some(parquet::file::statistics::Statistics::Int64(s)) if s.max_is_exact() && s.max_opt().is_some() => {
                    max = max.max(*s.max_opt().expect("checked"));
                }
                // Only nulls: nothing to count.
                Some(s) if s.null_count_opt() == Some(rg.num_rows() as u64) => {}
                _ if rg.num_rows() == 0 => {}
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(max))
}

/// The number of rows in `files`, from their footers.
pub fn row_count(table: Table, files: &[PathBuf]) -> Result<u64> {
    files.iter().map(|path| Ok(footer(table, path)?.metadata().file_metadata().num_rows().max(0) as u64)).sum()
}

/// The Parquet footer of one file of `table`.
fn footer(table: Table, path: &Path) -> Result<ArrowReaderMetadata> {
    let file = File::open(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?;
    ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| Error::ParquetDecode {
        table: table.name(),
        path: path.to_path_buf(),
        source,
    })
}

/// Runs blocking work (a [`scan`], a fit, an index read) from async code:
/// on the calling task's thread, once tokio has handed that thread's other
/// tasks to the rest of the pool (`tokio::task::block_in_place`).
///
/// That needs tokio's multi-thread runtime: `block_in_place` panics on a
/// current-thread one, so there this returns
/// [`Error::CurrentThreadRuntime`] instead, before any work. Outside a
/// runtime the work just runs. Every async function of the taglake
/// libraries that scans goes through here, so all of them need the
/// multi-thread runtime (`#[tokio::main]`, `Runtime::new`,
/// `#[tokio::test(flavor = "multi_thread")]`).
pub fn blocking<T, E: From<Error>>(work: impl FnOnce() -> std::result::Result<T, E>) -> std::result::Result<T, E> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread) {
        return Err(Error::CurrentThreadRuntime.into());
    }
    tokio::task::block_in_place(work)
}

/// Reads `wanted` from every row group of `files` in parallel and calls
/// `each` with every batch (columns in `wanted` order, cast to the wanted
/// types). `each` runs on rayon threads, concurrently; its first error
/// stops the scan and is returned.
pub fn scan<F, E>(table: Table, files: &[PathBuf], wanted: &[Wanted], each: F) -> std::result::Result<(), E>
where
    F: Fn(&RecordBatch) -> std::result::Result<(), E> + Sync,
    E: From<Error> + Send,
{
    scan_keys(table, files, wanted, None, each)
}

/// [`scan`], skipping the row groups whose `member_key` statistics show no
/// key in `keys` (all of them are read when `keys` is `None`, or when a
/// file has no such statistics). Rows outside `keys` in the row groups read
/// still arrive: the caller filters them. How much this saves depends on
/// the layout: files written in key order touch few row groups per range.
pub fn scan_keys<F, E>(
    table: Table,
    files: &[PathBuf],
    wanted: &[Wanted],
    keys: Option<std::ops::Range<i64>>,
    each: F,
) -> std::result::Result<(), E>
where
    F: Fn(&RecordBatch) -> std::result::Result<(), E> + Sync,
    E: From<Error> + Send,
{
    let mut units = Vec::new();
    for path in files {
        let meta = footer(table, path)?;
        let file_schema = meta.schema().clone();
        let mut indices = Vec::with_capacity(wanted.len());
        for w in wanted {
            let Some((i, _)) = file_schema.column_with_name(&w.name) else {
                if w.optional {
                    continue;
                }
                return Err(Error::Parquet {
                    table: table.name(),
                    path: path.clone(),
                    message: format!(
                        "column `{}` is missing; the file has {}",
                        w.name,
                        file_schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }
                .into());
            };
            indices.push(i);
        }
        // Ask the decoder for dictionaries where wanted and the file has
        // plain text; everything else arrives as stored and is cast below.
        let hinted: Vec<Field> = file_schema
            .fields()
            .iter()
            .map(|f| {
                let want = wanted.iter().find(|w| &w.name == f.name());
                match want {
                    Some(w) if matches!(w.ty, DataType::Dictionary(..)) && f.data_type() == &DataType::Utf8 => {
                        f.as_ref().clone().with_data_type(w.ty.clone())
                    }
                    _ => f.as_ref().clone(),
                }
            })
            .collect();
        let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(hinted)));
        let meta = ArrowReaderMetadata::try_new(meta.metadata().clone(), options)
            .map_err(|source| Error::ParquetDecode { table: table.name(), path: path.clone(), source })?;
        let key_leaf = key_leaf(&meta);
        for rg in 0..meta.metadata().num_row_groups() {
            if let (Some(keys), Some(leaf)) = (&keys, key_leaf)
                && !may_hold(meta.metadata().row_group(rg).column(leaf).statistics(), keys)
            {
                continue;
            }
            units.push((path.clone(), meta.clone(), indices.clone(), rg));
        }
    }
    // Row groups are taken in file order, one at a time per thread, so the
    // read-ahead knows what comes next.
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| read_ahead(&units, &next, &stop));
        let done = (0..rayon::current_num_threads().max(1)).into_par_iter().try_for_each(|_| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= units.len() || stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Err(e) = read_unit(table, &units[i], wanted, &each) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
        done
    })
}

/// A row group to read: its file, the file's metadata, the projected
/// columns and the row group's index.
type Unit = (PathBuf, ArrowReaderMetadata, Vec<usize>, usize);

/// Bytes the read-ahead asks for beyond the row group being read.
const READ_AHEAD: u64 = 256 << 20;

/// Reads the projected column chunks of the coming row groups into the
/// page cache, up to [`READ_AHEAD`] bytes beyond the next one to be taken,
/// until `stop`.
///
/// A scan reads each column chunk with one blocking read. When the files
/// are not in the page cache (a nightly refresh reads the 7 GB of `orders`
/// at 42 M members, and the machine measured gives pages idle for a
/// minute back to its host), every read waited for the device while the
/// core idled: the `features` phase of a 42 M refresh took 56 s from a
/// cold cache against 36 s from a warm one. This thread waits for the
/// device instead, ahead of the decoders; it changes nothing but timing.
fn read_ahead(units: &[Unit], next: &AtomicUsize, stop: &AtomicBool) {
    let mut ahead: std::collections::VecDeque<(usize, u64)> = Default::default();
    let mut asked = 0u64;
    let mut open: Option<(&Path, File)> = None;
    let mut scratch = vec![0u8; 1 << 20];
    for (i, (path, meta, indices, rg)) in units.iter().enumerate() {
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let taken = next.load(Ordering::Relaxed);
            while ahead.front().is_some_and(|(k, _)| *k < taken) {
                asked -= ahead.pop_front().expect("checked").1;
            }
            if asked < READ_AHEAD {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if open.as_ref().is_none_or(|(p, _)| *p != path.as_path()) {
            let Ok(file) = File::open(path) else { continue };
            open = Some((path.as_path(), file));
        }
        let file = &open.as_ref().expect("opened above").1;
        let group = meta.metadata().row_group(*rg);
        let mut bytes = 0;
        for &c in indices {
            if let Some(chunk) = group.columns().get(c) {
                let (start, len) = chunk.byte_range();
                will_need(file, start, len, &mut scratch);
                bytes += len;
            }
        }
        ahead.push_back((i, bytes));
        asked += bytes;
    }
}

/// Reads `len` bytes of `file` from `start` into `scratch` and drops them:
/// what stays is the page cache's copy, for the reader that comes next.
/// A failed read only loses the read-ahead (the reader reports errors).
fn will_need(file: &File, start: u64, len: u64, scratch: &mut [u8]) {
    use std::os::unix::fs::FileExt;
    let mut at = start;
    while at < start + len {
        let n = scratch.len().min((start + len - at) as usize);
        match file.read_at(&mut scratch[..n], at) {
            Ok(0) | Err(_) => return,
            Ok(read) => at += read as u64,
        }
    }
}

/// Reads one row group and calls `each` with its batches.
fn read_unit<F, E>(table: Table, unit: &Unit, wanted: &[Wanted], each: &F) -> std::result::Result<(), E>
where
    F: Fn(&RecordBatch) -> std::result::Result<(), E> + Sync,
    E: From<Error> + Send,
{
    let (path, meta, indices, rg) = unit;
    let err = |message: String| Error::Parquet { table: table.name(), path: path.clone(), message };
    let file = File::open(path).map_err(|source| Error::File { path: path.clone(), source })?;
    let mask = ProjectionMask::roots(meta.parquet_schema(), indices.iter().copied());
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
        .with_projection(mask)
        .with_row_groups(vec![*rg])
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_err(table, path))?;
    for batch in reader {
        let batch = batch.map_err(arrow_err(table, path))?;
        let batch = conform(&batch, wanted).map_err(err)?;
        each(&batch)?;
    }
    Ok(())
}

/// The batches of one file of `table`, in file order, holding `wanted`
/// (cast to the wanted types); for a reader that must go through a file in
/// order, one batch at a time, such as a rewrite of it.
pub fn file_batches(
    table: Table,
    path: &Path,
    wanted: &[Wanted],
) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
    let meta = footer(table, path)?;
    let indices = wanted
        .iter()
        .filter_map(|w| match meta.schema().index_of(&w.name) {
            Ok(i) => Some(Ok(i)),
            Err(_) if w.optional => None,
            Err(e) => Some(Err(arrow_err(table, path)(e))),
        })
        .collect::<Result<Vec<_>>>()?;
    let file = File::open(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?;
    let mask = ProjectionMask::roots(meta.parquet_schema(), indices);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_err(table, path))?;
    let wanted = wanted.to_vec();
    let path = path.to_path_buf();
    Ok(reader.map(move |batch| {
        let batch = batch.map_err(arrow_err(table, &path))?;
        conform(&batch, &wanted).map_err(|message| Error::Parquet { table: table.name(), path: path.clone(), message })
    }))
}

/// The Parquet reader's error on a file of `table`.
fn parquet_err(table: Table, path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Error + '_ {
    move |source| Error::ParquetDecode { table: table.name(), path: path.to_path_buf(), source }
}

/// The batch decoder's error on a file of `table`.
fn arrow_err(table: Table, path: &Path) -> impl FnOnce(arrow::error::ArrowError) -> Error + '_ {
    move |source| Error::ArrowDecode { table: table.name(), path: path.to_path_buf(), source }
}

/// Whether a row group with these `member_key` statistics may hold a key in `keys`.
fn may_hold(stats: Option<&parquet::file::statistics::Statistics>, keys: &std::ops::Range<i64>) -> bool {
    key_bounds(stats).is_none_or(|(min, max)| max >= keys.start && min < keys.end)
}

/// Reorders the projected batch into `wanted` order and casts to the wanted types.
fn conform(batch: &RecordBatch, wanted: &[Wanted]) -> std::result::Result<RecordBatch, String> {
    let mut fields = Vec::with_capacity(wanted.len());
    let mut columns = Vec::with_capacity(wanted.len());
    for w in wanted {
        let col = match batch.column_by_name(&w.name) {
            Some(col) => col.clone(),
            None if w.optional => arrow::array::new_null_array(&w.ty, batch.num_rows()),
            None => return Err(format!("column `{}` was not decoded", w.name)),
        };
        let col = if col.data_type() == &w.ty {
            col
        } else {
            cast(&col, &w.ty)
                .map_err(|e| format!("column `{}` ({}) cannot be read as {}: {e}", w.name, col.data_type(), w.ty))?
        };
        fields.push(Field::new(&w.name, w.ty.clone(), true));
        columns.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocking work on a current-thread runtime is an error, not a panic;
    /// on the multi-thread runtime and outside any runtime it runs.
    #[test]
    fn blocking_work_needs_the_multi_thread_runtime() {
        let work = || Ok::<_, Error>(7);
        let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let e = current.block_on(async { blocking(work) }).unwrap_err();
        assert!(matches!(e, Error::CurrentThreadRuntime), "{e}");
        assert!(e.to_string().contains("multi-thread runtime"), "{e}");
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        assert_eq!(multi.block_on(async { blocking(work) }).unwrap(), 7);
        assert_eq!(blocking(work).unwrap(), 7);
    }

    #[test]
    fn key_spread_tells_a_time_ordered_layout_from_a_sorted_one() {
        // 100 row groups of 1,000 rows over keys 0..100,000.
        let sorted: Vec<(i64, i64, i64)> = (0..100).map(|i| (i * 1000, i * 1000 + 999, 1000)).collect();
        let by_time: Vec<(i64, i64, i64)> = (0..100).map(|i| (i, 99_900 + i, 1000)).collect();
        let s = KeySpread::of(&sorted).unwrap();
        assert!((s.spread - 0.01).abs() < 1e-9 && !s.scattered(), "{s:?}");
        let t = KeySpread::of(&by_time).unwrap();
        assert!(t.spread > 0.99 && t.scattered(), "{t:?}");
        // A sorted history and 30 small daily appends spanning every member.
        let mut appended = sorted.clone();
        appended.extend((0..30).map(|_| (0, 99_999, 100)));
        assert!(!KeySpread::of(&appended).unwrap().scattered());
        // Two row groups cannot be laid out much better.
        assert!(!KeySpread::of(&[(0, 99_999, 10), (5, 99_990, 10)]).unwrap().scattered());
        assert_eq!(KeySpread::of(&[]), None);
    }
}

#[cfg(test)]
mod footer_tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, TimestampMicrosecondArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    /// Writes one file with a timestamp and an integer column, `rows` per row group.
    fn file(dir: &Path, name: &str, values: &[Option<i64>], rows: usize, stats: bool) -> PathBuf {
        let path = dir.join(name);
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(values.to_vec()));
        let n: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        let batch = RecordBatch::try_from_iter([("ordered_at", ts), ("member_key", n)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows))
            .set_statistics_enabled(if stats { EnabledStatistics::Chunk } else { EnabledStatistics::None })
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// Every row of every row group arrives exactly once, whatever the
        /// files and row groups (the threads take row groups in order, a
        /// read-ahead thread reading ahead of them); a failing `each` stops
        /// the scan with its error.
        #[test]
        fn a_scan_delivers_every_row_once_and_stops_at_an_error(
            sizes in proptest::collection::vec((0usize..300, 1usize..40), 0..8),
            fail_at in proptest::option::of(0i64..2_000),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut files = Vec::new();
            let mut want = Vec::new();
            for (f, (rows, per_group)) in sizes.iter().enumerate() {
                let values: Vec<Option<i64>> = (0..*rows).map(|r| Some((f * 1_000 + r) as i64)).collect();
                want.extend(values.iter().flatten().copied());
                files.push(file(dir.path(), &format!("{f}.parquet"), &values, *per_group, true));
            }
            let got = std::sync::Mutex::new(Vec::new());
            let result = scan::<_, Error>(Table::Orders, &files, &[Wanted::plain(Table::Orders, "member_key")], |b| {
                let keys = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                if let Some(bad) = fail_at.filter(|v| keys.values().contains(v)) {
                    return Err(Error::Unsupported { table: "orders", message: format!("row {bad}") });
                }
                got.lock().unwrap().extend(keys.values().iter().copied());
                Ok(())
            });
            let mut got = got.into_inner().unwrap();
            got.sort_unstable();
            match fail_at.filter(|v| want.contains(v)) {
                Some(bad) => {
                    let e = result.unwrap_err().to_string();
                    proptest::prop_assert!(e.contains(&format!("row {bad}")), "{}", e);
                    proptest::prop_assert!(!got.contains(&bad));
                }
                None => {
                    result.unwrap();
                    proptest::prop_assert_eq!(got, want);
                }
            }
        }
    }

    /// The footers' maximum equals the maximum a scan finds, over row
    /// groups with nulls only, empty files, negative values; without
    /// statistics the answer is "unknown", never a wrong maximum.
    #[test]
    fn max_from_footers_matches_a_scan_or_says_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = file(d, "a.parquet", &[Some(-5), None, Some(7), None, None, None, Some(3)], 2, true);
        let b = file(d, "b.parquet", &[Some(1_700_000_000_000_000), Some(-9)], 1, true);
        let nulls = file(d, "n.parquet", &[None, None, None], 2, true);
        let empty = file(d, "e.parquet", &[], 2, true);
        let bare = file(d, "s.parquet", &[Some(1), Some(2)], 2, false);
        for column in ["ordered_at", "member_key"] {
            let max = |files: &[PathBuf]| max_from_footers(Table::Orders, files, column).unwrap();
            assert_eq!(max(std::slice::from_ref(&a)), Some(7));
            assert_eq!(max(&[a.clone(), b.clone(), nulls.clone(), empty.clone()]), Some(1_700_000_000_000_000));
            assert_eq!(max(&[nulls.clone(), empty.clone()]), Some(i64::MIN));
            assert_eq!(max(&[]), Some(i64::MIN));
            assert_eq!(max(&[a.clone(), bare.clone()]), None);
            // Then the column is scanned.
            assert_eq!(column_max(Table::Orders, &[a.clone(), bare.clone()], column).unwrap(), 7);
            assert_eq!(column_max(Table::Orders, std::slice::from_ref(&bare), column).unwrap(), 2);
            assert_eq!(column_max(Table::Orders, &[a.clone(), b.clone()], column).unwrap(), 1_700_000_000_000_000);
        }
        assert_eq!(max_from_footers(Table::Orders, &[a], "no_such_column").unwrap(), None);
    }
}
