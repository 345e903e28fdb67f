//! The global holdout's report: the lift of all marketing together.
//!
//! Members in the global holdout are left out of every export, so over any
//! window the members outside it received everything marketing did and the
//! holdout received none of it. Comparing the two (with CUPED and the same
//! tests as an experiment report, through [`analyse`]) measures what all
//! campaigns together changed. The comparison is only as good as the
//! holdout: its size against its configured share (a chi-square check), and
//! whether any holdout member was exported into an experiment arm after all.

use chrono::{DateTime, Utc};
use roaring::RoaringBitmap;
use taglake_storage::Warehouse;
use taglake_storage::scan::table_files;

use super::analysis::{CupedPeriod, windows_of};
use super::{Analysis, ReportOptions, analyse, from_micros, list};
use crate::activity::{day_start, newest_order, scan_activity};
use crate::export::{HOLDOUT_ARM, held_out};
use crate::stats::{self, Srm};
use crate::{Error, Result};

/// Arm name of the members outside the holdout.
pub const MARKETED_ARM: &str = "marketed";

/// The holdout report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HoldoutReport {
    /// The holdout's salt.
    pub salt: String,
    /// Its configured share of the base.
    pub share: f64,
    /// Members in the warehouse.
    pub members: u64,
    /// Of them, in the holdout.
    pub held_out: u64,
    /// `held_out ÷ members`.
    pub observed_share: f64,
    /// Holdout against the rest, against the configured share.
    pub srm: Option<Srm>,
    /// Holdout members found in an exported arm (other than an arm named
    /// `holdout`, which an export with `--include-holdout` makes): 0 for a
    /// clean holdout. An export with another holdout salt or a smaller
    /// share is how members get there.
    pub exported_holdout_members: u64,
    /// The experiments those members were exported in.
    pub leaking_experiments: Vec<i64>,
    /// Start of the window.
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive): the start of the newest order's day.
    pub window_end: DateTime<Utc>,
    /// The CUPED pre-period.
    pub cuped: Option<CupedPeriod>,
    /// `marketed` against `holdout`, every metric.
    pub analysis: HoldoutAnalysis,
}

/// [`Analysis`] as serialised.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HoldoutAnalysis {
    /// `marketed`, then `holdout`.
    pub arms: Vec<super::ArmResult>,
    /// `marketed` against `holdout`.
    pub comparisons: Vec<super::Comparison>,
    /// P-values adjusted together.
    pub tests: usize,
}

impl From<Analysis> for HoldoutAnalysis {
    fn from(a: Analysis) -> Self {
        HoldoutAnalysis { arms: a.arms, comparisons: a.comparisons, tests: a.tests }
    }
}

/// The holdout (`salt`, `share`) against every other member over the
/// `options` window ending at the newest order's day.
pub async fn holdout_report(wh: &Warehouse, salt: &str, share: f64, options: &ReportOptions) -> Result<HoldoutReport> {
    if !(share > 0.0 && share < 1.0) {
        return Err(Error::Invalid(format!(
            "the holdout share must be above 0 and below 100 %, not {}",
            share * 100.0
        )));
    }
    let member_files = table_files(wh, taglake_storage::Table::Members).await?;
    let everyone = taglake_storage::scan::blocking(|| crate::tagset::member_keys(&member_files))?;
    let held = held_out(wh, &everyone, salt, share).await?;
    let marketed = &everyone - &held;
    let newest = newest_order(wh)
        .await?
        .ok_or_else(|| Error::Invalid("the warehouse has no orders: nothing to compare".into()))?;
    let end = from_micros(day_start(newest));
    let start = end
        .checked_sub_signed(options.window())
        .ok_or_else(|| Error::Invalid("the window reaches before the first representable date".into()))?;
    let (windows, cuped) = windows_of(start, end, options.cuped_lookback())?;
    let activity = scan_activity(wh, &everyone, &windows).await?;
    let analysis = analyse(&[(MARKETED_ARM, &marketed), (HOLDOUT_ARM, &held)], 1, &activity, options)?;
    let mut leaking = Vec::new();
    let mut exported = RoaringBitmap::new();
    for e in list(wh).await? {
        let mut arms = RoaringBitmap::new();
        e.arms.iter().filter(|a| a.name != HOLDOUT_ARM).for_each(|a| arms |= &a.bitmap);
        // An export with another holdout salt or a smaller share took some
        // of these members: whatever it sent them, this holdout got it.
        let inside = &arms & &held;
        if !inside.is_empty() {
            leaking.push(e.id);
            exported |= inside;
        }
    }
    Ok(HoldoutReport {
        salt: salt.to_string(),
        share,
        members: everyone.len(),
        held_out: held.len(),
        observed_share: if everyone.is_empty() { 0.0 } else { held.len() as f64 / everyone.len() as f64 },
        srm: stats::srm(&[marketed.len(), held.len()], &[1.0 - share, share]),
        exported_holdout_members: exported.len(),
        leaking_experiments: leaking,
        window_start: start,
        window_end: end,
        cuped,
        analysis: analysis.into(),
    })
}
