//! Standardization, the k-means fit and the full-base assignment kernel.

use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use rayon::prelude::*;

use crate::{Error, Result};

/// Rows per block of the assignment kernel: a block and the centroids stay
/// in cache while every distance of the block is computed.
const BLOCK: usize = 256;

/// Per-column mean and standard deviation; columns with no spread are
/// centred but not scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Column means.
    pub mean: Array1<f64>,
    /// Column standard deviations (1 where a column is constant).
    pub std: Array1<f64>,
}

impl Standardizer {
    /// Learns the columns of `data` (rows = members). NaN cells are not
    /// allowed: callers fill or drop them first.
    pub fn fit(data: ArrayView2<'_, f64>) -> Result<Standardizer> {
        if data.nrows() == 0 {
            return Err(Error::Data("no rows to standardize".into()));
        }
        if let Some((i, _)) = data.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Data(format!("row {}, column {} is not a finite number", i.0, i.1)));
        }
        let mean = data.mean_axis(Axis(0)).expect("rows > 0");
        let std = data.std_axis(Axis(0), 0.0).mapv(|s| if s > 1e-12 { s } else { 1.0 });
        Ok(Standardizer { mean, std })
    }

    /// `(x - mean) / std`, column by column.
    pub fn transform(&self, data: ArrayView2<'_, f64>) -> Array2<f64> {
        (&data - &self.mean) / &self.std
    }
}

/// Parameters of a fit: made by [`FitParams::new`] and its setters, and
/// checked against the data by [`fit`] (k must not exceed the rows). The
/// fields are private so no fit runs on values the setters never saw.
#[derive(Debug, Clone)]
pub struct FitParams {
    /// Number of clusters.
    pub(crate) k: usize,
    /// Random seed of the k-means++ initialisation.
    pub(crate) seed: u64,
    /// Iteration cap.
    pub(crate) max_iterations: u64,
    /// Stop when the centroids move less than this between two iterations,
    /// as the sum over centroids of their squared shift (scikit-learn's
    /// criterion on standardized data).
    pub(crate) tolerance: f64,
    /// Independent k-means++ starts; the fit with the lowest inertia wins.
    pub(crate) runs: usize,
}

impl FitParams {
    /// `k` clusters, seed 1, at most 300 iterations, tolerance 1e-4, one run.
    pub fn new(k: usize) -> FitParams {
        FitParams { k, seed: 1, max_iterations: 300, tolerance: 1e-4, runs: 1 }
    }

