//! Command-line arguments and the subcommands' drivers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use taglake_datasets::{Format, GenerateConfig};
use taglake_ingest::{CheckedMapping, IngestOptions, IngestSummary, Mapping};
use taglake_storage::{Table, Warehouse};

use crate::report::{self, IngestBar};

#[derive(Parser)]
#[command(name = "taglake", version, about = "Member tags, communities and audiences for retail CRM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct WarehouseArg {
    /// Warehouse directory (one Delta table per folder).
    #[arg(long, env = "TAGLAKE_WAREHOUSE", default_value = "warehouse", global = true)]
    pub(crate) warehouse: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sample data, ingest it and show what the pipeline did.
    Demo(DemoArgs),
    /// Write a synthetic retail member base (members, orders, products, personas).
    Generate(GenerateArgs),
    /// Validate exports and commit them to the warehouse; bad rows go to quarantine.
    Ingest(IngestArgs),
    /// Show the warehouse tables: versions and row counts.
    Status(WarehouseArg),
    /// Rewrite a table's files in member_key order (Delta OPTIMIZE ZORDER BY member_key), so reads of a
    /// member range (a cluster's tag refresh) skip almost all of them.
    Optimize(OptimizeArgs),
    /// Compute member features and all tags; commit a new tag snapshot.
    Tag(TagCmd),
    /// Read tag snapshots: list, show, diff, trigger lists.
    Tags(TagsCmd),
    /// Find communities of similar members (k-means); `cluster profile` describes them.
    Cluster(crate::cluster::ClusterArgs),
    /// Run SQL over the warehouse tables (DataFusion): one statement, or a prompt without one.
    Sql(crate::sql::SqlArgs),
    /// Count, overlap and sample audiences (tag expressions).
    Audience(crate::audience::AudienceArgs),
    /// Export an audience split into experiment arms; records the experiment.
    Export(crate::audience::ExportArgs),
    /// Recorded experiments and their uplift reports.
    Experiment(crate::audience::ExperimentArgs),
    /// Serve the warehouse over the PostgreSQL wire protocol (psql, BI tools), read-only.
    Serve(crate::serve::ServeArgs),
    /// Add a user to a `taglake serve` users file, or change their password (read from stdin).
    Passwd(crate::serve::PasswdArgs),
    /// Run a cluster's scheduler (Ballista): clients connect with --cluster, executors with --scheduler.
    Scheduler(crate::distributed::SchedulerArgs),
    /// Run a cluster executor (Ballista) that takes tasks from a scheduler.
    Executor(crate::distributed::ExecutorArgs),
}

#[derive(Args)]
struct TagCmd {
    #[command(flatten)]
    args: crate::tags::TagArgs,
    #[command(flatten)]
    wh: WarehouseArg,
}

#[derive(Args)]
struct TagsCmd {
    #[command(subcommand)]
    command: crate::tags::TagsCommand,
    #[command(flatten)]
    wh: WarehouseArg,
}

#[derive(Args)]
struct GenerateArgs {
    /// Number of members.
    #[arg(long, default_value_t = 100_000)]
    members: u64,
    /// Years of order history.
    #[arg(long, default_value_t = 2)]
    years: u32,
    /// Random seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Parquet)]
    format: FormatArg,
    /// Output directory.
    #[arg(long, default_value = "data")]
    out: PathBuf,
    /// Day after the last order (orders cover the `--years` before it).
    #[arg(long)]
    end_date: Option<chrono::NaiveDate>,
    /// Average order lines per member and year.
    #[arg(long, default_value_t = 10.0)]
    lines_per_member_year: f64,
}

#[derive(Copy, Clone, ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
    Parquet,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Parquet => Format::Parquet,
        }
    }
}

#[derive(Copy, Clone, ValueEnum)]
enum TableArg {
    Members,
    Orders,
    Products,
}

impl From<TableArg> for Table {
    fn from(t: TableArg) -> Table {
        match t {
            TableArg::Members => Table::Members,
            TableArg::Orders => Table::Orders,
            TableArg::Products => Table::Products,
        }
    }
}

