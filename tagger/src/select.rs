//! Finds the (value, key) pairs at given positions of a cut's order
//! without sorting the pairs or gathering them into one buffer.
//!
//! A score or rank needs only the members where its groups start, so the
//! pairs are never sorted: they are selected. They arrive one vector per
//! chunk of members; a selection inside one buffer (quickselect) would need
//! them copied into a buffer as long as the base (672 MB at 42 M members),
//! at the moment the refresh holds the most memory. Instead this is a radix
//! selection over the parts as they are. A pair is read as one 96-bit
//! number (value above key, so its numeric order is the cut's order). A
//! group is the pairs between two numbers; each round reads the parts once
//! and counts, for every group still too large, the pairs under each value
//! of the 12 highest bits in which the group's ends differ, with the
//! smallest and largest number under each. The bucket holding a wanted
//! position is the next round's group, so bits every pair of a group shares
//! (a value tied by millions of members) are never counted. A group of at
//! most [`COLLECT`] pairs is gathered and sorted instead. A group's ends
//! differ in fewer bits every round, so there are at most eight rounds;
//! once the groups left hold a quarter of the pairs in question or fewer,
//! those are copied out and the later rounds read only them.
//!
//! Beside the pairs, it holds 192 KiB of counts per group still counted
//! per thread (a group per wanted position at most), at most [`COLLECT`]
//! gathered pairs per wanted position, and the copied pairs: none of it
//! grows with more than the pairs themselves.

use rayon::prelude::*;

/// A place in a cut's order: the ordered value bits and the member key.
pub type CutStart = (u64, u32);

/// A [`CutStart`] past every member (a group that starts after the last one).
pub const CUT_END: CutStart = (u64::MAX, u32::MAX);

/// Pairs of one group gathered and sorted instead of counted further.
const COLLECT: usize = 1 << 10;
/// Bits of the digit counted per round.
const DIGIT: u32 = 12;
const BUCKETS: usize = 1 << DIGIT;

/// The pairs that would be at `positions` if all pairs of `parts` were
/// sorted together ([`CUT_END`] for a position past the end). Pairs are
/// distinct (keys are), so the answer does not depend on how ties sort.
pub fn positions(parts: &[Vec<CutStart>], positions: &[usize]) -> Vec<CutStart> {
    positions_collecting(parts, positions, COLLECT)
}

/// The pairs whose numbers lie in `lo..=hi`, and the wanted positions among them.
struct Group {
    lo: u128,
    hi: u128,
    /// How many pairs it has.
    count: usize,
    /// (index into the wanted positions, rank inside this group), by rank.
    targets: Vec<(usize, usize)>,
}

impl Group {
    /// Where the digit counted in this group starts: the 12 highest bits
    /// in which its ends differ.
    fn shift(&self) -> u32 {
        let differ = 128 - (self.lo ^ self.hi).leading_zeros();
        differ.saturating_sub(DIGIT)
    }
}

/// Pairs under one digit of a group: how many, and the smallest and
/// largest number among them.
#[derive(Clone, Copy)]
struct Bucket {
    count: usize,
    lo: u128,
    hi: u128,
}

const EMPTY: Bucket = Bucket { count: 0, lo: u128::MAX, hi: 0 };

/// [`positions`], sorting a group once it has at most `collect` pairs.
fn positions_collecting(parts: &[Vec<CutStart>], positions: &[usize], collect: usize) -> Vec<CutStart> {
    let n: usize = parts.iter().map(Vec::len).sum();
    let mut wanted: Vec<usize> = positions.iter().copied().filter(|p| *p < n).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = vec![CUT_END; wanted.len()];
    let mut groups = Vec::new();
    if !wanted.is_empty() {
        let targets = wanted.iter().copied().enumerate().collect();
        groups.push(Group { lo: 0, hi: (1 << 96) - 1, count: n, targets });
    }
    // The pairs still in question: all of them at first, then only those
    // of the groups left, once these are a quarter of them or fewer.
    let mut pool: Option<Vec<CutStart>> = None;
    while !groups.is_empty() {
        let source: Vec<&[CutStart]> = match &pool {
            Some(pool) => pool.chunks(1 << 16).collect(),
            None => parts.iter().map(Vec::as_slice).collect(),
        };
        // One task per thread, so there are as many sets of counts as threads.
        let per_task = source.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
        let find = Finder::new(&groups);
        // Each large group's place among the large ones (its counts).
        let mut n_large = 0;
        let large: Vec<Option<usize>> = groups
            .iter()
            .map(|g| {
                (g.count > collect).then(|| {
                    n_large += 1;
                    n_large - 1
                })
            })
            .collect();
        let shifts: Vec<u32> = groups.iter().map(Group::shift).collect();
        let (mut gathered, buckets) = source
            .par_chunks(per_task)
            .map(|slices| {
                let (mut gathered, mut buckets) = (Vec::new(), vec![EMPTY; n_large * BUCKETS]);
                for &pair in slices.iter().copied().flatten() {
                    let number = number(pair);
                    let Some(g) = find.group(number) else { continue };
                    match large[g] {
                        None => gathered.push(pair),
                        Some(l) => {
                            let d = ((number >> shifts[g]) - (groups[g].lo >> shifts[g])) as usize;
                            let b = &mut buckets[l * BUCKETS + d];
                            b.count += 1;
                            b.lo = b.lo.min(number);
                            b.hi = b.hi.max(number);
                        }
                    }
                }
                (gathered, buckets)
            })
            .reduce(
                || (Vec::new(), vec![EMPTY; n_large * BUCKETS]),
                |(mut a, mut ba), (b, bb)| {
                    a.extend(b);
                    for (x, y) in ba.iter_mut().zip(bb) {
                        *x = Bucket { count: x.count + y.count, lo: x.lo.min(y.lo), hi: x.hi.max(y.hi) };
                    }
                    (a, ba)
                },
            );
        gathered.par_sort_unstable();
        let mut next = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            match large[g] {
                None => {
                    let start = gathered.partition_point(|p| number(*p) < group.lo);
                    for &(k, rank) in &group.targets {
                        found[k] = gathered[start + rank];
                    }
                }
                Some(l) => {
                    let buckets = &buckets[l * BUCKETS..(l + 1) * BUCKETS];
                    let (mut d, mut below) = (0, 0);
                    for &(k, rank) in &group.targets {
                        // Targets are by rank, so their buckets only go up.
                        while below + buckets[d].count <= rank {
                            below += buckets[d].count;
                            d += 1;
                        }
                        let b = buckets[d];
                        match next.last_mut() {
                            Some(Group { lo, targets, .. }) if *lo == b.lo => targets.push((k, rank - below)),
                            _ => next.push(Group {
                                lo: b.lo,
                                hi: b.hi,
                                count: b.count,
                                targets: vec![(k, rank - below)],
                            }),
                        }
                    }
                }
            }
        }
        let in_question: usize = source.iter().map(|s| s.len()).sum();
        let left: usize = next.iter().map(|g| g.count).sum();
        if !next.is_empty() && left <= in_question / 4 {
            let find = Finder::new(&next);
            let kept = source
                .par_chunks(per_task)
                .map(|slices| {
                    slices.iter().copied().flatten().filter(|p| find.group(number(**p)).is_some()).copied().collect()
                })
                .reduce(Vec::new, |mut a: Vec<CutStart>, b| {
                    a.extend(b);
                    a
                });
            drop(source);
            pool = Some(kept);
        }
        groups = next;
    }
    positions.iter().map(|p| wanted.binary_search(p).map_or(CUT_END, |k| found[k])).collect()
}

