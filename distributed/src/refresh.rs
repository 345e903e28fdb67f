//! The tag refresh on a cluster, by ranges of member keys.
//!
//! A refresh is a function of each member's own orders, except for three
//! things that need the whole base: the key space and as-of date, every
//! text column's values (they decide the feature columns and the tags
//! expanded over them, and their codes), and the cut points of scores and
//! ranks (quintiles, top 20 %…). The run therefore has three steps:
//!
//! 1. **Globals**, one SQL query on the cluster: the highest `member_key`,
//!    the newest order and the distinct values of the six text columns.
//! 2. **Cuts**: one task per range of keys reads only that range's members
//!    and order lines (row groups are skipped by their `member_key`
//!    statistics), computes its features and returns, per cut, how many
//!    ranked members have each value. The coordinator merges these counts
//!    and finds each group's first member exactly as a run over the whole
//!    base sorts them: as (value, range, rank among the range's ties).
//! 3. **Tags**: each range computes its features again, places its members
//!    against those cut points (a tie in another range is before or after
//!    all of this range's members, by key order), evaluates every tag,
//!    writes its members' rows of `features` as uncommitted Parquet files,
//!    and returns one portable roaring bitmap per tag.
//!
//! The coordinator ORs the disjoint ranges' bitmaps, commits `features`
//! (the executors' files, one commit) and the snapshot exactly as the
//! embedded tagger does: the snapshot bytes are the same. A task that
//! fails is retried by Ballista; a run that fails commits nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, BinaryArray, Int32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Statistics};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use taglake_storage::{ParamMessage, Table, Warehouse, WriterLock};
use taglake_tagger::evaluate::{CUT_END, Compiled, CutStart};
use taglake_tagger::features::{self, CHUNK, FeatureSet, Globals};
use taglake_tagger::snapshot::{self, NewSnapshot};
use taglake_tagger::{RefreshOptions, RefreshSummary, Union};

use crate::{ClusterUrl, Error, Result};

type DfResult<T> = datafusion::common::Result<T>;

/// Where a cut's group starts, as the coordinator found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartSpec {
    /// After every ranked member.
    End,
    /// The member with this ordered value that is the `tie`-th (from 0, by
    /// key) of those with that value in range `range`.
    At {
        /// Ordered value bits.
        value: u64,
        /// Range index.
        range: usize,
        /// Rank among the range's members with `value`.
        tie: u64,
    },
}

/// What the tasks compute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Phase {
    /// Per cut, how many ranked members have each value.
    Cuts,
    /// Tags and features, against these cut starts (per cut).
    Tags {
        /// Starts of each cut's groups after the first.
        starts: Vec<Vec<StartSpec>>,
        /// Write each range's `features` rows (uncommitted files).
        write_features: bool,
    },
}

/// One step of a refresh: everything a task needs, sent in the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RangeTask {
    /// The warehouse (the same path on every machine).
    pub root: String,
    /// Globals of the run.
    pub globals: Globals,
    /// The user catalog's text and name (`None`: the built-in catalog).
    pub catalog: Option<(String, String)>,
    /// Chunk ranges, one per task.
    pub ranges: Vec<(usize, usize)>,
    /// What to compute.
    pub phase: Phase,
}

impl RangeTask {
    fn schema(&self) -> SchemaRef {
        match self.phase {
            Phase::Cuts => Arc::new(Schema::new(vec![
                Field::new("range", DataType::UInt32, false),
                Field::new("cut", DataType::UInt32, false),
                Field::new("value", DataType::UInt64, false),
                Field::new("count", DataType::UInt64, false),
            ])),
            // One row per tag with members, and a summary row (tag -1) with
            // the base, the lines, the features schema and the files written.
            Phase::Tags { .. } => Arc::new(Schema::new(vec![
                Field::new("range", DataType::UInt32, false),
                Field::new("tag", DataType::Int32, false),
                Field::new("bitmap", DataType::Binary, true),
                Field::new("base", DataType::UInt64, false),
                Field::new("lines", DataType::UInt64, false),
                Field::new("files", DataType::Utf8, true),
            ])),
        }
    }
}

