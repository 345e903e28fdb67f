//! The one parallel pass over `members` and `orders`: row groups are
//! decoded on rayon threads, each batch's lines are grouped by shard and
//! added under that shard's lock, and the dictionaries and shards are
//! finished once every line is in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, BooleanArray, StringArray};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use rayon::prelude::*;
use taglake_storage::Table;
use taglake_storage::scan::{Wanted, column_max, scan_keys};

use super::dictionary::{Dictionary, Interner, Interners, code_at, dict_codes};
use super::shard::{Shard, finish_orders};
use super::{
    CHUNK, DAY_US, FeatureOptions, FeatureSet, NO_CODE, NO_DAY, NO_POINTS, NO_STORE, UNITS, check_channels,
    date_to_day, default_as_of,
};
use crate::{Error, Result};

pub(super) fn compute_blocking(
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
/// Reads the members and order lines of chunks `chunks` into per-member state.
pub(super) fn accumulate(
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
        shards.iter_mut().for_each(|s| (s.category, s.category_wide) = (Vec::new(), HashMap::new()));
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

// Long on purpose: one batch's columns decoded and folded into the shard in one loop, the scan's hot path.
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
                let promo = (!discount.is_null(row) && discount.value(row) > 0.0)
                    || (!coupon.is_null(row) && coupon.value(row));
                let totals = &mut s.totals[m];
                totals.spend[0] += units;
                if age <= 365 {
                    totals.spend[1] += units;
                }
                if age <= 90 {
                    totals.spend[2] += units;
                }
                if age <= 30 {
                    totals.spend[3] += units;
                }
                totals.items += qty.value(row) as i64;
                totals.lines += 1;
                totals.promo_lines += promo as u32;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
