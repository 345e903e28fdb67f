//! One tag run: features → `features` table, catalog → bitmaps → snapshot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, PrimitiveArray, RecordBatch, StringArray, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute::FilterBuilder;
use arrow::datatypes::{DataType, Date32Type, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef};

use roaring::RoaringBitmap;
use taglake_storage::{ParamMessage, Table, Warehouse, WriterLock};

use crate::catalog::CatalogFile;
use crate::evaluate::Compiled;
use crate::features::{self, Chunk, FeatureData, FeatureKind, FeatureOptions, FeatureSet};
use crate::snapshot::{self, NewSnapshot, TagInfo};
use crate::union::Union;
use crate::{Error, Result};

/// What to run. Its fields are private: the only way to get one is
/// [`RefreshOptionsBuilder::build`] (or [`Default`]: nothing set, which
/// passes every check), so [`refresh`] and a cluster's refresh rely on
/// them as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshOptions {
    as_of: Option<chrono::NaiveDate>,
    catalog: Option<PathBuf>,
    keep_features: Option<chrono::Duration>,
    max_family_values: Option<usize>,
}

impl RefreshOptions {
    /// A builder with nothing set: as of the day after the newest order,
    /// the built-in catalog alone, every `features` version kept, the
    /// catalog's own `max_family_values`.
    pub fn builder() -> RefreshOptionsBuilder {
        RefreshOptionsBuilder::default()
    }

    /// The as-of date; `None`: the day after the newest order.
    pub fn as_of(&self) -> Option<chrono::NaiveDate> {
        self.as_of
    }
    /// A user catalog file added to (or replacing) the built-in one.
    pub fn catalog(&self) -> Option<&std::path::Path> {
        self.catalog.as_deref()
    }
    /// How long the files of replaced `features` versions are kept (see
    /// [`RefreshOptionsBuilder::keep_features`]); `None` keeps all.
    pub fn keep_features(&self) -> Option<chrono::Duration> {
        self.keep_features
    }
    /// The override of the catalog's `max_family_values`, at least 1.
    pub fn max_family_values(&self) -> Option<usize> {
        self.max_family_values
    }
}

/// The options as given; [`build`](Self::build) checks them.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptionsBuilder {
    as_of: Option<chrono::NaiveDate>,
    catalog: Option<PathBuf>,
    keep_features: Option<chrono::Duration>,
    max_family_values: Option<usize>,
}

impl RefreshOptionsBuilder {
    /// The as-of date (`None`: the day after the newest order).
    pub fn as_of(mut self, date: impl Into<Option<chrono::NaiveDate>>) -> Self {
        self.as_of = date.into();
        self
    }
    /// A user catalog file added to (or replacing) the built-in one.
    pub fn catalog(mut self, path: impl Into<Option<PathBuf>>) -> Self {
        self.catalog = path.into();
        self
    }
    /// Keep the files of `features` versions replaced within this long
    /// (time travel; zero or more); older ones are deleted after the run.
    /// `None` keeps all. The previous version is kept whatever this says
    /// (zero included), so a server or query still reading it when the
    /// run ends is not broken.
    pub fn keep_features(mut self, keep: impl Into<Option<chrono::Duration>>) -> Self {
        self.keep_features = keep.into();
        self
    }
    /// Overrides the catalog's `max_family_values` (at least 1).
    pub fn max_family_values(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_family_values = n.into();
        self
    }

    /// Checks the options: a family override of at least 1 value (worded
    /// as the catalog's own check, which then cannot fail in the run), and
    /// a retention that is not negative (the vacuum would read a negative
    /// one as zero and delete every replaced version but the previous).
    pub fn build(self) -> Result<RefreshOptions> {
        if self.max_family_values == Some(0) {
            return Err(Error::Parameter(
                ParamMessage::text("tag catalog ")
                    .then_param("max_family_values")
                    .then_text(": a family needs at least 1 value"),
            ));
        }
        if let Some(keep) = self.keep_features
            && keep < chrono::Duration::zero()
        {
            return Err(Error::Parameter(
                ParamMessage::param("keep_features").then_text(format!(" must not be negative, not {keep}")),
            ));
        }
        Ok(RefreshOptions {
            as_of: self.as_of,
            catalog: self.catalog,
            keep_features: self.keep_features,
            max_family_values: self.max_family_values,
        })
    }
}

