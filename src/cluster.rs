//! `taglake cluster` and `taglake cluster profile`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use taglake_cluster::model::SavedModel;
use taglake_cluster::{ClusterOptions, ClusterSummary, KChoice};
use taglake_storage::{Warehouse, WriterLock};

use crate::args::OutputFormat;
use crate::report;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: Option<ClusterCommand>,
    #[command(flatten)]
    pub fit: FitArgs,
    #[command(flatten)]
    pub wh: crate::args::WarehouseArg,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Per community: size, share, feature means and lifts, a generated
    /// name; writes an SVG chart of sizes and lifts.
    Profile(ProfileArgs),
}

#[derive(Args, Clone)]
pub struct FitArgs {
    /// Number of communities, or `auto` to pick the best silhouette in --k-range.
    #[arg(long, default_value = "auto")]
    pub k: String,
    /// Range `--k auto` tries, as MIN..MAX.
    #[arg(long, default_value = "4..12")]
    pub k_range: String,
    /// Features to cluster on: columns of `features`, `*` patterns,
    /// `default`, each optionally with :log1p, :sqrt or :raw.
    /// Default: recency_days, orders_total, spend_total, avg_order_value,
    /// items_per_order, spend_share_*, order_share_*, weekend_share, promotion_share.
    #[arg(long)]
    pub features: Option<String>,
    /// Members the fit trains on; every member is then assigned.
    #[arg(long, default_value_t = ClusterOptions::default().sample())]
    pub sample: usize,
    /// Seed of the sample and of the k-means++ initialisation.
    #[arg(long, default_value_t = ClusterOptions::default().seed())]
    pub seed: u64,
    /// k-means++ starts per fit (the lowest inertia wins).
    #[arg(long, default_value_t = ClusterOptions::default().runs())]
    pub runs: usize,
    /// Iteration cap per fit.
    #[arg(long, default_value_t = ClusterOptions::default().max_iterations())]
    pub max_iterations: u64,
    /// Assign members with the saved model (stable community numbers)
    /// instead of fitting a new one.
    #[arg(long)]
    pub reuse_model: bool,
    /// Also refit N times on bootstrap resamples of the sample and report
    /// how far they agree with the fit (mean adjusted Rand index).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stability: usize,
    #[command(flatten)]
    pub wait: crate::args::WaitArg,
}