    /// Sets the number of independent starts.
    pub fn runs(mut self, runs: usize) -> FitParams {
        self.runs = runs;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> FitParams {
        self.seed = seed;
        self
    }

    /// Sets the iteration cap.
    pub fn max_iterations(mut self, n: u64) -> FitParams {
        self.max_iterations = n;
        self
    }

    /// Sets the convergence tolerance: the fit stops when the summed squared
    /// shift of the centroids falls to it (a positive number).
    pub fn tolerance(mut self, tolerance: f64) -> FitParams {
        self.tolerance = tolerance;
        self
    }

    /// The parameters are in range for `data`, and it has features.
    fn check(&self, data: ArrayView2<'_, f64>) -> Result<()> {
        let rows = data.nrows();
        if self.k == 0 {
            return Err(Error::Params("k must be at least 1".into()));
        }
        if self.k > rows {
            return Err(Error::Params(format!("k = {} is more than the {rows} members to cluster", self.k).into()));
        }
        if self.runs == 0 {
            return Err(Error::Params("runs must be at least 1".into()));
        }
        if self.max_iterations == 0 {
            return Err(Error::Params("max_iterations must be at least 1".into()));
        }
        if !(self.tolerance > 0.0 && self.tolerance.is_finite()) {
            return Err(Error::Params(format!("tolerance must be a positive number, not {}", self.tolerance).into()));
        }
        if data.ncols() == 0 {
            return Err(Error::Data("no features to cluster on".into()));
        }
        Ok(())
    }
}

/// A fitted model.
#[derive(Debug, Clone)]
pub struct Model {
    /// One row per cluster, in the standardized space.
    pub centroids: Array2<f64>,
    /// Sum of squared distances of the fitted rows to their centroid.
    pub inertia: f64,
    /// The final inertia of every start, in start order (on the rows the
    /// starts ran on: see [`fit`]); one entry for a single start.
    pub starts: Vec<f64>,
}

/// Fits k-means on `data` (already standardized): `runs` starts, each a
/// greedy k-means++ seeding ([`greedy_kmeans_pp`]) followed by Lloyd
/// iterations whose assignment step is the blocked kernel of [`assign`]
/// and whose centroid step sums rows in parallel, merged in a fixed order.
/// The start with the lowest inertia wins; [`Model::starts`] keeps every
/// start's inertia. On more than 2 × [`START_ROWS`] rows the starts run on
/// an evenly spaced subsample of that size and the winner is refined on
/// every row. Deterministic for a seed.
///
/// linfa's own k-means++ takes one candidate per step and its iterations
/// assign rows with a scalar loop; on generated members its seeding landed
/// in a poorer local optimum on half the seeds (one persona merged with
/// another, a third split). [`fit_linfa`] keeps linfa alone, for
/// comparison (`benches/cluster_vs_sklearn.sh` measures both).
pub fn fit(data: ArrayView2<'_, f64>, params: &FitParams) -> Result<Model> {
    params.check(data)?;
    let n = data.nrows();
    // Starts on an evenly spaced subsample when the data is large: which
    // basin a start falls into shows on START_ROWS rows as well as on all
    // of them, at a fraction of the cost; the best start is then refined
    // on every row.
    let step = n / START_ROWS;
    let subsample = (step >= 2).then(|| data.select(Axis(0), &(0..n).step_by(step).collect::<Vec<_>>()));
    let starts_on = subsample.as_ref().map_or(data.view(), |s| s.view());
    // Every start runs to convergence. Stopping a start whose inertia is
    // still a few percent above the best after some iterations was tried
    // and dropped: on generated members, starts sat 5–6 % above the best
    // for ten iterations and more, then moved on and ended in it.
    let mut best: Option<Model> = None;
    let mut starts = Vec::with_capacity(params.runs);
    for run in 0..params.runs {
        let init = greedy_kmeans_pp(starts_on, params.k, start_seed(params.seed, run));
        let model = lloyd(starts_on, init, params);
        starts.push(model.inertia);
        if best.as_ref().is_none_or(|b| model.inertia < b.inertia) {
            best = Some(model);
        }
    }
    let best = best.expect("runs >= 1");
    let mut model = if subsample.is_some() { lloyd(data, best.centroids, params) } else { best };
    model.starts = starts;
    Ok(model)
}

/// Rows the starts of a fit run on (see [`fit`]): data of at least twice
/// this many rows is subsampled for them.
pub const START_ROWS: usize = 25_000;

/// The seed of start `run` of a fit seeded `seed` (start 0 uses the seed
/// itself, so one start with seed S is the first start of many with S).
fn start_seed(seed: u64, run: usize) -> u64 {
    if run == 0 { seed } else { seed ^ (run as u64).wrapping_mul(taglake_base::seeded::GOLDEN) }
}

/// Greedy k-means++ seeding (Arthur and Vassilvitskii's k-means++ with
/// several candidates per step, as scikit-learn seeds by default): the
/// first centre is a uniformly drawn row; each next one is the best of
/// `2 + ⌊ln k⌋` rows drawn with probability proportional to their squared
/// distance to the nearest centre so far, best meaning the one that lowers
/// the total of those distances (the potential) most.
///
/// Written here rather than taken from linfa because linfa draws a single
/// candidate per step, which is what left fits in poor optima, and because
/// each step's candidates are scored in one blocked pass over the rows
/// (the kernel of [`assign`]) rather than one scalar pass per candidate.
/// Deterministic for a seed: sums are merged in a fixed block order.
pub fn greedy_kmeans_pp(data: ArrayView2<'_, f64>, k: usize, seed: u64) -> Array2<f64> {
    use rand_xoshiro::rand_core::RngCore;
    let (n, d) = data.dim();
    assert!(k >= 1 && k <= n, "k = {k} for {n} rows");
    let mut rng = Xoshiro256Plus::seed_from_u64(seed);
    // A uniform draw in [0, 1) from the top 53 bits.
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut centroids = Array2::zeros((k, d));
    let first = ((uniform() * n as f64) as usize).min(n - 1);
    centroids.row_mut(0).assign(&data.row(first));
    let mut closest = vec![f64::INFINITY; n];
    update_closest(data, &mut closest, centroids.row(0).as_slice().expect("a standard-layout row"));
    for c in 1..k {
        // Block sums of the potential, then a draw walks blocks and rows.
        let block_sums: Vec<f64> = closest.par_chunks(BLOCK).map(|b| b.iter().sum()).collect();
        let potential: f64 = block_sums.iter().sum();
        let mut candidates = Array2::zeros((trials, d));
        for t in 0..trials {
            let row = if potential > 0.0 {
                draw(&closest, &block_sums, uniform() * potential)
            } else {
                // Every row sits on a centre: any row will do.
                ((uniform() * n as f64) as usize).min(n - 1)
            };
            candidates.row_mut(t).assign(&data.row(row));
        }
        let potentials = candidate_potentials(data, &closest, candidates.view());
        let best = (0..trials).fold(0, |b, t| if potentials[t] < potentials[b] { t } else { b });
        centroids.row_mut(c).assign(&candidates.row(best));
        update_closest(data, &mut closest, centroids.row(c).as_slice().expect("a standard-layout row"));
    }
    centroids
}

/// The row where the running sum of `closest` passes `target`, found
/// through the block sums (the last row with a positive weight when
/// rounding runs past the end). Some weight must be positive.
fn draw(closest: &[f64], block_sums: &[f64], mut target: f64) -> usize {
    fn walk(weights: &[f64], target: &mut f64) -> Option<usize> {
        let mut pick = None;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                pick = Some(i);
                if *target < w {
                    break;
                }
                *target -= w;
            }
        }
        pick
    }
    let b = walk(block_sums, &mut target).expect("a positive potential");
    let rows = &closest[b * BLOCK..(b * BLOCK + BLOCK).min(closest.len())];
    b * BLOCK + walk(rows, &mut target).expect("a block with a positive sum has a positive row")
}

