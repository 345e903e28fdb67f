//! Cohort export for experiments: an audience split into arms by a salted
//! hash of each member's external id, minus a global holdout.
//!
//! Why a hash of the *external* id: the dense key of a member is an
//! implementation detail of one warehouse, the id is what the campaign tool
//! and next year's warehouse know. `xxh3(salt ␟ member_id)` mapped to
//! `[0, 1)` decides the arm, so the same salt gives the same arm for the
//! same member in every run and every snapshot, and two salts give
//! independent splits. The global holdout is the same construction with its
//! own fixed salt: a member in it is held out of every export, whatever the
//! audience, unless the export asks for it (it then appears as arm
//! `holdout`).
//!
//! `--stratify-by FAMILY` balances the arms inside each stratum (the first
//! tag of the family a member has, in catalog order, or none): within a
//! stratum, members are ordered by the same salted hash and each arm gets
//! its exact quota (largest remainder). This is deterministic for a given
//! audience and salt, but a member's arm then depends on who else is in its
//! stratum; the unstratified split does not.
//!
//! An export writes two things, a file and a registry row; the registry
//! commit is the one that makes it happen (see [`export`]): the file only
//! appears under its name once its experiment is recorded, and a re-run of
//! an interrupted export finishes it instead of recording another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;
use taglake_storage::{ParamMessage, Table, Warehouse, WriterLock};
use xxhash_rust::xxh3::xxh3_64;

use crate::registry::{self as experiment, Arm, Experiment};
use crate::{Error, Result, audience};

/// Default share of the base in the global holdout.
pub const HOLDOUT_SHARE: f64 = 0.05;
/// Default salt of the global holdout (change it only to start a new holdout).
pub const HOLDOUT_SALT: &str = "taglake-global-holdout";
/// Arm name of holdout members when an export includes them.
pub const HOLDOUT_ARM: &str = "holdout";

/// A position in `[0, 1)` from a salted hash of an external member id.
pub fn unit(salt: &str, member_id: &str) -> f64 {
    let mut bytes = Vec::with_capacity(salt.len() + member_id.len() + 1);
    bytes.extend_from_slice(salt.as_bytes());
    bytes.push(0x1f);
    bytes.extend_from_slice(member_id.as_bytes());
    (xxh3_64(&bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a member is in the global holdout.
pub fn in_holdout(salt: &str, share: f64, member_id: &str) -> bool {
    unit(salt, member_id) < share
}

/// A global holdout share must be at least 0 and below 1.
pub(crate) fn check_holdout_share(share: f64) -> Result<()> {
    if (0.0..1.0).contains(&share) {
        Ok(())
    } else {
        Err(Error::Parameter(
            ParamMessage::param("holdout_share")
                .then_text(format!(" must be at least 0 and below 100 %, not {}", share * 100.0)),
        ))
    }
}

/// The members of `keys` in the global holdout (`salt`, `share`), from one
/// scan of `member_ids` that keeps no id: a bitmap at any base size.
pub async fn held_out(wh: &Warehouse, keys: &RoaringBitmap, salt: &str, share: f64) -> Result<RoaringBitmap> {
    use arrow::array::{Array, AsArray};
    use taglake_storage::scan::{Wanted, scan, table_files};
    let t = Table::MemberIds;
    let files = table_files(wh, t).await?;
    let parts = std::sync::Mutex::new(Vec::new());
    taglake_storage::scan::blocking(|| {
        scan::<_, Error>(t, &files, &[Wanted::plain(t, "member_key"), Wanted::plain(t, "member_id")], |b| {
            let k = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            let id = b.column(1).as_string::<i32>();
            let mut held = RoaringBitmap::new();
            for r in 0..b.num_rows() {
                let Ok(key) = u32::try_from(k.value(r)) else { continue };
                if !id.is_null(r) && keys.contains(key) && in_holdout(salt, share, id.value(r)) {
                    held.insert(key);
                }
            }
            parts.lock().expect("held out").push(held);
            Ok(())
        })
    })?;
    Ok(parts.into_inner().expect("held out").into_iter().fold(RoaringBitmap::new(), |a, b| a | b))
}

/// Arms and their shares (normalised to sum to 1). Made only by
/// [`Split::parse`], which checks the names and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Split(pub(crate) Vec<(String, f64)>);

impl Split {
    /// The arms and their shares, in the order given.
    pub fn arms(&self) -> &[(String, f64)] {
        &self.0
    }

    /// Parses `treatment=90,control=10` (weights need not sum to 100).
    pub fn parse(text: &str) -> Result<Split> {
        let bad = |why: ParamMessage| {
            Error::Parameter(
                ParamMessage::param("split")
                    .then_text(format!(" `{text}`: "))
                    .then(why)
                    .then_text("; write e.g. treatment=90,control=10"),
            )
        };
        let mut arms: Vec<(String, f64)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) =
                part.split_once('=').ok_or_else(|| bad(format!("`{part}` has no `=weight`").into()))?;
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(bad(format!("`{name}` is not an arm name (letters, digits, `_`, `-`)").into()));
            }
            if name == HOLDOUT_ARM {
                let why = format!("`{HOLDOUT_ARM}` is the global holdout's arm; use ");
                return Err(bad(ParamMessage::text(why).then_param("include_holdout")));
            }
            let w: f64 =
                weight.trim().parse().map_err(|_| bad(format!("`{}` is not a number", weight.trim()).into()))?;
            if !(w.is_finite() && w > 0.0) {
                return Err(bad(format!("the weight of `{name}` must be positive").into()));
            }
            if arms.iter().any(|(n, _)| n == name) {
                return Err(bad(format!("arm `{name}` appears twice").into()));
            }
            arms.push((name.to_string(), w));
        }
        if arms.is_empty() {
            return Err(bad("no arms".into()));
        }
        let total: f64 = arms.iter().map(|(_, w)| w).sum();
        Ok(Split(arms.into_iter().map(|(n, w)| (n, w / total)).collect()))
    }

    /// The arm a position in `[0, 1)` falls into.
    pub fn arm_of(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for (i, (_, share)) in self.0.iter().enumerate() {
            acc += share;
            if u < acc {
                return i;
            }
        }
        self.0.len() - 1
    }

    /// Exact arm sizes for `n` members (largest remainder, ties to the
    /// earlier arm).
    pub fn quotas(&self, n: usize) -> Vec<usize> {
        let raw: Vec<f64> = self.0.iter().map(|(_, s)| s * n as f64).collect();
        let mut q: Vec<usize> = raw.iter().map(|r| r.floor() as usize).collect();
        let mut order: Vec<usize> = (0..q.len()).collect();
        order.sort_by(|&a, &b| (raw[b] - raw[b].floor()).total_cmp(&(raw[a] - raw[a].floor())).then(a.cmp(&b)));
        let mut left = n - q.iter().sum::<usize>();
        for i in order.into_iter().cycle() {
            if left == 0 {
                break;
            }
            q[i] += 1;
            left -= 1;
        }
        q
    }
}

