//! `taglake tag` and `taglake tags …`: run the tagger, read snapshots.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use taglake_base::csv;
use taglake_storage::{Warehouse, WriterLock};
use taglake_tagger::snapshot::{self, TagInfo};
use taglake_tagger::{RefreshOptions, RefreshSummary};

use crate::args::{OutputFormat, RetentionArgs};
use crate::report;

#[derive(Args)]
pub struct TagArgs {
    /// Compute as of this date (only orders before it count); default the day after the newest order.
    #[arg(long)]
    pub as_of: Option<chrono::NaiveDate>,
    /// A tag catalog (TOML) added to the built-in one (or replacing it with `replace_default = true`).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Keep replaced versions of the `features` table this many days (time
    /// travel); older files are deleted after the run. The previous version
    /// always stays until the next run, so a server still reading it is not
    /// broken: 0 keeps the new version and the previous one.
    #[arg(long, default_value_t = 7)]
    pub keep_features_days: u32,
    /// Most values of the data one tag family expands over (one tag per
    /// value); a family over more is skipped with a warning [default: the
    /// catalog's `max_family_values`, 1000 in the built-in one].
    #[arg(long)]
    pub max_family_values: Option<usize>,
    #[command(flatten)]
    pub cluster: crate::args::DistributedArg,
    /// With --cluster: members per task (rounded up to whole chunks of
    /// 65,536) [default: the base in 16 tasks].
    #[arg(long, requires = "cluster")]
    pub range_members: Option<usize>,
}

#[derive(Subcommand)]
pub enum TagsCommand {
    /// The tags of a snapshot with their member counts.
    List(ListArgs),
    /// One tag: family, description, rule, members.
    Show(ShowArgs),
    /// Per tag, members who entered and exited between two snapshots; with
    /// --tag and --who, the list of those members (trigger lists).
    Diff(DiffArgs),
    /// The snapshots in the warehouse.
    Snapshots,
    /// Delete old snapshots under a retention policy (one commit). Kept: the
    /// newest, the --keep-last newest, the last snapshot of each of the
    /// newest --keep-daily days and --keep-monthly months (by as-of date),
    /// and every snapshot an experiment was exported from. `taglake vacuum`
    /// deletes the files after its retention period.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Only say what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format: a table, or the full result as JSON.
    #[arg(long, value_enum, default_value_t = PruneFormat::Table)]
    pub format: PruneFormat,
    #[command(flatten)]
    pub wait: crate::args::WaitArg,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
pub enum PruneFormat {
    Table,
    Json,
}

/// `taglake tags prune`.
async fn prune(wh: &Warehouse, a: PruneArgs) -> Result<()> {
    let lock = crate::args::lock_writer(wh, &a.wait)?;
    let done = snapshot::prune(wh, &lock, &a.retention.retention(), a.dry_run).await?;
    if a.format == PruneFormat::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"dry_run": a.dry_run, "pruned": done}))?);
        return Ok(());
    }
    print_pruned(&done, a.dry_run);
    Ok(())
}

