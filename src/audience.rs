//! `taglake audience`, `taglake export` and `taglake experiment`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use clap::{Args, Subcommand};
use taglake_base::csv;
use taglake_query::TagSet;
use taglake_query::experiment::plan::{self, Effect, PlanMetric, PlanOptions};
use taglake_query::experiment::{self, Metric, Report, ReportOptions};
use taglake_query::export::{self, ExportOptions, Split};
use taglake_query::members::family_column_names;
use taglake_query::saved;
use taglake_query::stats::{Correction, Uplift};
use taglake_query::survey;
use taglake_storage::Warehouse;

use crate::args::OutputFormat;
use crate::report;

#[derive(Args)]
pub struct AudienceArgs {
    #[command(subcommand)]
    pub command: AudienceCommand,
    #[command(flatten)]
    pub cluster: crate::args::DistributedArg,
    #[command(flatten)]
    pub wh: crate::args::WarehouseArg,
}

#[derive(Subcommand)]
pub enum AudienceCommand {
    /// Exact number of members in an audience, e.g.
    /// "tier_gold AND category_lover_beauty AND NOT dormant_60_90".
    Count {
        /// Audience expression: tag names with AND, OR, NOT and parentheses.
        expr: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Pairwise overlap of two or more audiences (members in both).
    Overlap {
        /// Audience expressions.
        #[arg(required = true, num_args = 2..)]
        exprs: Vec<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// An audience broken down by an exclusive family (tier, store, RFM
    /// segment, community, …): members per value, their share of the
    /// audience, the same among all members, and the index (share ÷ base
    /// share × 100: over 100 means over-represented).
    Breakdown {
        /// Audience expression ("everyone" for all members).
        expr: String,
        /// The family (or its `members` column), e.g. tier.
        #[arg(long)]
        by: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// A uniform random sample of an audience's members with their attributes.
    Sample {
        /// Audience expression.
        expr: String,
        /// Members to show.
        #[arg(long, default_value_t = 20)]
        n: usize,
        /// Seed: the same seed shows the same members.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Columns of `members` (attributes or tags) to show instead of the attributes.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Saves an audience expression under a name, usable as `audience:NAME`
    /// in every audience expression (the CLI, SQL `audience('…')`, the
    /// server, the studio). Saving a name again keeps the old definition in
    /// its history.
    Save {
        /// The name: lower-case letters, digits and `_` (e.g. vip_beauty).
        name: String,
        /// Audience expression (it may refer to other saved audiences).
        expr: String,
        /// What the audience is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// The saved audiences with their current counts, or one audience's
    /// history of definitions.
    Saved {
        /// Show the history of this saved audience instead.
        #[arg(long)]
        history: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Removes a saved audience (its history stays in the `audiences` table).
    Remove {
        /// The saved audience's name.
        name: String,
    },
}

#[derive(Args)]
pub struct ExportArgs {
    /// Audience expression to export.
    #[arg(long)]
    audience: String,
    /// Arms and their weights.
    #[arg(long, default_value = "treatment=90,control=10")]
    split: String,
    /// Salt of the assignment: the same salt always gives a member the same arm.
    /// Defaults to --name.
    #[arg(long)]
    salt: Option<String>,
    /// Experiment name in the registry. Defaults to the salt.
    #[arg(long)]
    name: Option<String>,
    /// Balance arms inside each tag of this family (e.g. tier).
    #[arg(long)]
    stratify_by: Option<String>,
    /// Extra columns: attributes or tags of `members`, or columns of `features`.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Output file, .csv or .parquet.
    #[arg(long)]
    out: PathBuf,
    /// Percent of all members in the global holdout.
    #[arg(long, default_value_t = export::HOLDOUT_SHARE * 100.0)]
    holdout: f64,
    /// Salt of the global holdout (change it only to start a new holdout).
    #[arg(long, default_value = export::HOLDOUT_SALT)]
    holdout_salt: String,
    /// Export holdout members too, as arm `holdout`.
    #[arg(long)]
    include_holdout: bool,
    /// When the experiment starts: orders from then on count in its report
    /// (YYYY-MM-DD or RFC 3339; default now).
    #[arg(long)]
    launch_at: Option<String>,
    /// How long members count as `in_experiment` after launch.
    #[arg(long, default_value = "28d", conflicts_with = "open_ended")]
    duration: String,
    /// The experiment keeps its members `in_experiment` until it is ended.
    #[arg(long)]
    open_ended: bool,
    #[command(flatten)]
    wait: crate::args::WaitArg,
    #[command(flatten)]
    wh: crate::args::WarehouseArg,
}

#[derive(Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    command: ExperimentCommand,
    #[command(flatten)]
    wh: crate::args::WarehouseArg,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Recorded experiments: arms, sizes, launch, whether running.
    List {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Per arm: members, buyers, conversion, orders and revenue per member;
    /// each arm vs control with 95 % confidence intervals and p-values.
    Report {
        /// Experiment id (see `taglake experiment list`).
        id: i64,
        /// Orders from launch until launch + window count.
        #[arg(long, default_value = "14d")]
        window: String,
        /// Arm the others are compared with.
        #[arg(long, default_value = "control")]
        control: String,
        /// How the p-values of several arms and metrics are adjusted: Holm
        /// (family-wise error), Benjamini-Hochberg (false discovery rate)
        /// or none.
        #[arg(long, value_enum, default_value_t = CorrectionArg::Holm)]
        correction: CorrectionArg,
        /// Metrics to compare (comma-separated; default all): conversion,
        /// revenue and orders per member, average order value.
        #[arg(long, value_enum, value_delimiter = ',')]
        metric: Vec<MetricArg>,
        /// Cap each member's window revenue at this percentile of the
        /// cohort's (zeros included) before comparing revenue per member,
        /// e.g. 99.9: retail spend is heavy-tailed.
        #[arg(long, value_name = "PERCENTILE")]
        cap: Option<f64>,
        /// CUPED: adjust each metric by the same metric over this lookback
        /// before launch (e.g. 30d, 8w), or `off`. Shown beside the plain
        /// estimate, with the variance it removed.
        #[arg(long, default_value = "30d", value_name = "LOOKBACK|off")]
        cuped: String,
        /// Also draw the report as an SVG: each metric's effect and 95 % CI
        /// per arm (CUPED and plain), and the daily cumulative conversion.
        #[arg(long, value_name = "FILE.svg")]
        chart: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Before launch: the smallest effect the audience can show, or the
    /// members an effect needs, from the audience's own history.
    Plan {
        /// Audience expression (as `taglake export --audience`).
        #[arg(long)]
        audience: String,
        /// The metric to size for.
        #[arg(long, value_enum, default_value_t = PlanMetricArg::Conversion)]
        metric: PlanMetricArg,
        /// The experiment's window.
        #[arg(long, default_value = "14d")]
        window: String,
        /// Arms and their weights (as `taglake export --split`).
        #[arg(long, default_value = "treatment=90,control=10")]
        split: String,
        /// The control arm of the split.
        #[arg(long, default_value = "control")]
        control: String,
        /// The effect to detect: relative to the baseline (2%) or absolute
        /// (0.5); without it the plan prints the minimum detectable effect.
        #[arg(long)]
        mde: Option<String>,
        /// Probability of detecting the effect.
        #[arg(long, default_value_t = 0.8)]
        power: f64,
        /// Significance level (two-sided).
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// CUPED lookback the report will use (e.g. 30d), or `off`.
        #[arg(long, default_value = "30d", value_name = "LOOKBACK|off")]
        cuped: String,
        /// Percent of all members in the global holdout (left out of exports).
        #[arg(long, default_value_t = export::HOLDOUT_SHARE * 100.0)]
        holdout: f64,
        /// Salt of the global holdout.
        #[arg(long, default_value = export::HOLDOUT_SALT)]
        holdout_salt: String,
        /// The planned launch (YYYY-MM-DD or RFC 3339): history is measured
        /// before it. Default: the newest order's day.
        #[arg(long)]
        launch_at: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// The global holdout against every other member over the last window:
    /// the lift of all marketing together, with CUPED; the holdout's size
    /// and whether any export leaked into it.
    HoldoutReport {
        /// The window, ending at the start of the newest order's day.
        #[arg(long, default_value = "28d")]
        window: String,
        /// CUPED lookback before the window (e.g. 30d), or `off`.
        #[arg(long, default_value = "30d", value_name = "LOOKBACK|off")]
        cuped: String,
        /// Metrics to compare (comma-separated; default all).
        #[arg(long, value_enum, value_delimiter = ',')]
        metric: Vec<MetricArg>,
        /// Cap each member's window revenue at this percentile (e.g. 99.9).
        #[arg(long, value_name = "PERCENTILE")]
        cap: Option<f64>,
        /// Percent of all members in the global holdout.
        #[arg(long, default_value_t = export::HOLDOUT_SHARE * 100.0)]
        holdout: f64,
        /// Salt of the global holdout.
        #[arg(long, default_value = export::HOLDOUT_SALT)]
        holdout_salt: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

/// `experiment plan --metric` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlanMetricArg {
    Conversion,
    Revenue,
}

/// `--cuped`: a lookback, or `off`.
pub(crate) fn cuped_arg(text: &str) -> Result<Option<chrono::Duration>> {
    match text.trim() {
        "off" | "none" | "no" => Ok(None),
        t => Ok(Some(experiment::parse_window(t).context("--cuped (a lookback such as 30d, or off)")?)),
    }
}

/// `--metric` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MetricArg {
    Conversion,
    Revenue,
    Orders,
    Aov,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Metric {
        match m {
            MetricArg::Conversion => Metric::Conversion,
            MetricArg::Revenue => Metric::Revenue,
            MetricArg::Orders => Metric::Orders,
            MetricArg::Aov => Metric::AverageOrderValue,
        }
    }
}

/// `--correction` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CorrectionArg {
    Holm,
    Bh,
    None,
}

impl From<CorrectionArg> for Correction {
    fn from(c: CorrectionArg) -> Correction {
        match c {
            CorrectionArg::Holm => Correction::Holm,
            CorrectionArg::Bh => Correction::BenjaminiHochberg,
            CorrectionArg::None => Correction::None,
        }
    }
}

/// The single count a `SELECT count(*) …` returns.
async fn sql_count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<u64> {
    let count = taglake_query::sql_number(ctx, sql).await?.context("a count returned no value")?;
    u64::try_from(count).context("a count is negative")
}

fn parse(text: &str, tags: &TagSet) -> Result<taglake_query::Node> {
    Ok(taglake_query::audience::parse(text, tags)?)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

/// Most members `audience sample` shows: a sample is for looking at.
const MAX_SAMPLE: usize = 100_000;

/// Most audiences `audience overlap` compares (a table of n × n counts).
const MAX_OVERLAP: usize = 100;

pub async fn audience(a: AudienceArgs) -> Result<()> {
    match &a.command {
        AudienceCommand::Sample { n, .. } if *n > MAX_SAMPLE => bail!(
            "--n {n}: a sample shows at most {MAX_SAMPLE} members; for a whole audience use `taglake export` or \
             COPY (SELECT … FROM audience('…')) TO 'file.csv' in `taglake sql`"
        ),
        AudienceCommand::Overlap { exprs, .. } if exprs.len() > MAX_OVERLAP => {
            bail!("{} audiences: overlap compares at most {MAX_OVERLAP} at once", exprs.len())
        }
        _ => {}
    }
    let wh = Warehouse::open(&a.wh.warehouse)?;
    match a.command {
        AudienceCommand::Saved { history: Some(name), format } => return saved_history(&wh, &name, format).await,
        AudienceCommand::Remove { name } => {
            saved::remove(&wh, &name, None).await?;
            println!("removed saved audience `{name}` (its history stays in the `audiences` table)");
            return Ok(());
        }
        _ => {}
    }
    let sample = matches!(a.command, AudienceCommand::Sample { .. });
    let opened = Opened::open(&wh, &a.cluster, sample).await?;
    match a.command {
        AudienceCommand::Count { expr, format } => count_audience(&opened, &expr, format).await,
        AudienceCommand::Overlap { exprs, format } => overlap(&opened, &exprs, format).await,
        AudienceCommand::Breakdown { expr, by, format } => breakdown(&opened, &expr, &by, format).await,
        AudienceCommand::Sample { expr, n, seed, columns, format } => {
            sample_audience(opened, &expr, (n, seed), columns, format).await
        }
        AudienceCommand::Save { name, expr, description } => {
            let a = saved::save(&wh, &opened.tags, &name, description.as_deref(), &expr, None).await?;
            let members = opened.count(&format!("audience:{name}")).await?;
            let revision =
                if a.revisions == 1 { "saved".to_string() } else { format!("saved revision {}", a.revisions) };
            println!(
                "{revision} of audience:{name} · {} members in snapshot {}",
                report::count(members),
                opened.snapshot
            );
            Ok(())
        }
        AudienceCommand::Saved { format, .. } => saved_list(&wh, &opened, format).await,
        AudienceCommand::Remove { .. } => unreachable!("handled before the snapshot is opened"),
    }
}

/// `audience saved`: every saved audience with its count in the newest
/// snapshot (or the error its expression now gives).
async fn saved_list(wh: &Warehouse, o: &Opened, format: OutputFormat) -> Result<()> {
    let all = saved::list(wh).await?;
    let mut rows = Vec::with_capacity(all.len());
    for a in &all {
        let count = o.count(&format!("audience:{}", a.name)).await.map_err(|e| report::error_text(&e));
        rows.push((a, count));
    }
    match format {
        OutputFormat::Table => {
            if rows.is_empty() {
                println!("no saved audiences yet: `taglake audience save NAME EXPR` saves one");
            }
            for (a, count) in &rows {
                let count = match count {
                    Ok(n) => format!("{} members", report::count(*n)),
                    Err(e) => format!("cannot be counted: {}", e.lines().next().unwrap_or_default()),
                };
                println!(
                    "audience:{}  {count}  (saved {}, revision {})",
                    a.name,
                    a.saved_at.format("%Y-%m-%d %H:%M UTC"),
                    a.revisions
                );
                println!("  {}", a.expression);
                if let Some(d) = &a.description {
                    println!("  {d}");
                }
            }
            println!("snapshot {}", o.snapshot);
        }
        OutputFormat::Csv => {
            println!("name,members,expression,description,saved_at,revisions,snapshot");
            for (a, count) in &rows {
                let members = count.as_ref().map(u64::to_string).unwrap_or_default();
                println!(
                    "{},{members},{},{},{},{},{}",
                    csv::field(&a.name),
                    csv::field(&a.expression),
                    csv::field(a.description.as_deref().unwrap_or_default()),
                    a.saved_at.to_rfc3339(),
                    a.revisions,
                    o.snapshot
                );
            }
        }
        OutputFormat::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|(a, count)| {
                    serde_json::json!({
                        "name": a.name, "expression": a.expression, "description": a.description,
                        "saved_at": a.saved_at.to_rfc3339(), "saved_by": a.saved_by, "revisions": a.revisions,
                        "members": count.as_ref().ok(), "error": count.as_ref().err(),
                    })
                })
                .collect();
            println!("{}", serde_json::json!({"snapshot": o.snapshot, "audiences": items}));
        }
    }
    Ok(())
}

/// `audience saved --history NAME`: every definition the name had, oldest first.
async fn saved_history(wh: &Warehouse, name: &str, format: OutputFormat) -> Result<()> {
    let all = saved::history(wh).await?;
    let revisions: Vec<_> = all.iter().filter(|r| r.name == name).collect();
    if revisions.is_empty() {
        let hint = taglake_base::suggest(name, all.iter().map(|r| r.name.as_str()))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        bail!("no saved audience `{name}` was ever saved{hint}");
    }
    match format {
        OutputFormat::Table => {
            for r in &revisions {
                let by = r.saved_by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
                let what = r.expression.as_deref().unwrap_or("(removed)");
                println!("{}{by}  {what}", r.saved_at.format("%Y-%m-%d %H:%M:%S UTC"));
            }
        }
        OutputFormat::Csv => {
            println!("name,saved_at,saved_by,expression,description");
            for r in &revisions {
                println!(
                    "{},{},{},{},{}",
                    csv::field(&r.name),
                    r.saved_at.to_rfc3339(),
                    csv::field(r.saved_by.as_deref().unwrap_or_default()),
                    csv::field(r.expression.as_deref().unwrap_or_default()),
                    csv::field(r.description.as_deref().unwrap_or_default())
                );
            }
        }
        OutputFormat::Json => {
            let items: Vec<_> = revisions
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "name": r.name, "saved_at": r.saved_at.to_rfc3339(), "saved_by": r.saved_by,
                        "expression": r.expression, "description": r.description,
                    })
                })
                .collect();
            println!("{}", serde_json::json!(items));
        }
    }
    Ok(())
}

/// What every `audience` command starts from: the tags of the newest
/// snapshot, how many members the base has, and a SQL session when the
/// command needs one.
struct Opened {
    /// Only a sample reads member attributes, so only it opens a SQL session
    /// (which loads the tag set itself); on a cluster every count is a query
    /// the cluster answers, so every command opens one.
    ctx: Option<datafusion::prelude::SessionContext>,
    on_cluster: bool,
    tags: Arc<TagSet>,
    snapshot: i64,
    /// Seconds it took to load the snapshot.
    loaded: f64,
    /// Members in the base.
    base: u64,
}

impl Opened {
    async fn open(wh: &Warehouse, cluster: &crate::args::DistributedArg, sample: bool) -> Result<Opened> {
        let started = Instant::now();
        let on_cluster = cluster.cluster.is_some();
        let (ctx, tags) = if sample || on_cluster {
            let (ctx, tags) = crate::distributed::session(wh, cluster).await?;
            (Some(ctx), tags)
        } else {
            (None, TagSet::load(wh, None).await?.map(Arc::new))
        };
        let (tags, snapshot) = taglake_query::tagset::tagged(tags)?;
        let loaded = started.elapsed().as_secs_f64();
        let mut opened = Opened { ctx, on_cluster, tags, snapshot, loaded, base: 0 };
        opened.base = match opened.cluster_ctx() {
            Some(ctx) => sql_count(ctx, "SELECT count(*) FROM members").await?,
            None => opened.tags.universe()?.len(),
        };
        Ok(opened)
    }

    /// The session to count on when the cluster counts.
    fn cluster_ctx(&self) -> Option<&datafusion::prelude::SessionContext> {
        self.ctx.as_ref().filter(|_| self.on_cluster)
    }

    /// The members of an audience, on the cluster or from the bitmaps.
    async fn count(&self, text: &str) -> Result<u64> {
        let node = parse(text, &self.tags)?;
        match self.cluster_ctx() {
            Some(ctx) => {
                sql_count(ctx, &format!("SELECT count(*) FROM audience('{}')", text.replace('\'', "''"))).await
            }
            None => Ok(taglake_query::audience::count(&node, &self.tags)?),
        }
    }
}

/// `audience count`.
async fn count_audience(o: &Opened, expr: &str, format: OutputFormat) -> Result<()> {
    let t = Instant::now();
    let members = o.count(expr).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let place = if o.on_cluster { " on the cluster" } else { "" };
    let (base, snapshot) = (o.base, o.snapshot);
    match format {
        OutputFormat::Table => println!(
            "{} members ({:.2}% of {}) · snapshot {snapshot} · counted{place} in {ms:.2} ms (snapshot loaded in {:.2} s)",
            report::count(members),
            percent(members, base),
            report::count(base),
            o.loaded
        ),
        OutputFormat::Csv => {
            println!("audience,members,base,snapshot\n{},{members},{base},{snapshot}", csv::field(expr))
        }
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"audience": expr, "members": members, "base": base, "snapshot": snapshot})
        ),
    }
    Ok(())
}