/// What to export. Its fields are private: the only way to get one is
/// [`ExportOptionsBuilder::build`], which checks what can be checked
/// without the warehouse (the holdout share, the salt, the output file's
/// format, the columns that are always exported, the window), so
/// [`export`] relies on them and checks only what needs the data (the
/// audience, the stratifying family, the other columns).
#[derive(Debug, Clone)]
pub struct ExportOptions {
    audience: String,
    split: Split,
    salt: String,
    name: Option<String>,
    stratify_by: Option<String>,
    columns: Vec<String>,
    out: PathBuf,
    /// The format `out` names, found when the options were built.
    format: Format,
    holdout_share: f64,
    holdout_salt: String,
    include_holdout: bool,
    launched_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
}

impl ExportOptions {
    /// A builder exporting `audience` split into `split`'s arms by `salt`
    /// to `out`, with the defaults: named after the salt, unstratified, no
    /// extra columns, the global holdout ([`HOLDOUT_SHARE`],
    /// [`HOLDOUT_SALT`]) left out, launched now and open-ended.
    pub fn builder(
        audience: impl Into<String>,
        split: Split,
        salt: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> ExportOptionsBuilder {
        ExportOptionsBuilder {
            audience: audience.into(),
            split,
            salt: salt.into(),
            name: None,
            stratify_by: None,
            columns: Vec::new(),
            out: out.into(),
            holdout_share: HOLDOUT_SHARE,
            holdout_salt: HOLDOUT_SALT.into(),
            include_holdout: false,
            launched_at: Utc::now(),
            ends_at: None,
        }
    }

    /// Audience expression.
    pub fn audience(&self) -> &str {
        &self.audience
    }
    /// Arms.
    pub fn split(&self) -> &Split {
        &self.split
    }
    /// Salt of the assignment.
    pub fn salt(&self) -> &str {
        &self.salt
    }
    /// Experiment name, when it is not the salt.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// Tag family to balance arms within.
    pub fn stratify_by(&self) -> Option<&str> {
        self.stratify_by.as_deref()
    }
    /// Columns of `members` (attributes or tags) or `features` to add.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
    /// Output file (`.csv` or `.parquet`).
    pub fn out(&self) -> &Path {
        &self.out
    }
    /// Global holdout share, in `[0, 1)`.
    pub fn holdout_share(&self) -> f64 {
        self.holdout_share
    }
    /// Global holdout salt.
    pub fn holdout_salt(&self) -> &str {
        &self.holdout_salt
    }
    /// Whether holdout members are exported too (as arm `holdout`).
    pub fn include_holdout(&self) -> bool {
        self.include_holdout
    }
    /// When the experiment starts (orders from then on count in reports).
    pub fn launched_at(&self) -> DateTime<Utc> {
        self.launched_at
    }
    /// When it stops counting as running (`None`: open-ended).
    pub fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.ends_at
    }
}

