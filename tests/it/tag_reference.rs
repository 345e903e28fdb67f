//! Acceptance: every tag of a snapshot of the built-in catalog is exactly
//! what an independent reference computes, and tag runs are deterministic.
//!
//! The reference shares nothing with the tagger's fast path but the rule
//! parser and the row-at-a-time interpreter `rule::naive`: it reads
//! `members` and `orders` through `Warehouse::read` (DataFusion/Delta, not
//! the tagger's Parquet scan), builds each member's features in plain maps
//! one order line at a time, and sorts scores and rank bands itself. A tag
//! whose members differ is reported with the first differing members and
//! the features its rule reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Weekday};
use taglake_storage::{Table, Warehouse};
use taglake_tagger::catalog::{Better, CatalogFile, Values};
use taglake_tagger::rule::{self, Expr, naive};
use taglake_tagger::{RefreshOptions, refresh, snapshot};

use crate::taglake_ok;

/// Generates `members` members (Parquet, seed `seed`) under `dir` and
/// ingests products, members and orders into `dir/<warehouse>` with the
/// command; returns the warehouse path.
pub(crate) fn ingested_warehouse(dir: &Path, members: u64, seed: u64, warehouse: &str) -> PathBuf {
    let data = format!("data-{members}-{seed}");
    taglake_ok(&["generate", "--members", &members.to_string(), "--seed", &seed.to_string(), "--out", &data], dir);
    for (table, files) in [
        ("products", format!("{data}/products.parquet")),
        ("members", format!("{data}/members.parquet")),
        ("orders", format!("{data}/orders")),
    ] {
        taglake_ok(&["ingest", table, &files, "--warehouse", warehouse], dir);
    }
    dir.join(warehouse)
}

/// The runtime the tagger needs (it uses `block_in_place`).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

// ── The reference: members and orders, row by row ─────────────────────────

const UNITS: f64 = 10_000.0;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
}

fn day_number(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

/// A member's row of `members`.
#[derive(Debug)]
struct MemberRow {
    registered_day: i32,
    birthday: Option<NaiveDate>,
    gender: Option<String>,
    city: Option<String>,
    register_channel: Option<String>,
    home_store_id: Option<String>,
    points: Option<i64>,
}

/// What an order is, taken from its lines (which must agree).
#[derive(Debug, Clone, PartialEq)]
struct OrderHead {
    day: i32,
    date: NaiveDate,
    hour: u32,
    channel: String,
    store: Option<String>,
}

/// One member's order lines before D, accumulated.
#[derive(Debug, Default)]
struct Acc {
    /// order_id → the order.
    orders: BTreeMap<String, OrderHead>,
    /// Units of 1/10,000: total, last 365, 90, 30 days.
    spend: [i64; 4],
    items: i64,
    lines: i64,
    promo_lines: i64,
    category_spend: BTreeMap<String, i64>,
    category_last: BTreeMap<String, i32>,
}

/// The warehouse as the reference sees it.
struct Data {
    as_of: NaiveDate,
    d: i32,
    members: BTreeMap<u32, MemberRow>,
    acc: HashMap<u32, Acc>,
    /// Sorted distinct values of the data.
    categories: Vec<String>,
    channels: Vec<String>,
    stores: Vec<String>,
    genders: Vec<String>,
    cities: Vec<String>,
    register_channels: Vec<String>,
    lines_before_d: u64,
}

fn text(col: &dyn Array, row: usize) -> Option<String> {
    let s = col.as_string::<i32>();
    s.is_valid(row).then(|| s.value(row).to_string())
}

/// Reads the warehouse through `Warehouse::read` and accumulates every
/// member's order lines before D (`as_of`, default the day after the newest order).
fn read_data(wh: &Warehouse, rt: &tokio::runtime::Runtime, as_of: Option<NaiveDate>) -> Data {
    let member_batches = rt.block_on(wh.read(Table::Members, None)).unwrap();
    let order_batches = rt.block_on(wh.read(Table::Orders, None)).unwrap();
    let mut members = BTreeMap::new();
    let (mut genders, mut cities, mut register_channels, mut stores) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for b in &member_batches {
        let col = |name: &str| b.column_by_name(name).unwrap().as_ref();
        let keys = col("member_key").as_primitive::<Int64Type>();
        let registered = col("registered_at").as_primitive::<TimestampMicrosecondType>();
        let birthday = col("birthday").as_primitive::<Date32Type>();
        let points = col("points_balance").as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let reg = DateTime::from_timestamp_micros(registered.value(r)).unwrap().date_naive();
            let row = MemberRow {
                registered_day: day_number(reg),
                birthday: birthday.is_valid(r).then(|| epoch() + chrono::Duration::days(birthday.value(r) as i64)),
                gender: text(col("gender"), r),
                city: text(col("city"), r),
                register_channel: text(col("register_channel"), r),
                home_store_id: text(col("home_store_id"), r),
                points: points.is_valid(r).then(|| points.value(r)),
            };
            genders.extend(row.gender.clone());
            cities.extend(row.city.clone());
            register_channels.extend(row.register_channel.clone());
            stores.extend(row.home_store_id.clone());
            let key = u32::try_from(keys.value(r)).unwrap();
            assert!(members.insert(key, row).is_none(), "member_key {key} twice in members");
        }
    }
    let newest = order_batches
        .iter()
        .filter_map(|b| {
            let t = b.column_by_name("ordered_at").unwrap().as_primitive::<TimestampMicrosecondType>();
            (0..b.num_rows()).map(|r| t.value(r)).max()
        })
        .max()
        .expect("the warehouse has orders");
    let as_of = as_of
        .unwrap_or_else(|| DateTime::from_timestamp_micros(newest).unwrap().date_naive() + chrono::Duration::days(1));
    let d = day_number(as_of);
    let as_of_us = as_of.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros();
    let (mut categories, mut channels) = (BTreeSet::new(), BTreeSet::new());
    let mut acc: HashMap<u32, Acc> = HashMap::new();
    let mut lines_before_d = 0;
    for b in &order_batches {
        let col = |name: &str| b.column_by_name(name).unwrap().as_ref();
        let keys = col("member_key").as_primitive::<Int64Type>();
        let ordered_at = col("ordered_at").as_primitive::<TimestampMicrosecondType>();
        let quantity = col("quantity").as_primitive::<Int32Type>();
        let amount = col("amount").as_primitive::<Float64Type>();
        let discount = col("discount").as_primitive::<Float64Type>();
        let coupon = col("coupon_used").as_boolean();
        for r in 0..b.num_rows() {
            let channel = text(col("channel"), r).expect("channel is required");
            let store = text(col("store_id"), r);
            let category = text(col("category"), r);
            // The data's values count whatever the date.
            channels.insert(channel.clone());
            stores.extend(store.clone());
            categories.extend(category.clone());
            if ordered_at.value(r) >= as_of_us {
                continue;
            }
            lines_before_d += 1;
            let at = DateTime::from_timestamp_micros(ordered_at.value(r)).unwrap();
            let date = at.date_naive();
            let day = day_number(date);
            let head = OrderHead { day, date, hour: at.hour(), channel, store };
            let a = acc.entry(u32::try_from(keys.value(r)).unwrap()).or_default();
            let order_id = text(col("order_id"), r).unwrap();
            let known = a.orders.entry(order_id.clone()).or_insert_with(|| head.clone());
            assert_eq!(*known, head, "the lines of order {order_id} disagree on time, channel or store");
            let units = (amount.value(r) * UNITS).round() as i64;
            for (w, days) in [(0, i32::MAX), (1, 365), (2, 90), (3, 30)] {
                if d - day <= days {
                    a.spend[w] += units;
                }
            }
            a.items += quantity.value(r) as i64;
            a.lines += 1;
            let promo = (discount.is_valid(r) && discount.value(r) > 0.0) || (coupon.is_valid(r) && coupon.value(r));
            a.promo_lines += promo as i64;
            if let Some(c) = category {
                *a.category_spend.entry(c.clone()).or_default() += units;
                let last = a.category_last.entry(c).or_insert(day);
                *last = (*last).max(day);
            }
        }
    }
    let sorted = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
    Data {
        as_of,
        d,
        members,
        acc,
        categories: sorted(categories),
        channels: sorted(channels),
        stores: sorted(stores),
        genders: sorted(genders),
        cities: sorted(cities),
        register_channels: sorted(register_channels),
        lines_before_d,
    }
}

