//! Per-member accumulators of one chunk of keys (a shard), and the order
//! statistics derived from its order records when the chunk's columns are
//! computed. A shard is locked as a whole while a batch's lines for it are
//! added, so its arrays are plain vectors indexed by the member's offset.

use std::collections::HashMap;

use super::dictionary::Dictionary;
use super::{CHUNK, FeatureSet, NO_CODE, NO_DAY, NO_POINTS, NO_STORE, civil};

/// Per-member accumulators of one shard.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) len: usize,
    // from `members`
    pub(super) registered: Vec<i32>,
    pub(super) birthday: Vec<i32>,
    pub(super) gender: Vec<u32>,
    pub(super) city: Vec<u32>,
    pub(super) register_channel: Vec<u32>,
    pub(super) home_store_attr: Vec<u32>,
    pub(super) points: Vec<i64>,
    // from order lines: [total, 365 d, 90 d, 30 d]
    pub(super) spend: [Vec<i64>; 4],
    pub(super) items: Vec<i64>,
    pub(super) lines: Vec<u32>,
    pub(super) promo_lines: Vec<u32>,
    /// Spend per category, in 32 bits: the per-category sums are most of a
    /// shard's memory (13 categories: 104 of ~280 bytes a member as
    /// `i64`), and almost all of them fit. A sum that leaves the 32-bit
    /// range is [`WIDE`] here and exact in `category_wide`.
    pub(super) category_spend: Vec<Vec<i32>>,
    /// The sums marked [`WIDE`], by [`wide_key`].
    pub(super) category_wide: HashMap<u32, i64>,
    /// Day of the last line per category, as [`category_day`] (0 = none).
    pub(super) category_last: Vec<Vec<u16>>,
    /// One record per (member, order); sorted and deduplicated by `finish`.
    pub(super) records: Vec<u128>,
}

/// Per-member order counts and first and last order days of one chunk,
/// derived from its sorted order records when the chunk is computed
/// (keeping them for the whole base would cost more than the records they
/// come from). Most columns and every default score and rank need only
/// these, so they come from a light pass of their own.
pub(super) struct OrderCounts {
    // [total, 365 d, 90 d, 30 d]
    pub(super) orders: [Vec<u32>; 4],
    pub(super) first_day: Vec<i32>,
    pub(super) last_day: Vec<i32>,
}

/// The rest of a chunk's order statistics (calendar, channels, home store),
/// computed only when a wanted column reads them.
pub(super) struct OrderMix {
    pub(super) weekend_orders: Vec<u32>,
    pub(super) channel_orders: Vec<Vec<u32>>,
    pub(super) month_orders: Vec<[u32; 12]>,
    pub(super) weekday_orders: Vec<[u32; 7]>,
    pub(super) daypart_orders: Vec<[u32; 4]>,
    pub(super) store: Vec<u32>,
}

impl Shard {
    pub(super) fn new(len: usize) -> Shard {
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
    pub(super) fn add_category(&mut self, code: usize, m: usize, units: i64, day: i32) {
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
    pub(super) fn category_spend_wide(&self) -> Vec<Vec<i64>> {
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
/// A day since 1970-01-01 in two bytes, 0 meaning "none": per member and
/// category this halves the largest array of the pass. Days before 1970
/// (which ingest never lets through) count as 1970-01-01.
fn category_day(day: i32) -> u16 {
    (day.clamp(0, 65_534) + 1) as u16
}
/// Sorts and deduplicates a shard's order records (one per distinct order)
/// and puts its category columns in sorted-name order.
pub(super) fn finish_orders(s: &mut Shard, categories: &Dictionary) {
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
    pub(super) fn order_counts(&self, s: &Shard) -> OrderCounts {
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
    pub(super) fn order_mix(&self, s: &Shard) -> OrderMix {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