#[derive(Args)]
struct IngestArgs {
    /// Target table.
    #[arg(value_enum)]
    table: TableArg,
    /// Files, directories or glob patterns (CSV, JSON lines, Parquet).
    #[arg(required = true)]
    files: Vec<String>,
    /// Mapping file (TOML) for exports not in the canonical layout.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Orders of unknown members create them instead of being quarantined.
    #[arg(long)]
    create_members: bool,
    #[command(flatten)]
    wh: WarehouseArg,
}

#[derive(Copy, Clone, ValueEnum)]
enum SortableArg {
    Orders,
    Members,
}

#[derive(Args)]
struct OptimizeArgs {
    /// The table to sort by member_key.
    #[arg(value_enum, default_value_t = SortableArg::Orders)]
    table: SortableArg,
    /// Memory the sort may hold before it spills to the temporary directory (`256MiB`, `4GiB`).
    #[arg(long, default_value = "512MiB")]
    memory: String,
    #[command(flatten)]
    wh: WarehouseArg,
}

#[derive(Args)]
struct DemoArgs {
    /// Number of members in the sample.
    #[arg(long, default_value_t = 100_000)]
    members: u64,
    /// Random seed of the sample.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the generated exports go.
    #[arg(long, default_value = "data/demo")]
    data: PathBuf,
    /// The demo's own warehouse: a new or empty folder, or one an earlier demo
    /// made. Never the configured warehouse (`TAGLAKE_WAREHOUSE` is not read):
    /// the member dictionary is append-only, so synthetic members would stay
    /// in real data forever.
    #[arg(long, default_value = "data/demo/warehouse")]
    warehouse: PathBuf,
}

/// The file that marks a warehouse folder as the demo's.
const DEMO_MARK: &str = ".taglake-demo";