/// What a run did, with timings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshSummary {
    /// The new snapshot version.
    pub snapshot: i64,
    /// The new `features` table version.
    pub features_version: u64,
    /// The as-of date.
    pub as_of: chrono::NaiveDate,
    /// Members in the base.
    pub base_members: u64,
    /// Order lines before the as-of date.
    pub order_lines: u64,
    /// Tags in the snapshot.
    pub tags: usize,
    /// Sum of all tags' cardinalities.
    pub member_tags: u64,
    /// Seconds reading orders and accumulating features.
    pub features_seconds: f64,
    /// Seconds evaluating tags and writing features.
    pub evaluate_seconds: f64,
    /// Seconds committing the snapshot.
    pub snapshot_seconds: f64,
    /// Files of old `features` versions deleted.
    pub features_files_vacuumed: usize,
    /// Families and features left out (too many values), one note each.
    pub skipped: Vec<String>,
}

impl RefreshSummary {
    /// Average tags per member of the base.
    pub fn tags_per_member(&self) -> f64 {
        if self.base_members == 0 { 0.0 } else { self.member_tags as f64 / self.base_members as f64 }
    }
}

/// Loads the catalog: the built-in default plus the user's file.
pub fn load_catalog(path: Option<&std::path::Path>) -> Result<(CatalogFile, String, String)> {
    let user = read_catalog(path)?;
    catalog_from(user.as_ref().map(|(t, s)| (t.as_str(), s.as_str())))
}

/// The text of a user catalog file and the name errors give it.
pub fn read_catalog(path: Option<&std::path::Path>) -> Result<Option<(String, String)>> {
    match path {
        Some(p) => Ok(Some((
            std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.into(), source })?,
            p.display().to_string(),
        ))),
        None => Ok(None),
    }
}

/// The catalog from a user catalog's text (`None`: the built-in one), with
/// its source name and digest.
pub fn catalog_from(user: Option<(&str, &str)>) -> Result<(CatalogFile, String, String)> {
    let (catalog, source) = CatalogFile::with_user(user)?;
    let mut digest_input = crate::catalog::DEFAULT_CATALOG.to_string();
    if let Some((text, _)) = &user {
        digest_input.push_str(text);
    }
    let digest = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(digest_input.as_bytes()));
    Ok((catalog, source, digest))
}

/// Computes features and tags and commits the `features` table and a new
/// tag snapshot.
///
/// Two commits, `features` first: the snapshot is what publishes the run
/// (tags and audiences read it; `cluster` refuses `features` that no
/// snapshot references). A run killed between the two leaves `features`
/// ahead of the tags; the next run over the same inputs recognises that
/// commit (it records what it was computed from) and keeps it instead of
/// writing it again, so it ends exactly where one clean run ends.
///
/// Needs tokio's multi-thread runtime (see the crate docs).
pub async fn refresh(wh: &Warehouse, lock: &WriterLock, options: &RefreshOptions) -> Result<RefreshSummary> {
    let computed = compute(wh, lock, options).await?;
    publish(wh, lock, options, computed).await
}