/// The export as given; [`build`](Self::build) checks it.
#[derive(Debug, Clone)]
pub struct ExportOptionsBuilder {
    audience: String,
    split: Split,
    salt: String,
    name: Option<String>,
    stratify_by: Option<String>,
    columns: Vec<String>,
    out: PathBuf,
    holdout_share: f64,
    holdout_salt: String,
    include_holdout: bool,
    launched_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
}

impl ExportOptionsBuilder {
    /// Experiment name in the registry (`None`: the salt).
    pub fn name(mut self, name: impl Into<Option<String>>) -> Self {
        self.name = name.into();
        self
    }
    /// Tag family to balance arms within (`None`: unstratified).
    pub fn stratify_by(mut self, family: impl Into<Option<String>>) -> Self {
        self.stratify_by = family.into();
        self
    }
    /// Columns of `members` (attributes or tags) or `features` to add.
    pub fn columns(mut self, columns: Vec<String>) -> Self {
        self.columns = columns;
        self
    }
    /// Share of all members in the global holdout: at least 0, below 1.
    pub fn holdout_share(mut self, share: f64) -> Self {
        self.holdout_share = share;
        self
    }
    /// Salt of the global holdout (change it only to start a new holdout).
    pub fn holdout_salt(mut self, salt: impl Into<String>) -> Self {
        self.holdout_salt = salt.into();
        self
    }
    /// Export holdout members too, as arm `holdout`.
    pub fn include_holdout(mut self, yes: bool) -> Self {
        self.include_holdout = yes;
        self
    }
    /// When the experiment starts.
    pub fn launched_at(mut self, at: DateTime<Utc>) -> Self {
        self.launched_at = at;
        self
    }
    /// When it stops counting as running: after the launch (`None`:
    /// open-ended).
    pub fn ends_at(mut self, at: impl Into<Option<DateTime<Utc>>>) -> Self {
        self.ends_at = at.into();
        self
    }

    /// Checks the export before anything is read, in this order: the
    /// holdout share, a salt that is not blank (the split depends on it),
    /// an output file named `.csv` or `.parquet`, no extra column the
    /// cohort always has, and an end after the launch (an experiment that
    /// ends before it starts is never running).
    pub fn build(self) -> Result<ExportOptions> {
        check_holdout_share(self.holdout_share)?;
        if self.salt.trim().is_empty() {
            return Err(Error::Parameter(
                ParamMessage::text("the salt is empty: give ")
                    .then_param("salt")
                    .then_text(" (the split depends on it)"),
            ));
        }
        let format = Format::of(&self.out)?;
        if let Some(c) = self.columns.iter().find(|c| *c == "member_id" || *c == "arm") {
            return Err(Error::Parameter(
                ParamMessage::param("columns").then_text(format!(": `{c}` is always exported")),
            ));
        }
        if let Some(ends_at) = self.ends_at
            && ends_at <= self.launched_at
        {
            return Err(Error::Parameter(
                ParamMessage::param("ends_at")
                    .then_text(format!(" {ends_at} must be after "))
                    .then_param("launched_at")
                    .then_text(format!(" {}", self.launched_at)),
            ));
        }
        Ok(ExportOptions {
            audience: self.audience,
            split: self.split,
            salt: self.salt,
            name: self.name,
            stratify_by: self.stratify_by,
            columns: self.columns,
            out: self.out,
            format,
            holdout_share: self.holdout_share,
            holdout_salt: self.holdout_salt,
            include_holdout: self.include_holdout,
            launched_at: self.launched_at,
            ends_at: self.ends_at,
        })
    }
}

/// What an export did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    /// The recorded experiment.
    pub experiment: Experiment,
    /// Members the audience selected (for a re-run that found its
    /// experiment recorded: the members it exported).
    pub audience_members: u64,
    /// Of those, held out (not exported unless asked for; 0 for a re-run
    /// that found its experiment recorded).
    pub held_out: u64,
    /// Rows written.
    pub rows: u64,
    /// An earlier run of the same export had recorded the experiment (it
    /// was killed before its file was in place, or it finished): the file
    /// was written again from the recorded members and nothing new was
    /// recorded.
    pub reused: bool,
}