/// `audience overlap`.
async fn overlap(o: &Opened, exprs: &[String], format: OutputFormat) -> Result<()> {
    let matrix = if o.cluster_ctx().is_some() {
        survey::overlap_counted(exprs, async |text: &str| o.count(text).await).await?
    } else {
        let sets = exprs
            .iter()
            .map(|e| Ok(taglake_query::audience::evaluate(&parse(e, &o.tags)?, &o.tags)?))
            .collect::<Result<Vec<_>>>()?;
        survey::overlap(&sets)
    };
    print_overlap(exprs, &matrix, o, format);
    Ok(())
}

fn print_overlap(exprs: &[String], matrix: &[Vec<u64>], o: &Opened, format: OutputFormat) {
    let n = exprs.len();
    let snapshot = o.snapshot;
    match format {
        OutputFormat::Table => {
            for (i, e) in exprs.iter().enumerate() {
                println!("A{}  {:>12}  {e}", i + 1, report::count(matrix[i][i]));
            }
            println!("\nmembers in both (row ∩ column), and as % of the row's audience:");
            let mut header = format!("{:<4}", "");
            for j in 0..n {
                header.push_str(&format!(" {:>22}", format!("A{}", j + 1)));
            }
            println!("{header}");
            for (i, row) in matrix.iter().enumerate() {
                let mut line = format!("{:<4}", format!("A{}", i + 1));
                for &v in row {
                    line.push_str(&format!(" {:>13} {:>7.2}%", report::count(v), percent(v, row[i])));
                }
                println!("{line}");
            }
            println!("\nsnapshot {snapshot} · {} members in the base", report::count(o.base));
        }
        OutputFormat::Csv => {
            println!("a,b,members_a,members_b,both");
            for i in 0..n {
                for j in 0..n {
                    println!(
                        "{},{},{},{},{}",
                        csv::field(&exprs[i]),
                        csv::field(&exprs[j]),
                        matrix[i][i],
                        matrix[j][j],
                        matrix[i][j]
                    );
                }
            }
        }
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"audiences": exprs, "members": (0..n).map(|i| matrix[i][i]).collect::<Vec<_>>(), "overlap": matrix, "snapshot": snapshot})
        ),
    }
}