/// A run up to its `features` commit: what [`publish`] turns into a snapshot.
///
/// [`refresh`] is [`compute`] then [`publish`]; a caller runs them apart to
/// act in between. The CLI gives the allocator's free pages back to the
/// system there: the feature set (most of the run's memory, ~8 GiB at 42 M
/// members) is freed by then, but the allocator keeps its pages, and the
/// snapshot's serialized bitmaps (~1.3 GiB at 42 M when every bitmap is
/// written, held again by the Parquet writer until the commit) came on top
/// of them.
pub struct Computed {
    compiled: Compiled,
    bitmaps: Vec<RoaringBitmap>,
    base: u64,
    as_of: chrono::NaiveDate,
    order_lines: u64,
    digest: String,
    features_version: u64,
    features_seconds: f64,
    evaluate_seconds: f64,
}

/// What a `features` version is computed from: the input tables' versions,
/// the as-of option, the catalog (its digest covers the growth rate) and a
/// `max_family_values` given outside it.
async fn inputs(wh: &Warehouse, options: &RefreshOptions, digest: &str) -> Result<String> {
    let mut text = String::from("features");
    for t in [Table::MemberIds, Table::Members, Table::Orders] {
        text.push_str(&format!(" {}@{}", t.name(), wh.version(t).await?.map_or("-".into(), |v| v.to_string())));
    }
    let as_of = options.as_of.map_or("default".into(), |d| d.to_string());
    if let Some(n) = options.max_family_values {
        text.push_str(&format!(" max-family-values {n}"));
    }
    Ok(format!("{text} as-of {as_of} catalog {digest} taglake {}", env!("CARGO_PKG_VERSION")))
}

/// The `features` version an interrupted run over the same inputs
/// committed and no snapshot references yet, if any.
async fn interrupted_features(wh: &Warehouse, inputs: &str) -> Result<Option<u64>> {
    let Some((version, recorded)) = wh.last_inputs(Table::Features).await? else { return Ok(None) };
    if recorded != inputs {
        return Ok(None);
    }
    let newest = match snapshot::versions(wh).await?.last() {
        Some(&v) => snapshot::info(wh, Some(v)).await?.features_version,
        None => None,
    };
    Ok((newest != Some(version as i64)).then_some(version))
}

/// Computes features and tags and commits `features` (or keeps the
/// identical version an interrupted run committed).
pub async fn compute(wh: &Warehouse, lock: &WriterLock, options: &RefreshOptions) -> Result<Computed> {
    lock.check(wh)?;
    let (mut catalog, source, digest) = load_catalog(options.catalog.as_deref())?;
    if let Some(n) = options.max_family_values {
        // Cannot fail: the options' builder refused 0 already.
        catalog.set_max_family_values(n)?;
    }
    let inputs = inputs(wh, options, &digest).await?;
    let kept = interrupted_features(wh, &inputs).await?;
    let t0 = Instant::now();
    let feature_options = FeatureOptions {
        as_of: options.as_of,
        growth_per_unit: catalog.growth_per_unit(),
        max_family_values: catalog.max_family_values(),
    };
    let fs = features::compute(wh, &feature_options).await?;
    let features_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut compiled = Compiled::new(&catalog, &source, &fs)?;
    let schema = features_schema(&fs.chunk_columns(0, &|_| false));
    // One features writer per core: Parquet encoding of the features is as
    // much work as evaluating the tags. When an interrupted run already
    // committed these very features, there is nothing to write, and no
    // features batch is built.
    let (senders, writer) = match kept {
        Some(_) => (Vec::new(), None),
        None => {
            let (senders, receivers): (Vec<_>, Vec<taglake_storage::BatchReceiver>) =
                (0..rayon::current_num_threads().max(1)).map(|_| tokio::sync::mpsc::channel(2)).unzip();
            let (wh, schema) = (wh.clone(), schema.clone());
            let writer = tokio::spawn(async move {
                wh.overwrite_streaming_with_inputs(Table::Features, schema, receivers, &inputs).await
            });
            (senders, Some(writer))
        }
    };
    let fs = Arc::new(fs);
    let evaluated = {
        let fs = fs.clone();
        tokio::task::spawn_blocking(move || {
            compiled.prepare(&fs);
            let mut sent = 0usize;
            let out = if senders.is_empty() {
                evaluate_tags(&compiled, &fs)
            } else {
                evaluate_all(&compiled, &fs, &schema, |batch| {
                    // Two consecutive chunks to a writer make one row group
                    // (128 Ki rows) of neighbouring member keys.
                    let next = sent / 2 % senders.len();
                    sent += 1;
                    senders[next].blocking_send(Ok(batch)).map_err(|_| Error::WriterStopped)
                })
            };
            if let Err(e) = &out {
                for tx in &senders {
                    let _ = tx.blocking_send(Err(e.to_string()));
                }
            }
            drop(senders);
            out.map(|(bitmaps, base)| (compiled, bitmaps, base))
        })
        .await
        .map_err(|e| Error::Internal(format!("tag evaluation panicked: {e}")))?
    };
    let features_version = match (writer, kept) {
        (Some(writer), _) => {
            writer.await.map_err(|e| Error::Internal(format!("features writer panicked: {e}")))?.map_err(Error::from)
        }
        (None, kept) => Ok(kept.expect("no writer only for kept features")),
    };
    // A writer that failed stopped the evaluation: its error is the cause.
    let (compiled, bitmaps, base) = match (evaluated, &features_version) {
        (Err(Error::WriterStopped), Err(_)) => return Err(features_version.expect_err("matched")),
        (evaluated, _) => evaluated?,
    };
    let (as_of, order_lines) = (fs.as_of, fs.lines);
    drop(fs);
    let features_version: u64 = features_version?;
    Ok(Computed {
        compiled,
        bitmaps,
        base,
        as_of,
        order_lines,
        digest,
        features_version,
        features_seconds,
        evaluate_seconds: t1.elapsed().as_secs_f64(),
    })
}

