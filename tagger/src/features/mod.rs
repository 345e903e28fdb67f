//! Per-member features, computed in one parallel pass over the orders.
//!
//! Every per-member quantity lives in plain arrays indexed by the dense
//! `member_key`, split into shards of [`CHUNK`] members (one roaring
//! container each). Row groups of the orders table are decoded on rayon
//! threads; each decoded batch is grouped by shard and applied under that
//! shard's lock, so two threads only wait for each other when they touch
//! the same 65,536 members at the same moment. No hash map is touched per
//! line: text columns arrive dictionary-encoded and each batch maps its few
//! distinct values to global codes once.
//!
//! Two quantities need care to be exact and deterministic whatever the
//! thread schedule:
//! - **Money** is summed as integers in 1/10,000 of a currency unit, so the
//!   sums do not depend on the order lines arrive in (a tier boundary at
//!   exactly 6,000 growth points is hit exactly).
//! - **Orders** are distinct `order_id`s. Each line contributes a 128-bit
//!   record (member, a 40-bit hash of the order id, day, store, channel,
//!   part of day) to its shard; consecutive lines of the same order collapse
//!   on the way in. After the pass each shard sorts its records and keeps
//!   the first of each (member, order) group. A 40-bit hash can only
//!   confuse two orders *of the same member*: with 1,000 orders a member the
//!   chance is about 5 in 10⁷ per member.
//!
//! Definitions (as of a date D; only lines with `ordered_at < D` count;
//! windows are `[D − n days, D)` on UTC dates) are spelled out column by
//! column in [`FeatureSet::chunk`].
//!
//! The pass is split by what it does: [`scan`] reads the tables into
//! per-member accumulators, one [`shard`] of them per chunk of keys, text
//! values become codes of a [`dictionary`], and [`columns`] turns a
//! shard into the feature columns of its chunk. This module holds what the
//! rest of the crate uses.

mod columns;
mod dictionary;
mod scan;
mod shard;

use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use taglake_storage::scan::table_files;
use taglake_storage::{Table, Warehouse};

pub use self::dictionary::{Dictionary, slug, unique_slugs};
use self::dictionary::{Interner, Interners};
use self::scan::{accumulate, compute_blocking};
use self::shard::Shard;
use crate::{Error, Result};

/// Members per shard and per evaluation chunk: one roaring container.
pub const CHUNK: usize = 1 << 16;
/// Money is summed in these units per currency unit.
const UNITS: f64 = 10_000.0;
const DAY_US: i64 = 86_400_000_000;
const NO_DAY: i32 = i32::MIN;
const NO_CODE: u32 = u32::MAX;
const NO_STORE: u32 = 0xFF_FFFF;
const NO_POINTS: i64 = i64::MIN;

/// Names of the weekday and part-of-day columns.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// Parts of the day by the hour of `ordered_at`: 0–5, 6–11, 12–17, 18–23.
pub const DAYPARTS: [&str; 4] = ["night", "morning", "afternoon", "evening"];

/// Options of a feature computation.
#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// The date D; `None` = the day after the newest order.
    pub as_of: Option<NaiveDate>,
    /// Growth points per currency unit spent in the last 365 days.
    pub growth_per_unit: f64,
    /// Most distinct `orders.category` values with per-member accumulators
    /// (each costs 10 bytes per member). Past it the per-category features
    /// are left out, with a note in [`FeatureSet::skipped`].
    pub max_family_values: usize,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            as_of: None,
            growth_per_unit: 10.0,
            max_family_values: crate::catalog::DEFAULT_MAX_FAMILY_VALUES,
        }
    }
}
/// Every member's accumulated state, ready to be turned into feature columns.
pub struct FeatureSet {
    /// The date D, as days since 1970-01-01.
    pub as_of_day: i32,
    /// The date D.
    pub as_of: NaiveDate,
    /// Growth points per currency unit.
    pub growth_per_unit: f64,
    /// Members in the key space (highest `member_key` + 1).
    pub members: usize,
    /// Chunk index of the first chunk held (0 unless a range was computed).
    pub first: usize,
    /// Order lines counted (before D).
    pub lines: u64,
    /// Categories of the order lines, sorted.
    pub categories: Dictionary,
    /// Channels, sorted.
    pub channels: Dictionary,
    /// Stores (of orders and of members' `home_store_id`), sorted.
    pub stores: Dictionary,
    /// Genders, sorted.
    pub genders: Dictionary,
    /// Cities, sorted.
    pub cities: Dictionary,
    /// Registration channels, sorted.
    pub register_channels: Dictionary,
    /// Features left out because the data has too many values for them, one
    /// note each (which column, how many values, what is missing).
    pub skipped: Vec<String>,
    /// Per-shard state; a shard is released (`None`) once evaluated.
    shards: Vec<Mutex<Option<Arc<Shard>>>>,
}