/// Lowercase, every run of other characters than ASCII letters and digits
/// becomes one `_`, none at the ends.
fn slug(value: &str) -> String {
    let lower = value.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.join("_")
}

/// (slug, raw) of values, checking the slugs do not collide (the data of
/// this test never makes them; if it did, the names would need a suffix).
fn slugged(values: &[String]) -> Vec<(String, String)> {
    let out: Vec<(String, String)> = values.iter().map(|v| (slug(v), v.clone())).collect();
    let distinct: BTreeSet<&String> = out.iter().map(|(s, _)| s).collect();
    assert_eq!(distinct.len(), out.len(), "values with colliding slugs in the test data: {values:?}");
    assert!(out.iter().all(|(s, _)| !s.is_empty()), "a value without letters or digits: {values:?}");
    out
}

/// A feature value.
#[derive(Debug, Clone, PartialEq)]
enum F {
    Num(Option<f64>),
    Text(Option<String>),
}

impl std::fmt::Display for F {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            F::Num(Some(v)) => write!(f, "{v}"),
            F::Text(Some(s)) => write!(f, "'{s}'"),
            F::Num(None) | F::Text(None) => write!(f, "null"),
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAYPARTS: [&str; 4] = ["night", "morning", "afternoon", "evening"];

/// The value with the most orders; ties go to the smallest value.
fn most_frequent<'a>(values: impl Iterator<Item = &'a String>) -> Option<String> {
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    // max_by_key keeps the last maximum: iterate largest value first so the smallest wins.
    counts.into_iter().rev().max_by_key(|(_, n)| *n).map(|(v, _)| v.clone())
}