/// The refresh tasks as a table, so the client can send them in a logical
/// plan (what Ballista takes) and the scheduler plans a [`TagRangeExec`].
#[derive(Debug)]
pub struct TagRangeTable {
    task: RangeTask,
}

impl TagRangeTable {
    /// The table of `task`.
    pub fn new(task: RangeTask) -> TagRangeTable {
        TagRangeTable { task }
    }

    /// Its task.
    pub fn task(&self) -> &RangeTask {
        &self.task
    }
}

#[async_trait]
impl TableProvider for TagRangeTable {
    fn schema(&self) -> SchemaRef {
        self.task.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let all = (0..self.task.schema().fields().len()).collect::<Vec<_>>();
        if projection.is_some_and(|p| *p != all) {
            return Err(DataFusionError::Plan("the tag refresh tasks are read whole".into()));
        }
        Ok(Arc::new(TagRangeExec::new(self.task.clone())?))
    }
}

/// One task per range of member keys.
///
/// Its child is an in-memory scan with one partition per range, holding
/// that range's index. The scheduler gives each task a slice of a stage's
/// partitions by rewriting the leaves it knows (an in-memory scan is one),
/// so a task learns its ranges from the rows it reads, not from the
/// partition number it is asked for.
#[derive(Debug)]
pub struct TagRangeExec {
    task: RangeTask,
    child: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl TagRangeExec {
    /// The node of `task`, one partition per range.
    pub fn new(task: RangeTask) -> DfResult<TagRangeExec> {
        let schema = Arc::new(Schema::new(vec![Field::new("range", DataType::UInt32, false)]));
        let partitions = (0..task.ranges.len() as u32)
            .map(|i| {
                let batch =
                    RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt32Array::from(vec![i])) as ArrayRef])?;
                Ok(vec![batch])
            })
            .collect::<DfResult<Vec<_>>>()?;
        let child = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
        Ok(TagRangeExec::with_child(task, child))
    }

    /// The node over a (restricted) ranges scan.
    pub fn with_child(task: RangeTask, child: Arc<dyn ExecutionPlan>) -> TagRangeExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(task.schema()),
            Partitioning::UnknownPartitioning(child.properties().partitioning.partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        TagRangeExec { task, child, properties }
    }

    /// Its task.
    pub fn task(&self) -> &RangeTask {
        &self.task
    }
}

impl DisplayAs for TagRangeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.task.phase {
            Phase::Cuts => "cuts",
            Phase::Tags { .. } => "tags",
        };
        write!(f, "TagRangeExec: {phase}, ranges={}, members={}", self.task.ranges.len(), self.task.globals.members)
    }
}

impl ExecutionPlan for TagRangeExec {
    fn name(&self) -> &str {
        "TagRangeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.child]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [child] =
            <[_; 1]>::try_from(children).map_err(|_| DataFusionError::Internal("TagRangeExec has one child".into()))?;
        Ok(Arc::new(TagRangeExec::with_child(self.task.clone(), child)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let task = self.task.clone();
        let schema = task.schema();
        let out_schema = schema.clone();
        let ranges = self.child.execute(partition, context)?;
        let work = futures::stream::once(async move {
            let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(ranges).await?;
            let mut out = Vec::new();
            for b in &batches {
                for &range in b.column(0).as_primitive::<UInt32Type>().values() {
                    let batch = run_range(&task, range as usize, out_schema.clone())
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    out.push(Ok(batch));
                }
            }
            Ok::<_, DataFusionError>(futures::stream::iter(out))
        });
        let flat = futures::TryStreamExt::try_flatten(work);
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, flat)))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.task.schema())))
    }
}

fn tagger(e: taglake_tagger::Error) -> Error {
    Error::Query(taglake_query::Error::Tags(e))
}

