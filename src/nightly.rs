//! `taglake nightly`: the night's pipeline as one command.
//!
//! A scheduler runs one command per night and needs three things from it:
//! the steps in the right order under one writer lock (so a manual run or a
//! late night never interleaves with it), one summary it can log or parse,
//! and an exit code that says whether to page someone or retry later.
//!
//! The steps: ingest products, members, then orders (whichever were given,
//! each within `--memory`), `tag`, then `cluster --reuse-model` when a model
//! was saved by an earlier `taglake cluster` (community numbers stay
//! stable from night to night), the movement of every tag family between
//! the night's first and last snapshot, and last the snapshot retention
//! (`taglake tags prune` with the `--keep-*` policy, then deleting the
//! files of snapshots pruned more than `--keep-pruned-days` ago), so a year
//! of nights keeps a bounded number of snapshots. Each step commits on its
//! own and each is idempotent, so a night that failed or was killed is
//! finished by running the same command again.
//!
//! Exit codes: 0 every step ran (rows may have been quarantined: the
//! summary counts them); 1 a step failed (the summary names it, later
//! steps did not run); 2 the command line was wrong; 75 (`EX_TEMPFAIL`)
//! another command holds the warehouse and `--wait` was not given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use taglake_cluster::ClusterOptions;
use taglake_cluster::model::SavedModel;
use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::args::{WaitArg, WarehouseArg};
use crate::report;

/// Exit code when another writer holds the warehouse (sysexits' EX_TEMPFAIL:
/// schedulers retry it later).
const EXIT_LOCKED: u8 = 75;