/// Splits the audience, writes the file and records the experiment.
///
/// The registry commit is what makes an export happen: the cohort is first
/// written completely to a hidden file next to `out`
/// (`.NAME.taglake-export`), then the experiment is recorded, then the file
/// is renamed to `out`. A kill before the commit leaves no experiment and
/// no `out`; a kill after it leaves the experiment and its members
/// `in_experiment`, and the same export run again finds it (same name,
/// audience, split, salt, stratification, holdout and output file), writes
/// `out` from the recorded members (the same bytes) and records nothing
/// new. So a re-run of an export never records a second experiment, even
/// when its audience excludes `in_experiment`.
pub async fn export(wh: &Warehouse, lock: &WriterLock, o: &ExportOptions) -> Result<ExportSummary> {
    lock.check(wh)?;
    let format = o.format;
    let output = std::path::absolute(&o.out)
        .map_err(|e| Error::File { path: o.out.clone(), source: e.into() })?
        .display()
        .to_string();
    let (ctx, tags) = crate::open(wh).await?;
    let columns = resolve_columns(&ctx, &o.columns).await?;
    if let Some(recorded) = experiment::list(wh).await?.into_iter().find(|e| same_export(e, o, &output)) {
        return rewrite(wh, &ctx, o, format, &columns, recorded).await;
    }
    let (tags, snapshot) = crate::tagset::tagged(tags)?;
    let node = audience::parse(&o.audience, &tags)?;
    let selected = audience::evaluate(&node, &tags)?;
    let strata = match &o.stratify_by {
        None => None,
        Some(family) => Some(strata_family(&tags, family, snapshot)?),
    };
    let members = taglake_tagger::snapshot::member_ids(wh, &selected).await?;
    if members.len() as u64 != selected.len() {
        return Err(Error::Corrupt(format!(
            "{} of the audience's {} members have no entry in member_ids",
            selected.len() - members.len() as u64,
            selected.len()
        )));
    }
    let (arm, held_out) = assign_arms(o, &tags, &members, strata.as_deref())?;
    let mut names: Vec<String> = o.split.0.iter().map(|(n, _)| n.clone()).collect();
    names.push(HOLDOUT_ARM.into());
    let (cohort, bitmaps) = exported(&members, &arm, &names)?;
    let rows = cohort.num_rows() as u64;
    let batch = with_columns(&ctx, cohort, &columns).await?;
    let pending = Pending::write(&o.out, format, &batch)?;
    let mut experiment = new_experiment(o, snapshot, names, bitmaps, output);
    experiment.id = match experiment::record(wh, lock, experiment.clone()).await {
        Ok(id) => id,
        Err(e) => {
            pending.discard();
            return Err(e);
        }
    };
    pending.publish()?;
    Ok(ExportSummary { experiment, audience_members: selected.len(), held_out, rows, reused: false })
}

/// The tags of the family `--stratify-by` names, in catalog order (an
/// error naming the closest family when there is no such family).
fn strata_family(tags: &crate::TagSet, family: &str, snapshot: i64) -> Result<Vec<usize>> {
    let f = tags.family(family);
    if f.is_empty() {
        let mut families: Vec<&str> = tags.tags.iter().map(|t| t.family.as_str()).collect();
        families.sort_unstable();
        families.dedup();
        let hint = taglake_base::suggest(family, families.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(Error::Parameter(
            ParamMessage::param("stratify_by")
                .then_text(format!(": no tag family `{family}` in snapshot {snapshot}{hint}")),
        ));
    }
    Ok(f)
}

/// Each member's arm: an index into the split, the split's length for an
/// exported holdout member, `usize::MAX` for one not exported; and how
/// many members are in the global holdout.
fn assign_arms(
    o: &ExportOptions,
    tags: &crate::TagSet,
    members: &[(u32, String)],
    strata: Option<&[usize]>,
) -> Result<(Vec<usize>, u64)> {
    let holdout_arm = o.split.0.len();
    let mut arm = vec![usize::MAX; members.len()];
    let mut candidates = Vec::new();
    let mut held_out = 0u64;
    for (i, (_, id)) in members.iter().enumerate() {
        if in_holdout(&o.holdout_salt, o.holdout_share, id) {
            held_out += 1;
            if o.include_holdout {
                arm[i] = holdout_arm;
            }
        } else {
            candidates.push(i);
        }
    }
    match strata {
        None => {
            for &i in &candidates {
                arm[i] = o.split.arm_of(unit(&o.salt, &members[i].1));
            }
        }
        Some(family) => assign_stratified(o, tags, members, family, &candidates, &mut arm)?,
    }
    Ok((arm, held_out))
}

/// The arms of `candidates` (indices into `members`) with each stratum
/// (the first tag of `family` a member has, or none) split by exact quotas,
/// in the order of the salted hash (ties by member id).
fn assign_stratified(
    o: &ExportOptions,
    tags: &crate::TagSet,
    members: &[(u32, String)],
    family: &[usize],
    candidates: &[usize],
    arm: &mut [usize],
) -> Result<()> {
    let bitmaps = family.iter().map(|&t| tags.bitmap(t)).collect::<Result<Vec<_>>>()?;
    let stratum_of = |key: u32| bitmaps.iter().position(|b| b.contains(key));
    let mut by_stratum: std::collections::BTreeMap<Option<usize>, Vec<(f64, usize)>> = Default::default();
    for &i in candidates {
        let (key, id) = &members[i];
        by_stratum.entry(stratum_of(*key)).or_default().push((unit(&o.salt, id), i));
    }
    for (_, mut group) in by_stratum {
        group.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| members[a.1].1.cmp(&members[b.1].1)));
        let quotas = o.split.quotas(group.len());
        let mut it = group.into_iter();
        for (a, q) in quotas.into_iter().enumerate() {
            for (_, i) in it.by_ref().take(q) {
                arm[i] = a;
            }
        }
    }
    Ok(())
}