/// Every feature of one member as of D, by the definitions of
/// `FeatureSet::chunk`.
fn features(data: &Data, key: u32, m: &MemberRow, growth_per_unit: f64) -> BTreeMap<String, F> {
    let d = data.d;
    let empty = Acc::default();
    let a = data.acc.get(&key).unwrap_or(&empty);
    let orders: Vec<&OrderHead> = a.orders.values().collect();
    let n = orders.len();
    let has = n > 0;
    let per_order = |count: usize| has.then(|| count as f64 / n as f64);
    let money = |units: i64| units as f64 / UNITS;
    let first = orders.iter().map(|o| o.day).min();
    let last = orders.iter().map(|o| o.day).max();
    let in_window = |days: i32| orders.iter().filter(|o| d - o.day <= days).count() as f64;
    let mut f: BTreeMap<String, F> = BTreeMap::new();
    let mut num = |name: &str, v: Option<f64>| {
        f.insert(name.to_string(), F::Num(v));
    };
    num("member_key", Some(key as f64));
    num("as_of", Some(d as f64));
    num("registered_date", Some(m.registered_day as f64));
    num("tenure_days", Some((d - m.registered_day) as f64));
    num("first_order_date", first.map(|x| x as f64));
    num("last_order_date", last.map(|x| x as f64));
    num("recency_days", last.map(|x| (d - x) as f64));
    num("first_order_days_ago", first.map(|x| (d - x) as f64));
    num("orders_30d", Some(in_window(30)));
    num("orders_90d", Some(in_window(90)));
    num("orders_365d", Some(in_window(365)));
    num("orders_total", Some(n as f64));
    num("spend_30d", Some(money(a.spend[3])));
    num("spend_90d", Some(money(a.spend[2])));
    num("spend_365d", Some(money(a.spend[1])));
    num("spend_total", Some(money(a.spend[0])));
    num("avg_order_value", has.then(|| money(a.spend[0]) / n as f64));
    num("items_total", Some(a.items as f64));
    num("items_per_order", has.then(|| a.items as f64 / n as f64));
    num("lines_total", Some(a.lines as f64));
    num("distinct_categories", Some(a.category_last.len() as f64));
    let channels: BTreeSet<&String> = orders.iter().map(|o| &o.channel).collect();
    num("distinct_channels", Some(channels.len() as f64));
    let weekend = orders.iter().filter(|o| matches!(o.date.weekday(), Weekday::Sat | Weekday::Sun)).count();
    num("weekend_share", per_order(weekend));
    num("promotion_share", (a.lines > 0).then(|| a.promo_lines as f64 / a.lines as f64));
    num("growth_value", Some(growth_per_unit * money(a.spend[1])));
    let age = m.birthday.filter(|b| *b <= data.as_of).map(|b| {
        let before_birthday = (data.as_of.month(), data.as_of.day()) < (b.month(), b.day());
        (data.as_of.year() - b.year() - before_birthday as i32) as f64
    });
    num("age", age);
    num("birthday_month", m.birthday.map(|b| b.month() as f64));
    num("points_balance", m.points.map(|p| p as f64));
    for (s, raw) in slugged(&data.categories) {
        let share = (a.spend[0] > 0).then(|| *a.category_spend.get(&raw).unwrap_or(&0) as f64 / a.spend[0] as f64);
        num(&format!("spend_share_{s}"), share);
        num(&format!("category_recency_days_{s}"), a.category_last.get(&raw).map(|l| (d - l) as f64));
    }
    for (s, raw) in slugged(&data.channels) {
        num(&format!("order_share_{s}"), per_order(orders.iter().filter(|o| o.channel == raw).count()));
    }
    for month in 1..=12 {
        num(&format!("month_orders_{month}"), Some(orders.iter().filter(|o| o.date.month() == month).count() as f64));
    }
    for (w, name) in WEEKDAYS.iter().enumerate() {
        let count = orders.iter().filter(|o| o.date.weekday().num_days_from_monday() as usize == w).count();
        num(&format!("weekday_orders_{name}"), Some(count as f64));
    }
    for (p, name) in DAYPARTS.iter().enumerate() {
        num(&format!("daypart_orders_{name}"), Some(orders.iter().filter(|o| o.hour as usize / 6 == p).count() as f64));
    }
    let mut txt = |name: &str, v: Option<String>| {
        f.insert(name.to_string(), F::Text(v));
    };
    txt("gender", m.gender.clone());
    txt("city", m.city.clone());
    txt("register_channel", m.register_channel.clone());
    let home = most_frequent(orders.iter().filter_map(|o| o.store.as_ref())).or_else(|| m.home_store_id.clone());
    txt("home_store", home);
    txt("main_channel", most_frequent(orders.iter().map(|o| &o.channel)));
    // The category of most spend, if above 0; ties go to the smallest name.
    let main_category = a
        .category_spend
        .iter()
        .rev()
        .filter(|(_, units)| **units > 0)
        .max_by_key(|(_, units)| **units)
        .map(|(c, _)| c.clone());
    txt("main_category", main_category);
    f
}

/// A value a rule reads: a feature, a constant, a score or an earlier tag.
#[derive(Debug, Clone)]
enum Val {
    F(F),
    Bool(bool),
}

fn to_naive(v: Val) -> naive::Value {
    match v {
        Val::F(F::Num(x)) => naive::Value::Num(x),
        Val::F(F::Text(s)) => naive::Value::Text(s),
        Val::Bool(b) => naive::Value::Bool(Some(b)),
    }
}

/// One tag as the reference computes it.
struct RefTag {
    name: String,
    /// The rule text, or how the tag is derived.
    how: String,
    /// Names worth printing next to a differing member.
    reads: Vec<String>,
    members: BTreeSet<u32>,
}

/// Every tag of the catalog over `data`, and the base.
struct Reference {
    base: Vec<u32>,
    features: BTreeMap<u32, BTreeMap<String, F>>,
    scores: BTreeMap<String, HashMap<u32, usize>>,
    tags: Vec<RefTag>,
}