#[derive(Args)]
pub(crate) struct NightlyArgs {
    /// Order exports of the night: files, folders or globs.
    #[arg(long, num_args = 1..)]
    pub orders: Vec<String>,
    /// Member exports (full or changed rows), ingested before the orders.
    #[arg(long, num_args = 1..)]
    pub members: Vec<String>,
    /// Product exports, ingested first.
    #[arg(long, num_args = 1..)]
    pub products: Vec<String>,
    /// Mapping file (TOML) for the order exports.
    #[arg(long)]
    pub orders_mapping: Option<PathBuf>,
    /// Mapping file (TOML) for the member exports.
    #[arg(long)]
    pub members_mapping: Option<PathBuf>,
    /// Mapping file (TOML) for the product exports.
    #[arg(long)]
    pub products_mapping: Option<PathBuf>,
    /// Orders of unknown members create them instead of being quarantined.
    #[arg(long)]
    pub create_members: bool,
    /// Memory each ingest may hold (`512MiB`, `4GiB`; at least 64MiB).
    #[arg(long, default_value = "2GiB")]
    pub memory: String,
    /// A tag catalog (TOML) added to the built-in one.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Keep replaced versions of the `features` table this many days.
    #[arg(long, default_value_t = 7)]
    pub keep_features_days: u32,
    /// Do not assign communities, even when a model was saved.
    #[arg(long)]
    pub no_cluster: bool,
    /// The snapshot retention after the night (see `taglake tags prune`).
    #[command(flatten)]
    pub retention: crate::args::RetentionArgs,
    /// Files of pruned snapshots, and the files of other tables that a
    /// newer version replaced (`members` after an upsert, `communities`
    /// after an assignment), stay on disk (readable by time travel) this
    /// many days before the night deletes them. The current and the
    /// previous version of every table always stay.
    #[arg(long, default_value_t = 7)]
    pub keep_pruned_days: u32,
    /// Keep every snapshot and every replaced file (no retention step, no
    /// vacuum).
    #[arg(long)]
    pub no_prune: bool,
    /// The summary as text (a line per step) or one JSON document on stdout
    /// (step lines then go to stderr).
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub format: SummaryFormat,
    #[command(flatten)]
    pub wait: WaitArg,
    #[command(flatten)]
    pub wh: WarehouseArg,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
pub(crate) enum SummaryFormat {
    Text,
    Json,
}

/// What the night did, as printed with `--format json`.
#[derive(Serialize, Default)]
struct Summary {
    warehouse: String,
    /// `ok` or `failed`.
    status: &'static str,
    /// The step that failed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    steps: Vec<Step>,
    /// Per tag family: tags, members who entered and who exited a tag of
    /// the family between the night's first and last snapshot.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    families: BTreeMap<String, FamilyMovement>,
    seconds: f64,
    /// Peak resident memory of the whole run.
    peak_memory_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Step {
    step: String,
    /// `done`, `skipped` (with the reason in `note`) or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    seconds: f64,
    /// Peak resident memory during this step (Linux).
    peak_memory_bytes: Option<u64>,
    /// Step figures: rows read/inserted/replaced/unchanged/quarantined for
    /// ingests, tags and member-tags for `tag`, communities for `cluster`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    counts: BTreeMap<&'static str, u64>,
}

#[derive(Serialize, Default)]
struct FamilyMovement {
    tags: u64,
    entered: u64,
    exited: u64,
}

/// Runs the night; the exit code is the command's.
pub(crate) async fn nightly(a: NightlyArgs) -> ExitCode {
    if a.format == SummaryFormat::Json {
        report::human_to_stderr();
    }
    let start = Instant::now();
    let mut summary = Summary { warehouse: a.wh.warehouse.display().to_string(), ..Summary::default() };
    let code = match run(&a, &mut summary).await {
        Ok(()) => {
            summary.status = "ok";
            ExitCode::SUCCESS
        }
        Err(e) => {
            summary.status = "failed";
            summary.error = Some(crate::report::error_text(&e));
            let locked = e
                .downcast_ref::<taglake_storage::Error>()
                .is_some_and(|e| matches!(e, taglake_storage::Error::Locked { .. }));
            if locked { ExitCode::from(EXIT_LOCKED) } else { ExitCode::FAILURE }
        }
    };
    summary.seconds = start.elapsed().as_secs_f64();
    // Each step restarts the high-water mark: the run's peak is the
    // highest of theirs and of what came after the last one.
    summary.peak_memory_bytes =
        summary.steps.iter().filter_map(|s| s.peak_memory_bytes).chain(report::peak_memory()).max();
    match a.format {
        SummaryFormat::Json => match serde_json::to_string_pretty(&summary) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("error: writing the summary: {e}"),
        },
        SummaryFormat::Text => print_text(&summary),
    }
    code
}

// Long on purpose: the night's steps in order, each timed and summarised the same way; splitting them would
// scatter one schedule.
async fn run(a: &NightlyArgs, summary: &mut Summary) -> Result<()> {
    let memory = crate::args::parse_memory(&a.memory)?;
    if a.keep_pruned_days > crate::tags::MAX_KEEP_FEATURES_DAYS {
        anyhow::bail!(
            "--keep-pruned-days {}: at most {} (100 years)",
            a.keep_pruned_days,
            crate::tags::MAX_KEEP_FEATURES_DAYS
        );
    }
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let lock = crate::args::lock_writer(&wh, &a.wait)?;
    let first_snapshot = snapshot::versions(&wh).await?.into_iter().max();

    let inputs = [
        (Table::Products, &a.products, &a.products_mapping),
        (Table::Members, &a.members, &a.members_mapping),
        (Table::Orders, &a.orders, &a.orders_mapping),
    ];
    for (table, files, mapping) in inputs {
        let name = format!("ingest {}", table.name());
        if files.is_empty() {
            summary.steps.push(Step::skipped(name, "no files given"));
            continue;
        }
        let create = a.create_members && table == Table::Orders;
        step(summary, name, async {
            let s = crate::ingest::ingest_files(&wh, &lock, table, files, mapping.as_deref(), create, memory).await?;
            Ok(BTreeMap::from([
                ("files", s.files as u64),
                ("failed_files", s.failed_files.len() as u64),
                ("rows_read", s.rows_read),
                ("inserted", s.inserted),
                ("replaced", s.replaced),
                ("unchanged", s.unchanged),
                ("quarantined", s.quarantined),
                ("new_members", s.new_members),
            ]))
        })
        .await?;
    }

    let tag_args = crate::tags::TagArgs {
        as_of: None,
        catalog: a.catalog.clone(),
        keep_features_days: a.keep_features_days,
        max_family_values: None,
        cluster: Default::default(),
        range_members: None,
    };
    // After the night's ingests freed their buffers, glibc's own mapping
    // threshold has risen: fix it for the refresh (see the function).
    report::fix_mmap_threshold();
    step(summary, "tag".into(), async {
        let s = crate::tags::tag(&wh, &lock, &tag_args).await?;
        Ok(BTreeMap::from([
            ("snapshot", s.snapshot as u64),
            ("base_members", s.base_members),
            ("order_lines", s.order_lines),
            ("tags", s.tags as u64),
            ("member_tags", s.member_tags),
        ]))
    })
    .await?;

    if a.no_cluster {
        summary.steps.push(Step::skipped("cluster".into(), "--no-cluster"));
    } else if !SavedModel::path(&wh).exists() {
        summary.steps.push(Step::skipped(
            "cluster".into(),
            "no saved model: run `taglake cluster` once to fit one; nights then assign with it",
        ));
    } else {
        let options = ClusterOptions::builder().reuse_model(true).build()?;
        step(summary, "cluster".into(), async {
            let s = crate::cluster::fit(&wh, &lock, &options).await?;
            Ok(BTreeMap::from([
                ("snapshot", s.snapshot as u64),
                ("communities", s.model.k as u64),
                ("members_clustered", s.model.profile.members_clustered),
            ]))
        })
        .await?;
    }

    let last_snapshot = snapshot::versions(&wh).await?.into_iter().max();
    match (first_snapshot, last_snapshot) {
        (Some(from), Some(to)) if from != to => {
            let mut families = BTreeMap::new();
            step(summary, "tag movement".into(), async {
                families = movement(&wh, from, to).await?;
                Ok(BTreeMap::from([("from_snapshot", from as u64), ("to_snapshot", to as u64)]))
            })
            .await?;
            summary.families = families;
        }
        _ => summary.steps.push(Step::skipped("tag movement".into(), "no earlier snapshot to compare with")),
    }

    if a.no_prune {
        summary.steps.push(Step::skipped("prune snapshots".into(), "--no-prune"));
        summary.steps.push(Step::skipped("vacuum".into(), "--no-prune"));
        return Ok(());
    }
    let policy = a.retention.retention();
    step(summary, "prune snapshots".into(), async {
        let p = snapshot::prune(&wh, &lock, &policy, false).await?;
        let retain = chrono::Duration::days(a.keep_pruned_days.into());
        let vacuumed = wh.vacuum(&lock, Table::Tags, retain, false).await?;
        Ok(BTreeMap::from([
            ("kept", p.kept.len() as u64),
            ("deleted", p.deleted.len() as u64),
            ("rewritten", p.rewritten.len() as u64),
            ("bytes_removed", p.bytes_removed),
            ("bytes_added", p.bytes_added),
            ("files_vacuumed", vacuumed.files.len() as u64),
            ("bytes_vacuumed", vacuumed.bytes()),
        ]))
    })
    .await?;
    // Without this, every night's member upsert and community assignment
    // left the files they replaced for ever: at 42 M members ~1 GB and
    // ~0.6 GB a night. `tags` is vacuumed above, `features` by `tag`.
    step(summary, "vacuum".into(), async {
        let retain = chrono::Duration::days(a.keep_pruned_days.into());
        let mut counts = BTreeMap::from([("files_vacuumed", 0), ("bytes_vacuumed", 0)]);
        for table in Table::ALL.into_iter().filter(|t| !matches!(t, Table::Tags | Table::Features)) {
            let vacuumed = wh.vacuum(&lock, table, retain, false).await?;
            *counts.entry("files_vacuumed").or_default() += vacuumed.files.len() as u64;
            *counts.entry("bytes_vacuumed").or_default() += vacuumed.bytes();
            counts.insert(vacuumed_key(table), vacuumed.files.len() as u64);
        }
        Ok(counts)
    })
    .await?;
    Ok(())
}

/// The `vacuum` step's count of one table's files.
fn vacuumed_key(table: Table) -> &'static str {
    match table {
        Table::Members => "members_files",
        Table::Orders => "orders_files",
        Table::Products => "products_files",
        Table::MemberIds => "member_ids_files",
        Table::Communities => "communities_files",
        Table::Quarantine => "quarantine_files",
        Table::Tags => "tags_files",
        Table::Features => "features_files",
        Table::Experiments => "experiments_files",
        Table::Audiences => "audiences_files",
    }
}