#[derive(Args)]
pub struct ProfileArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write the profile here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the SVG chart goes (default: next to --out, else
    /// `<warehouse>/models/communities.svg`).
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// Most communities `--k` and `--k-range` may ask for: more make no
/// audience a marketer can read, and `--k auto` fits every k of its range.
const MAX_K: usize = 1_000;
/// Most k-means++ starts per fit (`--runs`).
const MAX_RUNS: usize = 100;
/// Most refits of `--stability`.
const MAX_REFITS: usize = 100;
/// Most iterations per fit (`--max-iterations`).
const MAX_ITERATIONS: u64 = 100_000;

impl FitArgs {
    fn options(&self) -> Result<ClusterOptions> {
        if self.runs > MAX_RUNS {
            bail!("--runs {}: at most {MAX_RUNS} starts per fit", self.runs);
        }
        if self.stability > MAX_REFITS {
            bail!("--stability {}: at most {MAX_REFITS} refits", self.stability);
        }
        if self.max_iterations > MAX_ITERATIONS {
            bail!("--max-iterations {}: at most {MAX_ITERATIONS}", self.max_iterations);
        }
        let k = if self.k == "auto" {
            let (min, max) = self
                .k_range
                .split_once("..")
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                .with_context(|| format!("--k-range `{}` is not MIN..MAX, like 4..12", self.k_range))?;
            KChoice::Auto { min, max }
        } else {
            match self.k.parse() {
                Ok(k) => KChoice::Fixed(k),
                Err(_) => bail!("--k `{}` is neither a number nor `auto`", self.k),
            }
        };
        let largest = match &k {
            KChoice::Auto { max, .. } => *max,
            KChoice::Fixed(k) => *k,
        };
        if largest > MAX_K {
            bail!("--k / --k-range asks for {largest} communities; at most {MAX_K}");
        }
        Ok(ClusterOptions::builder()
            .k(k)
            .features(self.features.clone())
            .sample(self.sample)
            .seed(self.seed)
            .runs(self.runs)
            .max_iterations(self.max_iterations)
            .reuse_model(self.reuse_model)
            .stability(self.stability)
            .build()?)
    }
}

/// "best of N starts, inertia X (next best Y, +Z %); M of N within 0.1 %".
fn starts_line(starts: &[f64]) -> String {
    let mut sorted = starts.to_vec();
    sorted.sort_by(f64::total_cmp);
    let Some(&best) = sorted.first() else { return "fit: no starts recorded".into() };
    let near = sorted.iter().filter(|&&v| v <= best * 1.001).count();
    match sorted.get(1) {
        None => format!("fit: 1 start, inertia {best:.1} on the rows the starts ran on"),
        Some(&next) => format!(
            "fit: best of {} starts, inertia {best:.1} (next best {next:.1}, +{:.2} %); {near} of {} starts within 0.1 % of the best",
            sorted.len(),
            100.0 * (next - best) / best.max(f64::MIN_POSITIVE),
            sorted.len()
        ),
    }
}

/// Runs `taglake cluster …`.
pub async fn cluster(wh: &Warehouse, a: ClusterArgs) -> Result<()> {
    match a.command {
        Some(ClusterCommand::Profile(p)) => profile(wh, &p),
        None => {
            let options = a.fit.options()?;
            let lock = crate::args::lock_writer(wh, &a.fit.wait)?;
            fit(wh, &lock, &options).await.map(|_| ())
        }
    }
}

/// Fits (or reuses) the model, assigns every member and prints a summary.
pub async fn fit(wh: &Warehouse, lock: &WriterLock, options: &ClusterOptions) -> Result<ClusterSummary> {
    let start = Instant::now();
    let pb = report::spinner("cluster");
    let s = taglake_cluster::cluster(wh, lock, options).await;
    pb.finish_and_clear();
    let s = s?;
    let m = &s.model;
    if !m.k_scores.is_empty() {
        report::say!(
            "cluster: k chosen by silhouette on the sample (higher is better; the smallest k within one \
             standard error of the best):"
        );
        for sc in &m.k_scores {
            let mark = if sc.k == m.k { "  ← chosen" } else { "" };
            report::say!(
                "  k = {:>2}  silhouette {:.4} ± {:.4}  inertia {:.0}{mark}",
                sc.k,
                sc.silhouette,
                sc.silhouette_error,
                sc.inertia
            );
        }
    }
    let p = &m.profile;
    let phases: Vec<String> = s.timings.iter().map(|(n, t)| format!("{n} {t:.2} s")).collect();
    report::say!(
        "cluster: {} communities over {} members with orders ({} without orders left out) on {} features; \
         fit on {} sampled members{}; tag snapshot {} · {} · {}",
        m.k,
        report::count(p.members_clustered),
        report::count(p.members_without_orders),
        m.features.len(),
        report::count(m.sample_rows as u64),
        if options.reuse_model() { " (model reused)" } else { "" },
        s.snapshot,
        phases.join(", "),
        report::timing_of(p.members_clustered, "members", start.elapsed().as_secs_f64())
    );
    if !options.reuse_model() {
        report::say!("  {}", starts_line(&m.starts));
    }
    if let Some(st) = &m.stability {
        report::say!(
            "  stability: {} refits on resamples agree with the fit at adjusted Rand index {:.3} on average (lowest {:.3})",
            st.refits,
            st.mean_ari,
            st.min_ari
        );
    }
    for c in &p.communities {
        let i = c.community as usize - 1;
        let note = match s.continued.get(i) {
            None => String::new(),
            Some(Some(prev)) if *prev == i => String::new(),
            Some(Some(prev)) => format!("  (was community_{})", prev + 1),
            Some(None) => "  (new: no community of the previous model matches it)".to_string(),
        };
        report::say!(
            "  community_{:<3} {:>10} {:>6.1}%  {}{note}",
            c.community,
            report::count(c.members),
            100.0 * c.share,
            c.name
        );
    }
    if !s.continued.is_empty() {
        let kept = s.continued.iter().enumerate().filter(|(i, c)| **c == Some(*i)).count();
        report::say!("  numbering: {kept} of {} communities keep the previous model's numbers", m.k);
    }
    report::say!("  model: {} · `taglake cluster profile` describes each community", SavedModel::path(wh).display());
    Ok(s)
}

fn profile(wh: &Warehouse, a: &ProfileArgs) -> Result<()> {
    let model = SavedModel::load(wh)?;
    let p = &model.profile;
    let text = match a.format {
        OutputFormat::Table => p.render_table(),
        OutputFormat::Csv => p.render_csv(),
        OutputFormat::Json => serde_json::to_string_pretty(p)? + "\n",
    };
    let chart = match (&a.chart, &a.out) {
        (Some(c), _) => c.clone(),
        (None, Some(out)) => out.with_extension("svg"),
        (None, None) => SavedModel::chart_path(wh),
    };
    match &a.out {
        Some(out) => std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?,
        None => print!("{text}"),
    }
    write_chart(p, &chart)?;
    if a.format == OutputFormat::Table || a.out.is_some() {
        eprintln!("chart of sizes and lifts: {}", chart.display());
    }
    Ok(())
}

/// Writes the SVG chart of a profile.
pub fn write_chart(p: &taglake_cluster::profile::Profile, path: &std::path::Path) -> Result<()> {
    std::fs::write(path, p.render_svg()).with_context(|| format!("writing {}", path.display()))
}