/// The exported members as a [`cohort`], in member order, and the members
/// of each arm of `names` as a bitmap.
fn exported(members: &[(u32, String)], arm: &[usize], names: &[String]) -> Result<(RecordBatch, Vec<RoaringBitmap>)> {
    let mut bitmaps = vec![RoaringBitmap::new(); names.len()];
    let (mut keys, mut ids, mut arms) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (key, id)) in members.iter().enumerate() {
        if arm[i] == usize::MAX {
            continue;
        }
        bitmaps[arm[i]].insert(*key);
        keys.push(*key as i64);
        ids.push(id.as_str());
        arms.push(names[arm[i]].as_str());
    }
    Ok((cohort(keys, ids, arms)?, bitmaps))
}

/// The registry row of a new export (id 0 until recorded): the split's
/// arms and, when exported, the holdout arm.
fn new_experiment(
    o: &ExportOptions,
    snapshot: i64,
    names: Vec<String>,
    bitmaps: Vec<RoaringBitmap>,
    output: String,
) -> Experiment {
    let shares = o.split.0.iter().map(|(_, s)| *s).chain(std::iter::once(0.0));
    let arms: Vec<Arm> = names
        .into_iter()
        .zip(shares)
        .zip(bitmaps)
        .filter(|((n, _), _)| n != HOLDOUT_ARM || o.include_holdout)
        .map(|((name, share), bitmap)| Arm { name, share, members: bitmap.len(), bitmap })
        .collect();
    Experiment {
        id: 0,
        name: o.name.clone().unwrap_or_else(|| o.salt.clone()),
        audience: o.audience.clone(),
        snapshot,
        salt: o.salt.clone(),
        stratify_by: o.stratify_by.clone(),
        holdout_share: o.holdout_share,
        holdout_salt: o.holdout_salt.clone(),
        arms,
        launched_at: o.launched_at,
        ends_at: o.ends_at,
        created_at: Utc::now(),
        output: Some(output),
    }
}

/// Whether `e` was recorded by this same export (the options that decide
/// who is in which arm, and the output file).
fn same_export(e: &Experiment, o: &ExportOptions, output: &str) -> bool {
    let arms: Vec<(&str, f64)> =
        e.arms.iter().filter(|a| a.name != HOLDOUT_ARM).map(|a| (a.name.as_str(), a.share)).collect();
    let split: Vec<(&str, f64)> = o.split.0.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    e.name == *o.name.as_ref().unwrap_or(&o.salt)
        && e.audience == o.audience
        && e.salt == o.salt
        && e.stratify_by == o.stratify_by
        && e.holdout_share == o.holdout_share
        && e.holdout_salt == o.holdout_salt
        && arms == split
        && e.arms.iter().any(|a| a.name == HOLDOUT_ARM) == o.include_holdout
        && e.output.as_deref() == Some(output)
}