impl Reference {
    fn compute(data: &Data, catalog: &CatalogFile) -> Reference {
        let growth = catalog.settings.as_ref().and_then(|s| s.growth_per_unit).unwrap_or(10.0);
        let base: Vec<u32> = data.members.iter().filter(|(_, m)| m.registered_day < data.d).map(|(k, _)| *k).collect();
        let features: BTreeMap<u32, BTreeMap<String, F>> =
            base.iter().map(|k| (*k, features(data, *k, &data.members[k], growth))).collect();
        let this_month = data.as_of.with_day(1).unwrap();
        let last_month = if this_month.month() == 1 {
            NaiveDate::from_ymd_opt(this_month.year() - 1, 12, 1).unwrap()
        } else {
            NaiveDate::from_ymd_opt(this_month.year(), this_month.month() - 1, 1).unwrap()
        };
        let constants: HashMap<&str, f64> = [
            ("as_of_year", data.as_of.year() as f64),
            ("as_of_month", data.as_of.month() as f64),
            ("as_of_day_of_month", data.as_of.day() as f64),
            ("this_month_start", day_number(this_month) as f64),
            ("last_month_start", day_number(last_month) as f64),
        ]
        .into();
        let mut r = Reference { base, features, scores: BTreeMap::new(), tags: Vec::new() };

        // Scores: NTILE over (sign × value, key) ascending.
        for s in &catalog.score {
            let sign = if s.better == Better::Higher { 1.0 } else { -1.0 };
            let picked = r.sorted(&s.among, &s.feature, sign, &constants);
            let (n, b) = (picked.len(), s.buckets as usize);
            let mut score_of = HashMap::new();
            let mut members: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); b];
            let mut position = 0;
            for (group, members) in members.iter_mut().enumerate() {
                let size = n / b + usize::from(group < n % b);
                for (_, key) in &picked[position..position + size] {
                    score_of.insert(*key, group + 1);
                    members.insert(*key);
                }
                position += size;
            }
            assert_eq!(position, n);
            for (group, members) in members.into_iter().enumerate() {
                r.tags.push(RefTag {
                    name: format!("{}_{}", s.name, group + 1),
                    how: format!("ntile({b}) of {} better {:?} among {}", s.feature, s.better, s.among),
                    reads: vec![s.feature.clone(), s.name.clone()],
                    members,
                });
            }
            r.scores.insert(s.name.clone(), score_of);
        }
        // Lookups: grid[row score - 1][column score - 1].
        for l in &catalog.lookup {
            let labels: BTreeSet<&String> = l.grid.iter().flatten().collect();
            for label in labels {
                let members = r
                    .base
                    .iter()
                    .filter(|k| {
                        let (Some(row), Some(col)) = (r.scores[&l.rows].get(k), r.scores[&l.columns].get(k)) else {
                            return false;
                        };
                        &l.grid[row - 1][col - 1] == label
                    })
                    .copied()
                    .collect();
                r.tags.push(RefTag {
                    name: format!("{}{label}", l.prefix),
                    how: format!("grid[{}][{}] = {label}", l.rows, l.columns),
                    reads: vec![l.rows.clone(), l.columns.clone()],
                    members,
                });
            }
        }
        // Ranks: positions p over (sign × value, key), sign −1 when higher is better.
        for rank in &catalog.rank {
            let sign = if rank.better == Better::Higher { -1.0 } else { 1.0 };
            let picked = r.sorted(&rank.among, &rank.by, sign, &constants);
            let n = picked.len();
            let mut from = 0;
            for band in &rank.bands {
                assert_eq!(band.up_to_percent.fract(), 0.0, "the reference handles whole percents");
                let to = band.up_to_percent as usize * n / 100;
                r.tags.push(RefTag {
                    name: band.name.clone(),
                    how: format!("positions {from}..{to} of {n} by {} ({:?} first)", rank.by, rank.better),
                    reads: vec![rank.by.clone()],
                    members: picked[from..to].iter().map(|(_, k)| *k).collect(),
                });
                from = to;
            }
        }
        // Rule tags: single tags, then families expanded over their values.
        let mut rules: Vec<(String, String)> = catalog.tag.iter().map(|t| (t.name.clone(), t.rule.clone())).collect();
        for fam in &catalog.family {
            let values: Vec<(String, String)> = match &fam.values {
                Values::Data(name) => slugged(data.values(name)),
                Values::Text(list) => slugged(list),
                Values::Numbers(list) => list.iter().map(|n| (n.to_string(), n.to_string())).collect(),
            };
            for (s, raw) in values {
                let rule = fam.rule.replace("{value}", &s).replace("{raw}", &raw.replace('\'', "''"));
                rules.push((fam.name.replace("{value}", &s), rule));
            }
        }
        for (name, text) in rules {
            let expr = rule::parse(&text).unwrap_or_else(|e| panic!("tag {name}: {e}"));
            let members = r.base.iter().copied().filter(|k| r.holds(&expr, *k, &constants)).collect();
            r.tags.push(RefTag { name, how: text, reads: expr.identifiers(), members });
        }
        // Partitions: each base member in the tag of its own value.
        for p in &catalog.partition {
            let feature_values: Vec<(String, String)> = match (p.feature.as_str(), &p.values) {
                (_, Some(Values::Numbers(list))) => list.iter().map(|n| (n.to_string(), n.to_string())).collect(),
                (f, Some(Values::Text(list))) => {
                    slugged(data.values(dictionary_of(f))).into_iter().filter(|(_, raw)| list.contains(raw)).collect()
                }
                (f, None) => slugged(data.values(dictionary_of(f))),
                (f, Some(v)) => panic!("partition {}: the reference does not handle {v:?} for {f}", p.name),
            };
            for (s, raw) in feature_values {
                let members = r
                    .base
                    .iter()
                    .copied()
                    .filter(|k| match &r.features[k][&p.feature] {
                        F::Text(v) => v.as_deref() == Some(raw.as_str()),
                        F::Num(v) => v.is_some_and(|x| x.to_string() == raw),
                    })
                    .collect();
                r.tags.push(RefTag {
                    name: p.name.replace("{value}", &s),
                    how: format!("{} = {raw}", p.feature),
                    reads: vec![p.feature.clone()],
                    members,
                });
            }
        }
        r
    }

    /// Base members where `among` holds and `feature` is not null, sorted
    /// ascending by (sign × value, key).
    fn sorted(&self, among: &str, feature: &str, sign: f64, constants: &HashMap<&str, f64>) -> Vec<(f64, u32)> {
        let among = rule::parse(among).unwrap();
        let mut picked: Vec<(f64, u32)> = self
            .base
            .iter()
            .filter(|k| self.holds(&among, **k, constants))
            .filter_map(|k| match &self.features[k][feature] {
                F::Num(Some(v)) => Some((sign * v, *k)),
                F::Num(None) => None,
                F::Text(_) => panic!("`{feature}` is text"),
            })
            .collect();
        picked.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
        picked
    }

    /// What `name` reads for member `key`.
    fn value(&self, name: &str, key: u32, constants: &HashMap<&str, f64>) -> Val {
        if let Some(f) = self.features[&key].get(name) {
            return Val::F(f.clone());
        }
        if let Some(c) = constants.get(name) {
            return Val::F(F::Num(Some(*c)));
        }
        if let Some(s) = self.scores.get(name) {
            return Val::F(F::Num(s.get(&key).map(|v| *v as f64)));
        }
        match self.tags.iter().find(|t| t.name == name) {
            Some(t) => Val::Bool(t.members.contains(&key)),
            None => panic!("a rule reads `{name}`, which the reference does not know (or a tag declared later)"),
        }
    }

    /// Whether a rule is TRUE for a member (unknown is not).
    fn holds(&self, expr: &Expr, key: u32, constants: &HashMap<&str, f64>) -> bool {
        naive::eval(expr, &|name: &str| to_naive(self.value(name, key, constants))) == Some(true)
    }

    /// `name=value` of the names a tag reads, for one member.
    fn explain(&self, reads: &[String], key: u32) -> String {
        let mut names: Vec<&str> = vec!["orders_total", "recency_days", "spend_365d"];
        names.extend(
            reads.iter().map(|s| s.as_str()).filter(|s| !["orders_total", "recency_days", "spend_365d"].contains(s)),
        );
        let mut out = Vec::new();
        for n in names {
            if let Some(f) = self.features[&key].get(n) {
                out.push(format!("{n}={f}"));
            } else if let Some(s) = self.scores.get(n) {
                out.push(format!("{n}={:?}", s.get(&key)));
            } else if let Some(t) = self.tags.iter().find(|t| t.name == n) {
                out.push(format!("{n}={}", t.members.contains(&key)));
            }
        }
        out.join(" ")
    }
}