/// Commits the snapshot of a computed run, then deletes old `features` files.
pub async fn publish(
    wh: &Warehouse,
    lock: &WriterLock,
    options: &RefreshOptions,
    c: Computed,
) -> Result<RefreshSummary> {
    let t2 = Instant::now();
    let member_tags: u64 = c.bitmaps.iter().map(|b| b.len()).sum();
    let tags = snapshot_tags(&c.compiled, c.bitmaps, c.base)?;
    let n_tags = tags.len();
    let snapshot = snapshot::write(
        wh,
        lock,
        NewSnapshot {
            as_of: c.as_of,
            base_members: c.base as i64,
            features_version: Some(c.features_version as i64),
            catalog_digest: c.digest,
            tags,
        },
    )
    .await?;
    // Every run rewrites `features`: without this, old versions pile up
    // (about 275 MB per million members each). The previous version always
    // stays (see `Warehouse::vacuum`), so a server still reading it is safe.
    let features_files_vacuumed = match options.keep_features {
        Some(keep) => wh.vacuum(lock, Table::Features, keep, false).await?.files.len(),
        None => 0,
    };
    Ok(RefreshSummary {
        features_files_vacuumed,
        snapshot,
        features_version: c.features_version,
        as_of: c.as_of,
        base_members: c.base,
        order_lines: c.order_lines,
        tags: n_tags,
        member_tags,
        features_seconds: c.features_seconds,
        evaluate_seconds: c.evaluate_seconds,
        snapshot_seconds: t2.elapsed().as_secs_f64(),
        skipped: c.compiled.skipped,
    })
}