/// Runs one step, recording its time, peak memory and figures (or its
/// failure, which ends the night).
async fn step(
    summary: &mut Summary,
    name: String,
    work: impl Future<Output = Result<BTreeMap<&'static str, u64>>>,
) -> Result<()> {
    report::reset_peak_memory();
    let start = Instant::now();
    let result = work.await;
    let mut s = Step {
        step: name.clone(),
        status: "done",
        note: None,
        seconds: start.elapsed().as_secs_f64(),
        peak_memory_bytes: report::peak_memory(),
        counts: BTreeMap::new(),
    };
    match result {
        Ok(counts) => {
            s.counts = counts;
            summary.steps.push(s);
            Ok(())
        }
        Err(e) => {
            s.status = "failed";
            s.note = Some(crate::report::error_text(&e));
            summary.steps.push(s);
            Err(e.context(format!("nightly step `{name}`")))
        }
    }
}

impl Step {
    fn skipped(step: String, why: &str) -> Step {
        Step {
            step,
            status: "skipped",
            note: Some(why.into()),
            seconds: 0.0,
            peak_memory_bytes: None,
            counts: BTreeMap::new(),
        }
    }
}

/// Per family: its tags in the newer snapshot and the members who entered
/// or exited each of them between `from` and `to` (summed over the tags).
async fn movement(wh: &Warehouse, from: i64, to: i64) -> Result<BTreeMap<String, FamilyMovement>> {
    let new_tags = snapshot::info(wh, Some(to)).await?.tags;
    let mut out: BTreeMap<String, FamilyMovement> = BTreeMap::new();
    for t in &new_tags {
        out.entry(t.family.clone()).or_default().tags += 1;
    }
    // Tags of the older snapshot only (a catalog edit) keep their family.
    let mut family_of: BTreeMap<String, String> =
        snapshot::info(wh, Some(from)).await?.tags.into_iter().map(|t| (t.name, t.family)).collect();
    family_of.extend(new_tags.into_iter().map(|t| (t.name, t.family)));
    for d in snapshot::diff(wh, from, to).await.with_context(|| format!("comparing snapshots {from} and {to}"))? {
        let family = family_of.get(&d.name).cloned().unwrap_or_default();
        let m = out.entry(family).or_default();
        m.entered += d.entered;
        m.exited += d.exited;
    }
    Ok(out)
}