/// The dictionary whose values a text partition expands over.
fn dictionary_of(feature: &str) -> &'static str {
    match feature {
        "gender" => "genders",
        "city" => "cities",
        "register_channel" => "register_channels",
        "home_store" => "stores",
        "main_channel" => "channels",
        "main_category" => "categories",
        other => panic!("the reference does not know the values of text feature `{other}`"),
    }
}

impl Data {
    fn values(&self, name: &str) -> &[String] {
        match name {
            "categories" => &self.categories,
            "channels" => &self.channels,
            "stores" => &self.stores,
            "genders" => &self.genders,
            "cities" => &self.cities,
            "register_channels" => &self.register_channels,
            other => panic!("unknown values `{other}`"),
        }
    }
}

/// Compares the snapshot's tags with the reference; returns a report of
/// every difference (empty when they agree).
fn differences(reference: &Reference, got: &[(String, BTreeSet<u32>)]) -> Vec<String> {
    let mut report = Vec::new();
    let want_names: BTreeSet<&str> = reference.tags.iter().map(|t| t.name.as_str()).collect();
    let got_names: BTreeSet<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    for missing in want_names.difference(&got_names) {
        report.push(format!("tag `{missing}` is missing from the snapshot"));
    }
    for extra in got_names.difference(&want_names) {
        report.push(format!("tag `{extra}` is in the snapshot but not in the reference"));
    }
    for (name, members) in got {
        let Some(want) = reference.tags.iter().find(|t| &t.name == name) else { continue };
        if want.members == *members {
            continue;
        }
        let mut lines = vec![format!(
            "tag `{name}` ({}): reference {} members, snapshot {}",
            want.how,
            want.members.len(),
            members.len()
        )];
        for (what, keys) in [
            ("only in the reference", want.members.difference(members)),
            ("only in the snapshot", members.difference(&want.members)),
        ] {
            for key in keys.take(5) {
                let about = if reference.features.contains_key(key) {
                    reference.explain(&want.reads, *key)
                } else {
                    "not in the base".to_string()
                };
                lines.push(format!("    member_key {key} {what}: {about}"));
            }
        }
        report.push(lines.join("\n"));
    }
    report
}