/// Computes one range's part of a step.
async fn run_range(task: &RangeTask, index: usize, schema: SchemaRef) -> Result<RecordBatch> {
    let (first, end) = *task.ranges.get(index).ok_or_else(|| Error::Invalid(format!("no range {index}")))?;
    let wh = crate::shared_warehouse(&task.root)?;
    let user = task.catalog.as_ref().map(|(t, s)| (t.as_str(), s.as_str()));
    let (catalog, source, _) = taglake_tagger::catalog_from(user).map_err(tagger)?;
    let fs =
        features::compute_range(&wh, catalog.growth_per_unit(), &task.globals, first..end).await.map_err(tagger)?;
    let mut compiled = Compiled::new(&catalog, &source, &fs).map_err(tagger)?;
    let engine = |e: arrow::error::ArrowError| Error::engine("a refresh task's result")(e);
    match &task.phase {
        Phase::Cuts => {
            let (mut cut, mut value, mut count) = (Vec::new(), Vec::new(), Vec::new());
            taglake_storage::scan::blocking(|| -> Result<()> {
                for i in 0..compiled.cuts() {
                    let pairs = compiled.cut_pairs(&fs, i);
                    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
                        cut.push(i as u32);
                        value.push(run[0].0);
                        count.push(run.len() as u64);
                    }
                }
                Ok(())
            })?;
            // A row saying the range answered, even with no ranked member.
            cut.push(u32::MAX);
            value.push(0);
            count.push(0);
            let n = cut.len();
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(UInt32Array::from(vec![index as u32; n])) as ArrayRef,
                    Arc::new(UInt32Array::from(cut)),
                    Arc::new(UInt64Array::from(value)),
                    Arc::new(UInt64Array::from(count)),
                ],
            )
            .map_err(engine)
        }
        Phase::Tags { starts, write_features } => {
            let lo = |range: usize| task.ranges.get(range).map(|r| (r.0 * CHUNK) as u32);
            taglake_storage::scan::blocking(|| -> Result<()> {
                for (i, specs) in starts.iter().enumerate() {
                    let pairs = compiled.cut_pairs(&fs, i);
                    let resolved =
                        specs.iter().map(|s| resolve(s, index, &pairs, lo)).collect::<Result<Vec<CutStart>>>()?;
                    compiled.set_cut_starts(i, resolved);
                }
                Ok(())
            })?;
            let features_schema = taglake_tagger::features_schema(&fs.chunk_columns(0, &|_| false));
            let lines = fs.lines;
            let (bitmaps, base, files) = evaluate(&wh, compiled, fs, features_schema.clone(), *write_features).await?;
            let schema_bytes = crate::wire::schema_bytes(&features_schema).map_err(Error::engine("features schema"))?;
            let mut range = Vec::new();
            let mut tag = Vec::new();
            let mut bytes: Vec<Option<Vec<u8>>> = Vec::new();
            for (t, bm) in bitmaps.iter().enumerate() {
                if bm.is_empty() {
                    continue;
                }
                let mut out = Vec::with_capacity(bm.serialized_size());
                bm.serialize_into(&mut out).map_err(Error::engine("a tag bitmap"))?;
                range.push(index as u32);
                tag.push(t as i32);
                bytes.push(Some(out));
            }
            range.push(index as u32);
            tag.push(-1);
            bytes.push(Some(schema_bytes));
            let n = range.len();
            let mut files_col: Vec<Option<String>> = vec![None; n];
            files_col[n - 1] = Some(serde_json::to_string(&files).expect("strings serialize"));
            let mut base_col = vec![0u64; n];
            let mut lines_col = vec![0u64; n];
            base_col[n - 1] = base;
            lines_col[n - 1] = lines;
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(UInt32Array::from(range)) as ArrayRef,
                    Arc::new(Int32Array::from(tag)),
                    Arc::new(BinaryArray::from_iter(bytes)),
                    Arc::new(UInt64Array::from(base_col)),
                    Arc::new(UInt64Array::from(lines_col)),
                    Arc::new(StringArray::from(files_col)),
                ],
            )
            .map_err(engine)
        }
    }
}