/// `audience breakdown`.
async fn breakdown(o: &Opened, expr: &str, by: &str, format: OutputFormat) -> Result<()> {
    let tags = &o.tags;
    let f = exclusive_family(tags, by)?;
    let node = if expr.trim().eq_ignore_ascii_case("everyone") { None } else { Some(parse(expr, tags)?) };
    let t = Instant::now();
    let rows = match o.cluster_ctx() {
        Some(ctx) => cluster_breakdown(ctx, tags, f, expr, node.is_none()).await?,
        None => taglake_query::breakdown::breakdown(node.as_ref(), tags, f)?,
    };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let family = &tags.families()[f].name;
    print_breakdown(&rows, family, expr, o.snapshot, format, ms);
    Ok(())
}

/// `audience sample`: `draw` is (members, seed).
async fn sample_audience(
    o: Opened,
    expr: &str,
    (n, seed): (usize, u64),
    columns: Vec<String>,
    format: OutputFormat,
) -> Result<()> {
    let node = parse(expr, &o.tags)?;
    let sample = survey::Sample::draw(&node, &o.tags, n, seed)?;
    let ctx = o.ctx.context("a sample opens a SQL session")?;
    let columns = if columns.is_empty() {
        survey::attribute_columns(&ctx.table_provider("members").await?.schema())
    } else {
        columns
    };
    let batches = taglake_query::sql(&ctx, &sample.sql(&columns)).await?;
    std::io::stdout().write_all(&crate::sql::render(&batches, format.into(), None)?)?;
    if format == OutputFormat::Table {
        println!(
            "{} of {} members of the audience (seed {seed}) · snapshot {}",
            sample.keys.len(),
            report::count(sample.audience),
            o.snapshot
        );
    }
    Ok(())
}

