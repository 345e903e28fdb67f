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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, BooleanArray, DictionaryArray, StringArray};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use chrono::{Datelike, NaiveDate};
use rayon::prelude::*;
use taglake_storage::{Table, Warehouse};

use crate::{Error, Result};
use taglake_storage::scan::{Wanted, column_max, scan_keys, table_files};

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

/// Values of a text column, assigned codes in the order first seen by any
/// thread (so not deterministic) and sorted into final codes after the pass.
struct Interner {
    map: HashMap<String, u32>,
    values: Vec<String>,
    /// Values kept at most; a new value past them gets no code.
    limit: usize,
    /// A value was refused for the limit.
    over: bool,
}

impl Default for Interner {
    fn default() -> Interner {
        Interner::capped(usize::MAX)
    }
}

impl Interner {
    /// An interner that already knows `values` (sorted), so their codes are
    /// their sorted positions from the start.
    fn seeded(values: &[String]) -> Interner {
        let mut it = Interner::default();
        for v in values {
            it.code(v);
        }
        it
    }

    /// An interner that keeps at most `limit` values.
    fn capped(limit: usize) -> Interner {
        Interner { map: HashMap::new(), values: Vec::new(), limit, over: false }
    }

    fn code(&mut self, v: &str) -> u32 {
        if let Some(c) = self.map.get(v) {
            return *c;
        }
        if self.values.len() >= self.limit {
            self.over = true;
            return NO_CODE;
        }
        let c = self.values.len() as u32;
        self.map.insert(v.to_string(), c);
        self.values.push(v.to_string());
        c
    }

    /// Global codes of one batch's dictionary values.
    fn codes_of(lock: &Mutex<Interner>, values: &StringArray) -> Vec<u32> {
        let mut g = lock.lock().expect("interner lock");
        (0..values.len()).map(|i| if values.is_null(i) { NO_CODE } else { g.code(values.value(i)) }).collect()
    }

    /// Sorted values and the map from first-seen code to sorted code.
    fn finish(self) -> Dictionary {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_by(|a, b| self.values[*a as usize].cmp(&self.values[*b as usize]));
        let mut remap = vec![0u32; order.len()];
        for (sorted, first_seen) in order.iter().enumerate() {
            remap[*first_seen as usize] = sorted as u32;
        }
        let values = order.iter().map(|c| self.values[*c as usize].clone()).collect();
        Dictionary { values, remap }
    }
}

/// The distinct values of a text column, sorted.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    /// Values; a member's code indexes this.
    pub values: Vec<String>,
    remap: Vec<u32>,
}

impl Dictionary {
    fn sorted_code(&self, first_seen: u32) -> u32 {
        if first_seen == NO_CODE { NO_CODE } else { self.remap[first_seen as usize] }
    }
}

/// Per-member accumulators of one shard.
#[derive(Default)]
struct Shard {
    len: usize,
    // from `members`
    registered: Vec<i32>,
    birthday: Vec<i32>,
    gender: Vec<u32>,
    city: Vec<u32>,
    register_channel: Vec<u32>,
    home_store_attr: Vec<u32>,
    points: Vec<i64>,
    // from order lines: [total, 365 d, 90 d, 30 d]
    spend: [Vec<i64>; 4],
    items: Vec<i64>,
    lines: Vec<u32>,
    promo_lines: Vec<u32>,
    /// Spend per category, in 32 bits: the per-category sums are most of a
    /// shard's memory (13 categories: 104 of ~280 bytes a member as
    /// `i64`), and almost all of them fit. A sum that leaves the 32-bit
    /// range is [`WIDE`] here and exact in `category_wide`.
    category_spend: Vec<Vec<i32>>,
    /// The sums marked [`WIDE`], by [`wide_key`].
    category_wide: HashMap<u32, i64>,
    /// Day of the last line per category, as [`category_day`] (0 = none).
    category_last: Vec<Vec<u16>>,
    /// One record per (member, order); sorted and deduplicated by `finish`.
    records: Vec<u128>,
}

/// Per-member order counts and first and last order days of one chunk,
/// derived from its sorted order records when the chunk is computed
/// (keeping them for the whole base would cost more than the records they
/// come from). Most columns and every default score and rank need only
/// these, so they come from a light pass of their own.
struct OrderCounts {
    // [total, 365 d, 90 d, 30 d]
    orders: [Vec<u32>; 4],
    first_day: Vec<i32>,
    last_day: Vec<i32>,
}

/// The rest of a chunk's order statistics (calendar, channels, home store),
/// computed only when a wanted column reads them.
struct OrderMix {
    weekend_orders: Vec<u32>,
    channel_orders: Vec<Vec<u32>>,
    month_orders: Vec<[u32; 12]>,
    weekday_orders: Vec<[u32; 7]>,
    daypart_orders: Vec<[u32; 4]>,
    store: Vec<u32>,
}

impl Shard {
    fn new(len: usize) -> Shard {
        Shard {
            len,
            registered: vec![NO_DAY; len],
            birthday: vec![NO_DAY; len],
            gender: vec![NO_CODE; len],
            city: vec![NO_CODE; len],
            register_channel: vec![NO_CODE; len],
            home_store_attr: vec![NO_CODE; len],
            points: vec![NO_POINTS; len],
            spend: std::array::from_fn(|_| zeros(len)),
            items: zeros(len),
            lines: zeros(len),
            promo_lines: zeros(len),
            ..Shard::default()
        }
    }