/// A start as this range compares its members with it.
fn resolve(spec: &StartSpec, me: usize, pairs: &[CutStart], lo: impl Fn(usize) -> Option<u32>) -> Result<CutStart> {
    match *spec {
        StartSpec::End => Ok(CUT_END),
        // A tie in another range is before (lower keys) or after all of
        // this range's members; that range's first key orders it so.
        StartSpec::At { value, range, .. } if range != me => {
            Ok((value, lo(range).ok_or_else(|| Error::Invalid(format!("cut start in unknown range {range}")))?))
        }
        StartSpec::At { value, tie, .. } => {
            let first = pairs.partition_point(|p| p.0 < value);
            pairs.get(first + tie as usize).filter(|p| p.0 == value).copied().ok_or_else(|| {
                Error::Invalid(
                    "a range's members changed between the two steps of the refresh (the warehouse changed during the run); run it again"
                        .into(),
                )
            })
        }
    }
}

/// Evaluates every tag of a range and writes its `features` rows; returns
/// the bitmaps, the base size and the files written (`add` actions).
async fn evaluate(
    wh: &Warehouse,
    compiled: Compiled,
    fs: FeatureSet,
    schema: SchemaRef,
    write_features: bool,
) -> Result<(Vec<RoaringBitmap>, u64, Vec<String>)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let writer = {
        let mut parts = if write_features { Some(wh.part_writer(Table::Features, schema.clone())?) } else { None };
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                if let Some(p) = parts.as_mut() {
                    p.write(batch).await?;
                }
            }
            match parts {
                Some(p) => p.finish().await,
                None => Ok(Vec::new()),
            }
        })
    };
    let evaluated = tokio::task::spawn_blocking(move || {
        taglake_tagger::evaluate_all(&compiled, &fs, &schema, |batch| {
            tx.blocking_send(batch).map_err(|_| taglake_tagger::Error::Internal("the features writer stopped".into()))
        })
    })
    .await
    .map_err(Error::engine("a refresh task"))?;
    let files = writer.await.map_err(Error::engine("the features writer"))?;
    let (bitmaps, base) = evaluated.map_err(tagger)?;
    Ok((bitmaps, base, files?))
}

/// Options of a cluster refresh beyond the embedded ones.
#[derive(Debug, Clone, Default)]
pub struct ClusterRefresh {
    /// Members per task, rounded up to whole chunks of 65,536 (default:
    /// the base in 16 tasks).
    pub range_members: Option<usize>,
}

/// Where the steps of a refresh run.
pub enum Runner {
    /// On the cluster this session is connected to.
    Cluster(SessionContext),
    /// In this process, one range after the other, with this (embedded)
    /// session for the globals: the same steps without Ballista, which
    /// tests use to check the steps apart from the engine.
    InProcess(SessionContext),
}

impl Runner {
    fn ctx(&self) -> &SessionContext {
        match self {
            Runner::Cluster(c) | Runner::InProcess(c) => c,
        }
    }

    /// Runs one step's tasks and collects their rows.
    async fn run(&self, task: &RangeTask) -> Result<Vec<RecordBatch>> {
        match self {
            Runner::Cluster(ctx) => run(ctx, task).await,
            Runner::InProcess(_) => {
                let mut out = Vec::with_capacity(task.ranges.len());
                for i in 0..task.ranges.len() {
                    out.push(run_range(task, i, task.schema()).await?);
                }
                Ok(out)
            }
        }
    }
}

/// Runs `taglake tag` on the cluster at `url`: same features, same tags,
/// same snapshot bytes as [`taglake_tagger::refresh`].
pub async fn refresh(
    url: &ClusterUrl,
    wh: &Warehouse,
    lock: &WriterLock,
    options: &RefreshOptions,
    cluster: &ClusterRefresh,
) -> Result<RefreshSummary> {
    let (ctx, _) = crate::connect(url, wh).await?;
    refresh_on(&Runner::Cluster(ctx), wh, lock, options, cluster).await
}