/// Copies rows `b * BLOCK ..` (`m` of them) of `data` into `xt`,
/// transposed: feature `j` of row `i` at `xt[j * BLOCK + i]`.
fn transpose_block(data: ArrayView2<'_, f64>, b: usize, m: usize, xt: &mut [f64]) {
    let rows = data.slice(ndarray::s![b * BLOCK..(b * BLOCK + m), ..]);
    for (i, r) in rows.outer_iter().enumerate() {
        for (j, v) in r.iter().enumerate() {
            xt[j * BLOCK + i] = *v;
        }
    }
}

/// `closest[i] = min(closest[i], ‖row i − centre‖²)`, block by block.
fn update_closest(data: ArrayView2<'_, f64>, closest: &mut [f64], centre: &[f64]) {
    let dims = data.ncols();
    closest.par_chunks_mut(BLOCK).enumerate().for_each_init(
        || (vec![0f64; dims * BLOCK], vec![0f64; BLOCK]),
        |(xt, acc), (b, cl)| {
            let m = cl.len();
            transpose_block(data, b, m, xt);
            let acc = &mut acc[..m];
            acc.fill(0.0);
            accumulate(acc, xt, centre, m);
            for (c, a) in cl.iter_mut().zip(acc.iter()) {
                *c = c.min(*a);
            }
        },
    );
}

/// For each candidate centre, the potential `Σ min(closest[i], ‖row i −
/// candidate‖²)` it would leave: one pass, all candidates per block.
fn candidate_potentials(data: ArrayView2<'_, f64>, closest: &[f64], candidates: ArrayView2<'_, f64>) -> Vec<f64> {
    let (t, dims) = candidates.dim();
    let flat: Vec<f64> = candidates.iter().copied().collect();
    let per_block: Vec<Vec<f64>> = closest
        .par_chunks(BLOCK)
        .enumerate()
        .map_init(
            || (vec![0f64; dims * BLOCK], vec![0f64; BLOCK]),
            |(xt, acc), (b, cl)| {
                let m = cl.len();
                transpose_block(data, b, m, xt);
                (0..t)
                    .map(|c| {
                        let acc = &mut acc[..m];
                        acc.fill(0.0);
                        accumulate(acc, xt, &flat[c * dims..(c + 1) * dims], m);
                        acc.iter().zip(cl).map(|(a, c)| a.min(*c)).sum::<f64>()
                    })
                    .collect()
            },
        )
        .collect();
    (0..t).map(|c| per_block.iter().map(|p| p[c]).sum()).collect()
}