    /// Adds `units` to member `m`'s spend in category `code` and records
    /// the line's day.
    fn add_category(&mut self, code: usize, m: usize, units: i64, day: i32) {
        while self.category_spend.len() <= code {
            self.category_spend.push(zeros(self.len));
            self.category_last.push(zeros(self.len));
        }
        let last = &mut self.category_last[code][m];
        *last = (*last).max(category_day(day));
        let narrow = &mut self.category_spend[code][m];
        if *narrow != WIDE {
            match i32::try_from(units).ok().and_then(|u| narrow.checked_add(u)).filter(|sum| *sum != WIDE) {
                Some(sum) => {
                    *narrow = sum;
                    return;
                }
                None => {
                    self.category_wide.insert(wide_key(code, m), i64::from(*narrow));
                    *narrow = WIDE;
                }
            }
        }
        *self.category_wide.entry(wide_key(code, m)).or_default() += units;
    }

    /// The spend of every category as 64-bit sums.
    fn category_spend_wide(&self) -> Vec<Vec<i64>> {
        self.category_spend
            .iter()
            .enumerate()
            .map(|(code, narrow)| {
                narrow
                    .iter()
                    .enumerate()
                    .map(|(m, v)| if *v == WIDE { self.category_wide[&wide_key(code, m)] } else { i64::from(*v) })
                    .collect()
            })
            .collect()
    }
}

/// `len` zeros, written now.
///
/// `vec![0; len]` asks for zeroed memory, and an array of a shard's size is
/// fresh pages that the kernel maps to its shared zero page. The first
/// `+=` on each page then faults twice: the read maps the zero page, the
/// write copies it and flushes the stale mapping from the other core's
/// TLB (an interrupt there). Writing the zeros up front costs one fault a
/// page; at 42 M members the accumulators are ~10 GiB of such pages.
fn zeros<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    // Hides the fresh allocation from the optimizer, which would otherwise
    // turn allocate-then-fill back into a zeroed allocation.
    std::hint::black_box(&mut v);
    v.resize(len, T::default());
    v
}

/// A category sum kept in [`Shard::category_wide`].
const WIDE: i32 = i32::MIN;

/// The key of member `m` (offset in its shard) and category `code` in
/// [`Shard::category_wide`]; codes stay below 65,536 (`max_family_values`).
fn wide_key(code: usize, m: usize) -> u32 {
    debug_assert!(code < 1 << 16 && m < CHUNK);
    ((code as u32) << 16) | m as u32
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

struct Interners {
    category: Mutex<Interner>,
    channel: Mutex<Interner>,
    store: Mutex<Interner>,
    gender: Mutex<Interner>,
    city: Mutex<Interner>,
    register_channel: Mutex<Interner>,
}

/// A day since 1970-01-01 in two bytes, 0 meaning "none": per member and
/// category this halves the largest array of the pass. Days before 1970
/// (which ingest never lets through) count as 1970-01-01.
fn category_day(day: i32) -> u16 {
    (day.clamp(0, 65_534) + 1) as u16
}

/// Days since 1970-01-01 (Arrow's `Date32`).
pub(crate) fn date_to_day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// The date `day` days after 1970-01-01 (Arrow's `Date32`).
pub(crate) fn day_to_date(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(day as i64)
}

fn dict_codes(lock: &Mutex<Interner>, col: &dyn Array) -> Result<(Vec<u32>, DictionaryArray<Int32Type>)> {
    let dict = col
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| Error::Internal(format!("expected a dictionary column, got {}", col.data_type())))?
        .clone();
    let values = dict.values().as_string_opt::<i32>().ok_or_else(|| Error::Internal("dictionary values".into()))?;
    Ok((Interner::codes_of(lock, values), dict))
}