/// The snapshot's tags: each compiled tag with its members. Fails when a
/// family declared exclusive has two tags that share members.
pub fn snapshot_tags(
    compiled: &Compiled,
    bitmaps: Vec<RoaringBitmap>,
    base: u64,
) -> Result<Vec<(TagInfo, RoaringBitmap)>> {
    crate::exclusive::check(&compiled.tags, &bitmaps)
        .map_err(|message| Error::Catalog { source_name: compiled.source.clone(), message })?;
    Ok(compiled
        .tags
        .iter()
        .zip(bitmaps)
        .enumerate()
        .map(|(i, (def, bm))| {
            let members = bm.len() as i64;
            (
                TagInfo {
                    position: i as i32,
                    name: def.name.clone(),
                    family: def.family.clone(),
                    description: def.description.clone(),
                    rule: def.rule.clone(),
                    members,
                    share: if base == 0 { 0.0 } else { members as f64 / base as f64 },
                    value: def.value.clone(),
                },
                bm,
            )
        })
        .collect())
}

/// Evaluates every chunk in parallel, hands each chunk's features batch to
/// `sink` in key order, and returns the merged bitmaps and the base size.
///
/// Every rayon thread takes the next chunk in key order; this thread merges
/// the results and calls `sink` in key order while the others go on. A
/// chunk is started only when it is fewer than `threads + 1` chunks ahead
/// of the next one to merge, so at most that many evaluated chunks (their
/// bitmaps and features batch) are held at once, whatever the speed of the
/// sink.
pub fn evaluate_all(
    compiled: &Compiled,
    fs: &FeatureSet,
    schema: &SchemaRef,
    mut sink: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<(Vec<RoaringBitmap>, u64)> {
    evaluate_chunks(compiled, fs, Some(schema), &mut sink)
}

/// [`evaluate_all`] without the features batches: the tags and the base
/// size only.
fn evaluate_tags(compiled: &Compiled, fs: &FeatureSet) -> Result<(Vec<RoaringBitmap>, u64)> {
    evaluate_chunks(compiled, fs, None, &mut |_| Ok(()))
}

/// [`evaluate_all`], building and sinking features batches when given their schema.
fn evaluate_chunks(
    compiled: &Compiled,
    fs: &FeatureSet,
    schema: Option<&SchemaRef>,
    sink: &mut impl FnMut(RecordBatch) -> Result<()>,
) -> Result<(Vec<RoaringBitmap>, u64)> {
    let threads = rayon::current_num_threads().max(1);
    let window = threads + 1;
    let gate = Gate::default();
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Evaluated>)>();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            rayon::scope(|s| {
                for _ in 0..threads {
                    let tx = tx.clone();
                    let (gate, next) = (&gate, &next);
                    s.spawn(move |_| {
                        loop {
                            let c = next.fetch_add(1, Ordering::Relaxed);
                            if c >= fs.chunks() || !gate.wait_until_within(c, window) {
                                break;
                            }
                            // A panic becomes an error the merge sees, not a chunk it waits for forever.
                            let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                evaluate_chunk(compiled, fs, schema, c)
                            }))
                            .unwrap_or_else(|_| Err(Error::Internal(format!("evaluating chunk {c} panicked"))));
                            if tx.send((c, evaluated)).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            drop(tx);
        });
        let merged = merge_in_order(compiled, fs.chunks(), &rx, &gate, sink);
        // On an error, the threads still waiting to start a chunk give up.
        gate.stop();
        drop(rx);
        merged
    })
}

/// One chunk's tags, `features` rows (when wanted) and base size.
type Evaluated = (Vec<RoaringBitmap>, Option<RecordBatch>, u64);

fn evaluate_chunk(compiled: &Compiled, fs: &FeatureSet, schema: Option<&SchemaRef>, c: usize) -> Result<Evaluated> {
    let chunk = fs.chunk(c);
    // Its state is no longer needed: memory goes down as bitmaps grow.
    fs.release(c);
    let bitmaps = compiled.evaluate(&chunk);
    let batch = schema.map(|schema| features_batch(&chunk, schema, fs)).transpose()?;
    Ok((bitmaps, batch, chunk.base.iter().map(|b| *b as u64).sum()))
}