/// Fits k-means with linfa alone (k-means++, `runs` starts, its own
/// iterations). Same parameters and checks as [`fit`].
pub fn fit_linfa(data: ArrayView2<'_, f64>, params: &FitParams) -> Result<Model> {
    params.check(data)?;
    let centroids = linfa_kmeans(data, params)?;
    let (_, distances) = assign(data, centroids.view());
    let inertia = distances.iter().sum();
    Ok(Model { centroids, inertia, starts: vec![inertia] })
}

/// linfa's k-means (k-means++ seeding, then its own iterations) with
/// `params` as they are; returns the centroids.
fn linfa_kmeans(data: ArrayView2<'_, f64>, params: &FitParams) -> Result<Array2<f64>> {
    let rng = Xoshiro256Plus::seed_from_u64(params.seed);
    let model = KMeans::params_with_rng(params.k, rng)
        .init_method(KMeansInit::KMeansPlusPlus)
        .n_runs(params.runs)
        .max_n_iterations(params.max_iterations)
        // linfa compares the unsquared shift.
        .tolerance(params.tolerance.sqrt())
        .fit(&DatasetBase::from(data))
        .map_err(|e| Error::Fit(e.into()))?;
    Ok(model.centroids().clone())
}

/// Rows per partial sum of the centroid step.
const SUM_CHUNK: usize = 16 * 1024;

/// Lloyd iterations from `centroids` until the summed squared shift is at
/// most the tolerance or the iteration cap is reached. A centroid that
/// loses every row stays where it was.
fn lloyd(data: ArrayView2<'_, f64>, mut centroids: Array2<f64>, params: &FitParams) -> Model {
    let (k, d) = centroids.dim();
    for _ in 0..params.max_iterations {
        let (labels, _) = assign(data, centroids.view());
        let partials: Vec<(Vec<f64>, Vec<u64>)> = labels
            .par_chunks(SUM_CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let mut sum = vec![0f64; k * d];
                let mut count = vec![0u64; k];
                for (i, &l) in chunk.iter().enumerate() {
                    let l = l as usize;
                    count[l] += 1;
                    let row = data.row(c * SUM_CHUNK + i);
                    for (s, v) in sum[l * d..(l + 1) * d].iter_mut().zip(row.iter()) {
                        *s += v;
                    }
                }
                (sum, count)
            })
            .collect();
        let mut sum = vec![0f64; k * d];
        let mut count = vec![0u64; k];
        for (s, c) in &partials {
            for (a, b) in sum.iter_mut().zip(s) {
                *a += b;
            }
            for (a, b) in count.iter_mut().zip(c) {
                *a += b;
            }
        }
        let mut shift = 0.0;
        for c in 0..k {
            if count[c] == 0 {
                continue;
            }
            for j in 0..d {
                let v = sum[c * d + j] / count[c] as f64;
                let delta = v - centroids[[c, j]];
                shift += delta * delta;
                centroids[[c, j]] = v;
            }
        }
        if shift <= params.tolerance {
            break;
        }
    }
    let (_, distances) = assign(data, centroids.view());
    let inertia = distances.iter().sum();
    Model { centroids, inertia, starts: vec![inertia] }
}