// Long on purpose: the refresh's stages in order (globals, ranges, features, tags, one commit), as the
// embedded tagger runs them.
/// [`refresh`] with its steps run by `runner`.
pub async fn refresh_on(
    runner: &Runner,
    wh: &Warehouse,
    lock: &WriterLock,
    options: &RefreshOptions,
    cluster: &ClusterRefresh,
) -> Result<RefreshSummary> {
    lock.check(wh)?;
    let user = taglake_tagger::read_catalog(options.catalog()).map_err(tagger)?;
    let (catalog, source, digest) =
        taglake_tagger::catalog_from(user.as_ref().map(|(t, s)| (t.as_str(), s.as_str()))).map_err(tagger)?;
    let growth = catalog.growth_per_unit();
    let t0 = Instant::now();
    let globals = globals(runner.ctx(), options.as_of()).await?;
    globals.check().map_err(tagger)?;
    let coordinator = FeatureSet::for_globals(&globals, growth);
    let compiled = Compiled::new(&catalog, &source, &coordinator).map_err(tagger)?;
    drop(coordinator);
    let chunks = globals.members.div_ceil(CHUNK);
    let per_range = match cluster.range_members {
        Some(0) => {
            return Err(Error::Parameter(ParamMessage::param("range_members").then_text(" must be at least 1")));
        }
        Some(m) => m.div_ceil(CHUNK),
        None => chunks.div_ceil(16).max(1),
    };
    let ranges: Vec<(usize, usize)> =
        (0..chunks).step_by(per_range).map(|s| (s, (s + per_range).min(chunks))).collect();
    let mut task = RangeTask {
        root: wh.root().to_string_lossy().into_owned(),
        globals: globals.clone(),
        catalog: user,
        ranges: ranges.clone(),
        phase: Phase::Cuts,
    };
    let histograms = runner.run(&task).await?;
    let starts = cut_starts(&compiled, &histograms, ranges.len())?;
    let features_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    task.phase = Phase::Tags { starts, write_features: true };
    let results = runner.run(&task).await?;
    let mut merged: Vec<Union> = (0..compiled.tags.len()).map(|_| Union::new()).collect();
    let (mut base, mut lines, mut files, mut features_schema) = (0u64, 0u64, Vec::new(), None);
    let mut seen = vec![false; ranges.len()];
    for b in &results {
        let range = b.column(0).as_primitive::<UInt32Type>();
        let tag = b.column(1).as_primitive::<arrow::datatypes::Int32Type>();
        let bytes = b.column(2).as_binary::<i32>();
        for r in 0..b.num_rows() {
            let t = tag.value(r);
            if t < 0 {
                let range = range.value(r) as usize;
                if std::mem::replace(seen.get_mut(range).ok_or_else(|| Error::Invalid("unknown range".into()))?, true) {
                    return Err(Error::Invalid(format!("range {range} answered twice")));
                }
                base += b.column(3).as_primitive::<UInt64Type>().value(r);
                lines += b.column(4).as_primitive::<UInt64Type>().value(r);
                let written: Vec<String> = serde_json::from_str(b.column(5).as_string::<i32>().value(r))
                    .map_err(|e| Error::Invalid(format!("a range's file list: {e}")))?;
                files.extend(written);
                features_schema
                    .get_or_insert(crate::wire::schema_from(bytes.value(r)).map_err(Error::engine("features schema"))?);
                continue;
            }
            let bm = RoaringBitmap::deserialize_from(bytes.value(r))
                .map_err(|e| Error::Invalid(format!("a range's bitmap of tag {t} is damaged: {e}")))?;
            merged.get_mut(t as usize).ok_or_else(|| Error::Invalid(format!("unknown tag {t}")))?.push(bm);
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::Invalid(format!("range {missing} of the refresh returned nothing; nothing was committed")));
    }
    let features_schema = features_schema.ok_or_else(|| Error::Invalid("no range returned".into()))?;
    let features_version = wh.commit_parts(Table::Features, features_schema, &files).await?;
    let evaluate_seconds = t1.elapsed().as_secs_f64();

    let merged: Vec<RoaringBitmap> = merged.into_iter().map(Union::finish).collect();
    let t2 = Instant::now();
    let member_tags: u64 = merged.iter().map(|b| b.len()).sum();
    let tags = taglake_tagger::snapshot_tags(&compiled, merged, base).map_err(tagger)?;
    let n_tags = tags.len();
    let snapshot = snapshot::write(
        wh,
        lock,
        NewSnapshot {
            as_of: globals.as_of,
            base_members: base as i64,
            features_version: Some(features_version as i64),
            catalog_digest: digest,
            tags,
        },
    )
    .await
    .map_err(tagger)?;
    let features_files_vacuumed = match options.keep_features() {
        Some(keep) => wh.vacuum(lock, Table::Features, keep, false).await?.files.len(),
        None => 0,
    };
    Ok(RefreshSummary {
        snapshot,
        features_version,
        as_of: globals.as_of,
        base_members: base,
        order_lines: lines,
        tags: n_tags,
        member_tags,
        features_seconds,
        evaluate_seconds,
        snapshot_seconds: t2.elapsed().as_secs_f64(),
        features_files_vacuumed,
        skipped: compiled.skipped.clone(),
    })
}