/// Receives the evaluated chunks (in any order) and merges them in key order.
fn merge_in_order(
    compiled: &Compiled,
    chunks: usize,
    rx: &std::sync::mpsc::Receiver<(usize, Result<Evaluated>)>,
    gate: &Gate,
    sink: &mut impl FnMut(RecordBatch) -> Result<()>,
) -> Result<(Vec<RoaringBitmap>, u64)> {
    let mut merged: Vec<Union> = (0..compiled.tags.len()).map(|_| Union::new()).collect();
    let mut base = 0u64;
    let mut early: HashMap<usize, Result<Evaluated>> = HashMap::new();
    for c in 0..chunks {
        let evaluated = loop {
            if let Some(e) = early.remove(&c) {
                break e;
            }
            let (k, e) = rx.recv().map_err(|_| Error::Internal(format!("the evaluation of chunk {c} stopped")))?;
            early.insert(k, e);
        };
        let (bitmaps, batch, b) = evaluated?;
        base += b;
        for (m, bm) in merged.iter_mut().zip(bitmaps) {
            m.push(bm);
        }
        if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
            sink(batch)?;
        }
        gate.merged(c + 1);
    }
    Ok((merged.into_iter().map(Union::finish).collect(), base))
}

/// How far the merge has come, for threads waiting to start a chunk.
#[derive(Default)]
struct Gate {
    /// Chunks merged, and whether the evaluation stopped.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Waits until chunk `c` is fewer than `window` chunks ahead of the
    /// merge; false if the evaluation stopped instead.
    fn wait_until_within(&self, c: usize, window: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.1 && c >= state.0 + window {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        !state.1
    }

    fn merged(&self, chunks: usize) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = chunks;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.changed.notify_all();
    }
}

fn arrow_type(kind: FeatureKind) -> DataType {
    match kind {
        FeatureKind::Int32 => DataType::Int32,
        FeatureKind::Int64 => DataType::Int64,
        FeatureKind::Float64 => DataType::Float64,
        FeatureKind::Date => DataType::Date32,
        FeatureKind::Text(_) => DataType::Utf8,
    }
}

/// The `features` table schema for these columns.
pub fn features_schema(chunk: &Chunk) -> SchemaRef {
    let fixed = Table::Features.arrow_schema();
    Arc::new(Schema::new(
        chunk
            .columns
            .iter()
            .map(|c| {
                let nullable = fixed.field_with_name(&c.name).map(|f| f.is_nullable()).unwrap_or(true);
                Field::new(&c.name, arrow_type(c.kind), nullable)
            })
            .collect::<Vec<_>>(),
    ))
}

/// The base members' rows of a chunk as a `features` batch.
///
/// Each column is built whole from the chunk's values (a values buffer and
/// a validity bitmap, no value-by-value builder), and the rows of keys
/// outside the base are dropped with one filter prepared for every column,
/// or none when the whole chunk is in the base.
pub fn features_batch(chunk: &Chunk, schema: &SchemaRef, fs: &FeatureSet) -> Result<RecordBatch> {
    let internal = |e: arrow::error::ArrowError| Error::Internal(format!("features batch: {e}"));
    let keep = (!chunk.base.iter().all(|b| *b == 1)).then(|| {
        let mask = BooleanArray::from(chunk.base.iter().map(|b| *b == 1).collect::<Vec<_>>());
        FilterBuilder::new(&mask).optimize().build()
    });
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(chunk.columns.len());
    for c in &chunk.columns {
        let array: ArrayRef = match (&c.data, c.kind) {
            (FeatureData::Num(v), FeatureKind::Int32) => Arc::new(numbers::<Int32Type>(v, |x| x as i32)),
            (FeatureData::Num(v), FeatureKind::Int64) => Arc::new(numbers::<Int64Type>(v, |x| x as i64)),
            (FeatureData::Num(v), FeatureKind::Date) => Arc::new(numbers::<Date32Type>(v, |x| x as i32)),
            (FeatureData::Num(v), _) => Arc::new(numbers::<Float64Type>(v, |x| x)),
            (FeatureData::Text(codes), FeatureKind::Text(kind)) => {
                let values = StringArray::from_iter_values(&fs.dictionary(kind).values);
                // Codes past the dictionary (u32::MAX) are null.
                let n = values.len() as u32;
                let keys = UInt32Array::new(
                    codes.iter().copied().collect(),
                    Some(NullBuffer::from(BooleanBuffer::collect_bool(codes.len(), |i| codes[i] < n))),
                );
                arrow::compute::take(&values, &keys, None).map_err(internal)?
            }
            (FeatureData::Text(_), _) => return Err(Error::Internal(format!("text data in column {}", c.name))),
        };
        cols.push(match &keep {
            Some(filter) => filter.filter(&array).map_err(internal)?,
            None => array,
        });
    }
    RecordBatch::try_new(schema.clone(), cols).map_err(internal)
}