fn print_text(s: &Summary) {
    println!("nightly: {} in {:.1} s, peak memory {}", s.status, s.seconds, mem(s.peak_memory_bytes));
    for st in &s.steps {
        let counts: Vec<String> = st.counts.iter().map(|(k, v)| format!("{k} {}", report::count(*v))).collect();
        let detail = match st.status {
            "done" => {
                format!("{:.2} s · peak memory {} · {}", st.seconds, mem(st.peak_memory_bytes), counts.join(", "))
            }
            _ => st.note.clone().unwrap_or_default(),
        };
        println!("  {:<16} {:<8} {detail}", st.step, st.status);
    }
    let moved: Vec<(&String, &FamilyMovement)> =
        s.families.iter().filter(|(_, m)| m.entered > 0 || m.exited > 0).collect();
    if !s.families.is_empty() {
        println!(
            "  tag movement per family ({} of {} families moved; --format json lists all):",
            moved.len(),
            s.families.len()
        );
    }
    if !moved.is_empty() {
        println!("  {:<24} {:>6} {:>14} {:>14}", "family", "tags", "entered", "exited");
        for (f, m) in moved {
            println!("  {:<24} {:>6} {:>14} {:>14}", f, m.tags, report::count(m.entered), report::count(m.exited));
        }
    }
    if let Some(e) = &s.error {
        eprintln!("error: {e}");
    }
}

fn mem(b: Option<u64>) -> String {
    b.map(report::bytes).unwrap_or_else(|| "n/a".into())
}
