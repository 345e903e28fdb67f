//! `taglake cluster`: from the `features` table to communities, a saved
//! model and `community_{n}` tags.
//!
//! Three passes over the `features` files, each a parallel row-group scan:
//! 1. `member_key` and `orders_total` only: who can be clustered (members
//!    with orders) and a deterministic sample of them (the `--sample`
//!    members with the smallest seeded hash of their key).
//! 2. The feature columns of the sampled members: the fit's matrix, sorted
//!    by key so the fit never depends on scan order.
//! 3. After the fit, every member with orders again: transformed,
//!    standardized and put on its nearest centroid batch by batch, so
//!    memory holds the sample and one batch per core, never the full matrix.
//!
//! Communities are then numbered by size (1 = the largest) and written to
//! the `communities` table; the model goes to `models/communities.json`;
//! and a new tag snapshot carries the latest snapshot's tags plus one
//! `community_{n}` tag per community. The snapshot comes last: it is what
//! publishes the run to audiences, and a killed run is repaired by running
//! it again (see [`cluster`]).

use std::sync::Mutex;
use std::time::Instant;

use arrow::array::{Array, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use ndarray::{Array2, ArrayView2};
use roaring::RoaringBitmap;
use taglake_storage::scan::{Wanted, scan, table_files};
use taglake_storage::{ColumnType, ParamMessage, Table, Warehouse, WriterLock};
use taglake_tagger::snapshot::{self, NewSnapshot, TagInfo};

use crate::model::{KScore, MODEL_FORMAT, SavedModel, Stability};
use crate::profile::{Partial, Profile};
use crate::spec::{DEFAULT_FEATURES, FeatureSpec};
use crate::{Error, FitParams, Result, Standardizer, assign, fit, silhouette_with_error};

/// Rows of the sample the silhouette of `--k auto` is scored on (exact
/// silhouette is quadratic).
const SILHOUETTE_ROWS: usize = 3_000;

/// Tag family of the community tags.
pub const COMMUNITY_FAMILY: &str = "community";

/// How k is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KChoice {
    /// Exactly this many communities.
    Fixed(usize),
    /// The k in `min..=max` with the best silhouette on the sample.
    Auto {
        /// Smallest k tried (at least 2).
        min: usize,
        /// Largest k tried.
        max: usize,
    },
}

/// Options of a clustering run. Its fields are private: the only way to
/// get one is [`ClusterOptionsBuilder::build`] (or [`Default`], the
/// builder's defaults), which checks what can be checked without the data
/// (k, the sample against k, starts and iterations), so [`cluster`] relies
/// on them and checks only k against the members it finds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    k: KChoice,
    features: Option<String>,
    sample: usize,
    seed: u64,
    runs: usize,
    max_iterations: u64,
    reuse_model: bool,
    stability: usize,
}

impl ClusterOptions {
    /// A builder with the defaults: k chosen by silhouette in 4..=12, the
    /// default features, a sample of 200,000 members, seed 1, 10 starts of
    /// at most 300 iterations each, a new fit and no stability refits.
    pub fn builder() -> ClusterOptionsBuilder {
        ClusterOptionsBuilder {
            k: KChoice::Auto { min: 4, max: 12 },
            features: None,
            sample: 200_000,
            seed: 1,
            runs: 10,
            max_iterations: 300,
            reuse_model: false,
            stability: 0,
        }
    }

    /// Number of communities, or auto.
    pub fn k(&self) -> KChoice {
        self.k
    }
    /// Feature list (see [`crate::spec`]); `None` is the default set.
    pub fn features(&self) -> Option<&str> {
        self.features.as_deref()
    }
    /// Members the fit trains on (all when the base is smaller).
    pub fn sample(&self) -> usize {
        self.sample
    }
    /// Seed of the sample and the k-means++ initialisation.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// k-means++ starts per fit.
    pub fn runs(&self) -> usize {
        self.runs
    }
    /// Iteration cap per fit.
    pub fn max_iterations(&self) -> u64 {
        self.max_iterations
    }
    /// Whether members are assigned with the saved model instead of a new fit.
    pub fn reuse_model(&self) -> bool {
        self.reuse_model
    }
    /// Refits on bootstrap resamples of the sample whose agreement with
    /// the fit is reported (0: none).
    pub fn stability(&self) -> usize {
        self.stability
    }
}

impl Default for ClusterOptions {
    /// The builder's defaults, which pass its checks.
    fn default() -> Self {
        ClusterOptions::builder().build().expect("the default clustering options are valid")
    }
}

/// The options as given; [`build`](Self::build) checks them.
#[derive(Debug, Clone)]
pub struct ClusterOptionsBuilder {
    k: KChoice,
    features: Option<String>,
    sample: usize,
    seed: u64,
    runs: usize,
    max_iterations: u64,
    reuse_model: bool,
    stability: usize,
}