/// Which dictionary a text feature's codes index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// [`FeatureSet::genders`]
    Gender,
    /// [`FeatureSet::cities`]
    City,
    /// [`FeatureSet::register_channels`]
    RegisterChannel,
    /// [`FeatureSet::stores`]
    Store,
    /// [`FeatureSet::channels`]
    Channel,
    /// [`FeatureSet::categories`]
    Category,
}

/// Storage type of a feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Whole number (`int`).
    Int32,
    /// Whole number (`long`).
    Int64,
    /// Real number (`double`).
    Float64,
    /// Calendar date, held as days since 1970-01-01.
    Date,
    /// Text, held as codes into a dictionary.
    Text(TextKind),
}

/// Values of one feature column over one chunk of members.
#[derive(Debug, Clone)]
pub enum FeatureData {
    /// Numbers (and dates as day numbers); NaN is null.
    Num(Vec<f64>),
    /// Codes into a dictionary; `u32::MAX` is null.
    Text(Vec<u32>),
}

/// One feature column over one chunk of members.
#[derive(Debug, Clone)]
pub struct FeatureColumn {
    /// Column name in `features` and in tag rules.
    pub name: String,
    /// Storage type.
    pub kind: FeatureKind,
    /// Values, one per member of the chunk.
    pub data: FeatureData,
}

/// The features of one chunk of members (`CHUNK` consecutive keys).
#[derive(Debug, Clone)]
pub struct Chunk {
    /// First member key of the chunk.
    pub start: u32,
    /// 1 where the key is a member of the base as of D (registered before D).
    pub base: Vec<u8>,
    /// The feature columns, in `features` table order.
    pub columns: Vec<FeatureColumn>,
}

impl Chunk {
    /// Members in the chunk (base or not).
    pub fn len(&self) -> usize {
        self.base.len()
    }

    /// Whether the chunk has no keys.
    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
    }

    /// The column of a feature, by name.
    pub fn column(&self, name: &str) -> Option<&FeatureColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Days since 1970-01-01 (Arrow's `Date32`).
pub(crate) fn date_to_day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// The date `day` days after 1970-01-01 (Arrow's `Date32`).
pub(crate) fn day_to_date(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(day as i64)
}
/// Reads `members` and `orders` and accumulates every member's state.
pub async fn compute(wh: &Warehouse, options: &FeatureOptions) -> Result<FeatureSet> {
    let id_files = table_files(wh, Table::MemberIds).await?;
    let member_files = table_files(wh, Table::Members).await?;
    let order_files = table_files(wh, Table::Orders).await?;
    taglake_storage::scan::blocking(|| compute_blocking(&id_files, &member_files, &order_files, options))
}

/// What every member-key range of a distributed run shares: the key space,
/// the as-of date and every text column's values, so that codes, the
/// columns they make and the tags expanded over them are the same in every
/// range and equal to a run over the whole base.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Globals {
    /// Members in the key space (highest `member_key` + 1).
    pub members: usize,
    /// The date D.
    pub as_of: NaiveDate,
    /// Distinct non-null `orders.category`, sorted.
    pub categories: Vec<String>,
    /// Distinct non-null `orders.channel`, sorted.
    pub channels: Vec<String>,
    /// Distinct non-null `orders.store_id` and `members.home_store_id`, sorted.
    pub stores: Vec<String>,
    /// Distinct non-null `members.gender`, sorted.
    pub genders: Vec<String>,
    /// Distinct non-null `members.city`, sorted.
    pub cities: Vec<String>,
    /// Distinct non-null `members.register_channel`, sorted.
    pub register_channels: Vec<String>,
}

impl Globals {
    /// Checks what a run over the whole base would refuse.
    pub fn check(&self) -> Result<()> {
        if self.members > u32::MAX as usize {
            return Err(Error::Data(format!("{} member keys do not fit the 32-bit bitmaps", self.members)));
        }
        check_channels(self.channels.len())
    }
}

fn check_channels(n: usize) -> Result<()> {
    if n > 255 {
        return Err(Error::Data(format!(
            "orders have {n} distinct channels; taglake supports up to 255 (map them to fewer with a mapping file)"
        )));
    }
    Ok(())
}