/// Runs the tagger as of `as_of` and compares every tag of its snapshot
/// with the reference; returns the reference and the snapshot's tags.
fn run_and_compare(
    wh: &Warehouse,
    rt: &tokio::runtime::Runtime,
    as_of: Option<NaiveDate>,
) -> (Reference, Vec<(String, BTreeSet<u32>)>) {
    let lock = wh.lock_writer("tag reference test", taglake_storage::Wait::No).unwrap();
    let summary = rt.block_on(refresh(wh, &lock, &RefreshOptions::builder().as_of(as_of).build().unwrap())).unwrap();
    drop(lock);
    let info = rt.block_on(snapshot::info(wh, Some(summary.snapshot))).unwrap();
    let (_, bitmaps) = rt.block_on(snapshot::bitmaps(wh, Some(summary.snapshot), None)).unwrap();
    let got: Vec<(String, BTreeSet<u32>)> = bitmaps.iter().map(|(n, b)| (n.clone(), b.iter().collect())).collect();

    let data = read_data(wh, rt, as_of);
    let reference = Reference::compute(&data, &CatalogFile::default_catalog());
    assert_eq!(info.as_of, data.as_of, "as-of date (default: the day after the newest order)");
    assert_eq!(summary.order_lines, data.lines_before_d, "order lines before {}", data.as_of);
    assert_eq!(info.base_members as usize, reference.base.len(), "members in the base as of {}", data.as_of);
    for t in &info.tags {
        let members = got.iter().find(|(n, _)| *n == t.name).map(|(_, m)| m.len()).unwrap();
        assert_eq!(t.members as usize, members, "stored member count of `{}`", t.name);
    }
    let report = differences(&reference, &got);
    assert!(
        report.is_empty(),
        "as of {}: {} tag(s) differ from the reference:\n{}",
        data.as_of,
        report.len(),
        report.join("\n")
    );
    (reference, got)
}

fn members_of<'a>(got: &'a [(String, BTreeSet<u32>)], name: &str) -> &'a BTreeSet<u32> {
    &got.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no tag `{name}`")).1
}

#[test]
fn every_tag_matches_an_independent_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = ingested_warehouse(dir.path(), 3000, 11, "warehouse");
    let rt = runtime();
    let wh = Warehouse::open(&path).unwrap();
    let (reference, got) = run_and_compare(&wh, &rt, None);
    let member_tags: usize = got.iter().map(|(_, m)| m.len()).sum();
    let per_member = member_tags as f64 / reference.base.len() as f64;
    println!(
        "{} tags over {} base members: {per_member:.1} tags per member on average",
        got.len(),
        reference.base.len()
    );
    assert!(per_member >= 60.0, "only {per_member:.1} tags per base member");
    // The data exercised both sides of the core rules.
    for name in ["tier_gold", "tier_regular", "lifecycle_introduction", "lifecycle_decline", "dormant_90_plus"] {
        assert!(!members_of(&got, name).is_empty(), "`{name}` is empty in the test data, so it was not really checked");
    }
    // An earlier date: later order lines must not count, later members are not in the base.
    let early = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
    let (early_reference, _) = run_and_compare(&wh, &rt, Some(early));
    assert!(early_reference.base.len() < reference.base.len(), "some members registered after {early}");
}

/// Differences between the `features` table and the reference's features
/// (every column of every base member, nulls included), at most 20.
fn features_differences(wh: &Warehouse, rt: &tokio::runtime::Runtime, reference: &Reference) -> Vec<String> {
    let mut report = Vec::new();
    let mut rows = 0;
    // Every stored column (`Warehouse::read` gives the fixed ones only):
    // the current version's files, read as they are.
    let files = rt.block_on(taglake_storage::scan::table_files(wh, Table::Features)).unwrap();
    let batches = files.iter().flat_map(|f| {
        let file = std::fs::File::open(f).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192).unwrap().map(Result::unwrap)
    });
    for b in batches {
        let keys = b.column_by_name("member_key").unwrap().as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            rows += 1;
            let key = u32::try_from(keys.value(r)).unwrap();
            let Some(want) = reference.features.get(&key) else {
                report.push(format!("member_key {key} is in `features` but not in the base"));
                continue;
            };
            let schema = b.schema();
            let names: BTreeSet<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            if names != want.keys().map(String::as_str).collect() {
                report.push(format!("columns {names:?}, reference {:?}", want.keys().collect::<Vec<_>>()));
                return report;
            }
            for (field, col) in b.schema().fields().iter().zip(b.columns()) {
                let num = |v: f64| F::Num(col.is_valid(r).then_some(v));
                let got = match field.data_type() {
                    DataType::Int32 => num(col.as_primitive::<Int32Type>().value(r) as f64),
                    DataType::Int64 => num(col.as_primitive::<Int64Type>().value(r) as f64),
                    DataType::Date32 => num(col.as_primitive::<Date32Type>().value(r) as f64),
                    DataType::Float64 => num(col.as_primitive::<Float64Type>().value(r)),
                    DataType::Utf8 => F::Text(text(col.as_ref(), r)),
                    other => panic!("column {} has type {other}", field.name()),
                };
                if got != want[field.name()] && report.len() < 20 {
                    report.push(format!("member_key {key} {}: {got}, reference {}", field.name(), want[field.name()]));
                }
            }
        }
    }
    if rows != reference.base.len() {
        report.push(format!("{rows} rows in `features`, {} members in the base", reference.base.len()));
    }
    report
}