/// The nearest centroid of every row (ties go to the lower index) and the
/// squared distance to it, computed block by block on all cores.
///
/// Each block is transposed so that the innermost loop runs over rows:
/// every row's distance to a centroid is still the sum over features in
/// feature order (the same floating-point result as a plain loop), but
/// consecutive rows fill the lanes of the vector unit.
pub fn assign(data: ArrayView2<'_, f64>, centroids: ArrayView2<'_, f64>) -> (Vec<u32>, Vec<f64>) {
    let n = data.nrows();
    let mut labels = vec![0u32; n];
    let mut distances = vec![0f64; n];
    let k = centroids.nrows();
    let dims = centroids.ncols();
    // Centroids as one contiguous slice, row-major.
    let flat: Vec<f64> = centroids.iter().copied().collect();
    labels.par_chunks_mut(BLOCK).zip(distances.par_chunks_mut(BLOCK)).enumerate().for_each_init(
        || (vec![0f64; dims * BLOCK], vec![0f64; BLOCK]),
        |(xt, acc), (b, (lab, dist))| {
            let m = lab.len();
            transpose_block(data, b, m, xt);
            dist.fill(f64::INFINITY);
            lab.fill(0);
            for c in 0..k {
                let acc = &mut acc[..m];
                acc.fill(0.0);
                accumulate(acc, xt, &flat[c * dims..(c + 1) * dims], m);
                for i in 0..m {
                    if acc[i] < dist[i] {
                        dist[i] = acc[i];
                        lab[i] = c as u32;
                    }
                }
            }
        },
    );
    (labels, distances)
}

/// `acc[i] += Σ_j (xt[j][i] - centroid[j])²` over features in order, for
/// the `m` rows of a transposed block. Uses AVX2 where the processor has
/// it (same operations, wider lanes: results are bit-identical).
fn accumulate(acc: &mut [f64], xt: &[f64], centroid: &[f64], m: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // The one unsafe call of the crate: calling a function compiled
            // for AVX2 is only sound on a processor that has it.
            // SAFETY: checked just above.
            #[allow(unsafe_code)]
            unsafe {
                accumulate_avx2(acc, xt, centroid, m)
            };
            return;
        }
    }
    accumulate_plain(acc, xt, centroid, m);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_avx2(acc: &mut [f64], xt: &[f64], centroid: &[f64], m: usize) {
    accumulate_plain(acc, xt, centroid, m);
}

#[inline(always)]
fn accumulate_plain(acc: &mut [f64], xt: &[f64], centroid: &[f64], m: usize) {
    for (j, &cj) in centroid.iter().enumerate() {
        for (a, x) in acc[..m].iter_mut().zip(&xt[j * BLOCK..j * BLOCK + m]) {
            let t = x - cj;
            *a += t * t;
        }
    }
}

/// Mean silhouette of `data` labelled `labels` (Euclidean distances), and
/// each cluster's mean. A row alone in its cluster scores 0. Exact and
/// quadratic in the rows: callers pass a few thousand sampled rows.
pub fn silhouette(data: ArrayView2<'_, f64>, labels: &[u32], k: usize) -> f64 {
    silhouette_with_error(data, labels, k).0
}