/// The exclusive family `by` names (its name or its `members` column).
fn exclusive_family(tags: &TagSet, by: &str) -> Result<usize> {
    let families = tags.families();
    if let Some(f) = tags.exclusive(by) {
        return Ok(f);
    }
    if let Some(f) = families.iter().position(|f| family_column_names(&f.name).iter().any(|c| c == by)) {
        return Ok(f);
    }
    let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
    let listed = if names.is_empty() {
        "this snapshot has none (tag again with this version of taglake)".to_string()
    } else {
        names.join(", ")
    };
    if tags.tags.iter().any(|t| t.family == by) {
        bail!(
            "--by {by}: the tags of family `{by}` can share members, so it has no single value per member;              exclusive families: {listed}"
        );
    }
    let hint =
        taglake_base::suggest(by, names.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
    bail!("--by {by}: no such exclusive family{hint}; exclusive families: {listed}")
}

/// [`taglake_query::breakdown::breakdown`] answered by the cluster: two
/// grouped counts, one over the audience and one over all members.
async fn cluster_breakdown(
    ctx: &datafusion::prelude::SessionContext,
    tags: &TagSet,
    f: usize,
    expr: &str,
    everyone: bool,
) -> Result<Vec<taglake_query::breakdown::Share>> {
    let family = &tags.families()[f];
    let schema = ctx.table_provider("members").await?.schema();
    let column = family_column_names(&family.name)
        .into_iter()
        .find(|c| schema.field_with_name(c).is_ok_and(|f| f.data_type() == &arrow::datatypes::DataType::Utf8))
        .with_context(|| format!("family `{}` has no column in members", family.name))?;
    let quoted = format!("\"{}\"", column.replace('"', "\"\""));
    let grouped = async |from: String| -> Result<std::collections::HashMap<Option<String>, u64>> {
        let batches = taglake_query::sql(ctx, &format!("SELECT {quoted}, count(*) FROM {from} GROUP BY 1")).await?;
        let mut out = std::collections::HashMap::new();
        for b in batches {
            let (values, counts) =
                (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<arrow::datatypes::Int64Type>());
            for r in 0..b.num_rows() {
                out.insert(values.is_valid(r).then(|| values.value(r).to_string()), counts.value(r) as u64);
            }
        }
        Ok(out)
    };
    let base = grouped("members".into()).await?;
    let audience =
        if everyone { base.clone() } else { grouped(format!("audience('{}')", expr.replace('\'', "''"))).await? };
    let (total, base_total) = (audience.values().sum::<u64>(), base.values().sum::<u64>());
    let values = family.tags.iter().map(|&t| (tags.tag(t).value.clone(), Some(tags.tag(t).name.clone())));
    Ok(values
        .chain([(None, None)])
        .map(|(value, tag)| {
            let members = audience.get(&value).copied().unwrap_or(0);
            let base_members = base.get(&value).copied().unwrap_or(0);
            taglake_query::breakdown::Share::new(value, tag, (members, total), (base_members, base_total))
        })
        .collect())
}

fn print_breakdown(
    rows: &[taglake_query::breakdown::Share],
    family: &str,
    expr: &str,
    snapshot: i64,
    format: OutputFormat,
    ms: f64,
) {
    // A value no member holds, in the audience or outside it, is left out.
    let rows: Vec<_> = rows.iter().filter(|r| r.members > 0 || r.base_members > 0).collect();
    let value = |r: &taglake_query::breakdown::Share| r.value.clone().unwrap_or_else(|| "(none)".into());
    match format {
        OutputFormat::Table => {
            let width = rows.iter().map(|r| value(r).chars().count()).max().unwrap_or(0).max(family.len());
            println!(
                "{family:<width$}  {:>13} {:>8}  {:>13} {:>8}  {:>6}",
                "members", "share", "all members", "share", "index"
            );
            for r in &rows {
                let index = r.index.map_or("-".to_string(), |i| format!("{i:.0}"));
                println!(
                    "{:<width$}  {:>13} {:>7.2}%  {:>13} {:>7.2}%  {:>6}",
                    value(r),
                    report::count(r.members),
                    r.share * 100.0,
                    report::count(r.base_members),
                    r.base_share * 100.0,
                    index
                );
            }
            let total: u64 = rows.iter().map(|r| r.members).sum();
            println!(
                "\n{} members in `{expr}` by {family} · snapshot {snapshot} · counted in {ms:.2} ms \
                 · index = share ÷ share among all members × 100",
                report::count(total)
            );
        }
        OutputFormat::Csv => {
            println!("{family},tag,members,share,base_members,base_share,index");
            for r in &rows {
                println!(
                    "{},{},{},{},{},{},{}",
                    r.value.as_deref().map(csv::field).unwrap_or_default(),
                    r.tag.as_deref().unwrap_or_default(),
                    r.members,
                    r.share,
                    r.base_members,
                    r.base_share,
                    r.index.map(|i| i.to_string()).unwrap_or_default()
                );
            }
        }
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"audience": expr, "family": family, "snapshot": snapshot, "values": rows})
        ),
    }
}

