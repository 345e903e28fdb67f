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
const BLOCK: usize = 1024;

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

/// Parameters of a fit, checked by [`fit`].
#[derive(Debug, Clone)]
pub struct FitParams {
    /// Number of clusters.
    pub k: usize,
    /// Random seed of the k-means++ initialisation.
    pub seed: u64,
    /// Iteration cap.
    pub max_iterations: u64,
    /// Stop when centroids move less than this (summed squared distance).
    pub tolerance: f64,
    /// Independent k-means++ starts; the fit with the lowest inertia wins.
    pub runs: usize,
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

    fn check(&self, rows: usize) -> Result<()> {
        if self.k == 0 {
            return Err(Error::Params("k must be at least 1".into()));
        }
        if self.k > rows {
            return Err(Error::Params(format!("k = {} is more than the {rows} members to cluster", self.k)));
        }
        if self.runs == 0 {
            return Err(Error::Params("runs must be at least 1".into()));
        }
        if self.max_iterations == 0 {
            return Err(Error::Params("max_iterations must be at least 1".into()));
        }
        if !(self.tolerance > 0.0 && self.tolerance.is_finite()) {
            return Err(Error::Params(format!("tolerance must be a positive number, not {}", self.tolerance)));
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
}

/// Fits k-means (k-means++, `runs` starts, seeded) on `data` (already
/// standardized).
pub fn fit(data: ArrayView2<'_, f64>, params: &FitParams) -> Result<Model> {
    params.check(data.nrows())?;
    if data.ncols() == 0 {
        return Err(Error::Data("no features to cluster on".into()));
    }
    let rng = Xoshiro256Plus::seed_from_u64(params.seed);
    let dataset = DatasetBase::from(data.to_owned());
    let model = KMeans::params_with_rng(params.k, rng)
        .init_method(KMeansInit::KMeansPlusPlus)
        .n_runs(params.runs)
        .max_n_iterations(params.max_iterations)
        .tolerance(params.tolerance)
        .fit(&dataset)
        .map_err(|e| Error::Fit(e.to_string()))?;
    let centroids = model.centroids().clone();
    let (_, distances) = assign(data, centroids.view());
    Ok(Model { centroids, inertia: distances.iter().sum() })
}

/// The nearest centroid of every row (ties go to the lower index) and the
/// squared distance to it, computed block by block on all cores.
pub fn assign(data: ArrayView2<'_, f64>, centroids: ArrayView2<'_, f64>) -> (Vec<u32>, Vec<f64>) {
    let n = data.nrows();
    let mut labels = vec![0u32; n];
    let mut distances = vec![0f64; n];
    let k = centroids.nrows();
    let dims = centroids.ncols();
    // Centroids as one contiguous slice, row-major.
    let flat: Vec<f64> = centroids.iter().copied().collect();
    labels.par_chunks_mut(BLOCK).zip(distances.par_chunks_mut(BLOCK)).enumerate().for_each(|(b, (lab, dist))| {
        let rows = data.slice(ndarray::s![b * BLOCK..(b * BLOCK + lab.len()), ..]);
        let mut row = vec![0f64; dims];
        for (i, r) in rows.outer_iter().enumerate() {
            for (d, v) in row.iter_mut().zip(r.iter()) {
                *d = *v;
            }
            let mut best = (f64::INFINITY, 0u32);
            for c in 0..k {
                let centroid = &flat[c * dims..(c + 1) * dims];
                let mut s = 0.0;
                for (x, y) in row.iter().zip(centroid) {
                    let d = x - y;
                    s += d * d;
                }
                if s < best.0 {
                    best = (s, c as u32);
                }
            }
            lab[i] = best.1;
            dist[i] = best.0;
        }
    });
    (labels, distances)
}

/// Mean silhouette of `data` labelled `labels` (Euclidean distances), and
/// each cluster's mean. A row alone in its cluster scores 0. Exact and
/// quadratic in the rows: callers pass a few thousand sampled rows.
pub fn silhouette(data: ArrayView2<'_, f64>, labels: &[u32], k: usize) -> f64 {
    let n = data.nrows();
    if n == 0 || k < 2 {
        return 0.0;
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
    scores.iter().sum::<f64>() / n as f64
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