/// A primitive column from numbers, NaN being null.
fn numbers<T: ArrowPrimitiveType>(v: &[f64], cast: impl Fn(f64) -> T::Native) -> PrimitiveArray<T> {
    let values: ScalarBuffer<T::Native> = v.iter().map(|x| cast(*x)).collect();
    let valid = BooleanBuffer::collect_bool(v.len(), |i| !v[i].is_nan());
    let nulls = (valid.count_set_bits() < v.len()).then(|| NullBuffer::new(valid));
    PrimitiveArray::new(values, nulls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{CHUNK, FeatureColumn, FeatureOptions, TextKind};
    use arrow::array::{Date32Array, Float64Array, Int32Array, Int64Array};
    use proptest::prelude::*;

    /// The error as `taglake tag` shows it: parameters named by its flags.
    fn shown(e: Error) -> String {
        match e {
            Error::Parameter(m) => m.render(|p| format!("--{}", p.replace('_', "-"))),
            other => other.to_string(),
        }
    }

    #[test]
    fn every_bad_option_is_refused_naming_its_parameter() {
        let e = RefreshOptions::builder().max_family_values(0).build().unwrap_err();
        assert_eq!(e.to_string(), "tag catalog `max_family_values`: a family needs at least 1 value");
        assert!(matches!(&e, Error::Parameter(m) if m.parameter() == Some("max_family_values")), "{e:?}");
        assert_eq!(shown(e), "tag catalog --max-family-values: a family needs at least 1 value");
        let e = RefreshOptions::builder().keep_features(chrono::Duration::days(-1)).build().unwrap_err();
        assert!(e.to_string().starts_with("`keep_features` must not be negative"), "{e}");
        assert!(matches!(&e, Error::Parameter(m) if m.parameter() == Some("keep_features")), "{e:?}");
    }

    #[test]
    fn good_options_read_back_as_built() {
        let o = RefreshOptions::builder().build().unwrap();
        assert_eq!(o, RefreshOptions::default());
        assert_eq!((o.as_of(), o.catalog(), o.keep_features(), o.max_family_values()), (None, None, None, None));
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let o = RefreshOptions::builder()
            .as_of(day)
            .catalog(PathBuf::from("tags.toml"))
            .keep_features(chrono::Duration::zero())
            .max_family_values(1)
            .build()
            .unwrap();
        assert_eq!(o.as_of(), Some(day));
        assert_eq!(o.catalog(), Some(std::path::Path::new("tags.toml")));
        assert_eq!((o.keep_features(), o.max_family_values()), (Some(chrono::Duration::zero()), Some(1)));
        // `None` unsets what was set.
        let o = RefreshOptions::builder().as_of(day).as_of(None).max_family_values(3).max_family_values(None);
        assert_eq!(o.build().unwrap(), RefreshOptions::default());
    }

    /// The plain way to build a features column: value by value, then a
    /// filter of its own.
    fn naive_column(c: &FeatureColumn, base: &[u8], fs: &FeatureSet) -> ArrayRef {
        let array: ArrayRef = match (&c.data, c.kind) {
            (FeatureData::Num(v), FeatureKind::Int32) => {
                Arc::new(v.iter().map(|x| (!x.is_nan()).then_some(*x as i32)).collect::<Int32Array>())
            }
            (FeatureData::Num(v), FeatureKind::Int64) => {
                Arc::new(v.iter().map(|x| (!x.is_nan()).then_some(*x as i64)).collect::<Int64Array>())
            }
            (FeatureData::Num(v), FeatureKind::Date) => {
                Arc::new(v.iter().map(|x| (!x.is_nan()).then_some(*x as i32)).collect::<Date32Array>())
            }
            (FeatureData::Num(v), _) => {
                Arc::new(v.iter().map(|x| (!x.is_nan()).then_some(*x)).collect::<Float64Array>())
            }
            (FeatureData::Text(codes), FeatureKind::Text(kind)) => {
                let dict = &fs.dictionary(kind).values;
                Arc::new(codes.iter().map(|c| dict.get(*c as usize).map(|s| s.as_str())).collect::<StringArray>())
            }
            _ => unreachable!(),
        };
        let keep = BooleanArray::from(base.iter().map(|b| *b == 1).collect::<Vec<_>>());
        arrow::compute::filter(&array, &keep).unwrap()
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![Just(f64::NAN), Just(0.0), Just(-0.0), Just(1.0), Just(-3.0), Just(1e12), Just(0.25), Just(2e9)]
    }

    proptest! {
        /// Every kind of column, with and without nulls and keys outside the base.
        #[test]
        fn features_batch_matches_a_value_by_value_build(
            len in 0usize..300,
            seed in prop::collection::vec(value(), 1..40),
            base_ones in prop::bool::weighted(0.8),
            stores in prop::collection::vec("[a-z]{0,3}", 0..5),
        ) {
            let globals = crate::features::Globals {
                members: 1,
                as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
                categories: vec![],
                channels: vec![],
                stores: { let mut s = stores.clone(); s.sort(); s.dedup(); s },
                genders: vec![],
                cities: vec![],
                register_channels: vec![],
            };
            let fs = FeatureSet::for_globals(&globals, FeatureOptions::default().growth_per_unit);
            let n_stores = fs.stores.values.len() as u32;
            let num = |k: usize| (0..len).map(|i| seed[(i * 7 + k) % seed.len()]).collect::<Vec<f64>>();
            let column = |name: &str, kind, data| FeatureColumn { name: name.into(), kind, data };
            let chunk = Chunk {
                start: CHUNK as u32,
                base: (0..len).map(|i| u8::from(base_ones || i % 3 != 0)).collect(),
                columns: vec![
                    column("i32", FeatureKind::Int32, FeatureData::Num(num(0).iter().map(|x| x.clamp(-1e9, 1e9)).collect())),
                    column("i64", FeatureKind::Int64, FeatureData::Num(num(1))),
                    column("date", FeatureKind::Date, FeatureData::Num(num(2).iter().map(|x| x.clamp(-1e9, 1e9)).collect())),
                    column("f64", FeatureKind::Float64, FeatureData::Num(num(3))),
                    column("store", FeatureKind::Text(TextKind::Store), FeatureData::Text(
                        (0..len as u32).map(|i| if i % 5 == 4 { u32::MAX } else { i % (n_stores + 1) }).collect(),
                    )),
                ],
            };
            let schema = Arc::new(Schema::new(
                chunk.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.kind), true)).collect::<Vec<_>>(),
            ));
            let batch = features_batch(&chunk, &schema, &fs).unwrap();
            for (i, c) in chunk.columns.iter().enumerate() {
                let want = naive_column(c, &chunk.base, &fs);
                prop_assert_eq!(batch.column(i).to_data(), want.to_data(), "column {}", c.name);
            }
        }
    }
}