/// Parses `2026-03-01` (midnight UTC) or an RFC 3339 instant.
fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    experiment::parse_instant(text).map_err(|_| {
        anyhow::anyhow!("--launch-at `{text}`: write a date (2026-03-01) or an RFC 3339 time (2026-03-01T09:00:00Z)")
    })
}

pub async fn export_cmd(a: ExportArgs) -> Result<()> {
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let started = Instant::now();
    let salt = match (&a.salt, &a.name) {
        (Some(s), _) => s.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => bail!("give --salt (or --name, which then doubles as the salt): the split depends on it"),
    };
    let launched_at = match &a.launch_at {
        Some(t) => parse_instant(t)?,
        None => chrono::Utc::now(),
    };
    let ends_at = match a.open_ended {
        true => None,
        false => {
            let duration = experiment::parse_window(&a.duration).context("--duration")?;
            Some(experiment::window_end(launched_at, duration).context("--launch-at and --duration")?)
        }
    };
    let options = ExportOptions::builder(a.audience, Split::parse(&a.split)?, salt, a.out)
        .name(a.name)
        .stratify_by(a.stratify_by)
        .columns(a.columns)
        .holdout_share(a.holdout / 100.0)
        .holdout_salt(a.holdout_salt)
        .include_holdout(a.include_holdout)
        .launched_at(launched_at)
        .ends_at(ends_at)
        .build()?;
    let lock = crate::args::lock_writer(&wh, &a.wait)?;
    let s = export::export(&wh, &lock, &options).await?;
    let e = &s.experiment;
    let arms =
        e.arms.iter().map(|a| format!("{} {}", a.name, report::count(a.members))).collect::<Vec<_>>().join(" · ");
    if s.reused {
        println!(
            "export: experiment {} \"{}\" was already recorded by this export (snapshot {}, launched {}): \
             nothing new recorded; {arms} → {} ({} rows) written again from its members · {:.2} s",
            e.id,
            e.name,
            e.snapshot,
            e.launched_at.format("%Y-%m-%d %H:%M:%S UTC"),
            options.out().display(),
            report::count(s.rows),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    println!(
        "export: experiment {} \"{}\": {} members in the audience, {} in the global holdout ({}), {arms} → {} ({} rows) · snapshot {} · {:.2} s",
        e.id,
        e.name,
        report::count(s.audience_members),
        report::count(s.held_out),
        if options.include_holdout() { "exported as arm holdout" } else { "left out" },
        options.out().display(),
        report::count(s.rows),
        e.snapshot,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// Long on purpose: one arm per `experiment` subcommand (list, plan, holdout-report, report), each only
// parsing flags and choosing the output format.
pub async fn experiment_cmd(a: ExperimentArgs) -> Result<()> {
    let wh = Warehouse::open(&a.wh.warehouse)?;
    match a.command {
        ExperimentCommand::List { format } => {
            let all = experiment::list(&wh).await?;
            let now = chrono::Utc::now();
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                OutputFormat::Csv => {
                    println!("id,name,arm,members,launched_at,ends_at,running");
                    for e in &all {
                        for arm in &e.arms {
                            println!(
                                "{},{},{},{},{},{},{}",
                                e.id,
                                csv::field(&e.name),
                                arm.name,
                                arm.members,
                                e.launched_at.to_rfc3339(),
                                e.ends_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                                e.running(now)
                            );
                        }
                    }
                }
                OutputFormat::Table => {
                    if all.is_empty() {
                        println!("no experiment recorded yet (`taglake export` records one)");
                    }
                    for e in &all {
                        let arms = e
                            .arms
                            .iter()
                            .map(|a| format!("{} {}", a.name, report::count(a.members)))
                            .collect::<Vec<_>>()
                            .join(" · ");
                        println!(
                            "{:>3}  {:<24} {:<8} launched {}  {}  [{}]  {arms}",
                            e.id,
                            e.name,
                            if e.running(now) { "running" } else { "ended" },
                            e.launched_at.format("%Y-%m-%d %H:%M"),
                            e.ends_at
                                .map(|t| format!("ends {}", t.format("%Y-%m-%d")))
                                .unwrap_or_else(|| "open-ended".into()),
                            e.audience
                        );
                    }
                }
            }
        }
        ExperimentCommand::Plan {
            audience,
            metric,
            window,
            split,
            control,
            mde,
            power,
            alpha,
            cuped,
            holdout,
            holdout_salt,
            launch_at,
            format,
        } => {
            let until = launch_at.as_deref().map(parse_instant).transpose()?;
            let options = PlanOptions::new(&audience)
                .until(until)
                .metric(match metric {
                    PlanMetricArg::Conversion => PlanMetric::Conversion,
                    PlanMetricArg::Revenue => PlanMetric::Revenue,
                })
                .window(experiment::parse_window(&window).context("--window")?)
                .context("--window")?
                .split(export::Split::parse(&split)?, &control)
                .context("--split and --control")?
                .effect(mde.as_deref().map(Effect::parse).transpose().context("--mde")?)
                .levels(power, alpha)
                .context("--power and --alpha")?
                .cuped(cuped_arg(&cuped)?)?
                .holdout(&holdout_salt, holdout / 100.0)?;
            let p = plan::plan(&wh, &options).await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&p)?),
                OutputFormat::Csv => {
                    println!(
                        "arm,members,control_members,mde,mde_relative,mde_without_cuped,needed,needed_without_cuped"
                    );
                    let opt = |v: Option<String>| v.unwrap_or_default();
                    for a in &p.arms {
                        println!(
                            "{},{},{},{},{},{},{},{}",
                            a.arm,
                            a.members,
                            a.control_members,
                            a.mde,
                            opt(a.mde_relative.map(|v| v.to_string())),
                            a.mde_without_cuped,
                            opt(a.needed.map(|v| v.to_string())),
                            opt(a.needed_without_cuped.map(|v| v.to_string()))
                        );
                    }
                }
                OutputFormat::Table => print!("{}", render_plan(&p)),
            }
        }
        ExperimentCommand::HoldoutReport { window, cuped, metric, cap, holdout, holdout_salt, format } => {
            let window_len = experiment::parse_window(&window).context("--window")?;
            let mut options =
                ReportOptions::new(window_len, export::HOLDOUT_ARM).cap(cap)?.cuped(cuped_arg(&cuped)?)?;
            if !metric.is_empty() {
                options = options.metrics(&metric.into_iter().map(Metric::from).collect::<Vec<_>>())?;
            }
            let r = experiment::holdout::holdout_report(&wh, &holdout_salt, holdout / 100.0, &options).await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                OutputFormat::Csv => {
                    println!("{ARM_CSV_HEADER}");
                    for a in &r.analysis.arms {
                        println!("{}", arm_csv(a));
                    }
                }
                OutputFormat::Table => print!("{}", render_holdout(&r, &window, &options)),
            }
        }
        ExperimentCommand::Report { id, window, control, correction, metric, cap, cuped, chart, format } => {
            let window_len = experiment::parse_window(&window).context("--window")?;
            let mut options = ReportOptions::new(window_len, &control)
                .correction(correction.into())
                .cap(cap)?
                .cuped(cuped_arg(&cuped)?)?;
            if !metric.is_empty() {
                options = options.metrics(&metric.into_iter().map(Metric::from).collect::<Vec<_>>())?;
            }
            let r = experiment::report(&wh, id, &options).await?;
            if let Some(path) = &chart {
                std::fs::write(path, experiment::chart::render_svg(&r))
                    .with_context(|| format!("--chart: writing {}", path.display()))?;
            }
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                OutputFormat::Csv => {
                    println!("{ARM_CSV_HEADER},present,srm_p_value,srm_mismatch");
                    let (srm_p, mismatch) = r
                        .srm
                        .as_ref()
                        .map_or((String::new(), String::new()), |s| (s.p_value.to_string(), s.mismatch.to_string()));
                    for a in &r.arms {
                        println!("{},{},{srm_p},{mismatch}", arm_csv(a), a.present);
                    }
                }
                OutputFormat::Table => print!("{}", render_report(&r, &window)),
            }
        }
    }
    Ok(())
}

