//! Command-line arguments and the subcommands' drivers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use taglake_datasets::{Format, GenerateConfig};
use taglake_storage::{Table, Warehouse};

use crate::args::{WaitArg, WarehouseArg, lock_writer};
use crate::ingest::{IngestArgs, ingest_cmd, ingest_files};
use crate::report;

#[derive(Parser)]
#[command(name = "taglake", version, about = "Member tags, communities and audiences for retail CRM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sample data, ingest it and show what the pipeline did.
    Demo(DemoArgs),
    /// Write a synthetic retail member base (members, orders, products, personas).
    Generate(GenerateArgs),
    /// Validate exports and commit them to the warehouse; bad rows go to quarantine.
    Ingest(IngestArgs),
    /// Show the warehouse tables: versions, row counts, sizes, what `vacuum` can reclaim, who is writing.
    Status(WarehouseArg),
    /// Delete files no table version needs any more: replaced files older than --retain, and files
    /// killed or failed commands left. The current and the previous version of every table stay.
    Vacuum(VacuumArgs),
    /// Rewrite a table's files in member_key order (Delta OPTIMIZE ZORDER BY member_key), so reads of a
    /// member range (a cluster's tag refresh) skip almost all of them.
    Optimize(OptimizeArgs),
    /// Compute member features and all tags; commit a new tag snapshot.
    Tag(TagCmd),
    /// Read tag snapshots: list, show, diff, trigger lists.
    Tags(TagsCmd),
    /// The night's pipeline under one lock: ingest products, members and orders, tag, assign
    /// communities with the saved model, and one summary (text or JSON) with timings, peak memory and
    /// the tags entered and exited per family. Exit codes: 0 done, 1 a step failed, 75 the warehouse
    /// is being written by another command (retry later, or pass --wait).
    Nightly(crate::nightly::NightlyArgs),
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
    /// A web audience builder for marketers: overview, tag catalog, live counts, in a browser.
    Studio(crate::studio::StudioArgs),
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
    wait: WaitArg,
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
    wait: WaitArg,
    #[command(flatten)]
    wh: WarehouseArg,
}