impl ClusterOptionsBuilder {
    /// Number of communities (at least 1), or auto over a range of at
    /// least 2.
    pub fn k(mut self, k: KChoice) -> Self {
        self.k = k;
        self
    }
    /// Feature list (see [`crate::spec`]); `None` is the default set.
    pub fn features(mut self, features: impl Into<Option<String>>) -> Self {
        self.features = features.into();
        self
    }
    /// Members the fit trains on: at least the largest k asked for.
    pub fn sample(mut self, members: usize) -> Self {
        self.sample = members;
        self
    }
    /// Seed of the sample and the k-means++ initialisation.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// k-means++ starts per fit (at least 1).
    pub fn runs(mut self, runs: usize) -> Self {
        self.runs = runs;
        self
    }
    /// Iteration cap per fit (at least 1).
    pub fn max_iterations(mut self, n: u64) -> Self {
        self.max_iterations = n;
        self
    }
    /// Assign with the saved model instead of fitting a new one.
    pub fn reuse_model(mut self, yes: bool) -> Self {
        self.reuse_model = yes;
        self
    }
    /// Refits on bootstrap resamples to report the fit's stability (0: none).
    pub fn stability(mut self, refits: usize) -> Self {
        self.stability = refits;
        self
    }

    /// Checks the options that do not depend on the data: k is at least 1
    /// (auto: a range of at least 2 clusters), the sample holds at least the
    /// largest k, and a fit makes at least one start of at least one
    /// iteration. A reused model fits nothing, so these are not checked
    /// then (`taglake cluster --reuse-model` has always ignored them).
    pub fn build(self) -> Result<ClusterOptions> {
        if !self.reuse_model {
            let (lo, hi) = match self.k {
                KChoice::Fixed(k) => (k, k),
                KChoice::Auto { min, max } => {
                    if min < 2 || max < min {
                        return Err(Error::Params(ParamMessage::param("k").then_text(format!(
                            " auto needs a range of at least 2 clusters, like 2..12; got {min}..{max}"
                        ))));
                    }
                    (min, max)
                }
            };
            // In plain words, as `FitParams` words the same checks (which
            // stay, for callers of `fit`): `taglake cluster` has always
            // shown these three so, not with the flag.
            if lo == 0 {
                return Err(Error::Params("k must be at least 1".into()));
            }
            if self.sample < hi {
                return Err(Error::Params(
                    ParamMessage::param("sample").then_text(format!(" {} is smaller than k = {hi}", self.sample)),
                ));
            }
            if self.runs == 0 {
                return Err(Error::Params("runs must be at least 1".into()));
            }
            if self.max_iterations == 0 {
                return Err(Error::Params("max_iterations must be at least 1".into()));
            }
        }
        Ok(ClusterOptions {
            k: self.k,
            features: self.features,
            sample: self.sample,
            seed: self.seed,
            runs: self.runs,
            max_iterations: self.max_iterations,
            reuse_model: self.reuse_model,
            stability: self.stability,
        })
    }
}