/// Runs one step's tasks on the cluster and collects their rows.
async fn run(ctx: &SessionContext, task: &RangeTask) -> Result<Vec<RecordBatch>> {
    let frame = ctx
        .read_table(Arc::new(TagRangeTable::new(task.clone())))
        .map_err(Error::engine("planning the refresh tasks"))?;
    frame.collect().await.map_err(Error::engine("the refresh tasks on the cluster failed; nothing was committed"))
}

/// The key space, date and dictionaries of the run, read on the cluster.
async fn globals(ctx: &SessionContext, as_of: Option<chrono::NaiveDate>) -> Result<Globals> {
    let one = async |sql: &str| -> Result<Option<i64>> { Ok(taglake_query::sql_number(ctx, sql).await?) };
    let have = taglake_query::tables(ctx);
    let has = |t: &str| have.iter().any(|h| h == t);
    let members =
        if has("member_ids") { one("SELECT max(member_key) FROM member_ids").await?.map_or(0, |m| m + 1) } else { 0 };
    let as_of = match as_of {
        Some(d) => d,
        None => {
            let newest =
                if has("orders") { one("SELECT CAST(max(ordered_at) AS BIGINT) FROM orders").await? } else { None };
            features::default_as_of(newest.unwrap_or(i64::MIN)).map_err(tagger)?
        }
    };
    let mut parts = Vec::new();
    if has("orders") {
        for (kind, column) in [("category", "category"), ("channel", "channel"), ("store", "store_id")] {
            parts.push(format!(
                "SELECT '{kind}' AS kind, {column} AS value FROM orders WHERE {column} IS NOT NULL GROUP BY {column}"
            ));
        }
    }
    if has("members") {
        for (kind, column) in [
            ("store", "home_store_id"),
            ("gender", "gender"),
            ("city", "city"),
            ("register_channel", "register_channel"),
        ] {
            parts.push(format!(
                "SELECT '{kind}' AS kind, {column} AS value FROM members WHERE {column} IS NOT NULL GROUP BY {column}"
            ));
        }
    }
    let mut values: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    if !parts.is_empty() {
        for b in taglake_query::sql(ctx, &parts.join(" UNION ALL ")).await? {
            let kind = arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(Error::engine("dictionaries"))?;
            let value = arrow::compute::cast(b.column(1), &DataType::Utf8).map_err(Error::engine("dictionaries"))?;
            let (kind, value) = (kind.as_string::<i32>(), value.as_string::<i32>());
            for r in 0..b.num_rows() {
                values.entry(kind.value(r).to_string()).or_default().push(value.value(r).to_string());
            }
        }
    }
    let mut take = |kind: &str| {
        let mut v = values.remove(kind).unwrap_or_default();
        v.sort();
        v.dedup();
        v
    };
    Ok(Globals {
        members: members as usize,
        as_of,
        categories: take("category"),
        channels: take("channel"),
        stores: take("store"),
        genders: take("gender"),
        cities: take("city"),
        register_channels: take("register_channel"),
    })
}