/// The prune report: what stays and why, what goes, and the bytes.
pub fn print_pruned(done: &snapshot::Pruned, dry_run: bool) {
    for k in &done.kept {
        println!("  keep    {:>6}  {}  {}", k.snapshot, k.as_of, k.reasons.join(", "));
    }
    for (v, as_of) in &done.deleted {
        println!("  delete  {v:>6}  {as_of}");
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let rewritten = if done.rewritten.is_empty() {
        String::new()
    } else {
        format!(
            "; {} kept snapshot{} {} {} bitmap{} the deleted ones held",
            done.rewritten.len(),
            if done.rewritten.len() == 1 { "" } else { "s" },
            if dry_run { "would take over" } else { "took over" },
            done.taken_over,
            if done.taken_over == 1 { "" } else { "s" }
        )
    };
    let bytes = if dry_run {
        format!("{} of files leave the table", report::bytes(done.bytes_removed))
    } else {
        format!(
            "{} freed ({} removed, {} rewritten; `taglake vacuum` deletes the files)",
            report::bytes(done.bytes_removed.saturating_sub(done.bytes_added)),
            report::bytes(done.bytes_removed),
            report::bytes(done.bytes_added)
        )
    };
    println!(
        "prune: kept {}, {verb} {} snapshot{}{rewritten}; {bytes}",
        done.kept.len(),
        done.deleted.len(),
        if done.deleted.len() == 1 { "" } else { "s" }
    );
}

#[derive(Args)]
pub struct ListArgs {
    /// Snapshot version (default: the newest).
    #[arg(long)]
    snapshot: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Only tags of this family.
    #[arg(long)]
    family: Option<String>,
}

#[derive(Args)]
pub struct ShowArgs {
    /// Tag name.
    tag: String,
    /// Snapshot version (default: the newest).
    #[arg(long)]
    snapshot: Option<i64>,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
pub enum Who {
    Entered,
    Exited,
}

#[derive(Args)]
pub struct DiffArgs {
    /// Older snapshot.
    #[arg(long)]
    from: i64,
    /// Newer snapshot.
    #[arg(long)]
    to: i64,
    /// Output format of the per-tag table.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Export the members who entered or exited this tag …
    #[arg(long, requires = "who")]
    tag: Option<String>,
    /// … entered or exited.
    #[arg(long, value_enum, requires = "tag")]
    who: Option<Who>,
    /// Write the member list here (CSV: member_id,member_key) instead of stdout.
    #[arg(long, requires = "tag")]
    out: Option<PathBuf>,
}

/// Longest `--keep-features-days` (100 years): the cut-off date must stay a date.
pub(crate) const MAX_KEEP_FEATURES_DAYS: u32 = 36_525;

/// [`taglake_tagger::refresh`], with the feature set's pages given back to
/// the system before the snapshot is serialized (see
/// [`taglake_tagger::Computed`]): a refresh that writes every bitmap (the
/// first snapshot) at 42 M members peaked at 11.7 GiB without it and 10.6
/// GiB with it, in the same wall time (114.5 and 115.3 s).
async fn embedded_refresh(
    wh: &Warehouse,
    lock: &WriterLock,
    options: &RefreshOptions,
) -> taglake_tagger::Result<RefreshSummary> {
    let computed = taglake_tagger::compute(wh, lock, options).await?;
    report::release_free_memory();
    taglake_tagger::publish(wh, lock, options, computed).await
}

pub async fn tag(wh: &Warehouse, lock: &WriterLock, a: &TagArgs) -> Result<RefreshSummary> {
    if a.keep_features_days > MAX_KEEP_FEATURES_DAYS {
        bail!("--keep-features-days {}: at most {MAX_KEEP_FEATURES_DAYS} (100 years)", a.keep_features_days);
    }
    if a.max_family_values.is_some() && a.cluster.cluster.is_some() {
        bail!(
            "--max-family-values does not reach a cluster's executors; set max_family_values in the catalog's [settings]"
        );
    }
    let options = RefreshOptions::builder()
        .as_of(a.as_of)
        .catalog(a.catalog.clone())
        .keep_features(chrono::Duration::days(a.keep_features_days.into()))
        .max_family_values(a.max_family_values)
        .build()?;
    let pb = report::spinner("tag: features, tags, snapshot");
    let s = match &a.cluster.cluster {
        None => embedded_refresh(wh, lock, &options).await.map_err(anyhow::Error::from),
        Some(url) => crate::distributed::refresh(url, wh, lock, &options, a.range_members).await,
    };
    pb.finish_and_clear();
    let s = s?;
    let total = s.features_seconds + s.evaluate_seconds + s.snapshot_seconds;
    report::say!(
        "tag: snapshot {} as of {}: {} tags over {} members, {} member-tags ({:.1} per member) from {} order lines · \
         features {:.2} s, tags {:.2} s, commit {:.2} s · {}",
        s.snapshot,
        s.as_of,
        s.tags,
        report::count(s.base_members),
        report::count(s.member_tags),
        s.tags_per_member(),
        report::count(s.order_lines),
        s.features_seconds,
        s.evaluate_seconds,
        s.snapshot_seconds,
        report::timing_of(s.member_tags, "member-tags", total)
    );
    for note in &s.skipped {
        eprintln!("warning: {note}");
    }
    if s.features_files_vacuumed > 0 {
        report::say!(
            "  removed {} files of `features` versions replaced more than {} days ago (the previous version stays)",
            s.features_files_vacuumed,
            a.keep_features_days
        );
    }
    Ok(s)
}

pub async fn tags(wh: &Warehouse, cmd: TagsCommand) -> Result<()> {
    match cmd {
        TagsCommand::List(a) => {
            let info = snapshot::info(wh, a.snapshot).await?;
            let tags: Vec<&TagInfo> =
                info.tags.iter().filter(|t| a.family.as_ref().is_none_or(|f| &t.family == f)).collect();
            if a.format == OutputFormat::Table {
                println!(
                    "snapshot {} as of {} · {} members · {} tags",
                    info.snapshot,
                    info.as_of,
                    report::count(info.base_members as u64),
                    tags.len()
                );
            }
            print_tags(&tags, a.format)?;
        }
        TagsCommand::Show(a) => {
            let info = snapshot::info(wh, a.snapshot).await?;
            let Some(t) = info.tags.iter().find(|t| t.name == a.tag) else {
                let hint = taglake_base::suggest(&a.tag, info.tags.iter().map(|t| t.name.as_str()))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                bail!("no tag `{}` in snapshot {}{hint}", a.tag, info.snapshot);
            };
            println!("tag          {}", t.name);
            println!("family       {}", t.family);
            println!("description  {}", t.description);
            println!("rule         {}", t.rule);
            println!(
                "members      {} ({:.2} % of {})",
                report::count(t.members as u64),
                100.0 * t.share,
                report::count(info.base_members as u64)
            );
            println!(
                "snapshot     {} as of {} (created {})",
                info.snapshot,
                info.as_of,
                info.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        TagsCommand::Diff(a) => diff(wh, a).await?,
        TagsCommand::Prune(a) => prune(wh, a).await?,
        TagsCommand::Snapshots => {
            let versions = snapshot::versions(wh).await?;
            if versions.is_empty() {
                println!("no tag snapshot yet; run `taglake tag`");
            }
            println!("{:>8}  {:<10}  {:>12}  {:>6}  created", "snapshot", "as_of", "members", "tags");
            for v in versions {
                let i = snapshot::info(wh, Some(v)).await?;
                println!(
                    "{:>8}  {:<10}  {:>12}  {:>6}  {}",
                    i.snapshot,
                    i.as_of.to_string(),
                    report::count(i.base_members as u64),
                    i.tags.len(),
                    i.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
    }
    Ok(())
}

fn print_tags(tags: &[&TagInfo], format: OutputFormat) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            let w = tags.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
            let fw = tags.iter().map(|t| t.family.len()).max().unwrap_or(6).max(6);
            writeln!(out, "{:<w$}  {:<fw$}  {:>12}  {:>7}  description", "name", "family", "members", "share")?;
            for t in tags {
                writeln!(
                    out,
                    "{:<w$}  {:<fw$}  {:>12}  {:>6.2}%  {}",
                    t.name,
                    t.family,
                    report::count(t.members as u64),
                    100.0 * t.share,
                    t.description
                )?;
            }
        }
        OutputFormat::Csv => {
            writeln!(out, "name,family,description,members,share")?;
            for t in tags {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    t.name,
                    csv::field(&t.family),
                    csv::field(&t.description),
                    t.members,
                    t.share
                )?;
            }
        }
        OutputFormat::Json => {
            let rows: Vec<serde_json::Value> = tags
                .iter()
                .map(|t| {
                    serde_json::json!({"name": t.name, "family": t.family, "description": t.description, "members": t.members, "share": t.share})
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
    }
    Ok(())
}

async fn diff(wh: &Warehouse, a: DiffArgs) -> Result<()> {
    if let (Some(tag), Some(who)) = (&a.tag, a.who) {
        let movement = if who == Who::Entered { snapshot::Movement::Entered } else { snapshot::Movement::Exited };
        let ids = snapshot::movers(wh, a.from, a.to, tag, movement).await?;
        let mut out: Box<dyn Write> = match &a.out {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        snapshot::write_movers_csv(&mut out, &ids)?;
        out.flush()?;
        if let Some(p) = &a.out {
            eprintln!(
                "{} members {} `{tag}` between snapshots {} and {} → {}",
                report::count(ids.len() as u64),
                if who == Who::Entered { "entered" } else { "exited" },
                a.from,
                a.to,
                p.display()
            );
        }
        return Ok(());
    }
    let rows = snapshot::diff(wh, a.from, a.to).await?;
    let mut out = std::io::stdout().lock();
    match a.format {
        OutputFormat::Table => {
            let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
            writeln!(out, "{:<w$}  {:>12}  {:>12}  {:>12}", "name", "entered", "exited", "net")?;
            for r in &rows {
                writeln!(out, "{:<w$}  {:>12}  {:>12}  {:>+12}", r.name, r.entered, r.exited, r.net)?;
            }
        }
        OutputFormat::Csv => {
            writeln!(out, "name,entered,exited,net")?;
            for r in &rows {
                writeln!(out, "{},{},{},{}", r.name, r.entered, r.exited, r.net)?;
            }
        }
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
    }
    Ok(())
}