/// The mean silhouette as [`silhouette`] computes it, and its standard
/// error (the spread of the rows' own scores over √rows): how far the mean
/// of a subsample may be from the whole data's.
pub fn silhouette_with_error(data: ArrayView2<'_, f64>, labels: &[u32], k: usize) -> (f64, f64) {
    let n = data.nrows();
    if n == 0 || k < 2 {
        return (0.0, 0.0);
    }
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l as usize] += 1;
    }
    let scores: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let own = labels[i] as usize;
            if sizes[own] <= 1 {
                return 0.0;
            }
            let mut sums = vec![0f64; k];
            let row = data.row(i);
            for (j, other) in data.outer_iter().enumerate() {
                if j != i {
                    let d: f64 = row.iter().zip(other.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
                    sums[labels[j] as usize] += d.sqrt();
                }
            }
            let a = sums[own] / (sizes[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && sizes[c] > 0)
                .map(|c| sums[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if !b.is_finite() || a.max(b) == 0.0 { 0.0 } else { (b - a) / a.max(b) }
        })
        .collect();
    let mean = scores.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    (mean, (var / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    /// The plain reference: every row against every centroid.
    fn naive(data: &Array2<f64>, centroids: &Array2<f64>) -> Vec<(u32, f64)> {
        data.outer_iter()
            .map(|r| {
                let mut best = (0u32, f64::INFINITY);
                for (c, cen) in centroids.outer_iter().enumerate() {
                    let d: f64 = r.iter().zip(cen.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
                    if d < best.1 {
                        best = (c as u32, d);
                    }
                }
                best
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn assignment_equals_the_naive_loop(
            n in 0usize..3000, dims in 1usize..6, k in 1usize..9, seed in any::<u64>()
        ) {
            let mut x = seed | 1;
            let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ((x % 2001) as f64 - 1000.0) / 100.0 };
            let data = Array2::from_shape_fn((n, dims), |_| next());
            // Some centroids repeat to exercise ties.
            let centroids = Array2::from_shape_fn((k, dims), |(c, d)| if c % 3 == 2 { data.get((0, d)).copied().unwrap_or(0.0) } else { next() });
            let (labels, distances) = assign(data.view(), centroids.view());
            let want = naive(&data, &centroids);
            for i in 0..n {
                prop_assert_eq!(labels[i], want[i].0, "row {}", i);
                prop_assert!((distances[i] - want[i].1).abs() <= 1e-9 * (1.0 + want[i].1));
            }
        }
    }

    fn blobs() -> Array2<f64> {
        let centers = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        Array2::from_shape_fn((300, 2), |(i, d)| centers[i % 3][d] + ((i * 7 + d * 13) % 11) as f64 / 10.0)
    }

    #[test]
    fn separated_blobs_are_recovered_and_fits_are_deterministic() {
        let data = blobs();
        let a = fit(data.view(), &FitParams::new(3).seed(42)).unwrap();
        let b = fit(data.view(), &FitParams::new(3).seed(42)).unwrap();
        assert_eq!(a.centroids, b.centroids);
        let (labels, _) = assign(data.view(), a.centroids.view());
        for i in 0..300 {
            assert_eq!(labels[i], labels[i % 3], "row {i} is with its blob");
        }
        assert_ne!(labels[0], labels[1]);
        assert_ne!(labels[1], labels[2]);
        assert_ne!(labels[0], labels[2]);
    }

    #[test]
    fn bad_parameters_are_named() {
        let data = blobs();
        assert_eq!(fit(data.view(), &FitParams::new(0)).unwrap_err(), Error::Params("k must be at least 1".into()));
        assert_eq!(
            fit(data.view(), &FitParams::new(301)).unwrap_err(),
            Error::Params("k = 301 is more than the 300 members to cluster".into())
        );
        assert_eq!(
            fit(data.view(), &FitParams::new(2).max_iterations(0)).unwrap_err(),
            Error::Params("max_iterations must be at least 1".into())
        );
        let empty = Array2::<f64>::zeros((0, 2));
        assert!(matches!(fit(empty.view(), &FitParams::new(1)), Err(Error::Params(_))));
    }

    #[test]
    fn a_tolerance_that_is_not_positive_is_refused() {
        let data = blobs();
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(fit(data.view(), &FitParams::new(2).tolerance(bad)), Err(Error::Params(_))), "{bad}");
        }
        assert!(fit(data.view(), &FitParams::new(2).tolerance(1e-6)).is_ok());
    }

    #[test]
    fn silhouette_matches_a_hand_computed_example() {
        // Two clusters on a line: {0, 1} and {4}. For 0: a = 1, b = 4 → 0.75;
        // for 1: a = 1, b = 3 → 2/3; the singleton scores 0.
        let data = ndarray::array![[0.0], [1.0], [4.0]];
        let s = silhouette(data.view(), &[0, 0, 1], 2);
        assert!((s - (0.75 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{s}");
        // Well separated blobs score close to 1, a random split close to 0.
        let blobs = blobs();
        let model = fit(blobs.view(), &FitParams::new(3).seed(3)).unwrap();
        let (labels, _) = assign(blobs.view(), model.centroids.view());
        assert!(silhouette(blobs.view(), &labels, 3) > 0.9);
        let split: Vec<u32> = (0..300).map(|i| (i / 3 % 2) as u32).collect();
        assert!(silhouette(blobs.view(), &split, 2).abs() < 0.2);
    }

    #[test]
    fn the_blocked_lloyd_fit_and_linfa_alone_find_the_same_blobs() {
        let data = blobs();
        let a = fit(data.view(), &FitParams::new(3).seed(5)).unwrap();
        let b = fit_linfa(data.view(), &FitParams::new(3).seed(5)).unwrap();
        // linfa's update counts the old centroid as one more row, so it stops
        // a hair away from the exact means Lloyd's step lands on.
        assert!((a.inertia - b.inertia).abs() <= 1e-6 * b.inertia, "{} vs {}", a.inertia, b.inertia);
        assert!(a.inertia <= b.inertia);
        assert_eq!(
            fit_linfa(data.view(), &FitParams::new(0)).unwrap_err(),
            Error::Params("k must be at least 1".into())
        );
    }

    #[test]
    fn one_iteration_is_the_seeding_and_one_lloyd_step() {
        let data = blobs();
        let params = FitParams::new(4).seed(11).max_iterations(1);
        let one = fit(data.view(), &params).unwrap();
        let init = greedy_kmeans_pp(data.view(), 4, 11);
        let (labels, _) = assign(data.view(), init.view());
        for c in 0..4 {
            let rows: Vec<usize> = (0..data.nrows()).filter(|&i| labels[i] == c as u32).collect();
            let want = if rows.is_empty() {
                init.row(c).to_owned()
            } else {
                data.select(Axis(0), &rows).mean_axis(Axis(0)).unwrap()
            };
            for (a, b) in one.centroids.row(c).iter().zip(want.iter()) {
                assert!((a - b).abs() < 1e-12, "centroid {c}: {a} vs {b}");
            }
        }
        let more = fit(data.view(), &params.clone().max_iterations(300)).unwrap();
        assert!(more.inertia <= one.inertia);
    }

    /// Rows from a seed, with repeated rows (ties, zero distances).
    fn rows(n: usize, dims: usize, seed: u64) -> Array2<f64> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 2001) as f64 - 1000.0) / 100.0
        };
        let mut data = Array2::from_shape_fn((n, dims), |_| next());
        for i in (0..n).step_by(7).skip(1) {
            let first = data.row(0).to_owned();
            data.row_mut(i).assign(&first);
        }
        data
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The seeding's blocked passes equal plain loops over the rows.
        #[test]
        fn seeding_passes_equal_plain_loops(n in 1usize..1500, dims in 1usize..6, t in 1usize..5, seed in any::<u64>()) {
            let data = rows(n, dims, seed);
            let centre = data.row(n / 2).to_owned();
            let mut closest: Vec<f64> = (0..n).map(|i| if i % 5 == 0 { f64::INFINITY } else { (i % 13) as f64 }).collect();
            let before = closest.clone();
            update_closest(data.view(), &mut closest, centre.as_slice().unwrap());
            let sq = |r: ndarray::ArrayView1<'_, f64>, c: ndarray::ArrayView1<'_, f64>| -> f64 {
                r.iter().zip(c.iter()).map(|(a, b)| (a - b) * (a - b)).sum()
            };
            for i in 0..n {
                let want = before[i].min(sq(data.row(i), centre.view()));
                prop_assert!((closest[i] - want).abs() <= 1e-9 * (1.0 + want), "row {}", i);
            }
            let candidates = rows(t, dims, seed ^ 0xABCD);
            let got = candidate_potentials(data.view(), &closest, candidates.view());
            for (c, got) in got.iter().enumerate() {
                let want: f64 = (0..n).map(|i| closest[i].min(sq(data.row(i), candidates.row(c)))).sum();
                prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want), "candidate {}", c);
            }
        }

        /// A draw lands on the row whose share of the running sum holds the
        /// target, as a plain scan finds it, and never on a zero weight.
        #[test]
        fn draws_equal_a_plain_scan(weights in prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..10.0], 1..2000), u in 0.0f64..1.0) {
            prop_assume!(weights.iter().any(|&w| w > 0.0));
            let sums: Vec<f64> = weights.chunks(BLOCK).map(|b| b.iter().sum()).collect();
            let total: f64 = sums.iter().sum();
            let target = u * total;
            let got = draw(&weights, &sums, target);
            prop_assert!(weights[got] > 0.0);
            let mut run = 0.0;
            let mut want = None;
            for (i, &w) in weights.iter().enumerate() {
                if w > 0.0 && target < run + w {
                    want = Some(i);
                    break;
                }
                run += w;
            }
            // Rounding may differ from the plain scan by one neighbour at a
            // boundary; the draw must be that row or a positive neighbour.
            if let Some(want) = want {
                let near = weights[got.min(want)..=got.max(want)].iter().filter(|&&w| w > 0.0).count() <= 2;
                prop_assert!(got == want || near, "drew {} where the scan finds {}", got, want);
            }
        }

        /// Seeding is deterministic, picks rows of the data and k distinct
        /// rows whenever the data has k distinct rows.
        #[test]
        fn seeding_picks_distinct_rows_of_the_data(n in 1usize..800, dims in 1usize..4, k in 1usize..12, seed in any::<u64>()) {
            let data = rows(n, dims, seed);
            let k = k.min(n);
            let a = greedy_kmeans_pp(data.view(), k, seed);
            prop_assert_eq!(&a, &greedy_kmeans_pp(data.view(), k, seed));
            let distinct: std::collections::HashSet<Vec<u64>> =
                data.outer_iter().map(|r| r.iter().map(|v| v.to_bits()).collect()).collect();
            let picked: std::collections::HashSet<Vec<u64>> =
                a.outer_iter().map(|r| r.iter().map(|v| v.to_bits()).collect()).collect();
            prop_assert!(picked.is_subset(&distinct));
            prop_assert_eq!(picked.len(), k.min(distinct.len()));
        }
    }

    #[test]
    fn large_data_starts_on_a_subsample_and_is_refined_on_every_row() {
        let centers = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let n = 2 * START_ROWS + 300;
        let data = Array2::from_shape_fn((n, 2), |(i, d)| centers[i % 3][d] + ((i * 7 + d * 13) % 11) as f64 / 10.0);
        let model = fit(data.view(), &FitParams::new(3).seed(4).runs(3)).unwrap();
        assert_eq!(model.starts.len(), 3);
        let (labels, distances) = assign(data.view(), model.centroids.view());
        assert!((0..n).all(|i| labels[i] == labels[i % 3]), "every row is with its blob");
        // The reported inertia is over every row, not the subsample.
        let total: f64 = distances.iter().sum();
        assert!((model.inertia - total).abs() <= 1e-9 * total, "{} vs {total}", model.inertia);
        assert!(model.starts.iter().all(|&s| s < total), "starts are scored on the subsample");
    }

    #[test]
    fn seeding_puts_one_centre_in_each_separated_blob() {
        let data = blobs();
        for seed in 0..50 {
            let c = greedy_kmeans_pp(data.view(), 3, seed);
            let (labels, _) = assign(data.view(), c.view());
            let blobs: std::collections::HashSet<u32> = (0..3).map(|i| labels[i]).collect();
            assert_eq!(blobs.len(), 3, "seed {seed}: {c}");
        }
    }

    #[test]
    fn more_runs_never_end_worse() {
        let data = blobs();
        let one = fit(data.view(), &FitParams::new(5).seed(9)).unwrap();
        let many = fit(data.view(), &FitParams::new(5).seed(9).runs(6)).unwrap();
        assert!(many.inertia <= one.inertia * (1.0 + 1e-12), "{} vs {}", many.inertia, one.inertia);
        assert_eq!(
            fit(data.view(), &FitParams::new(2).runs(0)).unwrap_err(),
            Error::Params("runs must be at least 1".into())
        );
    }

    #[test]
    fn standardizer_centres_and_scales() {
        let data = ndarray::array![[1.0, 5.0], [3.0, 5.0]];
        let s = Standardizer::fit(data.view()).unwrap();
        assert_eq!(s.mean, ndarray::array![2.0, 5.0]);
        assert_eq!(s.std, ndarray::array![1.0, 1.0], "a constant column is not scaled");
        assert_eq!(s.transform(data.view()), ndarray::array![[-1.0, 0.0], [1.0, 0.0]]);
        let bad = ndarray::array![[1.0, f64::NAN]];
        assert_eq!(
            Standardizer::fit(bad.view()).unwrap_err(),
            Error::Data("row 0, column 1 is not a finite number".into())
        );
    }
}