/// The file of an experiment an earlier run of this export recorded,
/// written again from its recorded members.
async fn rewrite(
    wh: &Warehouse,
    ctx: &SessionContext,
    o: &ExportOptions,
    format: Format,
    columns: &[(Table, String)],
    recorded: Experiment,
) -> Result<ExportSummary> {
    let mut everyone = RoaringBitmap::new();
    for a in &recorded.arms {
        everyone |= &a.bitmap;
    }
    let members = taglake_tagger::snapshot::member_ids(wh, &everyone).await?;
    let (mut keys, mut ids, mut arms) = (Vec::new(), Vec::new(), Vec::new());
    for (key, id) in &members {
        let arm = recorded.arms.iter().find(|a| a.bitmap.contains(*key)).expect("a recorded member has an arm");
        keys.push(i64::from(*key));
        ids.push(id.as_str());
        arms.push(arm.name.as_str());
    }
    let rows = keys.len() as u64;
    if rows != everyone.len() {
        return Err(Error::Corrupt(format!(
            "{} members of experiment {} have no entry in member_ids",
            everyone.len() - rows,
            recorded.id
        )));
    }
    let batch = with_columns(ctx, cohort(keys, ids, arms)?, columns).await?;
    Pending::write(&o.out, format, &batch)?.publish()?;
    Ok(ExportSummary { experiment: recorded, audience_members: rows, held_out: 0, rows, reused: true })
}

/// The cohort's keys, ids and arms as a batch.
fn cohort(keys: Vec<i64>, ids: Vec<&str>, arms: Vec<&str>) -> Result<RecordBatch> {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("member_key", DataType::Int64, false),
            Field::new("member_id", DataType::Utf8, false),
            Field::new("arm", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(keys)) as ArrayRef,
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(arms)),
        ],
    )
    .map_err(|e| Error::datafusion(e.into()))
}

/// Where each `--columns` entry comes from: `members` (attributes and tags)
/// or `features`, checked before any work is done (`member_id` and `arm`
/// were refused when the options were built).
async fn resolve_columns(ctx: &SessionContext, columns: &[String]) -> Result<Vec<(Table, String)>> {
    let mut schemas = Vec::new();
    for t in [Table::Members, Table::Features] {
        if let Ok(p) = ctx.table_provider(t.name()).await {
            schemas.push((t, p.schema()));
        }
    }
    let mut out: Vec<(Table, String)> = Vec::new();
    for c in columns {
        if out.iter().any(|(_, have)| have == c) {
            continue;
        }
        match schemas.iter().find(|(_, s)| s.index_of(c).is_ok()) {
            Some((t, _)) => out.push((*t, c.clone())),
            None => {
                let known = schemas.iter().flat_map(|(_, s)| s.fields().iter().map(|f| f.name().as_str()));
                let hint =
                    taglake_base::suggest(c, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                return Err(Error::Parameter(
                    ParamMessage::param("columns")
                        .then_text(format!(": `{c}` is not a column of members or features{hint}")),
                ));
            }
        }
    }
    Ok(out)
}

/// The cohort (`member_key`, `member_id`, `arm`) with the chosen columns,
/// ordered by `member_id`; `member_key` is dropped.
async fn with_columns(ctx: &SessionContext, cohort: RecordBatch, columns: &[(Table, String)]) -> Result<RecordBatch> {
    let sql_err = Error::datafusion;
    let alias = |t: Table| if t == Table::Members { "m" } else { "f" };
    let mut select = vec!["c.member_id".to_string(), "c.arm".to_string()];
    select.extend(columns.iter().map(|(t, c)| format!("{}.\"{}\"", alias(*t), c.replace('"', "\"\""))));
    let mut joins = String::new();
    for t in [Table::Members, Table::Features] {
        if columns.iter().any(|(have, _)| *have == t) {
            let a = alias(t);
            joins.push_str(&format!(" LEFT JOIN {} {a} ON {a}.member_key = c.member_key", t.name()));
        }
    }
    let table = MemTable::try_new(cohort.schema(), vec![vec![cohort]]).map_err(sql_err)?;
    ctx.register_table("__cohort", Arc::new(table)).map_err(sql_err)?;
    let sql = format!("SELECT {} FROM __cohort c{joins} ORDER BY c.member_id", select.join(", "));
    let result = async {
        let frame = ctx.sql(&sql).await.map_err(sql_err)?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(sql_err)?;
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| Error::datafusion(e.into()))
    }
    .await;
    ctx.deregister_table("__cohort").map_err(sql_err)?;
    result
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Csv,
    Parquet,
}

impl Format {
    fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("parquet") => Ok(Format::Parquet),
            _ => Err(Error::Parameter(
                ParamMessage::param("out").then_text(format!(" {}: write a .csv or .parquet file", path.display())),
            )),
        }
    }
}

/// A cohort file written completely under a hidden name next to its
/// destination (`.NAME.taglake-export`), not yet in place: a reader never
/// sees half a cohort, nor a cohort whose experiment is not recorded. The
/// name is fixed, so a killed export's leftover is overwritten by the next.
struct Pending {
    tmp: PathBuf,
    path: PathBuf,
}