/// What a run did.
#[derive(Debug)]
pub struct ClusterSummary {
    /// The model (fitted or reused) with the new profile.
    pub model: SavedModel,
    /// The tag snapshot holding the community tags.
    pub snapshot: i64,
    /// Seconds spent per phase: select, sample, fit, assign, write.
    pub timings: Vec<(&'static str, f64)>,
    /// Per community (in the new numbering), the number it had in the
    /// previous model when it continues one of its communities; `None`
    /// for a community with no match. Empty when there was no previous
    /// model to align with (or it was reused).
    pub continued: Vec<Option<usize>>,
}

// Long on purpose: the run's steps in order (select, sample, fit, assign, write), each timed for the summary.
/// Clusters the members of the warehouse.
///
/// Three writes, the tag snapshot last: `communities`, the model file, then
/// the snapshot that publishes `community_{n}` to audiences and SQL. The
/// run is deterministic (same features, options and seed, same result), so
/// a run killed between two writes is repaired by running it again: it
/// rewrites the first two with the same content and publishes. It only
/// clusters the `features` the newest snapshot was computed from, and only
/// publishes on top of the snapshot it read.
///
/// Needs tokio's multi-thread runtime (see the crate docs).
pub async fn cluster(wh: &Warehouse, lock: &WriterLock, opts: &ClusterOptions) -> Result<ClusterSummary> {
    lock.check(wh)?;
    let files = table_files(wh, Table::Features).await?;
    if files.is_empty() {
        return Err(Error::Data("the warehouse has no `features` table yet: run `taglake tag` first".into()));
    }
    let features_version = wh.version(Table::Features).await?;
    let base = snapshot::info(wh, None).await?;
    if let (Some(current), Some(tagged)) = (features_version, base.features_version)
        && current as i64 != tagged
    {
        return Err(Error::Data(format!(
            "the `features` table (version {current}) is not the one tag snapshot {} was computed from \
             (version {tagged}): the last `taglake tag` did not finish; run `taglake tag` again first",
            base.snapshot
        )));
    }
    let mut timings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &'static str, timings: &mut Vec<(&'static str, f64)>| {
        timings.push((name, clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    // Pass 1: who has orders.
    let (eligible, without_orders) = taglake_storage::scan::blocking(|| eligible_members(&files))?;
    if eligible.is_empty() {
        return Err(Error::Data(format!(
            "no member has orders, so there is nothing to cluster ({without_orders} members without orders)"
        )));
    }

    let stored = wh.stored_columns(Table::Features).await?;
    let mut model = if opts.reuse_model {
        let model = SavedModel::load(wh)?;
        if let Some(f) = model.features.iter().find(|f| !stored.contains(&f.name)) {
            return Err(Error::Data(format!(
                "the saved community model uses feature `{}`, which the current `features` table does not have; \
                 fit a new model (run `taglake cluster` without --reuse-model)",
                f.name
            )));
        }
        lap("select", &mut timings);
        model
    } else {
        let stored: Vec<&str> = stored.iter().map(String::as_str).collect();
        let spec = FeatureSpec::parse(opts.features.as_deref().unwrap_or(DEFAULT_FEATURES), &stored, is_numeric)?;
        check_members(opts.k, eligible.len() as u64)?;
        let sample = sample_keys(&eligible, opts.sample, opts.seed);
        lap("select", &mut timings);
        let fitted = taglake_storage::scan::blocking(|| fit_sample(&files, &spec, &sample, opts))?;
        lap("sample+fit", &mut timings);
        fitted
    };

    // Pass 3: every member with orders.
    let k = model.k;
    let assigned = taglake_storage::scan::blocking(|| assign_all(&files, &model, &eligible))?;
    lap("assign", &mut timings);

    // A reused model keeps its numbers and names. A new one continues the
    // previous model's numbers where communities match; the others (all,
    // on a first fit) take the free numbers, largest community first.
    let (order, continued) = if opts.reuse_model {
        ((0..k).collect(), Vec::new())
    } else {
        let mut by_size: Vec<usize> = (0..k).collect();
        by_size.sort_by(|&a, &b| assigned.sums.members[b].cmp(&assigned.sums.members[a]).then(a.cmp(&b)));
        let alignment = previous_model(wh, &model)
            .map(|p| crate::align::align(&p.centroids_in_feature_units(), &model.centroids_in_feature_units()));
        number_communities(&by_size, alignment)
    };
    let mut rank = vec![0u32; k];
    for (new, &old) in order.iter().enumerate() {
        rank[old] = new as u32;
    }
    let labels: Vec<u32> = assigned.labels.iter().map(|&l| rank[l as usize]).collect();
    let mut sums = Partial::new(k, model.features.len());
    for (new, &old) in order.iter().enumerate() {
        sums.members[new] = assigned.sums.members[old];
        sums.distance[new] = assigned.sums.distance[old];
        sums.sum[new] = assigned.sums.sum[old].clone();
        sums.count[new] = assigned.sums.count[old].clone();
    }
    model.centroids = order.iter().map(|&o| model.centroids[o].clone()).collect();
    let names: Vec<String> = model.features.iter().map(|f| f.name.clone()).collect();
    let old_names: Vec<String> = model.profile.communities.iter().map(|c| c.name.clone()).collect();
    model.profile = Profile::build(names, &sums, &model.centroids, without_orders);
    if opts.reuse_model && old_names.len() == k {
        for (c, n) in model.profile.communities.iter_mut().zip(old_names) {
            c.name = n;
        }
    }
    model.features_version = features_version;

    // Write: the table, the model, then the tags.
    let mut members = vec![RoaringBitmap::new(); k];
    for (&key, &l) in eligible.iter().zip(&labels) {
        members[l as usize].insert(key);
    }
    write_communities(wh, &eligible, labels, assigned.distances).await?;
    model.save(wh)?;
    let snapshot = write_tags(wh, lock, base, &model, members).await?;
    lap("write", &mut timings);
    Ok(ClusterSummary { model, snapshot, timings, continued })
}

/// The saved model a new fit should keep numbers from: one over the same
/// features (names and transforms), if any can be read.
fn previous_model(wh: &Warehouse, new: &SavedModel) -> Option<SavedModel> {
    SavedModel::load(wh).ok().filter(|p| p.features == new.features)
}

/// The new numbering: `order[new] = fitted cluster`, and per new number the
/// previous number it continues. Matched clusters keep their previous
/// number when it exists among the new ones (`< k`); the rest take the
/// free numbers in `by_size` order (fitted clusters, largest first).
fn number_communities(
    by_size: &[usize],
    alignment: Option<crate::align::Alignment>,
) -> (Vec<usize>, Vec<Option<usize>>) {
    let k = by_size.len();
    let Some(alignment) = alignment else {
        return (by_size.to_vec(), Vec::new());
    };
    let mut order = vec![usize::MAX; k];
    let mut continued = vec![None; k];
    for (cluster, m) in alignment.matched.iter().enumerate() {
        if let Some(p) = *m
            && p < k
        {
            order[p] = cluster;
            continued[p] = Some(p);
        }
    }
    let placed: std::collections::HashSet<usize> = order.iter().copied().filter(|&c| c != usize::MAX).collect();
    let mut rest = by_size.iter().copied().filter(|c| !placed.contains(c));
    for slot in order.iter_mut().filter(|s| **s == usize::MAX) {
        *slot = rest.next().expect("as many clusters as numbers");
    }
    // A cluster matched to a previous number beyond the new k still
    // continues it, under a new number.
    for (new, &cluster) in order.iter().enumerate() {
        if continued[new].is_none() {
            continued[new] = alignment.matched[cluster];
        }
    }
    (order, continued)
}

/// Columns of `features` that hold numbers (data-dependent columns all do).
fn is_numeric(column: &str) -> bool {
    match Table::Features.column(column) {
        Some(c) => matches!(c.ty, ColumnType::Int32 | ColumnType::Int64 | ColumnType::Float64),
        None => true,
    }
}

/// k against the members there are to cluster (the rest of k was
/// checked when the options were built).
fn check_members(k: KChoice, members: u64) -> Result<()> {
    let hi = match k {
        KChoice::Fixed(k) => k,
        KChoice::Auto { max, .. } => max,
    };
    if hi as u64 > members {
        return Err(Error::Params(
            format!("k = {hi} is more than the {members} members with orders to cluster").into(),
        ));
    }
    Ok(())
}

fn err_batch(message: String) -> Error {
    Error::Data(format!("warehouse table `features`: {message}"))
}

/// Keys of the members with orders (sorted) and how many have none.
fn eligible_members(files: &[std::path::PathBuf]) -> Result<(Vec<u32>, u64)> {
    let t = Table::Features;
    let wanted = [Wanted::plain(t, "member_key"), Wanted::typed("orders_total", DataType::Int64)];
    let keys = Mutex::new(Vec::new());
    let none = Mutex::new(0u64);
    scan::<_, Error>(t, files, &wanted, |b| {
        let key = b.column(0).as_primitive::<Int64Type>();
        let orders = b.column(1).as_primitive::<Int64Type>();
        let mut mine = Vec::with_capacity(b.num_rows());
        let mut empty = 0;
        for r in 0..b.num_rows() {
            let k = key.value(r);
            let k = u32::try_from(k).map_err(|_| err_batch(format!("member_key {k} is out of range")))?;
            if orders.is_valid(r) && orders.value(r) > 0 {
                mine.push(k);
            } else {
                empty += 1;
            }
        }
        keys.lock().expect("keys").extend(mine);
        *none.lock().expect("count") += empty;
        Ok(())
    })?;
    let mut keys = keys.into_inner().expect("keys");
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    if keys.len() != before {
        return Err(err_batch("a member_key appears twice".into()));
    }
    Ok((keys, none.into_inner().expect("count")))
}

/// The `n` keys with the smallest seeded hash (all keys when there are
/// fewer): a uniform sample that depends only on the keys and the seed,
/// drawn as `audience sample` draws ([`taglake_base::seeded::sample`]).
fn sample_keys(keys: &[u32], n: usize, seed: u64) -> RoaringBitmap {
    taglake_base::seeded::sample(keys.iter().copied(), n, seed).into_iter().collect()
}

/// The wanted columns for a feature list: key, orders_total, then the features.
fn feature_columns(names: &[String]) -> Vec<Wanted> {
    let mut w = vec![Wanted::plain(Table::Features, "member_key"), Wanted::typed("orders_total", DataType::Int64)];
    w.extend(names.iter().map(|n| Wanted::typed(n.clone(), DataType::Float64)));
    w
}

/// The feature columns of a batch read with [`feature_columns`].
fn feature_arrays(b: &RecordBatch, d: usize) -> Vec<&arrow::array::PrimitiveArray<Float64Type>> {
    (0..d).map(|j| b.column(2 + j).as_primitive::<Float64Type>()).collect()
}

/// Row `r` of a feature column after its transform; NaN where it has no value.
fn transformed(c: &arrow::array::PrimitiveArray<Float64Type>, f: &crate::spec::Feature, r: usize) -> f64 {
    if c.is_valid(r) { f.transform.apply(c.value(r)) } else { f64::NAN }
}

/// The transformed feature rows of the members in `keys`, sorted by key
/// (NaN where a member has no value).
fn read_rows(
    files: &[std::path::PathBuf],
    spec: &FeatureSpec,
    keys: &RoaringBitmap,
) -> Result<(Vec<u32>, Array2<f64>)> {
    let names: Vec<String> = spec.features.iter().map(|f| f.name.clone()).collect();
    let d = names.len();
    let rows = Mutex::new(Vec::with_capacity(keys.len() as usize));
    scan::<_, Error>(Table::Features, files, &feature_columns(&names), |b| {
        let key = b.column(0).as_primitive::<Int64Type>();
        let cols = feature_arrays(b, d);
        let mut mine = Vec::new();
        for r in 0..b.num_rows() {
            let k = key.value(r);
            if (0..=i64::from(u32::MAX)).contains(&k) && keys.contains(k as u32) {
                let row: Vec<f64> = cols.iter().zip(&spec.features).map(|(c, f)| transformed(c, f, r)).collect();
                mine.push((k as u32, row));
            }
        }
        rows.lock().expect("rows").extend(mine);
        Ok(())
    })?;
    let mut rows = rows.into_inner().expect("rows");
    rows.sort_unstable_by_key(|r| r.0);
    let x = Array2::from_shape_fn((rows.len(), d), |(i, j)| rows[i].1[j]);
    Ok((rows.into_iter().map(|r| r.0).collect(), x))
}

/// Per column, the mean of the finite values (0 when there is none); then
/// every missing cell gets its column's value (0 after standardizing).
fn fill_missing(x: &mut Array2<f64>) -> Vec<f64> {
    let fill: Vec<f64> = x
        .columns()
        .into_iter()
        .map(|c| {
            let (s, n) = c.iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            if n > 0 { s / n as f64 } else { 0.0 }
        })
        .collect();
    for mut row in x.rows_mut() {
        for (v, f) in row.iter_mut().zip(&fill) {
            if !v.is_finite() {
                *v = *f;
            }
        }
    }
    fill
}

/// The standardized matrix of every member with orders (keys ascending),
/// exactly as a fit on the whole base would see it, and the feature
/// names. Benchmarks hand it to other k-means implementations.
pub async fn standardized_matrix(
    wh: &Warehouse,
    features: Option<&str>,
) -> Result<(Vec<u32>, Array2<f64>, Vec<String>)> {
    let files = table_files(wh, Table::Features).await?;
    let stored = wh.stored_columns(Table::Features).await?;
    let stored: Vec<&str> = stored.iter().map(String::as_str).collect();
    let spec = FeatureSpec::parse(features.unwrap_or(DEFAULT_FEATURES), &stored, is_numeric)?;
    taglake_storage::scan::blocking(|| {
        let (eligible, _) = eligible_members(&files)?;
        let (keys, mut x) = read_rows(&files, &spec, &eligible.iter().copied().collect())?;
        fill_missing(&mut x);
        let z = Standardizer::fit(x.view())?.transform(x.view());
        Ok((keys, z, spec.names().into_iter().map(String::from).collect()))
    })
}

/// Reads the sampled rows, learns fill values and the scaler, chooses k
/// and fits.
fn fit_sample(
    files: &[std::path::PathBuf],
    spec: &FeatureSpec,
    sample: &RoaringBitmap,
    opts: &ClusterOptions,
) -> Result<SavedModel> {
    let (_, mut x) = read_rows(files, spec, sample)?;
    let n = x.nrows();
    let fill = fill_missing(&mut x);
    let scaler = Standardizer::fit(x.view())?;
    let z = scaler.transform(x.view());
    drop(x);
    let params = |k: usize| FitParams::new(k).seed(opts.seed).runs(opts.runs).max_iterations(opts.max_iterations);
    let (model, k, k_scores) = match opts.k {
        KChoice::Fixed(k) => (fit(z.view(), &params(k))?, k, Vec::new()),
        KChoice::Auto { min, max } => {
            let step = n.div_ceil(SILHOUETTE_ROWS).max(1);
            let scored: Vec<usize> = (0..n).step_by(step).collect();
            let sub = z.select(ndarray::Axis(0), &scored);
            let mut fits = Vec::new();
            let mut scores = Vec::new();
            // Every candidate gets every start asked for: a candidate fitted
            // once lands in a poor optimum now and then, and its silhouette
            // then loses to a neighbouring k's (measured: the planted k won
            // 15 of 18 fits with one start per candidate).
            for k in min..=max.min(n) {
                let m = fit(z.view(), &params(k))?;
                let (labels, _) = assign(sub.view(), m.centroids.view());
                let (s, se) = silhouette_with_error(sub.view(), &labels, k);
                scores.push(KScore { k, silhouette: s, silhouette_error: se, inertia: m.inertia });
                fits.push(m);
            }
            // The smallest k whose silhouette is within one standard error
            // of the best: differences smaller than that are the noise of
            // the scored subsample (the one-standard-error rule).
            let top = scores.iter().max_by(|a, b| a.silhouette.total_cmp(&b.silhouette)).expect("at least one k");
            let bar = top.silhouette - top.silhouette_error;
            let chosen = scores.iter().position(|s| s.silhouette >= bar).expect("the best passes");
            (fits.swap_remove(chosen), scores[chosen].k, scores)
        }
    };
    let stability =
        (opts.stability > 0).then(|| stability(z.view(), &model, &params(k), opts.stability)).transpose()?;
    let centroids = model.centroids.outer_iter().map(|r| r.to_vec()).collect();
    Ok(SavedModel {
        format: MODEL_FORMAT,
        created_at: chrono::Utc::now(),
        features_version: None,
        k,
        seed: opts.seed,
        runs: opts.runs,
        max_iterations: opts.max_iterations,
        sample_rows: n,
        sample_inertia: model.inertia,
        features: spec.features.clone(),
        fill,
        mean: scaler.mean.to_vec(),
        std: scaler.std.to_vec(),
        centroids,
        k_scores,
        starts: model.starts.clone(),
        stability,
        // Filled in once every member is assigned.
        profile: Profile::default(),
    })
}

/// Refits `refits` times on bootstrap resamples of `z` (rows drawn with
/// replacement, seeded) and compares each refit's labels of every row of
/// `z` with the model's.
fn stability(z: ArrayView2<'_, f64>, model: &crate::Model, params: &FitParams, refits: usize) -> Result<Stability> {
    let n = z.nrows();
    let (base, _) = assign(z, model.centroids.view());
    let mut aris = Vec::with_capacity(refits);
    for r in 1..=refits {
        let draw = taglake_base::seeded::Seeded::new(params.seed ^ r as u64);
        let rows: Vec<usize> = (0..n).map(|i| (draw.hash(i as u64) % n as u64) as usize).collect();
        let resample = z.select(ndarray::Axis(0), &rows);
        let refit = fit(resample.view(), &params.clone().seed(params.seed.wrapping_add(r as u64)))?;
        let (labels, _) = assign(z, refit.centroids.view());
        aris.push(crate::align::adjusted_rand_index(&base, &labels));
    }
    Ok(Stability {
        refits,
        mean_ari: aris.iter().sum::<f64>() / refits as f64,
        min_ari: aris.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// Labels, distances and profile sums of every member with orders.
struct Assigned {
    /// Per eligible member (in key order), its cluster (model order).
    labels: Vec<u32>,
    /// Per eligible member, Euclidean distance to its centroid.
    distances: Vec<f32>,
    /// Merged sums.
    sums: Partial,
}

fn assign_all(files: &[std::path::PathBuf], model: &SavedModel, eligible: &[u32]) -> Result<Assigned> {
    let names: Vec<String> = model.features.iter().map(|f| f.name.clone()).collect();
    let d = names.len();
    let k = model.k;
    let scaler = model.standardizer();
    let centroids = model.centroid_matrix();
    let n = eligible.len();
    let labels = Mutex::new(vec![0u32; n]);
    let distances = Mutex::new(vec![0f32; n]);
    let partials = Mutex::new(Vec::new());
    scan::<_, Error>(Table::Features, files, &feature_columns(&names), |b| {
        let key = b.column(0).as_primitive::<Int64Type>();
        let orders = b.column(1).as_primitive::<Int64Type>();
        let cols = feature_arrays(b, d);
        let rows: Vec<usize> = (0..b.num_rows()).filter(|&r| orders.is_valid(r) && orders.value(r) > 0).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let mut x = Array2::<f64>::zeros((rows.len(), d));
        for (i, &r) in rows.iter().enumerate() {
            for (j, (c, f)) in cols.iter().zip(&model.features).enumerate() {
                let v = transformed(c, f, r);
                let v = if v.is_finite() { v } else { model.fill[j] };
                x[[i, j]] = (v - scaler.mean[j]) / scaler.std[j];
            }
        }
        let (lab, sq) = assign(ArrayView2::from(&x), centroids.view());
        let dist: Vec<f64> = sq.iter().map(|v| v.sqrt()).collect();
        let mut part = Partial::new(k, d);
        let mut slots = Vec::with_capacity(rows.len());
        for (i, &r) in rows.iter().enumerate() {
            let key = key.value(r) as u32;
            let slot = eligible.binary_search(&key).map_err(|_| err_batch(format!("member_key {key} changed")))?;
            slots.push(slot);
            let c = lab[i] as usize;
            part.members[c] += 1;
            part.distance[c] += dist[i];
            for (j, col) in cols.iter().enumerate() {
                if col.is_valid(r) {
                    part.sum[c][j] += col.value(r);
                    part.count[c][j] += 1;
                }
            }
        }
        {
            let mut l = labels.lock().expect("labels");
            let mut out = distances.lock().expect("distances");
            for (i, &s) in slots.iter().enumerate() {
                l[s] = lab[i];
                out[s] = dist[i] as f32;
            }
        }
        partials.lock().expect("partials").push((slots[0], part));
        Ok(())
    })?;
    // Merge in key order: the sums do not depend on which thread ran first.
    let mut partials = partials.into_inner().expect("partials");
    partials.sort_by_key(|p| p.0);
    let mut sums = Partial::new(k, d);
    for (_, p) in &partials {
        sums.merge(p);
    }
    Ok(Assigned {
        labels: labels.into_inner().expect("labels"),
        distances: distances.into_inner().expect("distances"),
        sums,
    })
}

/// Replaces the `communities` table (streamed in batches of 64K rows).
async fn write_communities(wh: &Warehouse, keys: &[u32], labels: Vec<u32>, distances: Vec<f32>) -> Result<()> {
    let bitmap: RoaringBitmap = keys.iter().copied().collect();
    let ids = snapshot::member_ids(wh, &bitmap).await?;
    if ids.len() != keys.len() {
        return Err(Error::Data(format!(
            "{} members with features have no entry in `member_ids`; the warehouse is inconsistent",
            keys.len() - ids.len()
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let schema = Table::Communities.arrow_schema();
    let s2 = schema.clone();
    let producer = std::thread::spawn(move || {
        for start in (0..ids.len()).step_by(65_536) {
            let end = (start + 65_536).min(ids.len());
            let part = &ids[start..end];
            let batch = RecordBatch::try_new(
                s2.clone(),
                vec![
                    std::sync::Arc::new(Int64Array::from_iter_values(part.iter().map(|p| i64::from(p.0)))),
                    std::sync::Arc::new(StringArray::from_iter_values(part.iter().map(|p| p.1.as_str()))),
                    std::sync::Arc::new(Int32Array::from_iter_values(labels[start..end].iter().map(|&l| l as i32 + 1))),
                    std::sync::Arc::new(Float64Array::from_iter_values(
                        distances[start..end].iter().map(|&d| f64::from(d)),
                    )),
                ],
            )
            .map_err(|e| e.to_string());
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    let written = wh.overwrite_streaming(Table::Communities, schema, vec![rx]).await;
    producer.join().map_err(|_| Error::Data("the communities writer thread panicked".into()))?;
    written?;
    Ok(())
}

/// A new snapshot: the tags of `info` (the newest snapshot; without earlier
/// community tags) plus `community_{n}` for every community
/// (`members[n - 1]`). Refused if another snapshot was committed since.
async fn write_tags(
    wh: &Warehouse,
    lock: &WriterLock,
    info: snapshot::SnapshotInfo,
    model: &SavedModel,
    members: Vec<RoaringBitmap>,
) -> Result<i64> {
    let (_, bitmaps) = snapshot::bitmaps(wh, Some(info.snapshot), None).await?;
    let mut tags: Vec<(TagInfo, RoaringBitmap)> = info
        .tags
        .into_iter()
        .zip(bitmaps)
        .filter(|(t, _)| t.family != COMMUNITY_FAMILY)
        .map(|(t, (_, b))| (t, b))
        .collect();
    let base = info.base_members.max(1) as f64;
    let first = tags.iter().map(|t| t.0.position).max().map_or(0, |p| p + 1);
    for (c, bm) in members.into_iter().enumerate() {
        let p = &model.profile.communities[c];
        let n = bm.len() as i64;
        tags.push((
            TagInfo {
                position: first + c as i32,
                name: format!("community_{}", c + 1),
                family: COMMUNITY_FAMILY.into(),
                description: format!("Community {} of {}: {}", c + 1, model.k, p.name),
                rule: format!(
                    "nearest k-means centroid ({} features, seed {}, features version {})",
                    model.features.len(),
                    model.seed,
                    model.features_version.map_or("?".to_string(), |v| v.to_string())
                ),
                members: n,
                share: n as f64 / base,
                // One community per member: the family is exclusive.
                value: Some((c + 1).to_string()),
            },
            bm,
        ));
    }
    let digest = format!("{}+communities", info.catalog_digest.split('+').next().unwrap_or_default());
    Ok(snapshot::write_after(
        wh,
        lock,
        info.snapshot,
        NewSnapshot {
            as_of: info.as_of,
            base_members: info.base_members,
            features_version: info.features_version,
            catalog_digest: digest,
            tags,
        },
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_continue_where_communities_match() {
        use crate::align::Alignment;
        // Fitted clusters by size: 2, 0, 1. No previous model: by size.
        assert_eq!(number_communities(&[2, 0, 1], None), (vec![2, 0, 1], Vec::new()));
        // Cluster 0 continues number 1, cluster 2 number 0, cluster 1 is new.
        let a = Alignment { matched: vec![Some(1), None, Some(0)] };
        assert_eq!(number_communities(&[2, 0, 1], Some(a)), (vec![2, 0, 1], vec![Some(0), Some(1), None]));
        let a = Alignment { matched: vec![None, Some(0), None] };
        assert_eq!(number_communities(&[2, 0, 1], Some(a)), (vec![1, 2, 0], vec![Some(0), None, None]));
        // Fewer communities than before: a match beyond the new k keeps
        // its lineage under a free number.
        let a = Alignment { matched: vec![Some(4), Some(0)] };
        assert_eq!(number_communities(&[0, 1], Some(a)), (vec![1, 0], vec![Some(0), Some(4)]));
    }

    #[test]
    fn the_sample_is_exact_uniform_and_seeded() {
        let keys: Vec<u32> = (0..100_000).collect();
        let a = sample_keys(&keys, 10_000, 1);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, sample_keys(&keys, 10_000, 1));
        let b = sample_keys(&keys, 10_000, 2);
        let common = (&a & &b).len();
        assert!((600..1_400).contains(&common), "two seeds overlap like independent samples: {common}");
        // Every tenth of the key range gets about a tenth of the sample.
        for t in 0..10u32 {
            let n = a.range(t * 10_000..(t + 1) * 10_000).count();
            assert!((850..1_150).contains(&n), "decile {t}: {n}");
        }
        assert_eq!(sample_keys(&keys[..5], 10, 1).len(), 5);
    }

    /// As `taglake cluster` shows it: parameters named by their flags.
    fn shown(e: Error) -> String {
        match e {
            Error::Params(m) => format!("invalid clustering parameter: {}", m.render(|p| format!("--{p}"))),
            other => other.to_string(),
        }
    }

    #[test]
    fn every_bad_option_is_refused_naming_its_parameter() {
        let err = |b: ClusterOptionsBuilder| shown(b.build().unwrap_err());
        let b = || ClusterOptions::builder().sample(100);
        assert_eq!(err(b().k(KChoice::Fixed(0))), "invalid clustering parameter: k must be at least 1");
        assert_eq!(
            err(b().k(KChoice::Auto { min: 1, max: 5 })),
            "invalid clustering parameter: --k auto needs a range of at least 2 clusters, like 2..12; got 1..5"
        );
        assert_eq!(
            err(b().k(KChoice::Auto { min: 6, max: 5 })),
            "invalid clustering parameter: --k auto needs a range of at least 2 clusters, like 2..12; got 6..5"
        );
        assert_eq!(
            err(b().k(KChoice::Fixed(20)).sample(10)),
            "invalid clustering parameter: --sample 10 is smaller than k = 20"
        );
        assert_eq!(err(b().sample(11)), "invalid clustering parameter: --sample 11 is smaller than k = 12");
        assert_eq!(err(b().runs(0)), "invalid clustering parameter: runs must be at least 1");
        assert_eq!(err(b().max_iterations(0)), "invalid clustering parameter: max_iterations must be at least 1");
        // The library names the parameter, not a flag.
        let e = b().sample(3).k(KChoice::Fixed(4)).build().unwrap_err();
        assert_eq!(e.to_string(), "invalid clustering parameter: `sample` 3 is smaller than k = 4");
        assert!(matches!(&e, Error::Params(m) if m.parameter() == Some("sample")), "{e:?}");
        // A reused model fits nothing: the fit's options are not checked.
        let reused = b().reuse_model(true).k(KChoice::Fixed(0)).runs(0).max_iterations(0).sample(0).build();
        assert!(reused.unwrap().reuse_model());
    }

    #[test]
    fn good_options_read_back_as_built() {
        let o = ClusterOptions::default();
        assert_eq!(o, ClusterOptions::builder().build().unwrap());
        assert_eq!(o.k(), KChoice::Auto { min: 4, max: 12 });
        assert_eq!((o.features(), o.sample(), o.seed(), o.runs()), (None, 200_000, 1, 10));
        assert_eq!((o.max_iterations(), o.reuse_model(), o.stability()), (300, false, 0));
        let o = ClusterOptions::builder()
            .k(KChoice::Fixed(3))
            .features(Some("recency_days,orders_total".to_string()))
            .sample(3)
            .seed(7)
            .runs(2)
            .max_iterations(9)
            .stability(4)
            .build()
            .unwrap();
        assert_eq!(o.k(), KChoice::Fixed(3));
        assert_eq!((o.features(), o.sample(), o.seed(), o.runs()), (Some("recency_days,orders_total"), 3, 7, 2));
        assert_eq!((o.max_iterations(), o.reuse_model(), o.stability()), (9, false, 4));
    }

    #[test]
    fn k_is_checked_against_the_members_with_orders() {
        assert_eq!(
            shown(check_members(KChoice::Fixed(51), 50).unwrap_err()),
            "invalid clustering parameter: k = 51 is more than the 50 members with orders to cluster"
        );
        assert_eq!(
            shown(check_members(KChoice::Auto { min: 2, max: 60 }, 50).unwrap_err()),
            "invalid clustering parameter: k = 60 is more than the 50 members with orders to cluster"
        );
        assert!(check_members(KChoice::Fixed(50), 50).is_ok());
    }
}
