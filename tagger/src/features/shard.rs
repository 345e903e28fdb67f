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
    /// What every order line adds to, per member.
    pub(super) totals: Vec<Totals>,
    /// Per category (first-seen code until [`finish_orders`], then sorted
    /// code), per member: spend and day of the last line.
    pub(super) category: Vec<Vec<CategoryTotal>>,
    /// The category sums marked [`WIDE`], by [`wide_key`].
    pub(super) category_wide: HashMap<u32, i64>,
    /// One record per order line group as the lines arrive; emptied by
    /// [`finish_orders`] into [`Shard::orders`].
    pub(super) records: Records,
    /// The distinct orders, by member (after [`finish_orders`]).
    pub(super) orders: MemberOrders,
}

/// What each order line of a member adds to, side by side in one 48-byte
/// record: a line updates all of them, and as one array each (the layout
/// before) a line cost a cache miss per array on the shard's megabytes of
/// state; the per-line accumulation was most of the pass's own time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Totals {
    /// Spend in 1/10,000 units: [total, 365 d, 90 d, 30 d].
    pub(super) spend: [i64; 4],
    /// Sum of `quantity`.
    pub(super) items: i64,
    /// Order lines.
    pub(super) lines: u32,
    /// Lines with a discount or a coupon.
    pub(super) promo_lines: u32,
}

/// A member's spend and last day in one category, in six bytes: the
/// per-category state is the largest part of a shard (13 categories: 78
/// bytes a member), and a line reads and writes both, so they share a
/// cache line. The spend is 32-bit ([`WIDE`] when the sum left that range;
/// it is then exact in [`Shard::category_wide`]); the day is
/// [`category_day`] (0 = none).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(2))]
pub(super) struct CategoryTotal {
    spend: i32,
    last: u16,
}

impl CategoryTotal {
    /// The day of the member's last line in the category, as [`category_day`].
    pub(super) fn last(self) -> u16 {
        self.last
    }
}

/// Order records of a shard as the pass adds them, in blocks of a fixed
/// size: a growing `Vec` doubles, which at the end of the pass left a
/// third of the records' memory unused on average (the peak of the run)
/// and moved every record once more per doubling.
#[derive(Default)]
pub(super) struct Records {
    full: Vec<Vec<u128>>,
    last: Vec<u128>,
}

/// Records per block (256 KiB).
const BLOCK: usize = 1 << 14;

impl Records {
    pub(super) fn push(&mut self, record: u128) {
        if self.last.len() == BLOCK {
            self.full.push(std::mem::replace(&mut self.last, Vec::with_capacity(BLOCK)));
        }
        self.last.push(record);
    }

    fn len(&self) -> usize {
        self.full.len() * BLOCK + self.last.len()
    }

    /// Every record in one vector, each block freed once copied.
    fn into_vec(self) -> Vec<u128> {
        let mut all = Vec::with_capacity(self.len());
        for block in self.full {
            all.extend_from_slice(&block);
        }
        all.extend_from_slice(&self.last);
        all
    }
}

/// A shard's distinct orders, member by member: those of member `m` are
/// `orders[offsets[m]..offsets[m + 1]]`, each as [`compact`] packs it. The
/// member and the order-id hash of a record are no longer needed once the
/// records are deduplicated, so an order takes 8 bytes here instead of 16.
#[derive(Default)]
pub(super) struct MemberOrders {
    offsets: Vec<u32>,
    orders: Vec<u64>,
}

impl MemberOrders {
    /// The orders of member `m` (packed).
    fn of(&self, m: usize) -> &[u64] {
        match self.offsets.get(m..m + 2) {
            Some(&[from, to]) => &self.orders[from as usize..to as usize],
            _ => &[],
        }
    }

    /// Members (offsets in the shard) with at least one order, with theirs.
    fn members(&self) -> impl Iterator<Item = (usize, &[u64])> {
        (0..self.offsets.len().saturating_sub(1)).map(|m| (m, self.of(m))).filter(|(_, o)| !o.is_empty())
    }
}

/// An order record without its member and order-id hash: day (16 bits),
/// store (24), channel (8), part of the day (2).
fn compact(record: u128) -> u64 {
    ((record >> 22) & ((1 << 50) - 1)) as u64
}

