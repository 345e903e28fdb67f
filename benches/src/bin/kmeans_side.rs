//! taglake's half of `benches/cluster_vs_sklearn.py`.
//!
//! - `kmeans_side export WAREHOUSE OUT`: writes the standardized matrix of
//!   every member with orders (the default feature set, exactly what
//!   `taglake cluster` standardizes) as `OUT` (two little-endian u64, rows
//!   and columns, then the f64 cells row by row) and prints its shape and
//!   feature names as JSON. scikit-learn reads the same file.
//! - `kmeans_side fit MATRIX K SEED MAX_ITER TOL SAMPLE STARTS`: fits k-means
//!   (STARTS k-means++ starts) on every `n / SAMPLE`-th row (all rows when
//!   SAMPLE is 0) — greedy k-means++ seeding, then Lloyd iterations on the
//!   blocked kernel, as `taglake cluster` does — then assigns every row
//!   with the blocked kernel; it also fits with linfa alone on the same rows. Prints the
//!   fit and assignment times and the inertia over all rows as JSON, and
//!   the time linfa's own `predict` takes to assign every row to the same
//!   number of centroids (the scalar loop the blocked kernel replaces).

use std::io::{Read, Write};
use std::time::Instant;

use ndarray::{Array2, Axis};
use taglake_cluster::{FitParams, assign, fit, fit_linfa};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("export") if args.len() == 4 => export(&args[2], &args[3]),
        Some("fit") if args.len() == 9 => {
            let n = |i: usize| args[i].parse::<f64>().unwrap_or_else(|_| panic!("argument {i} is not a number"));
            side_fit(&args[2], n(3) as usize, n(4) as u64, n(5) as u64, n(6), n(7) as usize, n(8) as usize)
        }
        _ => {
            eprintln!("usage: kmeans_side export WAREHOUSE OUT | fit MATRIX K SEED MAX_ITER TOL SAMPLE STARTS");
            std::process::exit(2);
        }
    }
}

fn export(warehouse: &str, out: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let wh = taglake_storage::Warehouse::open(warehouse).expect("warehouse");
    let start = Instant::now();
    let (_, z, names) = rt.block_on(taglake_cluster::standardized_matrix(&wh, None)).expect("matrix");
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).expect("create"));
    f.write_all(&(z.nrows() as u64).to_le_bytes()).unwrap();
    f.write_all(&(z.ncols() as u64).to_le_bytes()).unwrap();
    for v in z.iter() {
        f.write_all(&v.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
    let json = serde_json::json!({"rows": z.nrows(), "cols": z.ncols(), "features": names,
        "seconds": start.elapsed().as_secs_f64()});
    println!("{json}");
}

fn load(path: &str) -> Array2<f64> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).expect("matrix").read_to_end(&mut bytes).unwrap();
    let u = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
    let (rows, cols) = (u(0), u(1));
    let cells: Vec<f64> = bytes[16..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(cells.len(), rows * cols, "matrix size");
    Array2::from_shape_vec((rows, cols), cells).unwrap()
}

fn side_fit(path: &str, k: usize, seed: u64, max_iter: u64, tol: f64, sample: usize, starts: usize) {
    let x = load(path);
    let n = x.nrows();
    let start = Instant::now();
    let train = if sample > 0 && sample < n {
        let step = n / sample;
        let rows: Vec<usize> = (0..n).step_by(step).take(sample).collect();
        x.select(Axis(0), &rows)
    } else {
        x.clone()
    };
    let params = FitParams::new(k).seed(seed).max_iterations(max_iter).runs(starts).tolerance(tol);
    let model = fit(train.view(), &params).expect("fit");
    let fit_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (_, distances) = assign(x.view(), model.centroids.view());
    let assign_s = start.elapsed().as_secs_f64();
    let inertia: f64 = distances.iter().sum();
    let (linfa_s, agree) = linfa_predict(&x, &train, k, seed);
    // linfa alone (its own scalar iterations), on the same rows and seed.
    let start = Instant::now();
    let linfa_model = fit_linfa(train.view(), &params).expect("fit");
    let linfa_fit_s = start.elapsed().as_secs_f64();
    let (_, linfa_d) = assign(x.view(), linfa_model.centroids.view());
    let json = serde_json::json!({"rows": n, "train_rows": train.nrows(), "fit_seconds": fit_s,
        "assign_seconds": assign_s, "inertia": inertia, "linfa_predict_seconds": linfa_s,
        "linfa_predict_agrees": agree, "linfa_fit_seconds": linfa_fit_s,
        "linfa_inertia": linfa_d.iter().sum::<f64>()});
    println!("{json}");
}

/// Times linfa's `predict` over every row. Its work does not depend on how
/// good the centroids are, so a one-iteration fit gives them; the blocked
/// kernel's labels for the same centroids are checked to agree.
fn linfa_predict(x: &Array2<f64>, train: &Array2<f64>, k: usize, seed: u64) -> (f64, bool) {
    use linfa::prelude::*;
    use rand_xoshiro::rand_core::SeedableRng;
    let rng = rand_xoshiro::Xoshiro256Plus::seed_from_u64(seed);
    let model = linfa_clustering::KMeans::params_with_rng(k, rng)
        .max_n_iterations(1)
        .fit(&linfa::DatasetBase::from(train.clone()))
        .expect("fit");
    let start = Instant::now();
    let labels = model.predict(x);
    let seconds = start.elapsed().as_secs_f64();
    let (ours, _) = assign(x.view(), model.centroids().view());
    let agree = labels.iter().zip(&ours).all(|(a, b)| *a == *b as usize);
    (seconds, agree)
}