#[inline]
fn code_at(codes: &[u32], dict: &DictionaryArray<Int32Type>, row: usize) -> u32 {
    if dict.is_null(row) { NO_CODE } else { codes[dict.keys().value(row) as usize] }
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

fn compute_blocking(
    id_files: &[std::path::PathBuf],
    member_files: &[std::path::PathBuf],
    order_files: &[std::path::PathBuf],
    options: &FeatureOptions,
) -> Result<FeatureSet> {
    // The key space: the dictionary never reuses keys, so its maximum bounds them all.
    let max_key = column_max(Table::MemberIds, id_files, "member_key")?.max(-1);
    let members = (max_key + 1) as usize;
    if members > u32::MAX as usize {
        return Err(Error::Data(format!("{members} member keys do not fit the 32-bit bitmaps")));
    }
    let as_of = match options.as_of {
        Some(d) => d,
        None => default_as_of(column_max(Table::Orders, order_files, "ordered_at")?)?,
    };
    let interners = Interners {
        category: Mutex::new(Interner::capped(options.max_family_values)),
        channel: Mutex::default(),
        store: Mutex::default(),
        gender: Mutex::default(),
        city: Mutex::default(),
        register_channel: Mutex::default(),
    };
    accumulate(
        member_files,
        order_files,
        members,
        as_of,
        options.growth_per_unit,
        interners,
        0..members.div_ceil(CHUNK),
    )
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

/// Reads the members and order lines of chunks `chunks` into per-member state.
fn accumulate(
    member_files: &[std::path::PathBuf],
    order_files: &[std::path::PathBuf],
    members: usize,
    as_of: NaiveDate,
    growth_per_unit: f64,
    interners: Interners,
    chunks: std::ops::Range<usize>,
) -> Result<FeatureSet> {
    let as_of_day = date_to_day(as_of);
    let shards: Vec<Mutex<Shard>> =
        chunks.clone().map(|s| Mutex::new(Shard::new(CHUNK.min(members - s * CHUNK)))).collect();
    let range =
        KeyRange { first: chunks.start, keys: chunks.start * CHUNK..(chunks.end * CHUNK).min(members), members };
    read_members(member_files, &shards, &interners, &range)?;
    let lines = std::sync::atomic::AtomicU64::new(0);
    read_orders(order_files, &shards, &interners, &range, as_of_day, &lines)?;

    let category_interner = interners.category.into_inner().expect("lock");
    let mut skipped = Vec::new();
    if category_interner.over {
        skipped.push(format!(
            "orders.category has more than {} distinct values (max_family_values): the per-category features \
             (spend_share_…, category_recency_days_…, main_category, distinct_categories) and every tag over \
             categories are left out",
            category_interner.limit
        ));
    }
    let categories = if category_interner.over { Dictionary::default() } else { category_interner.finish() };
    let channels = interners.channel.into_inner().expect("lock").finish();
    let stores = interners.store.into_inner().expect("lock").finish();
    check_channels(channels.values.len())?;
    let mut shards: Vec<Shard> = shards.into_iter().map(|s| s.into_inner().expect("shard lock")).collect();
    if categories.values.is_empty() {
        // Over the cap: the accumulators of the values seen before it go too.
        shards.iter_mut().for_each(|s| {
            (s.category_spend, s.category_last, s.category_wide) = (Vec::new(), Vec::new(), HashMap::new())
        });
    }
    shards.par_iter_mut().for_each(|s| finish_orders(s, &categories));
    Ok(FeatureSet {
        as_of_day,
        as_of,
        growth_per_unit,
        members,
        first: chunks.start,
        lines: lines.into_inner(),
        categories,
        channels,
        stores,
        genders: interners.gender.into_inner().expect("lock").finish(),
        cities: interners.city.into_inner().expect("lock").finish(),
        register_channels: interners.register_channel.into_inner().expect("lock").finish(),
        skipped,
        shards: shards.into_iter().map(|s| Mutex::new(Some(Arc::new(s)))).collect(),
    })
}

/// The keys a pass accumulates, and the shard of each.
struct KeyRange {
    /// Chunk index of the first shard.
    first: usize,
    /// Keys kept.
    keys: std::ops::Range<usize>,
    /// The whole key space (a key beyond it is an error).
    members: usize,
}

impl KeyRange {
    fn shard(&self, key: usize) -> usize {
        key / CHUNK - self.first
    }

    fn scan_keys(&self) -> Option<std::ops::Range<i64>> {
        (self.keys != (0..self.members)).then_some(self.keys.start as i64..self.keys.end as i64)
    }
}

/// `rows` (key, row), in row order, grouped by shard in shard order and
/// in row order within a shard: what a stable sort by shard gives, by a
/// counting sort (one pass to count, one to place), since the lines of a
/// batch arrive in file order, not key order.
///
/// The result goes to `grouped` (cleared first), so that a thread reading
/// batch after batch reuses one buffer.
fn group_by_shard(rows: &[(usize, usize)], range: &KeyRange, grouped: &mut Vec<(usize, usize)>) {
    let shards = range.keys.end.div_ceil(CHUNK) - range.first;
    let mut starts = vec![0usize; shards + 1];
    for &(key, _) in rows {
        starts[range.shard(key) + 1] += 1;
    }
    for s in 1..=shards {
        starts[s] += starts[s - 1];
    }
    grouped.clear();
    grouped.resize(rows.len(), (0, 0));
    for &(key, row) in rows {
        let at = &mut starts[range.shard(key)];
        grouped[*at] = (key, row);
        *at += 1;
    }
}

/// Order lines of a batch as (member key, row).
type KeyRows = Vec<(usize, usize)>;

thread_local! {
    /// A batch's selected order lines and the same grouped by shard (1 MiB
    /// each at 64 Ki rows), kept by each reading thread across batches:
    /// fresh buffers per batch were mapped, faulted in and unmapped again
    /// on every batch (~1 % of a tag run's CPU at 42 M members).
    static ORDER_ROWS: std::cell::RefCell<(KeyRows, KeyRows)> =
        std::cell::RefCell::default();
}

fn key_of(keys: &arrow::array::Int64Array, row: usize, members: usize, table: &str) -> Result<usize> {
    let k = keys.value(row);
    if keys.is_null(row) || k < 0 || k as usize >= members {
        return Err(Error::Data(format!(
            "{table} row has member_key {k}, outside the member dictionary (0..{members}); \
             was the warehouse written by another tool?"
        )));
    }
    Ok(k as usize)
}

fn read_members(files: &[std::path::PathBuf], shards: &[Mutex<Shard>], it: &Interners, range: &KeyRange) -> Result<()> {
    let t = Table::Members;
    let wanted = [
        Wanted::plain(t, "member_key"),
        Wanted::plain(t, "registered_at"),
        Wanted::plain(t, "birthday"),
        Wanted::dictionary("gender"),
        Wanted::dictionary("city"),
        Wanted::dictionary("register_channel"),
        Wanted::dictionary("home_store_id"),
        Wanted::plain(t, "points_balance"),
    ];
    scan_keys::<_, Error>(t, files, &wanted, range.scan_keys(), |b| {
        let keys = b.column(0).as_primitive::<Int64Type>();
        let reg = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let bday = b.column(2).as_primitive::<Date32Type>();
        let (gc, gd) = dict_codes(&it.gender, b.column(3))?;
        let (cc, cd) = dict_codes(&it.city, b.column(4))?;
        let (rc, rd) = dict_codes(&it.register_channel, b.column(5))?;
        let (sc, sd) = dict_codes(&it.store, b.column(6))?;
        let points = b.column(7).as_primitive::<Int64Type>();
        let mut rows: Vec<(usize, usize)> = Vec::with_capacity(b.num_rows());
        for row in 0..b.num_rows() {
            let key = key_of(keys, row, range.members, "members")?;
            if range.keys.contains(&key) {
                rows.push((key, row));
            }
        }
        rows.sort_unstable();
        for group in rows.chunk_by(|a, b| a.0 / CHUNK == b.0 / CHUNK) {
            let mut s = shards[range.shard(group[0].0)].lock().expect("shard lock");
            for &(key, row) in group {
                let m = key % CHUNK;
                s.registered[m] = if reg.is_null(row) { NO_DAY } else { reg.value(row).div_euclid(DAY_US) as i32 };
                s.birthday[m] = if bday.is_null(row) { NO_DAY } else { bday.value(row) };
                s.gender[m] = code_at(&gc, &gd, row);
                s.city[m] = code_at(&cc, &cd, row);
                s.register_channel[m] = code_at(&rc, &rd, row);
                s.home_store_attr[m] = code_at(&sc, &sd, row);
                s.points[m] = if points.is_null(row) { NO_POINTS } else { points.value(row) };
            }
        }
        Ok(())
    })
}

fn read_orders(
    files: &[std::path::PathBuf],
    shards: &[Mutex<Shard>],
    it: &Interners,
    range: &KeyRange,
    as_of_day: i32,
    lines_seen: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let t = Table::Orders;
    let wanted = [
        Wanted::plain(t, "member_key"),
        Wanted::plain(t, "order_id"),
        Wanted::plain(t, "ordered_at"),
        Wanted::dictionary("channel"),
        Wanted::dictionary("store_id"),
        Wanted::dictionary("category"),
        Wanted::plain(t, "quantity"),
        Wanted::plain(t, "amount"),
        Wanted::plain(t, "discount"),
        Wanted::plain(t, "coupon_used"),
    ];
    let as_of_us = as_of_day as i64 * DAY_US;
    scan_keys::<_, Error>(t, files, &wanted, range.scan_keys(), |b| {
        let keys = b.column(0).as_primitive::<Int64Type>();
        let order_ids: &StringArray = b.column(1).as_string::<i32>();
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        let (chc, chd) = dict_codes(&it.channel, b.column(3))?;
        let (stc, std_) = dict_codes(&it.store, b.column(4))?;
        let (cac, cad) = dict_codes(&it.category, b.column(5))?;
        let qty = b.column(6).as_primitive::<Int32Type>();
        let amount = b.column(7).as_primitive::<Float64Type>();
        let discount = b.column(8).as_primitive::<Float64Type>();
        let coupon: &BooleanArray = b.column(9).as_boolean();
        let mut buffers = ORDER_ROWS.with_borrow_mut(std::mem::take);
        let (rows, grouped) = &mut buffers;
        rows.clear();
        for row in 0..b.num_rows() {
            if ts.value(row) < as_of_us {
                let key = key_of(keys, row, range.members, "orders")?;
                if range.keys.contains(&key) {
                    rows.push((key, row));
                }
            }
        }
        lines_seen.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // Group by shard, keeping the file order within a shard so the
        // lines of one order stay next to each other.
        group_by_shard(rows, range, grouped);
        for group in grouped.chunk_by(|a, b| a.0 / CHUNK == b.0 / CHUNK) {
            let mut guard = shards[range.shard(group[0].0)].lock().expect("shard lock");
            let s = &mut *guard;
            let mut previous: Option<u128> = None;
            for &(key, row) in group {
                let m = key % CHUNK;
                let t_us = ts.value(row);
                let day = t_us.div_euclid(DAY_US) as i32;
                let age = as_of_day - day;
                let units = (amount.value(row) * UNITS).round() as i64;
                s.spend[0][m] += units;
                if age <= 365 {
                    s.spend[1][m] += units;
                }
                if age <= 90 {
                    s.spend[2][m] += units;
                }
                if age <= 30 {
                    s.spend[3][m] += units;
                }
                s.items[m] += qty.value(row) as i64;
                s.lines[m] += 1;
                let promo = (!discount.is_null(row) && discount.value(row) > 0.0)
                    || (!coupon.is_null(row) && coupon.value(row));
                s.promo_lines[m] += promo as u32;
                let cat = code_at(&cac, &cad, row);
                if cat != NO_CODE {
                    s.add_category(cat as usize, m, units, day);
                }
                let store = code_at(&stc, &std_, row);
                if store != NO_CODE && store >= NO_STORE {
                    return Err(Error::Data("orders have more than 16 million distinct stores".into()));
                }
                let store = if store == NO_CODE { NO_STORE } else { store };
                let channel = code_at(&chc, &chd, row);
                let hash = xxhash_rust::xxh3::xxh3_64(order_ids.value(row).as_bytes()) >> 24;
                let hour = t_us.rem_euclid(DAY_US) / 3_600_000_000;
                let record = ((m as u128) << 112)
                    | ((hash as u128) << 72)
                    | ((day.clamp(0, 0xFFFF) as u128) << 56)
                    | ((store as u128) << 32)
                    | (((channel.min(255)) as u128) << 24)
                    | (((hour / 6) as u128) << 22);
                let order_key = record >> 72;
                if previous != Some(order_key) {
                    s.records.push(record);
                    previous = Some(order_key);
                }
            }
        }
        ORDER_ROWS.set(buffers);
        Ok(())
    })
}

/// Sorts and deduplicates a shard's order records (one per distinct order)
/// and puts its category columns in sorted-name order.
fn finish_orders(s: &mut Shard, categories: &Dictionary) {
    let len = s.len;
    s.records.sort_unstable();
    s.records.dedup_by_key(|r| *r >> 72);
    s.records.shrink_to_fit();
    let mut spend = vec![Vec::new(); categories.values.len()];
    let mut last = vec![Vec::new(); categories.values.len()];
    for (first_seen, (sp, la)) in
        std::mem::take(&mut s.category_spend).into_iter().zip(std::mem::take(&mut s.category_last)).enumerate()
    {
        let c = categories.remap[first_seen] as usize;
        spend[c] = sp;
        last[c] = la;
    }
    s.category_wide = std::mem::take(&mut s.category_wide)
        .into_iter()
        .map(|(key, sum)| (wide_key(categories.remap[(key >> 16) as usize] as usize, (key & 0xFFFF) as usize), sum))
        .collect();
    for c in 0..categories.values.len() {
        if spend[c].is_empty() {
            spend[c] = vec![0; len];
            last[c] = vec![0; len];
        }
    }
    s.category_spend = spend;
    s.category_last = last;
}

/// The member (offset in its shard) of an order record.
fn record_member(r: u128) -> usize {
    (r >> 112) as usize
}

/// The day of an order record.
fn record_day(r: u128) -> i32 {
    ((r >> 56) & 0xFFFF) as i32
}

impl FeatureSet {
    /// Order counts and first and last days of one shard from its sorted records.
    fn order_counts(&self, s: &Shard) -> OrderCounts {
        let len = s.len;
        let mut o = OrderCounts {
            orders: std::array::from_fn(|_| vec![0; len]),
            first_day: vec![NO_DAY; len],
            last_day: vec![NO_DAY; len],
        };
        for member_records in s.records.chunk_by(|a, b| record_member(*a) == record_member(*b)) {
            let m = record_member(member_records[0]);
            let (mut counts, mut first, mut last) = ([0u32; 4], i32::MAX, i32::MIN);
            for &r in member_records {
                let day = record_day(r);
                let age = self.as_of_day - day;
                counts[0] += 1;
                counts[1] += (age <= 365) as u32;
                counts[2] += (age <= 90) as u32;
                counts[3] += (age <= 30) as u32;
                first = first.min(day);
                last = last.max(day);
            }
            for (w, c) in counts.iter().enumerate() {
                o.orders[w][m] = *c;
            }
            o.first_day[m] = first;
            o.last_day[m] = last;
        }
        o
    }

    /// Orders by calendar, by channel, and the home store of one shard from
    /// its sorted records.
    fn order_mix(&self, s: &Shard) -> OrderMix {
        let len = s.len;
        let (stores, channels) = (&self.stores, &self.channels);
        let mut o = OrderMix {
            weekend_orders: zeros(len),
            channel_orders: (0..channels.values.len()).map(|_| zeros(len)).collect(),
            month_orders: zeros(len),
            weekday_orders: zeros(len),
            daypart_orders: zeros(len),
            store: vec![NO_CODE; len],
        };
        let mut member_stores: Vec<u32> = Vec::new();
        for member_records in s.records.chunk_by(|a, b| record_member(*a) == record_member(*b)) {
            let m = record_member(member_records[0]);
            member_stores.clear();
            for &r in member_records {
                let day = record_day(r);
                let store = ((r >> 32) & 0xFF_FFFF) as u32;
                let channel = ((r >> 24) & 0xFF) as u32;
                let daypart = ((r >> 22) & 0b11) as usize;
                let weekday = (day + 3).rem_euclid(7) as usize;
                o.weekend_orders[m] += (weekday >= 5) as u32;
                o.weekday_orders[m][weekday] += 1;
                o.month_orders[m][civil(day).1 as usize - 1] += 1;
                o.daypart_orders[m][daypart] += 1;
                if channel != 255 && (channel as usize) < channels.remap.len() {
                    o.channel_orders[channels.sorted_code(channel) as usize][m] += 1;
                }
                if store != NO_STORE {
                    member_stores.push(stores.sorted_code(store));
                }
            }
            // The most frequent store; a tie goes to the first store by name.
            member_stores.sort_unstable();
            let mut best = (0usize, NO_CODE);
            for run in member_stores.chunk_by(|a, b| a == b) {
                if run.len() > best.0 {
                    best = (run.len(), run[0]);
                }
            }
            o.store[m] = best.1;
        }
        for m in 0..len {
            if o.store[m] == NO_CODE {
                o.store[m] = stores.sorted_code(s.home_store_attr[m]);
            }
        }
        o
    }
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

/// Per member, the column (code) with the largest value above zero; ties
/// go to the lower code, which is the first name in sorted order.
fn largest<T: PartialOrd + Default + Copy>(columns: &[Vec<T>], len: usize) -> Vec<u32> {
    let mut best = vec![T::default(); len];
    let mut code = vec![NO_CODE; len];
    for (c, values) in columns.iter().enumerate() {
        for ((b, k), v) in best.iter_mut().zip(&mut code).zip(&values[..len]) {
            if *v > *b {
                *b = *v;
                *k = c as u32;
            }
        }
    }
    code
}

/// Per member, how many of `columns` are set (`set` of the value).
fn count_set<T: Copy>(columns: &[Vec<T>], len: usize, set: impl Fn(T) -> bool) -> Vec<f64> {
    let mut n = vec![0.0; len];
    for values in columns {
        for (n, v) in n.iter_mut().zip(&values[..len]) {
            *n += f64::from(u8::from(set(*v)));
        }
    }
    n
}

/// Makes a value usable in a column or tag name: lowercase ASCII letters,
/// digits and single underscores (`"Mini Program"` → `mini_program`).
pub fn slug(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() { "unknown".into() } else { out }
}

/// Slugs of a dictionary's values, made unique by a `_2`, `_3` … suffix.
pub fn unique_slugs(values: &[String]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    values
        .iter()
        .map(|v| {
            let s = slug(v);
            let n = seen.entry(s.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { s } else { format!("{s}_{n}") }
        })
        .collect()
}

/// `d - day` as a number, without overflow for the "no day" marker (the
/// result is then discarded by `nan_if`).
fn days(d: i32, day: i32) -> f64 {
    (d as i64 - day as i64) as f64
}

fn nan_if(cond: bool, v: f64) -> f64 {
    if cond { f64::NAN } else { v }
}

/// The columns of one chunk as they are built: each is computed only when
/// wanted, by a loop over the members that the compiler sees whole (one
/// monomorphised loop per column, no call per value).
struct Columns<'w> {
    len: usize,
    wanted: &'w dyn Fn(&str) -> bool,
    cols: Vec<FeatureColumn>,
}

impl Columns<'_> {
    /// A numeric column, `f(m)` for member `m`.
    fn num(&mut self, name: impl Into<String>, kind: FeatureKind, f: impl Fn(usize) -> f64) {
        let len = self.len;
        self.values(name, kind, || (0..len).map(f).collect());
    }

    /// A numeric column computed whole.
    fn values(&mut self, name: impl Into<String>, kind: FeatureKind, f: impl FnOnce() -> Vec<f64>) {
        let name = name.into();
        let values = if (self.wanted)(&name) { f() } else { Vec::new() };
        self.cols.push(FeatureColumn { name, kind, data: FeatureData::Num(values) });
    }

    /// A text column of dictionary codes, computed whole.
    fn text(&mut self, name: &str, kind: TextKind, f: impl FnOnce() -> Vec<u32>) {
        let codes = if (self.wanted)(name) { f() } else { Vec::new() };
        self.cols.push(FeatureColumn {
            name: name.to_string(),
            kind: FeatureKind::Text(kind),
            data: FeatureData::Text(codes),
        });
    }
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

    /// The feature columns of chunk `index` (members `index * CHUNK ..`).
    ///
    /// Definitions, for a member as of D (days are UTC dates):
    /// - `recency_days` = D − day of the last order; `first_order_days_ago` likewise for the first;
    /// - `orders_{30d,90d,365d}` = distinct orders dated in `[D − n, D)`, `orders_total` all before D;
    ///   `spend_*` the sum of `amount` over the same lines;
    /// - `avg_order_value` = spend_total / orders_total; `items_per_order` = sum(quantity) / orders_total;
    /// - `weekend_share` = share of orders on Saturday or Sunday; `promotion_share` = share of lines
    ///   with `discount > 0` or `coupon_used`;
    /// - `growth_value` = growth points per unit × spend_365d;
    /// - `age` = whole years from birthday to D; `tenure_days` = D − registration day;
    /// - `home_store` = the store of most orders (ties: first by name), else the member's `home_store_id`;
    /// - `main_channel` = the channel of most orders (ties: first by name);
    /// - `main_category` = the category of most spend, if above 0 (ties: first by name);
    /// - `spend_share_{category}` = category spend / spend_total (null when spend_total ≤ 0);
    ///   `category_recency_days_{category}` = D − day of the last line in the category;
    /// - `order_share_{channel}` = share of orders in the channel; `month_orders_{1..12}`,
    ///   `weekday_orders_{mon..sun}`, `daypart_orders_{night..evening}` = orders by calendar month,
    ///   weekday and part of day.
    ///
    /// Members without orders have null order dates, shares and averages, and zero counts and sums.
    pub fn chunk(&self, index: usize) -> Chunk {
        self.chunk_columns(index, &|_| true)
    }

    /// Frees the state of chunk `index`; later calls for it panic. Lets a
    /// caller that has used a chunk for the last time give its memory back.
    pub fn release(&self, index: usize) {
        *self.shards[index].lock().expect("shard lock") = None;
    }

    /// [`FeatureSet::chunk`] computing only the columns `wanted` accepts
    /// (the others are present, with no values). Order statistics a wanted
    /// column does not read are not computed.
    pub fn chunk_columns(&self, index: usize, wanted: &dyn Fn(&str) -> bool) -> Chunk {
        let shard = self.shards[index].lock().expect("shard lock").clone().expect("chunk used after release");
        let s = &*shard;
        let o = self.order_counts(s);
        let mix = std::cell::OnceCell::new();
        let mix = || mix.get_or_init(|| self.order_mix(s));
        let category_spend = std::cell::OnceCell::new();
        let category_spend = || category_spend.get_or_init(|| s.category_spend_wide());
        let len = s.len;
        let d = self.as_of_day;
        let start = ((self.first + index) * CHUNK) as u32;
        let base: Vec<u8> = s.registered.iter().map(|&r| (r != NO_DAY && r < d) as u8).collect();
        let mut c = Columns { len, wanted, cols: Vec::with_capacity(64) };
        let money = |v: i64| v as f64 / UNITS;
        let has_orders = |m: usize| o.orders[0][m] > 0;
        use FeatureKind::*;
        c.num("member_key", Int64, |m| (start as usize + m) as f64);
        c.num("as_of", Date, |_| d as f64);
        c.num("registered_date", Date, |m| nan_if(s.registered[m] == NO_DAY, s.registered[m] as f64));
        c.num("tenure_days", Int32, |m| nan_if(s.registered[m] == NO_DAY, days(d, s.registered[m])));
        c.num("first_order_date", Date, |m| nan_if(!has_orders(m), o.first_day[m] as f64));
        c.num("last_order_date", Date, |m| nan_if(!has_orders(m), o.last_day[m] as f64));
        c.num("recency_days", Int32, |m| nan_if(!has_orders(m), days(d, o.last_day[m])));
        c.num("first_order_days_ago", Int32, |m| nan_if(!has_orders(m), days(d, o.first_day[m])));
        for (name, w) in [("orders_30d", 3), ("orders_90d", 2), ("orders_365d", 1), ("orders_total", 0)] {
            c.num(name, Int32, |m| o.orders[w][m] as f64);
        }
        for (name, w) in [("spend_30d", 3), ("spend_90d", 2), ("spend_365d", 1), ("spend_total", 0)] {
            c.num(name, Float64, |m| money(s.spend[w][m]));
        }
        c.num("avg_order_value", Float64, |m| nan_if(!has_orders(m), money(s.spend[0][m]) / o.orders[0][m] as f64));
        c.num("items_total", Int64, |m| s.items[m] as f64);
        c.num("items_per_order", Float64, |m| nan_if(!has_orders(m), s.items[m] as f64 / o.orders[0][m] as f64));
        c.num("lines_total", Int64, |m| s.lines[m] as f64);
        c.values("distinct_categories", Int32, || count_set(&s.category_last, len, |l| l != 0));
        c.values("distinct_channels", Int32, || count_set(&mix().channel_orders, len, |n| n > 0));
        c.values("weekend_share", Float64, || {
            let weekend = &mix().weekend_orders;
            (0..len).map(|m| nan_if(!has_orders(m), weekend[m] as f64 / o.orders[0][m] as f64)).collect()
        });
        c.num("promotion_share", Float64, |m| nan_if(s.lines[m] == 0, s.promo_lines[m] as f64 / s.lines[m] as f64));
        c.num("growth_value", Float64, |m| self.growth_per_unit * money(s.spend[1][m]));
        let (as_of_month, as_of_day) = (self.as_of.month(), self.as_of.day());
        let as_of_year = i64::from(self.as_of.year());
        c.num("age", Int32, |m| {
            if s.birthday[m] == NO_DAY || s.birthday[m] >= d {
                return f64::NAN;
            }
            let (year, month, day) = civil(s.birthday[m]);
            let before = (as_of_month, as_of_day) < (month, day);
            (as_of_year - year - i64::from(before)) as f64
        });
        c.num(
            "birthday_month",
            Int32,
            |m| {
                if s.birthday[m] == NO_DAY { f64::NAN } else { civil(s.birthday[m]).1 as f64 }
            },
        );
        let sorted = |dict: &Dictionary, codes: &[u32]| codes.iter().map(|c| dict.sorted_code(*c)).collect::<Vec<_>>();
        c.text("gender", TextKind::Gender, || sorted(&self.genders, &s.gender));
        c.text("city", TextKind::City, || sorted(&self.cities, &s.city));
        c.text("register_channel", TextKind::RegisterChannel, || sorted(&self.register_channels, &s.register_channel));
        c.text("home_store", TextKind::Store, || mix().store.clone());
        c.text("main_channel", TextKind::Channel, || largest(&mix().channel_orders, len));
        c.text("main_category", TextKind::Category, || largest(category_spend(), len));
        c.num("points_balance", Int64, |m| nan_if(s.points[m] == NO_POINTS, s.points[m] as f64));
        let category_slugs = unique_slugs(&self.categories.values);
        for (k, slug) in category_slugs.iter().enumerate() {
            c.values(format!("spend_share_{slug}"), Float64, || {
                let (spend, total) = (&category_spend()[k], &s.spend[0]);
                (0..len).map(|m| nan_if(total[m] <= 0, spend[m] as f64 / total[m] as f64)).collect()
            });
        }
        for (k, slug) in category_slugs.iter().enumerate() {
            c.values(format!("category_recency_days_{slug}"), Int32, || {
                let last = &s.category_last[k];
                (0..len).map(|m| nan_if(last[m] == 0, days(d, last[m] as i32 - 1))).collect()
            });
        }
        for (k, slug) in unique_slugs(&self.channels.values).iter().enumerate() {
            c.values(format!("order_share_{slug}"), Float64, || {
                let n = &mix().channel_orders[k];
                (0..len).map(|m| nan_if(!has_orders(m), n[m] as f64 / o.orders[0][m] as f64)).collect()
            });
        }
        for month in 0..12 {
            c.values(format!("month_orders_{}", month + 1), Int32, || {
                mix().month_orders.iter().map(|n| n[month] as f64).collect()
            });
        }
        for (w, name) in WEEKDAYS.iter().enumerate() {
            c.values(format!("weekday_orders_{name}"), Int32, || {
                mix().weekday_orders.iter().map(|n| n[w] as f64).collect()
            });
        }
        for (p, name) in DAYPARTS.iter().enumerate() {
            c.values(format!("daypart_orders_{name}"), Int32, || {
                mix().daypart_orders.iter().map(|n| n[p] as f64).collect()
            });
        }
        Chunk { start, base, columns: c.cols }
    }
}

#[cfg(test)]
mod tests {
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

    /// Written zeros are zeros, for the element types the accumulators use
    /// and across page boundaries.
    #[test]
    fn zeros_are_zeros() {
        for len in [0, 1, 4095, 4096, 4097, CHUNK] {
            assert_eq!(zeros::<i64>(len), vec![0i64; len]);
            assert_eq!(zeros::<u16>(len), vec![0u16; len]);
            assert_eq!(zeros::<[u32; 7]>(len), vec![[0u32; 7]; len]);
        }
    }

    /// Category sums in 32 bits agree with 64-bit sums, also for sums
    /// that leave the 32-bit range (either way, and back), and keep that
    /// through the reordering of codes at the end of the pass.
    #[test]
    fn narrow_category_sums_are_exact() {
        let len = 5;
        let mut s = Shard::new(len);
        let mut want = vec![vec![0i64; len]; 3];
        let big = i64::from(i32::MAX);
        let adds: &[(usize, usize, i64)] = &[
            (0, 0, 10_000),
            (1, 1, big),
            (1, 1, 1),
            (1, 1, -big),
            (2, 2, -big - 1),
            (2, 2, -1),
            (0, 3, 5 * big),
            (0, 3, -2),
            (2, 4, i64::from(i32::MIN) + 1),
            (2, 4, 7),
        ];
        for &(code, m, units) in adds {
            s.add_category(code, m, units, 100);
            want[code][m] += units;
        }
        assert_eq!(s.category_spend_wide(), want);
        // First-seen codes 0, 1, 2 sort as 2, 0, 1.
        let categories = Dictionary { values: vec!["a".into(), "b".into(), "c".into()], remap: vec![2, 0, 1] };
        finish_orders(&mut s, &categories);
        assert_eq!(s.category_spend_wide(), vec![want[1].clone(), want[2].clone(), want[0].clone()]);
        assert_eq!(s.category_last[2], [101, 0, 0, 101, 0]);
    }

    proptest::proptest! {
        /// The counting sort groups exactly as a stable sort by shard.
        #[test]
        fn grouping_by_shard_is_a_stable_sort_by_shard(
            first in 0usize..3,
            shards in 1usize..5,
            picks in proptest::collection::vec((0usize..5, 0usize..CHUNK), 0..300),
        ) {
            let members = (first + shards) * CHUNK - 7;
            let range = KeyRange { first, keys: first * CHUNK..members, members };
            let rows: Vec<(usize, usize)> = picks
                .iter()
                .enumerate()
                .map(|(row, &(s, m))| (((first + s % shards) * CHUNK + m).min(members - 1), row))
                .collect();
            let mut want = rows.clone();
            want.sort_by_key(|&(key, row)| (key / CHUNK, row));
            // The buffer's earlier contents do not leak into the result.
            let mut grouped = vec![(9, 9); 5];
            group_by_shard(&rows, &range, &mut grouped);
            proptest::prop_assert_eq!(grouped, want);
        }
    }

    #[test]
    fn largest_and_count_set_go_member_by_member() {
        let columns = vec![vec![0i64, 5, 3, -1, 7], vec![0, 5, 4, -2, 0], vec![0, 6, 4, 0, 7]];
        // Ties go to the lower code; nothing above zero is no code.
        assert_eq!(largest(&columns, 5), [NO_CODE, 2, 1, NO_CODE, 0]);
        assert_eq!(count_set(&columns, 5, |v| v != 0), [0.0, 3.0, 3.0, 2.0, 2.0]);
        assert_eq!(largest::<i64>(&[], 2), [NO_CODE, NO_CODE]);
    }
}