/// Each cut's group starts from the ranges' value counts, where a run over
/// the whole base would put them.
fn cut_starts(compiled: &Compiled, histograms: &[RecordBatch], ranges: usize) -> Result<Vec<Vec<StartSpec>>> {
    // Per cut: value → count per range.
    let mut per_cut: Vec<std::collections::BTreeMap<u64, Vec<u64>>> = vec![Default::default(); compiled.cuts()];
    let mut answered = vec![0usize; ranges];
    for b in histograms {
        let (range, cut, value, count) = (
            b.column(0).as_primitive::<UInt32Type>(),
            b.column(1).as_primitive::<UInt32Type>(),
            b.column(2).as_primitive::<UInt64Type>(),
            b.column(3).as_primitive::<UInt64Type>(),
        );
        for r in 0..b.num_rows() {
            let (range, cut) = (range.value(r) as usize, cut.value(r) as usize);
            if cut == u32::MAX as usize {
                *answered.get_mut(range).ok_or_else(|| Error::Invalid(format!("unknown range {range}")))? += 1;
                continue;
            }
            let counts = per_cut
                .get_mut(cut)
                .ok_or_else(|| Error::Invalid(format!("a range reported cut {cut}")))?
                .entry(value.value(r))
                .or_insert_with(|| vec![0; ranges]);
            *counts.get_mut(range).ok_or_else(|| Error::Invalid(format!("unknown range {range}")))? += count.value(r);
        }
    }
    if let Some(r) = answered.iter().position(|&n| n != 1) {
        return Err(Error::Invalid(format!(
            "range {r} of the refresh answered {} times in the cuts step; nothing was committed",
            answered[r]
        )));
    }
    let mut out = Vec::with_capacity(per_cut.len());
    for (i, values) in per_cut.iter().enumerate() {
        let n: u64 = values.values().flatten().sum();
        let mut specs = Vec::new();
        for p in compiled.cut_positions(i, n as usize) {
            specs.push(locate(values, p as u64));
        }
        out.push(specs);
    }
    Ok(out)
}

/// The `p`-th (from 0) ranked member in (value, key) order.
fn locate(values: &std::collections::BTreeMap<u64, Vec<u64>>, p: u64) -> StartSpec {
    let mut before = 0u64;
    for (&value, counts) in values {
        let here: u64 = counts.iter().sum();
        if p < before + here {
            let mut tie = p - before;
            for (range, &c) in counts.iter().enumerate() {
                if tie < c {
                    return StartSpec::At { value, range, tie };
                }
                tie -= c;
            }
        }
        before += here;
    }
    StartSpec::End
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distributed placement equals sorting all (value, key) pairs.
    #[test]
    fn located_starts_match_a_global_sort() {
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let ranges = 1 + (next() % 4) as usize;
            let per = 1 + (next() % 50) as u32;
            // Few distinct values, so ties cross ranges.
            let distinct = 1 + next() % 6;
            let mut all: Vec<CutStart> = Vec::new();
            let mut per_range: Vec<Vec<CutStart>> = vec![Vec::new(); ranges];
            for (r, pairs) in per_range.iter_mut().enumerate() {
                for k in 0..per {
                    if next() % 3 == 0 {
                        continue;
                    }
                    let pair = (next() % distinct, r as u32 * per + k);
                    all.push(pair);
                    pairs.push(pair);
                }
            }
            all.sort_unstable();
            let mut values: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
            for (r, pairs) in per_range.iter_mut().enumerate() {
                pairs.sort_unstable();
                for p in pairs.iter() {
                    values.entry(p.0).or_insert_with(|| vec![0; ranges])[r] += 1;
                }
            }
            for p in 0..all.len() + 2 {
                let spec = locate(&values, p as u64);
                let want = all.get(p).copied().unwrap_or(CUT_END);
                // Every range resolves the start; compared with its own
                // members it must order them as the true start does.
                for (me, pairs) in per_range.iter().enumerate() {
                    let got = resolve(&spec, me, pairs, |r| Some(r as u32 * per)).unwrap();
                    for m in pairs {
                        assert_eq!(got <= *m, want <= *m, "round {round} p {p} range {me} member {m:?}");
                    }
                }
            }
        }
    }
}