fn signed(v: f64, digits: usize) -> String {
    format!("{}{:.*}", if v >= 0.0 { "+" } else { "" }, digits, v)
}

// Long on purpose: the report's text in the order it is printed (arms, SRM, each metric with its CUPED line).
/// The report as text.
fn render_report(r: &Report, window: &str) -> String {
    let e = &r.experiment;
    let mut out = format!(
        "experiment {} \"{}\" · audience: {}\nlaunched {} · window {window}: orders from {} to {} (exclusive)\n",
        e.id,
        e.name,
        e.audience,
        e.launched_at.format("%Y-%m-%d %H:%M UTC"),
        r.window_start.format("%Y-%m-%d %H:%M"),
        r.window_end.format("%Y-%m-%d %H:%M")
    );
    match r.newest_order {
        Some(n) if n < r.window_end => out.push_str(&format!(
            "note: the newest order in the warehouse is from {}; the window is not complete yet\n",
            n.format("%Y-%m-%d %H:%M")
        )),
        None => out.push_str("note: the warehouse has no orders\n"),
        _ => {}
    }
    if let Some(srm) = &r.srm {
        let sizes = |v: Vec<String>| v.join(" · ");
        let observed = sizes(srm.observed.iter().map(|&o| report::count(o)).collect());
        let expected = sizes(srm.expected.iter().map(|&x| report::count(x.round() as u64)).collect());
        if srm.mismatch {
            out.push_str(&format!(
                "\nWARNING: SAMPLE RATIO MISMATCH (p = {}): the arms' sizes do not fit the configured split, so the\n\
                 assignment or the data went wrong and the comparisons below cannot be trusted.\n",
                experiment::p_text(srm.p_value)
            ));
        }
        out.push_str(&format!(
            "sample ratio ({}): {observed} members present, {expected} expected; chi-square = {:.3}, df = {}, p = {}{}\n",
            r.srm_arms.join(" · "),
            srm.chi2,
            srm.df,
            experiment::p_text(srm.p_value),
            if srm.mismatch { " — MISMATCH" } else { " (no mismatch)" }
        ));
    }
    if let Some(family) = &e.stratify_by {
        let bad: Vec<String> = r
            .srm_strata
            .iter()
            .filter_map(|s| s.srm.as_ref().filter(|x| x.mismatch).map(|x| (s, x)))
            .map(|(s, x)| {
                format!("{} (p = {})", s.stratum.as_deref().unwrap_or("(none)"), experiment::p_text(x.p_value))
            })
            .collect();
        match &r.srm_strata_note {
            Some(note) => out.push_str(&format!("sample ratio per stratum: {note}\n")),
            None if bad.is_empty() => out.push_str(&format!(
                "sample ratio per stratum of `{family}`: {} strata checked, no mismatch\n",
                r.srm_strata.len()
            )),
            None => out.push_str(&format!(
                "WARNING: SAMPLE RATIO MISMATCH inside {} of {} strata of `{family}`: {}\n",
                bad.len(),
                r.srm_strata.len(),
                bad.join(", ")
            )),
        }
    }
    out.push_str(&arm_table(&r.arms));
    if r.tests > 1 {
        out.push_str(&format!(
            "\np-values adjusted for {} tests (every arm and metric) by {}: \"adjusted\" below\n",
            r.tests,
            match r.correction {
                Correction::Holm => "Holm's method (family-wise error)",
                Correction::BenjaminiHochberg => "Benjamini-Hochberg (false discovery rate)",
                Correction::None => "nothing (--correction none)",
            }
        ));
    }
    if let Some(cap) = &r.revenue_cap {
        out.push_str(&format!(
            "revenue/member is winsorised: each member's window revenue capped at {:.2} (the {}th percentile of the cohort's, zeros included; {} members capped)\n",
            cap.value,
            cap.percentile,
            report::count(cap.capped_members)
        ));
    }
    if let Some(p) = &r.cuped {
        out.push_str(&format!(
            "CUPED: each metric adjusted by the same metric over the {} days before launch ({} to {}); members with no orders then count as 0\n",
            p.days,
            p.from.format("%Y-%m-%d %H:%M"),
            p.to.format("%Y-%m-%d %H:%M")
        ));
    }
    for c in &r.comparisons {
        out.push_str(&format!("\n{} vs {}\n", c.arm, c.control));
        for m in Metric::ALL.into_iter().filter(|m| r.metrics.contains(m)) {
            out.push_str(&comparison_lines(r.tests, r.correction, c, m));
        }
        if let Some(note) =
            c.average_order_value_cuped_note.as_ref().filter(|_| r.metrics.contains(&Metric::AverageOrderValue))
        {
            out.push_str(&format!("  order value     no CUPED estimate: {note}\n"));
        }
    }
    out
}