/// Finds the group of a number: groups are disjoint and in order, so by a
/// search on their lower ends (none with one group).
struct Finder {
    lo: Vec<u128>,
    hi: Vec<u128>,
}

impl Finder {
    fn new(groups: &[Group]) -> Finder {
        Finder { lo: groups.iter().map(|g| g.lo).collect(), hi: groups.iter().map(|g| g.hi).collect() }
    }

    fn group(&self, number: u128) -> Option<usize> {
        let g = match self.lo.len() {
            1 => 0,
            _ => self.lo.partition_point(|lo| *lo <= number).checked_sub(1)?,
        };
        (self.lo[g] <= number && number <= self.hi[g]).then_some(g)
    }
}

/// A pair as one number whose order is the pairs' order.
fn number((value, key): CutStart) -> u128 {
    (u128::from(value) << 32) | u128::from(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a full sort puts at each position.
    fn sorted_at(parts: &[Vec<CutStart>], positions: &[usize]) -> Vec<CutStart> {
        let mut all: Vec<CutStart> = parts.concat();
        all.sort_unstable();
        positions.iter().map(|p| all.get(*p).copied().unwrap_or(CUT_END)).collect()
    }

    /// Pairs with distinct keys, values from `values`, split into parts at `cuts`.
    fn parts_of(values: &[u64], keys_from: u32, cuts: &[usize]) -> Vec<Vec<CutStart>> {
        let pairs: Vec<CutStart> = values
            .iter()
            .enumerate()
            .map(|(k, v)| (*v, keys_from.wrapping_add((k as u32).wrapping_mul(7919))))
            .collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (pairs.len() + 1)).collect();
        at.sort_unstable();
        let mut parts = Vec::new();
        let mut from = 0;
        for c in at.into_iter().chain([pairs.len()]) {
            parts.push(pairs[from..c].to_vec());
            from = c;
        }
        parts
    }

    #[test]
    fn nothing_to_select_gives_cut_ends() {
        assert_eq!(positions(&[], &[0, 3]), vec![CUT_END; 2]);
        assert_eq!(positions(&[vec![], vec![(5, 1)]], &[]), vec![]);
        assert_eq!(positions(&[vec![], vec![(5, 1)]], &[1, 0, 0]), vec![CUT_END, (5, 1), (5, 1)]);
    }

    /// Values at both ends of the range and keys that differ only in their
    /// last bits: every round of digits is needed.
    #[test]
    fn extreme_values_and_close_keys_are_told_apart() {
        let parts = vec![
            vec![(u64::MAX, u32::MAX - 1), (0, 0), (u64::MAX, 0)],
            vec![(u64::MAX - 1, u32::MAX), (0, 1), (u64::MAX, u32::MAX - 2)],
        ];
        let all: Vec<usize> = (0..7).collect();
        for collect in [1, 2, 3, 100] {
            assert_eq!(positions_collecting(&parts, &all, collect), sorted_at(&parts, &all), "collect {collect}");
        }
    }

    proptest! {
        /// Selection finds what a full sort puts at each position, for any
        /// positions (repeated, unordered, past the end), any ties of
        /// values, any split into parts, and groups gathered at any size
        /// (from one pair, where every digit is counted, up).
        #[test]
        fn selection_matches_a_sort(
            values in prop::collection::vec(prop_oneof![0u64..20, any::<u64>(), (u64::MAX - 3)..=u64::MAX], 0..300),
            keys_from in prop_oneof![Just(0u32), any::<u32>(), Just(u32::MAX - 400)],
            cuts in prop::collection::vec(0usize..400, 0..6),
            positions in prop::collection::vec(0usize..320, 0..8),
            collect in prop_oneof![1usize..4, 4usize..400],
        ) {
            let parts = parts_of(&values, keys_from, &cuts);
            prop_assert_eq!(positions_collecting(&parts, &positions, collect), sorted_at(&parts, &positions));
        }
    }
}