/// The `features` table holds exactly the reference's features: one row
/// per base member, every column, nulls included, on generated data and
/// on the edge cases.
#[test]
fn the_features_table_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let generated = ingested_warehouse(dir.path(), 1500, 13, "generated");
    let edges = dir.path().join("edges");
    std::fs::create_dir(&edges).unwrap();
    for path in [generated, edge_case_warehouse(&edges, "", "")] {
        let wh = Warehouse::open(&path).unwrap();
        let (reference, _) = run_and_compare(&wh, &rt, None);
        let report = features_differences(&wh, &rt, &reference);
        assert!(
            report.is_empty(),
            "{}: the features table differs from the reference:\n{}",
            path.display(),
            report.join("\n")
        );
    }
}

#[test]
fn two_runs_give_identical_bitmaps_and_keep_the_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = ingested_warehouse(dir.path(), 800, 12, "warehouse");
    let rt = runtime();
    let wh = Warehouse::open(&path).unwrap();
    assert!(rt.block_on(snapshot::versions(&wh)).unwrap().is_empty());
    let serialized = |v: i64| -> Vec<(String, Vec<u8>)> {
        let (version, tags) = rt.block_on(snapshot::bitmaps(&wh, Some(v), None)).unwrap();
        assert_eq!(version, v);
        tags.iter()
            .map(|(name, bm)| {
                let mut bytes = Vec::new();
                bm.serialize_into(&mut bytes).unwrap();
                (name.clone(), bytes)
            })
            .collect()
    };
    let lock = wh.lock_writer("tag reference test", taglake_storage::Wait::No).unwrap();
    let first = rt.block_on(refresh(&wh, &lock, &RefreshOptions::default())).unwrap();
    assert_eq!(rt.block_on(snapshot::versions(&wh)).unwrap(), vec![first.snapshot]);
    let before = serialized(first.snapshot);
    let second = rt.block_on(refresh(&wh, &lock, &RefreshOptions::default())).unwrap();
    assert_eq!(second.snapshot, first.snapshot + 1);
    assert_eq!(rt.block_on(snapshot::versions(&wh)).unwrap(), vec![first.snapshot, second.snapshot]);
    let after = serialized(second.snapshot);
    assert_eq!(before.len(), after.len(), "both runs have the same tags");
    for ((n1, b1), (n2, b2)) in before.iter().zip(&after) {
        assert_eq!(n1, n2, "tags in the same order");
        assert!(b1 == b2, "tag `{n1}`: the serialized bitmaps of two runs differ");
    }
    // The older snapshot is still readable, unchanged.
    assert!(serialized(first.snapshot) == before, "re-reading snapshot {} changed it", first.snapshot);
    let (old, new) = (
        rt.block_on(snapshot::info(&wh, Some(first.snapshot))).unwrap(),
        rt.block_on(snapshot::info(&wh, Some(second.snapshot))).unwrap(),
    );
    assert_eq!(old.snapshot, first.snapshot);
    assert_eq!(old.tags, new.tags);
    assert_eq!(old.base_members, new.base_members);
    assert!(new.features_version > old.features_version);
}

/// Members on the edges of the definitions, as CSV: D is 2026-11-01 (the
/// newest order is at 2026-10-31 23:59:59).
const EDGE_MEMBERS: &str = "\
member_id,registered_at,birthday,gender,city,register_channel,home_store_id,points_balance
E01,2024-01-01 10:00:00,1990-02-28,F,Shanghai,app,S001,100
E02,2024-03-01 09:00:00,,,Beijing,Mini Program,S009,
E03,2026-11-01 00:00:00,1999-11-01,M,Shanghai,store,S001,0
E04,2025-01-01 00:00:00,2000-02-29,M,Shanghai,app,S001,0
E05,2025-06-01 12:00:00,1988-11-01,F,Beijing,store,S003,2000
E06,2026-10-31 23:00:00,2008-11-02,F,Beijing,app,S002,-5
E07,2023-05-05 08:00:00,1985-10-31,M,Home & Living City,store,S002,499
";

/// Order lines: a growth value of exactly 6,000 from 0.1 + 0.2 + 599.7 with
/// a line exactly 365 days before D and one 366 days before; tied stores
/// and channels; orders without a store; a line without a category; a
/// refund that brings spend to 0; a pre-churn member.
const EDGE_ORDERS: &str = "\
order_id,line_no,member_id,ordered_at,channel,store_id,sku,category,quantity,amount,discount,coupon_used
O01,1,E01,2026-10-31 23:59:59,store,S001,K1,beauty,1,0.1,0,false
O01,2,E01,2026-10-31 23:59:59,store,S001,K2,snacks,2,0.2,0.5,false
O02,1,E01,2025-11-01 00:00:00,store,S002,K3,toys,1,599.7,0,false
O03,1,E01,2025-10-31 23:59:59,store,S001,K3,toys,1,1000,0,true
O10,1,E02,2026-09-01 12:00:00,Mini Program,S005,K1,beauty,1,20,0,false
O11,1,E02,2026-09-02 18:30:00,store,S004,K2,snacks,3,20,0,false
O12,1,E02,2026-09-03 06:00:00,Mini Program,S004,K2,snacks,1,10,0,false
O13,1,E02,2026-09-04 05:59:59,store,S005,K1,beauty,1,10,0,false
O20,1,E04,2026-10-15 03:00:00,marketplaces,,K1,beauty,3,15.5,5,false
O20,2,E04,2026-10-15 03:00:00,marketplaces,,K4,,3,4.5,0,false
O21,1,E04,2026-06-01 07:00:00,marketplaces,,K2,snacks,1,9.99,0,true
O30,1,E05,2026-10-20 20:00:00,store,S003,K5,Home & Living,1,30,0,false
O31,1,E05,2026-10-21 20:00:00,store,S003,K5,Home & Living,1,-30,0,false
O40,1,E07,2026-01-10 11:00:00,app,S002,K2,snacks,1,100,0,false
O41,1,E07,2026-02-10 11:00:00,app,S002,K2,snacks,1,100,0,false
O42,1,E07,2026-03-10 11:00:00,app,S002,K2,snacks,1,100,0,false
O43,1,E07,2026-04-10 11:00:00,app,S002,K2,snacks,1,100,0,false
";