impl Pending {
    fn write(path: &Path, format: Format, batch: &RecordBatch) -> Result<Pending> {
        let err = |source: crate::Cause| Error::File { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| err("not a file name".into()))?.to_string_lossy();
        let tmp = dir.join(format!(".{name}.taglake-export"));
        let file = std::fs::File::create(&tmp).map_err(|e| err(e.into()))?;
        let pending = Pending { tmp, path: path.to_path_buf() };
        let written = match format {
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&file);
                w.write(batch).map_err(|e| err(e.into()))
            }
            Format::Parquet => parquet::arrow::ArrowWriter::try_new(&file, batch.schema(), None)
                .and_then(|mut w| w.write(batch).and_then(|()| w.close().map(|_| ())))
                .map_err(|e| err(e.into())),
        };
        match written.and_then(|()| file.sync_all().map_err(|e| err(e.into()))) {
            Ok(()) => Ok(pending),
            Err(e) => {
                pending.discard();
                Err(e)
            }
        }
    }

    /// Moves the file into place.
    fn publish(self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::File { path: self.path.clone(), source: e.into() })
    }

    /// Removes the file.
    fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parse_normalise_and_refuse_bad_input() {
        let s = Split::parse("treatment=90, control=10").unwrap();
        assert_eq!(s, Split(vec![("treatment".into(), 0.9), ("control".into(), 0.1)]));
        assert_eq!(Split::parse("a=1,b=1,c=2").unwrap().0[2].1, 0.5);
        for (bad, why) in [
            ("treatment", "has no `=weight`"),
            ("a=x", "`x` is not a number"),
            ("a=0,b=1", "must be positive"),
            ("a=1,a=2", "appears twice"),
            ("holdout=5,b=95", "global holdout"),
            ("a b=1", "not an arm name"),
            ("", "no arms"),
        ] {
            let e = Split::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// The error as `taglake export` shows it (`holdout_share` is `--holdout` there).
    fn shown(e: Error) -> String {
        match e {
            Error::Parameter(m) => m.render(|p| match p {
                "holdout_share" => "--holdout".into(),
                p => format!("--{}", p.replace('_', "-")),
            }),
            other => other.to_string(),
        }
    }

    fn builder() -> ExportOptionsBuilder {
        ExportOptions::builder("tier_gold", Split::parse("a=1,b=1").unwrap(), "spring", "cohort.csv")
    }

    #[test]
    fn every_bad_option_is_refused_naming_its_parameter() {
        let err = |b: ExportOptionsBuilder| {
            let e = b.build().unwrap_err();
            let Error::Parameter(m) = &e else { panic!("a parameter error: {e:?}") };
            (m.parameter(), e.to_string(), shown(e))
        };
        for share in [1.0, 1.5, -0.01, f64::NAN] {
            let (p, text, flag) = err(builder().holdout_share(share));
            assert_eq!(p, Some("holdout_share"));
            assert!(text.starts_with("`holdout_share` must be at least 0 and below 100 %, not "), "{text}");
            assert!(flag.starts_with("--holdout must be at least 0 and below 100 %"), "{flag}");
        }
        for salt in ["", "  "] {
            let b = ExportOptions::builder("tier_gold", Split::parse("a=1").unwrap(), salt, "cohort.csv");
            assert_eq!(
                err(b),
                (
                    Some("salt"),
                    "the salt is empty: give `salt` (the split depends on it)".into(),
                    "the salt is empty: give --salt (the split depends on it)".into()
                )
            );
        }
        for out in ["cohort.xlsx", "cohort", "dir/"] {
            let b = ExportOptions::builder("tier_gold", Split::parse("a=1").unwrap(), "s", out);
            let (p, text, flag) = err(b);
            assert_eq!(p, Some("out"));
            assert!(text.ends_with(": write a .csv or .parquet file"), "{text}");
            assert!(flag.starts_with("--out "), "{flag}");
        }
        for c in ["member_id", "arm"] {
            let (p, text, flag) = err(builder().columns(vec!["city".into(), c.into()]));
            assert_eq!(p, Some("columns"));
            assert_eq!(text, format!("`columns`: `{c}` is always exported"));
            assert_eq!(flag, format!("--columns: `{c}` is always exported"));
        }
        let launch = "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        for ends in [launch, launch - chrono::Duration::hours(1)] {
            let (p, text, _) = err(builder().launched_at(launch).ends_at(ends));
            assert_eq!(p, Some("ends_at"));
            assert_eq!(text, format!("`ends_at` {ends} must be after `launched_at` {launch}"));
        }
    }

    #[test]
    fn good_options_read_back_as_built() {
        let before = Utc::now();
        let o = builder().build().unwrap();
        assert_eq!((o.audience(), o.salt(), o.name(), o.stratify_by()), ("tier_gold", "spring", None, None));
        assert_eq!(o.split(), &Split::parse("a=1,b=1").unwrap());
        assert!(o.columns().is_empty());
        assert_eq!(o.out(), Path::new("cohort.csv"));
        assert!(matches!(o.format, Format::Csv));
        assert_eq!((o.holdout_share(), o.holdout_salt(), o.include_holdout()), (HOLDOUT_SHARE, HOLDOUT_SALT, false));
        assert!(o.launched_at() >= before && o.ends_at().is_none());
        let launch = "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let ends = launch + chrono::Duration::days(28);
        let o = ExportOptions::builder("vip", Split::parse("t=9,c=1").unwrap(), "s1", "out/cohort.PARQUET")
            .name(Some("spring push".to_string()))
            .stratify_by(Some("tier".to_string()))
            .columns(vec!["city".into(), "tier_gold".into()])
            .holdout_share(0.0)
            .holdout_salt("another-holdout")
            .include_holdout(true)
            .launched_at(launch)
            .ends_at(ends)
            .build()
            .unwrap();
        assert_eq!(
            (o.audience(), o.salt(), o.name(), o.stratify_by()),
            ("vip", "s1", Some("spring push"), Some("tier"))
        );
        assert_eq!(o.columns(), ["city", "tier_gold"]);
        assert_eq!(o.out(), Path::new("out/cohort.PARQUET"));
        assert!(matches!(o.format, Format::Parquet));
        assert_eq!((o.holdout_share(), o.holdout_salt(), o.include_holdout()), (0.0, "another-holdout", true));
        assert_eq!((o.launched_at(), o.ends_at()), (launch, Some(ends)));
    }

    #[test]
    fn quotas_are_exact_and_arm_of_follows_the_shares() {
        let s = Split::parse("a=90,b=10").unwrap();
        assert_eq!(s.quotas(11), vec![10, 1]);
        assert_eq!(s.quotas(0), vec![0, 0]);
        let t = Split::parse("a=1,b=1,c=1").unwrap();
        assert_eq!(t.quotas(10), vec![4, 3, 3]);
        assert_eq!(s.arm_of(0.0), 0);
        assert_eq!(s.arm_of(0.8999), 0);
        assert_eq!(s.arm_of(0.9001), 1);
        assert_eq!(s.arm_of(0.999_999_999), 1);
    }

    /// Chi-square statistic of observed counts against expected shares.
    fn chi_square(observed: &[u64], shares: &[f64]) -> f64 {
        let n: u64 = observed.iter().sum();
        observed.iter().zip(shares).map(|(&o, &s)| (o as f64 - s * n as f64).powi(2) / (s * n as f64)).sum()
    }

    #[test]
    fn hashed_arms_match_their_shares_and_salts_are_independent() {
        let s = Split::parse("treatment=70,control=20,other=10").unwrap();
        let ids: Vec<String> = (0..50_000).map(|i| format!("M{i:07}")).collect();
        let mut counts = [0u64; 3];
        let mut joint = [[0u64; 3]; 3];
        for id in &ids {
            let a = s.arm_of(unit("spring-2026", id));
            let b = s.arm_of(unit("autumn-2026", id));
            counts[a] += 1;
            joint[a][b] += 1;
        }
        // 99.9 % critical value of chi-square with 2 degrees of freedom.
        assert!(chi_square(&counts, &[0.7, 0.2, 0.1]) < 13.82, "{counts:?}");
        // Independence: 4 degrees of freedom, 99.9 % critical value 18.47.
        let mut stat = 0.0;
        for a in 0..3 {
            for b in 0..3 {
                let row: u64 = joint[a].iter().sum();
                let col: u64 = (0..3).map(|x| joint[x][b]).sum();
                let expected = row as f64 * col as f64 / ids.len() as f64;
                stat += (joint[a][b] as f64 - expected).powi(2) / expected;
            }
        }
        assert!(stat < 18.47, "{stat} {joint:?}");
        // The holdout is about its share, and the same member always lands the same way.
        let held = ids.iter().filter(|id| in_holdout(HOLDOUT_SALT, HOLDOUT_SHARE, id)).count() as u64;
        assert!(chi_square(&[held, ids.len() as u64 - held], &[0.05, 0.95]) < 10.83, "{held}");
        assert_eq!(unit("s", "M1"), unit("s", "M1"));
        assert_ne!(unit("s", "M1"), unit("t", "M1"));
        // Salt and id are separated: ("ab","c") is not ("a","bc").
        assert_ne!(unit("ab", "c"), unit("a", "bc"));
    }
}
