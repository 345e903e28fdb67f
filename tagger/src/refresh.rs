//! One tag run: features → `features` table, catalog → bitmaps → snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use taglake_storage::{Table, Warehouse, WriterLock};

use crate::catalog::CatalogFile;
use crate::evaluate::Compiled;
use crate::features::{self, Chunk, FeatureData, FeatureKind, FeatureOptions, FeatureSet};
use crate::snapshot::{self, NewSnapshot, TagInfo};
use crate::{Error, Result};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptions {
    /// The as-of date; default the day after the newest order.
    pub as_of: Option<chrono::NaiveDate>,
    /// A user catalog file added to (or replacing) the built-in one.
    pub catalog: Option<PathBuf>,
    /// Keep the files of `features` versions replaced within this long
    /// (time travel); older ones are deleted after the run. `None` keeps all.
    /// The previous version is kept whatever this says (zero included), so
    /// a server or query still reading it when the run ends is not broken.
    pub keep_features: Option<chrono::Duration>,
    /// Overrides the catalog's `max_family_values`.
    pub max_family_values: Option<usize>,
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
pub async fn refresh(wh: &Warehouse, lock: &WriterLock, options: &RefreshOptions) -> Result<RefreshSummary> {
    let computed = compute(wh, lock, options).await?;
    publish(wh, lock, options, computed).await
}

/// A run up to its `features` commit: what [`publish`] turns into a snapshot.
pub(crate) struct Computed {
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
pub(crate) async fn compute(wh: &Warehouse, lock: &WriterLock, options: &RefreshOptions) -> Result<Computed> {
    lock.check(wh)?;
    let (mut catalog, source, digest) = load_catalog(options.catalog.as_deref())?;
    if let Some(n) = options.max_family_values {
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
    // One write partition per core: Parquet encoding of the features is as
    // much work as evaluating the tags.
    let (senders, receivers): (Vec<_>, Vec<taglake_storage::BatchReceiver>) =
        (0..rayon::current_num_threads().max(1)).map(|_| tokio::sync::mpsc::channel(2)).unzip();
    let writer = {
        let wh = wh.clone();
        let schema = schema.clone();
        tokio::spawn(async move {
            match kept {
                Some(v) => {
                    // The batches are already committed: drain them.
                    for mut rx in receivers {
                        while let Some(batch) = rx.recv().await {
                            batch.map_err(Error::Data)?;
                        }
                    }
                    Ok::<u64, Error>(v)
                }
                None => Ok(wh.overwrite_streaming_with_inputs(Table::Features, schema, receivers, &inputs).await?),
            }
        })
    };
    let fs = Arc::new(fs);
    let evaluated = {
        let fs = fs.clone();
        tokio::task::spawn_blocking(move || {
            compiled.prepare(&fs);
            let mut next = 0usize;
            let out = evaluate_all(&compiled, &fs, &schema, |batch| {
                next = (next + 1) % senders.len();
                senders[next]
                    .blocking_send(Ok(batch))
                    .map_err(|_| Error::Internal("the features writer stopped".into()))
            });
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
    let features_version = writer.await.map_err(|e| Error::Internal(format!("features writer panicked: {e}")))?;
    let (compiled, bitmaps, base) = evaluated?;
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
pub(crate) async fn publish(
    wh: &Warehouse,
    lock: &WriterLock,
    options: &RefreshOptions,
    c: Computed,
) -> Result<RefreshSummary> {
    let t2 = Instant::now();
    let member_tags: u64 = c.bitmaps.iter().map(|b| b.len()).sum();
    let tags = snapshot_tags(&c.compiled, c.bitmaps, c.base);
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

/// The snapshot's tags: each compiled tag with its members.
pub fn snapshot_tags(compiled: &Compiled, bitmaps: Vec<RoaringBitmap>, base: u64) -> Vec<(TagInfo, RoaringBitmap)> {
    compiled
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
                },
                bm,
            )
        })
        .collect()
}

/// Evaluates every chunk (in parallel, in groups so memory stays bounded),
/// hands each chunk's features batch to `sink` in key order, and returns
/// the merged bitmaps and the base size.
pub fn evaluate_all(
    compiled: &Compiled,
    fs: &FeatureSet,
    schema: &SchemaRef,
    mut sink: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<(Vec<RoaringBitmap>, u64)> {
    let mut merged = vec![RoaringBitmap::new(); compiled.tags.len()];
    let mut base = 0u64;
    // One chunk per thread at a time: memory in flight stays small at any scale.
    let group = rayon::current_num_threads();
    for start in (0..fs.chunks()).step_by(group) {
        let results: Vec<Result<(Vec<RoaringBitmap>, RecordBatch, u64)>> = (start..(start + group).min(fs.chunks()))
            .into_par_iter()
            .map(|c| {
                let chunk = fs.chunk(c);
                // Its state is no longer needed: memory goes down as bitmaps grow.
                fs.release(c);
                let bitmaps = compiled.evaluate(&chunk);
                let batch = features_batch(&chunk, schema, fs)?;
                Ok((bitmaps, batch, chunk.base.iter().map(|b| *b as u64).sum()))
            })
            .collect();
        for r in results {
            let (bitmaps, batch, b) = r?;
            base += b;
            for (m, bm) in merged.iter_mut().zip(bitmaps) {
                if !bm.is_empty() {
                    *m |= bm;
                }
            }
            if batch.num_rows() > 0 {
                sink(batch)?;
            }
        }
    }
    Ok((merged, base))
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
pub fn features_batch(chunk: &Chunk, schema: &SchemaRef, fs: &FeatureSet) -> Result<RecordBatch> {
    let keep = BooleanArray::from(chunk.base.iter().map(|b| *b == 1).collect::<Vec<_>>());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(chunk.columns.len());
    for c in &chunk.columns {
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
            (FeatureData::Text(_), _) => return Err(Error::Internal(format!("text data in column {}", c.name))),
        };
        cols.push(arrow::compute::filter(&array, &keep).map_err(|e| Error::Internal(e.to_string()))?);
    }
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::Internal(format!("features batch: {e}")))
}