#[derive(Args)]
struct VacuumArgs {
    /// List what would be deleted, with sizes, and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep files replaced (or, for files no version references, written) less than this long ago:
    /// `7d`, `36h`, `30m`, `0`. Versions older than this can no longer be read afterwards.
    #[arg(long, default_value = "7d")]
    retain: String,
    #[command(flatten)]
    wait: WaitArg,
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
    #[command(flatten)]
    wait: WaitArg,
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
    let command = match cli.command {
        Command::Nightly(a) => return runtime.block_on(crate::nightly::nightly(a)),
        other => other,
    };
    let result = runtime.block_on(async {
        match command {
            Command::Nightly(_) => unreachable!("run above"),
            Command::Demo(a) => demo(a).await,
            Command::Generate(a) => generate(&a).map(|_| ()),
            Command::Ingest(a) => ingest_cmd(a).await,
            Command::Status(a) => status(&a.warehouse).await,
            Command::Vacuum(a) => vacuum(a).await,
            Command::Optimize(a) => optimize(a).await,
            Command::Tag(a) => {
                let wh = Warehouse::open(&a.wh.warehouse)?;
                let lock = lock_writer(&wh, &a.wait)?;
                crate::tags::tag(&wh, &lock, &a.args).await.map(|_| ())
            }
            Command::Tags(a) => crate::tags::tags(&Warehouse::open(&a.wh.warehouse)?, a.command).await,
            Command::Cluster(a) => crate::cluster::cluster(&Warehouse::open(&a.wh.warehouse)?, a).await,
            // Without a statement, the prompt (which runs statements as `sql` does).
            Command::Sql(a) if a.query.is_none() => crate::repl::run(a).await,
            Command::Sql(a) => crate::sql::sql(a).await,
            Command::Audience(a) => crate::audience::audience(a).await,
            Command::Export(a) => crate::audience::export_cmd(a).await,
            Command::Experiment(a) => crate::audience::experiment_cmd(a).await,
            Command::Serve(a) => crate::serve::serve(a).await,
            Command::Studio(a) => crate::studio::studio(a).await,
            Command::Passwd(a) => crate::serve::passwd(a),
            Command::Scheduler(a) => crate::distributed::scheduler(a).await,
            Command::Executor(a) => crate::distributed::executor(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::report::error_text(&e));
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

/// The retention `vacuum` keeps by default, and `status` reports against.
const DEFAULT_RETAIN: &str = "7d";

async fn status(warehouse: &Path) -> Result<()> {
    let wh = Warehouse::open(warehouse)?;
    let retain = parse_retain(DEFAULT_RETAIN)?;
    println!("warehouse {}", wh.root().display());
    println!("{:<12} {:>8} {:>11} {:>11} {:>14}", "table", "version", "size", "reclaimable", "rows");
    let (mut reclaimable, mut files, mut younger) = (0, 0, 0);
    for t in Table::ALL {
        let v = wh.version(t).await?;
        let rows = wh.row_count(t).await?;
        let size: u64 = wh.files(t).await?.iter().map(|f| f.size).sum();
        let now = wh.reclaimable(t, retain).await?;
        let all = wh.reclaimable(t, chrono::Duration::zero()).await?;
        (reclaimable, files, younger) = (reclaimable + now.bytes(), files + now.files.len(), younger + all.bytes());
        println!(
            "{:<12} {:>8} {:>11} {:>11} {:>14}",
            t.name(),
            v.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            report::bytes(size),
            report::bytes(now.bytes()),
            report::count(rows)
        );
    }
    let younger = younger.saturating_sub(reclaimable);
    println!(
        "reclaimable: {} in {} file{} by `taglake vacuum` (unneeded for more than {DEFAULT_RETAIN}){}",
        report::bytes(reclaimable),
        report::count(files as u64),
        if files == 1 { "" } else { "s" },
        if younger > 0 {
            format!("; {} more unneeded for less long (`--retain` shorter reclaims them)", report::bytes(younger))
        } else {
            String::new()
        }
    );
    match taglake_storage::lock::last_holder(wh.root()) {
        None => println!("writer: none"),
        Some(h) if h.alive() == Some(false) => {
            println!("writer: none; the last one, {h}, stopped before it finished: run it again")
        }
        Some(h) if h.alive() == Some(true) => println!("writer: {h}"),
        Some(h) => println!("writer: {h}, unless it stopped before it finished"),
    }
    Ok(())
}

/// Longest `--retain` (100 years, in minutes): longer is a typo, and far
/// longer would not fit a duration.
const MAX_RETAIN_MINUTES: i64 = 36_525 * 24 * 60;

/// `7d`, `36h`, `30m`, `2w` or `0` (any [`taglake_base::units`] duration),
/// of at most [`MAX_RETAIN_MINUTES`].
fn parse_retain(text: &str) -> Result<chrono::Duration> {
    use taglake_base::units::{UnitError, duration};
    let too_long = || anyhow::anyhow!("--retain `{text}`: at most 36525 days (100 years)");
    match duration(text) {
        Ok(d) => match chrono::Duration::from_std(d) {
            Ok(d) if d <= chrono::Duration::minutes(MAX_RETAIN_MINUTES) => Ok(d),
            _ => Err(too_long()),
        },
        Err(UnitError::TooLarge) => Err(too_long()),
        Err(UnitError::Malformed) => {
            bail!("--retain `{text}`: write a number of minutes, hours, days or weeks (30m, 36h, 7d, 2w) or 0")
        }
    }
}

async fn vacuum(a: VacuumArgs) -> Result<()> {
    let retain = parse_retain(&a.retain)?;
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let lock = lock_writer(&wh, &a.wait)?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    let (mut files, mut bytes) = (0, 0);
    for t in Table::ALL {
        let done = wh.vacuum(&lock, t, retain, a.dry_run).await?;
        if done.files.is_empty() {
            continue;
        }
        println!(
            "vacuum {}: {verb} {} file{}, {}",
            t.name(),
            report::count(done.files.len() as u64),
            if done.files.len() == 1 { "" } else { "s" },
            report::bytes(done.bytes())
        );
        for (path, size) in &done.files {
            let shown = path.strip_prefix(wh.root()).unwrap_or(path);
            println!("  {:<72} {:>10}", shown.display(), report::bytes(*size));
        }
        (files, bytes) = (files + done.files.len(), bytes + done.bytes());
    }
    println!(
        "vacuum: {verb} {} file{}, {} (kept: the current and previous version of every table, and files unneeded \
         for less than {}){}",
        report::count(files as u64),
        if files == 1 { "" } else { "s" },
        report::bytes(bytes),
        a.retain,
        if a.dry_run { "; nothing was deleted (--dry-run)" } else { "" }
    );
    Ok(())
}

async fn optimize(a: OptimizeArgs) -> Result<()> {
    let table = match a.table {
        SortableArg::Orders => Table::Orders,
        SortableArg::Members => Table::Members,
    };
    let memory = taglake_base::units::parse_size(&a.memory)
        .filter(|&m| m >= 16 << 20)
        .with_context(|| format!("--memory {:?}: expected a size of at least 16MiB, like 512MiB or 4GiB", a.memory))?;
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let _lock = lock_writer(&wh, &a.wait)?;
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

// Long on purpose: the demo is a script a reader follows top to bottom, printing each step as it runs it.
async fn demo(a: DemoArgs) -> Result<()> {
    let start = Instant::now();
    claim_demo_warehouse(&a.warehouse)?;
    let wh = Warehouse::open(&a.warehouse)?;
    let lock = lock_writer(&wh, &a.wait)?;
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
    println!("\n2. ingest into the demo's own warehouse {}", wh.root().display());
    let ext = Format::Parquet.extension();
    let path = |name: &str| a.data.join(name).to_string_lossy().to_string();
    let memory = taglake_ingest::DEFAULT_MEMORY;
    ingest_files(&wh, &lock, Table::Products, &[path(&format!("products.{ext}"))], None, false, memory).await?;
    ingest_files(&wh, &lock, Table::Members, &[path(&format!("members.{ext}"))], None, false, memory).await?;
    ingest_files(&wh, &lock, Table::Orders, &[path("orders")], None, false, memory).await?;
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
        &lock,
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
    let options = taglake_cluster::ClusterOptions::builder().seed(a.seed).build()?;
    let clustered = crate::cluster::fit(&wh, &lock, &options).await?;
    drop(lock);
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
        let n = taglake_query::audience::count(&node, &tags)?;
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