/// Ingests the edge-case members (plus `extra_members` lines) and orders.
fn edge_case_warehouse(dir: &Path, extra_members: &str, extra_orders: &str) -> PathBuf {
    std::fs::write(dir.join("members.csv"), format!("{EDGE_MEMBERS}{extra_members}")).unwrap();
    std::fs::write(dir.join("orders.csv"), format!("{EDGE_ORDERS}{extra_orders}")).unwrap();
    // The refund line needs returns allowed.
    std::fs::write(dir.join("returns.toml"), "[options]\nallow_returns = true\n").unwrap();
    for (table, extra) in [("members", vec![]), ("orders", vec!["--mapping", "returns.toml"])] {
        let file = format!("{table}.csv");
        let out = taglake_ok(&[&["ingest", table, file.as_str()][..], &extra].concat(), dir);
        assert!(out.contains(" 0 quarantined"), "{out}");
    }
    dir.join("warehouse")
}

/// member_id → member_key.
fn member_keys(wh: &Warehouse, rt: &tokio::runtime::Runtime) -> HashMap<String, u32> {
    let mut keys = HashMap::new();
    for b in rt.block_on(wh.read(Table::MemberIds, None)).unwrap() {
        let ids = b.column_by_name("member_id").unwrap().as_string::<i32>();
        let k = b.column_by_name("member_key").unwrap().as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            keys.insert(ids.value(r).to_string(), k.value(r) as u32);
        }
    }
    keys
}

#[test]
fn edge_cases_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = edge_case_warehouse(dir.path(), "", "");
    let rt = runtime();
    let wh = Warehouse::open(&path).unwrap();
    let (reference, got) = run_and_compare(&wh, &rt, None);
    // Both agree; check they agree with the definitions on the edges.
    let keys = member_keys(&wh, &rt);
    let has = |tag: &str, id: &str| members_of(&got, tag).contains(&keys[id]);
    let feature = |id: &str, name: &str| reference.features[&keys[id]][name].clone();
    let num = |v: f64| F::Num(Some(v));
    let text = |v: &str| F::Text(Some(v.to_string()));
    // 0.1 + 0.2 + 599.7 is 600 exactly in 1/10,000 units; the line 366 days before D does not count.
    assert_eq!(feature("E01", "spend_365d"), num(600.0));
    assert_eq!(feature("E01", "growth_value"), num(6000.0));
    assert!(has("tier_gold", "E01") && !has("tier_silver", "E01"));
    assert_eq!(feature("E01", "orders_365d"), num(2.0));
    assert_eq!(feature("E01", "orders_total"), num(3.0));
    // Ties: the first store and channel by name; 05:59:59 is night, 06:00 morning.
    assert_eq!(feature("E02", "home_store"), text("S004"));
    assert_eq!(feature("E02", "main_channel"), text("Mini Program"));
    assert!(has("channel_main_mini_program", "E02") && has("home_store_s004", "E02"));
    assert_eq!(feature("E02", "daypart_orders_night"), num(1.0));
    assert_eq!(feature("E02", "daypart_orders_morning"), num(1.0));
    // Registered at D: not in the base, so in no tag.
    assert!(!reference.base.contains(&keys["E03"]));
    assert!(got.iter().all(|(_, m)| !m.contains(&keys["E03"])));
    // No store on any order: the registered home store. A line without a category counts nowhere.
    assert_eq!(feature("E04", "home_store"), text("S001"));
    assert_eq!(feature("E04", "distinct_categories"), num(2.0));
    assert_eq!(feature("E04", "promotion_share"), num(2.0 / 3.0));
    assert_eq!(feature("E04", "orders_total"), num(2.0));
    // A refund brings spend to 0: no share, no main category.
    assert_eq!(feature("E05", "spend_total"), num(0.0));
    assert_eq!(feature("E05", "spend_share_home_living"), F::Num(None));
    assert_eq!(feature("E05", "main_category"), F::Text(None));
    assert!(has("category_buyer_home_living", "E05") && !has("main_category_home_living", "E05"));
    assert!(has("lifecycle_introduction", "E06") && has("new_member_30d", "E06"));
    assert!(has("lifecycle_decline", "E07") && has("city_home_living_city", "E07"));
}

/// Regression: `birthday_month` was 1 for every birthday before 1970-01-01
/// (the day number was clamped at 0 before turning it into a date).
#[test]
fn birthdays_before_1970_have_their_month() {
    let dir = tempfile::tempdir().unwrap();
    let path = edge_case_warehouse(dir.path(), "E08,2022-01-01 00:00:00,1965-06-15,F,Shanghai,app,S001,10\n", "");
    let rt = runtime();
    let wh = Warehouse::open(&path).unwrap();
    let (_, got) = run_and_compare(&wh, &rt, None);
    assert!(members_of(&got, "birthday_month_6").contains(&member_keys(&wh, &rt)["E08"]));
}