/// The columns of [`arm_csv`].
const ARM_CSV_HEADER: &str = "arm,members,buyers,conversion,orders,orders_per_member,revenue,revenue_per_member";

/// An arm's figures as a CSV row (without a line end).
fn arm_csv(a: &experiment::ArmResult) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        a.arm, a.members, a.buyers, a.conversion, a.orders, a.orders_per_member, a.revenue, a.revenue_per_member
    )
}

/// The per-arm figures as a text table.
fn arm_table(arms: &[experiment::ArmResult]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n{:<12} {:>10} {:>9} {:>11} {:>10} {:>14} {:>14} {:>15}\n",
        "arm", "members", "buyers", "conversion", "orders", "orders/member", "revenue", "revenue/member"
    ));
    for a in arms {
        out.push_str(&format!(
            "{:<12} {:>10} {:>9} {:>10.2}% {:>10} {:>14.4} {:>14.2} {:>15.4}\n",
            a.arm,
            report::count(a.members),
            report::count(a.buyers),
            100.0 * a.conversion,
            report::count(a.orders),
            a.orders_per_member,
            a.revenue,
            a.revenue_per_member
        ));
    }
    out
}

/// A metric's lines of a comparison: the CUPED estimate (when there is
/// one) with the plain estimate below it, or the plain estimate alone.
fn comparison_lines(tests: usize, correction: Correction, c: &experiment::Comparison, m: Metric) -> String {
    let adjusted = |u: &Uplift| match u.p_adjusted {
        Some(a) if tests > 1 && correction != Correction::None => format!(", adjusted {}", experiment::p_text(a)),
        _ => String::new(),
    };
    let df = |u: &Uplift| u.df.map(|d| format!(", df = {d:.1}")).unwrap_or_default();
    let welch = |u: &Uplift| format!("Welch's t-test, t = {:.3}{}", u.statistic, df(u));
    let (label, unit, plain, cuped) = match m {
        Metric::Conversion => ("conversion", (100.0, 2, " pp"), Some(&c.conversion), &c.conversion_cuped),
        Metric::Revenue => ("revenue/member", (1.0, 4, ""), Some(&c.revenue_per_member), &c.revenue_per_member_cuped),
        Metric::Orders => ("orders/member", (1.0, 4, ""), Some(&c.orders_per_member), &c.orders_per_member_cuped),
        Metric::AverageOrderValue => {
            ("order value", (1.0, 4, ""), c.average_order_value.as_ref(), &c.average_order_value_cuped)
        }
    };
    let test = |u: &Uplift| match m {
        Metric::Conversion => format!("two-proportion z-test, z = {:.3}", u.statistic),
        Metric::AverageOrderValue => format!("ratio of means, delta method, z = {:.3}", u.statistic),
        _ => welch(u),
    };
    let Some(plain) = plain else {
        return format!(
            "  {label:<15} not compared: {}\n",
            c.average_order_value_note.as_deref().unwrap_or("undefined")
        );
    };
    match cuped {
        None => metric_line(label, plain, unit, &adjusted(plain), &test(plain)),
        Some(x) => {
            let u = &x.uplift;
            let how = match m {
                Metric::AverageOrderValue => format!("z = {:.3}", u.statistic),
                _ => welch(u),
            };
            let with =
                format!("CUPED, θ = {:.4}, variance {}%; {how}", x.theta, signed(-100.0 * x.variance_reduction, 1));
            metric_line(label, u, unit, &adjusted(u), &with)
                + &metric_line("  without CUPED", plain, unit, &adjusted(plain), &test(plain))
        }
    }
}