/// The features of the members in chunks `chunks` (keys
/// `chunks.start * CHUNK ..`), reading only the row groups whose
/// `member_key` statistics overlap them. Dictionaries come from `globals`;
/// a value they lack (the warehouse changed since they were read) is an error.
pub async fn compute_range(
    wh: &Warehouse,
    growth_per_unit: f64,
    globals: &Globals,
    chunks: std::ops::Range<usize>,
) -> Result<FeatureSet> {
    globals.check()?;
    let member_files = table_files(wh, Table::Members).await?;
    let order_files = table_files(wh, Table::Orders).await?;
    let interners = Interners {
        category: Mutex::new(Interner::seeded(&globals.categories)),
        channel: Mutex::new(Interner::seeded(&globals.channels)),
        store: Mutex::new(Interner::seeded(&globals.stores)),
        gender: Mutex::new(Interner::seeded(&globals.genders)),
        city: Mutex::new(Interner::seeded(&globals.cities)),
        register_channel: Mutex::new(Interner::seeded(&globals.register_channels)),
    };
    let sizes = [
        ("orders.category", globals.categories.len()),
        ("orders.channel", globals.channels.len()),
        ("orders.store_id or members.home_store_id", globals.stores.len()),
        ("members.gender", globals.genders.len()),
        ("members.city", globals.cities.len()),
        ("members.register_channel", globals.register_channels.len()),
    ];
    let chunks = chunks.start.min(globals.members.div_ceil(CHUNK))..chunks.end.min(globals.members.div_ceil(CHUNK));
    let fs = taglake_storage::scan::blocking(|| {
        accumulate(&member_files, &order_files, globals.members, globals.as_of, growth_per_unit, interners, chunks)
    })?;
    let got = [
        fs.categories.values.len(),
        fs.channels.values.len(),
        fs.stores.values.len(),
        fs.genders.values.len(),
        fs.cities.values.len(),
        fs.register_channels.values.len(),
    ];
    for ((column, want), got) in sizes.iter().zip(got) {
        if got != *want {
            return Err(Error::Data(format!(
                "{column} has {} values more than when this run started: the warehouse changed during the run; run it again",
                got - want
            )));
        }
    }
    Ok(fs)
}

/// The default as-of date: the day after the newest order (`newest_us`,
/// microseconds; `i64::MIN` when there is none).
pub fn default_as_of(newest_us: i64) -> Result<NaiveDate> {
    if newest_us == i64::MIN {
        return Err(Error::Parameter(
            taglake_storage::ParamMessage::text(
                "the warehouse has no orders, so there is no default as-of date; pass ",
            )
            .then_param("as_of")
            .then_text(" DATE"),
        ));
    }
    Ok(day_to_date(newest_us.div_euclid(DAY_US) as i32 + 1))
}
/// The proleptic Gregorian (year, month, day) of a day number since
/// 1970-01-01, in integer arithmetic (H. Hinnant's `civil_from_days`): the
/// per-order month and the per-member age need it millions of times, and
/// it is defined for every `i32`, where a date type has a narrower range.
fn civil(day: i32) -> (i64, u32, u32) {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
impl FeatureSet {
    /// A feature set with no member data but the dictionaries, date and key
    /// space of a distributed run: enough to compile the catalog where no
    /// member is read (the run's coordinator). Its one chunk is empty.
    pub fn for_globals(globals: &Globals, growth_per_unit: f64) -> FeatureSet {
        let dictionary = |values: &[String]| Interner::seeded(values).finish();
        let shards = if globals.members == 0 { Vec::new() } else { vec![Mutex::new(Some(Arc::new(Shard::new(0))))] };
        FeatureSet {
            as_of_day: date_to_day(globals.as_of),
            as_of: globals.as_of,
            growth_per_unit,
            members: globals.members,
            first: 0,
            lines: 0,
            categories: dictionary(&globals.categories),
            channels: dictionary(&globals.channels),
            stores: dictionary(&globals.stores),
            genders: dictionary(&globals.genders),
            cities: dictionary(&globals.cities),
            register_channels: dictionary(&globals.register_channels),
            skipped: Vec::new(),
            shards,
        }
    }

    /// Number of chunks (shards) of the key space.
    pub fn chunks(&self) -> usize {
        self.shards.len()
    }

    /// The dictionary a text feature indexes.
    pub fn dictionary(&self, kind: TextKind) -> &Dictionary {
        match kind {
            TextKind::Gender => &self.genders,
            TextKind::City => &self.cities,
            TextKind::RegisterChannel => &self.register_channels,
            TextKind::Store => &self.stores,
            TextKind::Channel => &self.channels,
            TextKind::Category => &self.categories,
        }
    }

    /// Frees the state of chunk `index`; later calls for it panic. Lets a
    /// caller that has used a chunk for the last time give its memory back.
    pub fn release(&self, index: usize) {
        *self.shards[index].lock().expect("shard lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;

    use super::*;

    /// The integer calendar agrees with chrono on every day chrono has
    /// near the dates the data can hold, and on far ones.
    #[test]
    fn civil_dates_match_chrono() {
        let check = |day: i32| {
            let d = day_to_date(day);
            assert_eq!(civil(day), (i64::from(d.year()), d.month(), d.day()), "day {day}");
        };
        (-80_000..80_000).for_each(check);
        for day in [-2_000_000, -719_468, -719_469, 1_000_000, 2_000_000, 2_932_896] {
            check(day);
        }
    }
}