/// Claims `dir` for the demo: creates it, or accepts it when it is empty
/// or was made by an earlier demo; refuses any other folder.
fn claim_demo_warehouse(dir: &Path) -> Result<()> {
    let mark = dir.join(DEMO_MARK);
    if mark.is_file() {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if entries > 0 {
        bail!(
            "--warehouse {}: the folder holds data the demo did not write, and the demo never adds its synthetic \
             members to another warehouse (the member dictionary is append-only); give it a new folder",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let note = "This warehouse was made by `taglake demo`: synthetic members only.\n";
    std::fs::write(&mark, note).with_context(|| format!("writing {}", mark.display()))
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => demo(a).await,
            Command::Generate(a) => generate(&a).map(|_| ()),
            Command::Ingest(a) => ingest_cmd(a).await,
            Command::Status(a) => status(&a.warehouse).await,
            Command::Optimize(a) => optimize(a).await,
            Command::Tag(a) => crate::tags::tag(&Warehouse::open(&a.wh.warehouse)?, &a.args).await.map(|_| ()),
            Command::Tags(a) => crate::tags::tags(&Warehouse::open(&a.wh.warehouse)?, a.command).await,
            Command::Cluster(a) => crate::cluster::cluster(&Warehouse::open(&a.wh.warehouse)?, a).await,
            Command::Sql(a) => crate::sql::sql(a).await,
            Command::Audience(a) => crate::audience::audience(a).await,
            Command::Export(a) => crate::audience::export_cmd(a).await,
            Command::Experiment(a) => crate::audience::experiment_cmd(a).await,
            Command::Serve(a) => crate::serve::serve(a).await,
            Command::Passwd(a) => crate::serve::passwd(a),
            Command::Scheduler(a) => crate::distributed::scheduler(a).await,
            Command::Executor(a) => crate::distributed::executor(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(a: &GenerateArgs) -> Result<taglake_datasets::GenerateSummary> {
    let mut b = GenerateConfig::builder()
        .members(a.members)
        .years(a.years)
        .seed(a.seed)
        .format(a.format.into())
        .out(&a.out)
        .lines_per_member_year(a.lines_per_member_year);
    if let Some(d) = a.end_date {
        b = b.end_date(d);
    }
    let cfg = b.build()?;
    let pb = report::spinner("generate");
    let s = taglake_datasets::generate(&cfg, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    println!(
        "generate: {} members, {} orders, {} order lines, {} products, {} stores → {} ({} files) · {}",
        report::count(s.members),
        report::count(s.orders),
        report::count(s.order_lines),
        report::count(s.products),
        report::count(s.stores),
        a.out.display(),
        s.files.len(),
        report::timing(s.order_lines, s.seconds)
    );
    Ok(s)
}

async fn ingest_files(
    wh: &Warehouse,
    table: Table,
    files: &[String],
    mapping: Option<&Path>,
    create_members: bool,
) -> Result<IngestSummary> {
    let mapping = match mapping {
        Some(p) => Mapping::from_file(p)?.check(table)?,
        None => CheckedMapping::canonical(table),
    };
    let files = taglake_ingest::source::expand_inputs(files)?;
    let mut opts = IngestOptions::new(mapping);
    opts.create_members = create_members;
    let (bar, pb) = IngestBar::new(&format!("ingest {}", table.name()));
    let s = taglake_ingest::ingest(wh, &files, &opts, bar).await?;
    pb.finish_and_clear();
    for (path, reason) in &s.failed_files {
        eprintln!("error: {}: {reason}", path.display());
    }
    println!(
        "ingest {}: {} file{}, {} rows read, {} inserted, {} replaced, {} unchanged, {} quarantined{} · {}",
        table.name(),
        s.files,
        if s.files == 1 { "" } else { "s" },
        report::count(s.rows_read),
        report::count(s.inserted),
        report::count(s.replaced),
        report::count(s.unchanged),
        report::count(s.quarantined),
        if s.new_members > 0 { format!(", {} new members", report::count(s.new_members)) } else { String::new() },
        report::timing(s.rows_read, s.seconds)
    );
    if s.quarantined > 0 {
        println!(
            "  quarantined rows are in {} (file, row, column, reason)",
            wh.table_path(Table::Quarantine).display()
        );
    }
    if s.nothing_read() {
        bail!("nothing could be read from {} file(s)", s.files);
    }
    Ok(s)
}

async fn ingest_cmd(a: IngestArgs) -> Result<()> {
    let wh = Warehouse::open(&a.wh.warehouse)?;
    ingest_files(&wh, a.table.into(), &a.files, a.mapping.as_deref(), a.create_members).await?;
    Ok(())
}

async fn status(warehouse: &Path) -> Result<()> {
    let wh = Warehouse::open(warehouse)?;
    println!("warehouse {}", wh.root().display());
    println!("{:<12} {:>8} {:>14}", "table", "version", "rows");
    for t in Table::ALL {
        let v = wh.version(t).await?;
        let rows = wh.row_count(t).await?;
        println!(
            "{:<12} {:>8} {:>14}",
            t.name(),
            v.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            report::count(rows)
        );
    }
    Ok(())
}

async fn optimize(a: OptimizeArgs) -> Result<()> {
    let table = match a.table {
        SortableArg::Orders => Table::Orders,
        SortableArg::Members => Table::Members,
    };
    let memory = taglake_serve::config::parse_size(&a.memory)
        .filter(|&m| m >= 16 << 20)
        .with_context(|| format!("--memory {:?}: expected a size of at least 16MiB, like 512MiB or 4GiB", a.memory))?;
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let started = Instant::now();
    let rows = wh.row_count(table).await?;
    let sorted = wh
        .sort_by_member_key(table, memory)
        .await
        .with_context(|| format!("sorting {} by member_key within --memory {}", table.name(), a.memory))?;
    let seconds = started.elapsed().as_secs_f64();
    match sorted.version {
        Some(v) => println!(
            "optimize {}: {} rows sorted by member_key into {} file{} (was {}) · version {v} · {}",
            table.name(),
            report::count(rows),
            report::count(sorted.files_added),
            if sorted.files_added == 1 { "" } else { "s" },
            report::count(sorted.files_removed),
            report::timing(rows, seconds)
        ),
        None => println!("optimize {}: the table has no rows yet; nothing to do", table.name()),
    }
    Ok(())
}

async fn demo(a: DemoArgs) -> Result<()> {
    let start = Instant::now();
    claim_demo_warehouse(&a.warehouse)?;
    println!("taglake demo: a synthetic retail member base through the pipeline\n");
    println!("1. generate {} members (seed {}) into {}", report::count(a.members), a.seed, a.data.display());
    let g = generate(&GenerateArgs {
        members: a.members,
        years: 2,
        seed: a.seed,
        format: FormatArg::Parquet,
        out: a.data.clone(),
        end_date: None,
        lines_per_member_year: 10.0,
    })?;
    let wh = Warehouse::open(&a.warehouse)?;
    println!("\n2. ingest into the demo's own warehouse {}", wh.root().display());
    let ext = Format::Parquet.extension();
    let path = |name: &str| a.data.join(name).to_string_lossy().to_string();
    ingest_files(&wh, Table::Products, &[path(&format!("products.{ext}"))], None, false).await?;
    ingest_files(&wh, Table::Members, &[path(&format!("members.{ext}"))], None, false).await?;
    ingest_files(&wh, Table::Orders, &[path("orders")], None, false).await?;
    println!("\n3. the warehouse now holds");
    status(wh.root()).await.context("reading the warehouse back")?;
    let members = wh.row_count(Table::Members).await?;
    let lines = wh.row_count(Table::Orders).await?;
    if members == g.members && lines == g.order_lines {
        println!("\nevery generated row is in the warehouse; run the demo again and nothing changes.");
    } else {
        println!(
            "\nnote: the warehouse holds {} members / {} order lines, the sample {} / {} (it held other data before)",
            report::count(members),
            report::count(lines),
            report::count(g.members),
            report::count(g.order_lines)
        );
    }
    println!("\n4. tag every member");
    crate::tags::tag(
        &wh,
        &crate::tags::TagArgs {
            as_of: None,
            catalog: None,
            keep_features_days: 7,
            max_family_values: None,
            cluster: Default::default(),
            range_members: None,
        },
    )
    .await?;
    let info = taglake_tagger::snapshot::info(&wh, None).await?;
    let mut top: Vec<_> = info.tags.iter().collect();
    top.sort_by(|a, b| b.members.cmp(&a.members).then(a.position.cmp(&b.position)));
    println!("\n   top tags of snapshot {} (of {}; `taglake tags list` shows all):", info.snapshot, info.tags.len());
    for t in top.iter().take(15) {
        println!(
            "   {:<28} {:>10} {:>7.2}%  {}",
            t.name,
            report::count(t.members as u64),
            100.0 * t.share,
            t.description
        );
    }
    println!("\n5. find communities of similar members");
    let options = taglake_cluster::ClusterOptions { seed: a.seed, ..Default::default() };
    let clustered = crate::cluster::fit(&wh, &options).await?;
    println!("\n   community profiles (`taglake cluster profile --format json|csv` for machines):");
    let profile = &clustered.model.profile;
    for line in profile.render_table().lines() {
        println!("   {line}");
    }
    let chart = taglake_cluster::model::SavedModel::chart_path(&wh);
    crate::cluster::write_chart(profile, &chart)?;
    println!("   chart of sizes and lifts: {}", chart.display());
    println!("\n6. audiences: tags are columns of `members`, filters on them are bitmap algebra");
    let (ctx, tags) = taglake_query::open(&wh).await?;
    let tags = tags.context("the warehouse has members")?;
    for expr in ["tier_gold AND category_lover_beauty AND NOT dormant_60_90", "community_1 AND NOT in_experiment"] {
        let node = taglake_query::audience::parse(expr, &tags)?;
        let t = Instant::now();
        let n = taglake_query::audience::evaluate(&node, &tags)?.len();
        println!(
            "   taglake audience count \"{expr}\"\n     → {} members ({:.2}%) in {:.3} ms",
            report::count(n),
            100.0 * n as f64 / tags.universe()?.len().max(1) as f64,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let sql = "SELECT city, count(*) AS gold_beauty FROM members WHERE tier_gold AND category_lover_beauty \
               GROUP BY city ORDER BY gold_beauty DESC LIMIT 5";
    println!("   taglake sql \"{sql}\"");
    let batches = taglake_query::sql(&ctx, sql).await?;
    for line in arrow::util::pretty::pretty_format_batches(&batches)?.to_string().lines() {
        println!("   {line}");
    }
    println!("\ndemo finished in {:.1} s", start.elapsed().as_secs_f64());
    println!(
        "its warehouse is {0}; look around with --warehouse {0} (e.g. taglake tags list --warehouse {0})",
        a.warehouse.display()
    );
    Ok(())
}