/// A plan as text.
fn render_plan(p: &plan::Plan) -> String {
    let pct = |v: f64| format!("{:.1} %", 100.0 * v);
    let unit = |v: f64| match p.metric {
        PlanMetric::Conversion => format!("{:.2} pp", 100.0 * v),
        PlanMetric::Revenue => format!("{v:.4}"),
    };
    let mut out = format!(
        "plan for `{}` (snapshot {}): {} members, {} outside the global holdout\n",
        p.audience,
        p.snapshot,
        report::count(p.audience_members),
        report::count(p.eligible)
    );
    out.push_str(&format!(
        "{} over {} days · two-sided α = {} · power {}\n",
        match p.metric {
            PlanMetric::Conversion => "conversion",
            PlanMetric::Revenue => "revenue per member",
        },
        p.window_days,
        p.alpha,
        pct(p.power)
    ));
    let look = p.cuped_days.map(|d| format!(" · ρ with the {d} days before")).unwrap_or_default();
    out.push_str("\nthe audience's last whole windows, and the same window 52 weeks before launch:\n");
    for h in &p.history {
        out.push_str(&format!(
            "  {}{} → {}  mean {:.4}  sd {:.4}{}\n",
            if h.year_before { "a year before: " } else { "" },
            h.from.format("%Y-%m-%d"),
            h.to.format("%Y-%m-%d"),
            h.mean,
            h.sd,
            if look.is_empty() { String::new() } else { format!("  ρ {:.3}", h.correlation) }
        ));
    }
    out.push_str(&format!(
        "baseline {:.4} (the latest window) · sd {:.4} (the trend's next window, at least the noisiest)",
        p.baseline, p.sd
    ));
    match p.cuped_days {
        Some(d) => out.push_str(&format!(
            " · CUPED ({d} days) leaves sd {:.4} (ρ = {:.3}, variance {})\n",
            p.sd_cuped,
            p.correlation,
            pct(-(1.0 - (p.sd_cuped / p.sd.max(f64::MIN_POSITIVE)).powi(2)))
        )),
        None => out.push_str(" · CUPED off\n"),
    }
    for a in &p.arms {
        let rel = |v: Option<f64>| v.map(|r| format!(" ({} of the baseline)", pct(r))).unwrap_or_default();
        out.push_str(&format!(
            "\n{} vs control ({} vs {} members)\n  minimum detectable effect: {}{}; without CUPED {}\n",
            a.arm,
            report::count(a.members),
            report::count(a.control_members),
            unit(a.mde),
            rel(a.mde_relative),
            unit(a.mde_without_cuped)
        ));
        if let (Some(n), Some(e)) = (a.needed, p.effect_absolute) {
            out.push_str(&format!(
                "  to detect {}: {} members in all{}\n",
                unit(e),
                report::count(n),
                a.needed_without_cuped.map(|w| format!(" (without CUPED {})", report::count(w))).unwrap_or_default()
            ));
        }
    }
    if let (Some(n), Some(share)) = (p.needed, p.needed_share) {
        out.push_str(&format!(
            "\nneeded: {} members, {} of the eligible audience{}\n",
            report::count(n),
            pct(share),
            if share > 1.0 { " — the audience is too small for this effect" } else { "" }
        ));
    }
    out
}

/// The holdout report as text.
fn render_holdout(r: &experiment::holdout::HoldoutReport, window: &str, options: &ReportOptions) -> String {
    let mut out = format!(
        "global holdout (salt `{}`, {} %): {} of {} members ({:.3} %)\n",
        r.salt,
        100.0 * r.share,
        report::count(r.held_out),
        report::count(r.members),
        100.0 * r.observed_share
    );
    if let Some(srm) = &r.srm {
        out.push_str(&format!(
            "size against its share: chi-square = {:.3}, p = {}{}\n",
            srm.chi2,
            experiment::p_text(srm.p_value),
            if srm.mismatch { " — MISMATCH: the holdout is not the share it should be" } else { " (as configured)" }
        ));
    }
    if r.exported_holdout_members > 0 {
        let ids: Vec<String> = r.leaking_experiments.iter().map(|i| i.to_string()).collect();
        out.push_str(&format!(
            "WARNING: {} holdout members were exported in experiments {} (another holdout salt or a smaller share): the holdout is not clean\n",
            report::count(r.exported_holdout_members),
            ids.join(", ")
        ));
    } else {
        out.push_str("no holdout member was exported into an experiment arm\n");
    }
    out.push_str(&format!(
        "window {window}: orders from {} to {} (exclusive)\n",
        r.window_start.format("%Y-%m-%d"),
        r.window_end.format("%Y-%m-%d")
    ));
    if let Some(p) = &r.cuped {
        out.push_str(&format!(
            "CUPED: each metric adjusted by the same metric over the {} days before the window\n",
            p.days
        ));
    }
    let a = &r.analysis;
    out.push_str(&arm_table(&a.arms));
    for c in &a.comparisons {
        out.push_str(&format!("\n{} vs {}: the lift of all marketing\n", c.arm, c.control));
        for m in Metric::ALL.into_iter().filter(|m| options.metrics_chosen().contains(m)) {
            out.push_str(&comparison_lines(a.tests, options.correction_chosen(), c, m));
        }
    }
    out
}

/// One metric's line of a comparison: the difference (× `scale`, to
/// `digits`, in `unit`) and relative change, its 95 % CI, the p-value
/// (then `adjusted`) and the test.
fn metric_line(
    label: &str,
    u: &Uplift,
    (scale, digits, unit): (f64, usize, &str),
    adjusted: &str,
    test: &str,
) -> String {
    let relative = u.relative.map(|x| format!(" ({}%)", signed(100.0 * x, 1))).unwrap_or_default();
    format!(
        "  {label:<15} {}{unit}{relative}  95% CI [{}, {}]{unit}  p = {}{adjusted}  ({test})\n",
        signed(scale * u.diff, digits),
        signed(scale * u.ci_low, digits),
        signed(scale * u.ci_high, digits),
        experiment::p_text(u.p_value),
    )
}