fn order_day(order: u64) -> i32 {
    (order >> 34) as i32
}

fn order_store(order: u64) -> u32 {
    ((order >> 10) & 0xFF_FFFF) as u32
}

fn order_channel(order: u64) -> u32 {
    ((order >> 2) & 0xFF) as u32
}

fn order_daypart(order: u64) -> usize {
    (order & 0b11) as usize
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
            totals: zeros(len),
            ..Shard::default()
        }
    }

    /// Adds `units` to member `m`'s spend in category `code` and records
    /// the line's day.
    pub(super) fn add_category(&mut self, code: usize, m: usize, units: i64, day: i32) {
        while self.category.len() <= code {
            self.category.push(zeros(self.len));
        }
        let total = &mut self.category[code][m];
        total.last = total.last.max(category_day(day));
        let narrow = total.spend;
        if narrow != WIDE {
            match i32::try_from(units).ok().and_then(|u| narrow.checked_add(u)).filter(|sum| *sum != WIDE) {
                Some(sum) => {
                    total.spend = sum;
                    return;
                }
                None => {
                    self.category_wide.insert(wide_key(code, m), i64::from(narrow));
                    total.spend = WIDE;
                }
            }
        }
        *self.category_wide.entry(wide_key(code, m)).or_default() += units;
    }

    /// The spend of every category as 64-bit sums.
    pub(super) fn category_spend_wide(&self) -> Vec<Vec<i64>> {
        self.category
            .iter()
            .enumerate()
            .map(|(code, totals)| {
                totals
                    .iter()
                    .enumerate()
                    .map(|(m, t)| {
                        let spend = t.spend;
                        if spend == WIDE { self.category_wide[&wide_key(code, m)] } else { i64::from(spend) }
                    })
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
/// Sorts and deduplicates a shard's order records into its orders by
/// member (one per distinct order) and puts its category columns in
/// sorted-name order.
pub(super) fn finish_orders(s: &mut Shard, categories: &Dictionary) {
    let len = s.len;
    let mut records = std::mem::take(&mut s.records).into_vec();
    records.sort_unstable();
    records.dedup_by_key(|r| *r >> 72);
    let mut offsets = Vec::with_capacity(len + 1);
    let mut orders = Vec::with_capacity(records.len());
    for (i, &r) in records.iter().enumerate() {
        while offsets.len() <= record_member(r) {
            offsets.push(order_offset(i));
        }
        orders.push(compact(r));
    }
    drop(records);
    offsets.resize(len + 1, order_offset(orders.len()));
    s.orders = MemberOrders { offsets, orders };

    let mut by_name = vec![Vec::new(); categories.values.len()];
    for (first_seen, totals) in std::mem::take(&mut s.category).into_iter().enumerate() {
        by_name[categories.remap[first_seen] as usize] = totals;
    }
    s.category_wide = std::mem::take(&mut s.category_wide)
        .into_iter()
        .map(|(key, sum)| (wide_key(categories.remap[(key >> 16) as usize] as usize, (key & 0xFFFF) as usize), sum))
        .collect();
    for totals in &mut by_name {
        if totals.is_empty() {
            *totals = zeros(len);
        }
    }
    s.category = by_name;
}

/// An index into a shard's orders: a shard holds at most 65,536 members,
/// and 4 billion orders of theirs would take 64 GiB of records first.
fn order_offset(i: usize) -> u32 {
    u32::try_from(i).expect("more than 4 billion orders in one shard of 65,536 members")
}

/// The member (offset in its shard) of an order record.
fn record_member(r: u128) -> usize {
    (r >> 112) as usize
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
        for (m, member_orders) in s.orders.members() {
            let (mut counts, mut first, mut last) = ([0u32; 4], i32::MAX, i32::MIN);
            for &order in member_orders {
                let day = order_day(order);
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
        for (m, member_orders) in s.orders.members() {
            member_stores.clear();
            for &order in member_orders {
                let day = order_day(order);
                let store = order_store(order);
                let channel = order_channel(order);
                let daypart = order_daypart(order);
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
        assert_eq!(s.category[2].iter().map(|t| t.last()).collect::<Vec<_>>(), [101, 0, 0, 101, 0]);
    }
}
