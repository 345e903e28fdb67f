//! The argument types several subcommands share, and what they do with
//! them: the warehouse folder, `--wait` and the writer lock it governs,
//! `--memory`, `--format`, the snapshot retention flags.
//!
//! Every subcommand module uses this one and none of them uses `cli`, which
//! only dispatches, so the modules form no cycle.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use taglake_storage::{Wait, Warehouse, WriterLock};
use taglake_tagger::snapshot;

#[derive(Args, Clone)]
pub(crate) struct WarehouseArg {
    /// Warehouse directory (one Delta table per folder).
    #[arg(long, env = "TAGLAKE_WAREHOUSE", default_value = "warehouse", global = true)]
    pub(crate) warehouse: PathBuf,
}

#[derive(Args, Clone, Default)]
pub(crate) struct WaitArg {
    /// If another command is writing the warehouse, wait for it to finish instead of failing.
    #[arg(long)]
    pub(crate) wait: bool,
}

/// Takes the warehouse writer lock for this command (see
/// `taglake_storage::lock`): refused with the holder's name, or queued
/// behind it with `--wait`. Hold it until the command ends.
pub(crate) fn lock_writer(wh: &Warehouse, wait: &WaitArg) -> Result<WriterLock> {
    let command = command_line();
    let lock = match wh.lock_writer(&command, Wait::No) {
        Ok(lock) => lock,
        Err(taglake_storage::Error::Locked { holder, .. }) if wait.wait => {
            eprintln!("waiting: the warehouse is being written by {holder}");
            wh.lock_writer(&command, Wait::Yes)?
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(h) = lock.interrupted() {
        eprintln!(
            "note: the previous writer, {h}, stopped before it finished (killed or crashed); what it committed \
             stays, a re-run of it completes its work, and `taglake vacuum` reclaims the files it left"
        );
    }
    Ok(lock)
}

/// This process's command line as a user would type it.
fn command_line() -> String {
    let quote = |a: String| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c)) {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    std::iter::once("taglake".to_string()).chain(std::env::args().skip(1).map(quote)).collect::<Vec<_>>().join(" ")
}

/// `--cluster df://HOST:PORT` of the commands that can run in cluster mode
/// (distributed, on Ballista; not the k-means communities of `taglake cluster`).
#[derive(Args, Clone, Default)]
pub(crate) struct DistributedArg {
    /// Run on a taglake cluster: the scheduler's address (see `taglake scheduler`).
    #[arg(long, env = "TAGLAKE_CLUSTER", value_name = "df://HOST:PORT", global = true)]
    pub(crate) cluster: Option<String>,
}

/// `--memory` of the ingesting commands: a size of at least 64MiB.
pub(crate) fn parse_memory(text: &str) -> Result<usize> {
    taglake_base::units::parse_size(text)
        .filter(|&m| m >= taglake_ingest::MIN_MEMORY)
        .with_context(|| format!("--memory {text:?}: expected a size of at least 64MiB, like 512MiB or 4GiB"))
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// The snapshot retention policy's flags (`tags prune`, `nightly`).
#[derive(Args)]
pub struct RetentionArgs {
    /// Retention: keep the newest this many snapshots.
    #[arg(long, default_value_t = snapshot::Retention::default().keep_last)]
    pub keep_last: usize,
    /// Retention: keep the last snapshot of each of the newest this many as-of days.
    #[arg(long, default_value_t = snapshot::Retention::default().keep_daily)]
    pub keep_daily: usize,
    /// Retention: keep the last snapshot of each of the newest this many as-of months.
    #[arg(long, default_value_t = snapshot::Retention::default().keep_monthly)]
    pub keep_monthly: usize,
}

impl RetentionArgs {
    /// The retention policy the flags give.
    pub fn retention(&self) -> snapshot::Retention {
        snapshot::Retention { keep_last: self.keep_last, keep_daily: self.keep_daily, keep_monthly: self.keep_monthly }
    }
}
