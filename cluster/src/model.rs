//! The fitted model as a file, so a nightly run can re-assign members to
//! the same communities without refitting (community numbers and names
//! stay stable from one night to the next).
//!
//! It lives at `<warehouse>/models/communities.json`: the feature list with
//! transforms, the values filled in for missing cells, the scaler, the
//! centroids (community 1 first), the fit parameters, the auto-k scores and
//! the profile of the last assignment.

use std::path::PathBuf;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use taglake_storage::Warehouse;

use crate::profile::Profile;
use crate::spec::Feature;
use crate::{Error, Result, Standardizer};

/// Format version of the model file.
pub const MODEL_FORMAT: u32 = 1;

/// Silhouette and inertia of one candidate k of `--k auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KScore {
    /// Number of clusters tried.
    pub k: usize,
    /// Mean silhouette on the scored subsample (higher is better).
    pub silhouette: f64,
    /// Its standard error on that subsample.
    #[serde(default)]
    pub silhouette_error: f64,
    /// Inertia of the fit on the sample.
    pub inertia: f64,
}

/// How far refits on resamples of the sample agree with the fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// Refits made, each on a bootstrap resample of the sample.
    pub refits: usize,
    /// Mean adjusted Rand index between the fit's and a refit's labels of
    /// the sample (1 = the same communities).
    pub mean_ari: f64,
    /// The lowest of them.
    pub min_ari: f64,
}

/// A fitted clustering, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedModel {
    /// [`MODEL_FORMAT`].
    pub format: u32,
    /// When the model was fitted.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Version of the `features` table the model was fitted on.
    pub features_version: Option<u64>,
    /// Number of communities.
    pub k: usize,
    /// Seed of the k-means++ initialisation and of the sample.
    pub seed: u64,
    /// k-means++ starts.
    pub runs: usize,
    /// Iteration cap.
    pub max_iterations: u64,
    /// Members the fit was trained on.
    pub sample_rows: usize,
    /// Inertia of the fit on the sample (standardized space).
    pub sample_inertia: f64,
    /// The features, in matrix column order.
    pub features: Vec<Feature>,
    /// Per feature, the transformed value used where a member has none.
    pub fill: Vec<f64>,
    /// Per feature, the mean of the transformed values.
    pub mean: Vec<f64>,
    /// Per feature, the standard deviation of the transformed values.
    pub std: Vec<f64>,
    /// Community `i + 1`'s centroid, in the standardized space.
    pub centroids: Vec<Vec<f64>>,
    /// The scores behind `--k auto` (empty when k was given).
    pub k_scores: Vec<KScore>,
    /// The final inertia of every start of the fit, in start order (on the
    /// rows the starts ran on; empty in models saved before it was kept).
    #[serde(default)]
    pub starts: Vec<f64>,
    /// Agreement of refits on resamples with this fit (`--stability N`).
    #[serde(default)]
    pub stability: Option<Stability>,
    /// The profile of the latest assignment.
    pub profile: Profile,
}

impl SavedModel {
    /// Where the model of a warehouse lives.
    pub fn path(wh: &Warehouse) -> PathBuf {
        wh.root().join("models").join("communities.json")
    }

    /// Where `taglake cluster profile` writes its chart by default.
    pub fn chart_path(wh: &Warehouse) -> PathBuf {
        SavedModel::path(wh).with_extension("svg")
    }

    /// The scaler as the kernel uses it.
    pub fn standardizer(&self) -> Standardizer {
        Standardizer { mean: Array1::from(self.mean.clone()), std: Array1::from(self.std.clone()) }
    }

    /// The centroids in the features' own (transformed, unstandardized)
    /// units: comparable between models fitted on different samples.
    pub fn centroids_in_feature_units(&self) -> Vec<Vec<f64>> {
        self.centroids
            .iter()
            .map(|c| c.iter().zip(&self.std).zip(&self.mean).map(|((v, s), m)| v * s + m).collect())
            .collect()
    }

    /// The centroids as a matrix (one row per community).
    pub fn centroid_matrix(&self) -> Array2<f64> {
        let d = self.features.len();
        Array2::from_shape_fn((self.centroids.len(), d), |(c, j)| self.centroids[c][j])
    }

    /// Loads the model of a warehouse.
    pub fn load(wh: &Warehouse) -> Result<SavedModel> {
        let path = SavedModel::path(wh);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "no community model at {}: run `taglake cluster` first",
                    path.display()
                )));
            }
            Err(source) => return Err(Error::Io { path, source }),
        };
        let model: SavedModel =
            serde_json::from_str(&text).map_err(|e| Error::Data(format!("community model {}: {e}", path.display())))?;
        if model.format != MODEL_FORMAT {
            return Err(Error::Data(format!(
                "community model {} has format {}, this taglake reads format {MODEL_FORMAT}",
                path.display(),
                model.format
            )));
        }
        let d = model.features.len();
        let shapes_ok = model.fill.len() == d
            && model.mean.len() == d
            && model.std.len() == d
            && model.centroids.len() == model.k
            && model.centroids.iter().all(|c| c.len() == d);
        if !shapes_ok || model.k == 0 {
            return Err(Error::Data(format!(
                "community model {}: its centroids, scaler and feature list do not have matching sizes",
                path.display()
            )));
        }
        Ok(model)
    }

    /// Writes the model (to a temporary file, then renamed over the old
    /// one, so a reader never sees half a model).
    pub fn save(&self, wh: &Warehouse) -> Result<PathBuf> {
        let path = SavedModel::path(wh);
        let dir = path.parent().expect("models folder");
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
        let tmp = dir.join(".communities.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Data(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|source| Error::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> SavedModel {
        SavedModel {
            format: MODEL_FORMAT,
            created_at: chrono::Utc::now(),
            features_version: Some(3),
            k: 2,
            seed: 1,
            runs: 1,
            max_iterations: 10,
            sample_rows: 4,
            sample_inertia: 1.0,
            features: vec![Feature { name: "spend_total".into(), transform: crate::spec::Transform::Log1p }],
            fill: vec![0.0],
            mean: vec![1.0],
            std: vec![2.0],
            centroids: vec![vec![-1.0], vec![1.0]],
            k_scores: Vec::new(),
            starts: vec![1.0],
            stability: None,
            profile: Profile::default(),
        }
    }

    #[test]
    fn a_saved_model_loads_back_and_damaged_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path()).unwrap();
        let path = model().save(&wh).unwrap();
        let back = SavedModel::load(&wh).unwrap();
        assert_eq!(back.centroid_matrix(), ndarray::array![[-1.0], [1.0]]);
        assert_eq!(back.standardizer().std, ndarray::array![2.0]);

        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            SavedModel::load(&wh).unwrap_err().to_string()
        };
        let shown = path.display().to_string();
        assert!(err("{not json").starts_with(&format!("community model {shown}: key must be a string")));
        let mut m = model();
        m.centroids.pop();
        assert_eq!(
            err(&serde_json::to_string(&m).unwrap()),
            format!("community model {shown}: its centroids, scaler and feature list do not have matching sizes")
        );
        let mut m = model();
        m.format = 99;
        assert_eq!(
            err(&serde_json::to_string(&m).unwrap()),
            format!("community model {shown} has format 99, this taglake reads format 1")
        );
    }
}
