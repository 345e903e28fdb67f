//! Keeping community numbers from one fit to the next, and measuring how
//! much two labelings agree.
//!
//! A nightly refit finds the communities again, but k-means numbers them
//! in whatever order its starts produce. `community_3` must mean the same
//! thing tomorrow as today, so a new fit's centroids are matched to the
//! previous model's (both taken back to the features' own units, since
//! each fit standardizes its own sample) by the assignment that minimises
//! the total squared distance ([`hungarian`], exact, O(k³)). A pair
//! further apart than half the distance between the two closest previous
//! centroids is no match: that community is new (or changed shape), and it
//! gets a number no previous community had.
//!
//! [`adjusted_rand_index`] compares two labelings of the same rows (1 =
//! identical up to renaming, about 0 = chance); `--stability` reports it
//! between the fit and refits on resamples.

/// The assignment of rows to columns of a square-or-wide cost matrix
/// (`rows ≤ columns`) with the least total cost: `result[r]` is the column
/// of row `r`. Kuhn–Munkres with potentials (the O(n²m) form).
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    if n == 0 {
        return Vec::new();
    }
    let m = cost[0].len();
    assert!(n <= m && cost.iter().all(|r| r.len() == m), "a rows ≤ columns cost matrix");
    // 1-based arrays with a sentinel column 0, as in the classic form.
    let (mut u, mut v) = (vec![0f64; n + 1], vec![0f64; m + 1]);
    let mut owner = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for row in 1..=n {
        owner[0] = row;
        let mut col0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[col0] = true;
            let r = owner[col0];
            let mut delta = f64::INFINITY;
            let mut col1 = 0;
            for col in 1..=m {
                if !used[col] {
                    let cur = cost[r - 1][col - 1] - u[r] - v[col];
                    if cur < minv[col] {
                        minv[col] = cur;
                        way[col] = col0;
                    }
                    if minv[col] < delta {
                        delta = minv[col];
                        col1 = col;
                    }
                }
            }
            for col in 0..=m {
                if used[col] {
                    u[owner[col]] += delta;
                    v[col] -= delta;
                } else {
                    minv[col] -= delta;
                }
            }
            col0 = col1;
            if owner[col0] == 0 {
                break;
            }
        }
        loop {
            let col1 = way[col0];
            owner[col0] = owner[col1];
            col0 = col1;
            if col0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![0usize; n];
    for col in 1..=m {
        if owner[col] != 0 {
            result[owner[col] - 1] = col - 1;
        }
    }
    result
}

/// How the communities of a new fit relate to the previous model's.
#[derive(Debug, Clone, PartialEq)]
pub struct Alignment {
    /// Per new community, the previous community it continues (index into
    /// the previous model), or `None` when it matches none.
    pub matched: Vec<Option<usize>>,
}

/// Matches `new` centroids to `previous` ones (rows of features, in the
/// features' own units after the standardization is undone). See the
/// module docs for what counts as a match.
pub fn align(previous: &[Vec<f64>], new: &[Vec<f64>]) -> Alignment {
    let sq = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
    if previous.is_empty() || new.is_empty() {
        return Alignment { matched: vec![None; new.len()] };
    }
    // Half the distance between the two closest previous centroids,
    // squared: a match must be nearer than that.
    let mut closest = f64::INFINITY;
    for i in 0..previous.len() {
        for j in i + 1..previous.len() {
            closest = closest.min(sq(&previous[i], &previous[j]));
        }
    }
    let limit = if closest.is_finite() { closest / 4.0 } else { f64::INFINITY };
    let (rows, cols, flipped) =
        if new.len() <= previous.len() { (new, previous, false) } else { (previous, new, true) };
    // Any pair beyond the limit costs the limit: which far pair is chosen
    // must not matter, or one community that moved away would take a
    // neighbour's partner and leave the neighbour unmatched.
    let cost: Vec<Vec<f64>> = rows.iter().map(|r| cols.iter().map(|c| sq(r, c).min(limit)).collect()).collect();
    let pairs = hungarian(&cost);
    let mut matched = vec![None; new.len()];
    for (r, &c) in pairs.iter().enumerate() {
        let (n, p) = if flipped { (c, r) } else { (r, c) };
        if sq(&new[n], &previous[p]) < limit {
            matched[n] = Some(p);
        }
    }
    Alignment { matched }
}

/// Adjusted Rand index of two labelings of the same rows (Hubert and
/// Arabie): 1 when they agree up to renaming, about 0 for chance.
pub fn adjusted_rand_index(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len(), "two labelings of the same rows");
    let n = a.len() as f64;
    if a.len() < 2 {
        return 1.0;
    }
    let ka = a.iter().max().map_or(0, |&m| m as usize + 1);
    let kb = b.iter().max().map_or(0, |&m| m as usize + 1);
    let mut table = vec![0f64; ka * kb];
    let (mut rows, mut cols) = (vec![0f64; ka], vec![0f64; kb]);
    for (&x, &y) in a.iter().zip(b) {
        table[x as usize * kb + y as usize] += 1.0;
        rows[x as usize] += 1.0;
        cols[y as usize] += 1.0;
    }
    let pairs = |v: f64| v * (v - 1.0) / 2.0;
    let index: f64 = table.iter().map(|&v| pairs(v)).sum();
    let sa: f64 = rows.iter().map(|&v| pairs(v)).sum();
    let sb: f64 = cols.iter().map(|&v| pairs(v)).sum();
    let expected = sa * sb / pairs(n);
    let max = 0.5 * (sa + sb);
    if max == expected { 1.0 } else { (index - expected) / (max - expected) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every assignment of rows to distinct columns, the cheapest total.
    fn brute_force(cost: &[Vec<f64>]) -> f64 {
        fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == cost.len() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..used.len() {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row][c] + go(cost, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, 0, &mut vec![false; cost[0].len()])
    }

    proptest! {
        #[test]
        fn hungarian_finds_the_cheapest_assignment(
            (m, cells) in (1usize..7).prop_flat_map(|n| (Just(n), n..8)).prop_flat_map(|(n, m)| {
                (Just(m), prop::collection::vec(prop_oneof![0.0f64..100.0, Just(5.0)], n * m))
            })
        ) {
            let cost: Vec<Vec<f64>> = cells.chunks(m).map(<[f64]>::to_vec).collect();
            let got = hungarian(&cost);
            let mut seen = std::collections::HashSet::new();
            prop_assert!(got.iter().all(|&c| c < m && seen.insert(c)), "distinct columns: {:?}", got);
            let total: f64 = got.iter().enumerate().map(|(r, &c)| cost[r][c]).sum();
            prop_assert!((total - brute_force(&cost)).abs() < 1e-9, "{} vs {}", total, brute_force(&cost));
        }

        /// A relabelled copy of a labeling scores 1; ARI is symmetric.
        #[test]
        fn ari_is_one_for_renamings_and_symmetric(labels in prop::collection::vec(0u32..5, 2..200), other in prop::collection::vec(0u32..4, 200)) {
            let renamed: Vec<u32> = labels.iter().map(|&l| (l + 3) % 7).collect();
            prop_assert!((adjusted_rand_index(&labels, &renamed) - 1.0).abs() < 1e-12);
            let other = &other[..labels.len()];
            let (ab, ba) = (adjusted_rand_index(&labels, other), adjusted_rand_index(other, &labels));
            prop_assert!((ab - ba).abs() < 1e-12);
            prop_assert!(ab <= 1.0 + 1e-12);
        }
    }

    #[test]
    fn ari_matches_the_textbook_example() {
        // {a a a b b b} vs {1 1 2 2 3 3} → 0.2424…
        let a = [0, 0, 0, 1, 1, 1];
        let b = [0, 0, 1, 1, 2, 2];
        assert!((adjusted_rand_index(&a, &b) - 0.242_424_242_424).abs() < 1e-9);
    }

    #[test]
    fn permuted_centroids_are_matched_back_and_strangers_are_not() {
        let previous = vec![vec![0.0, 0.0], vec![10.0, 0.0], vec![0.0, 10.0], vec![10.0, 10.0]];
        // The same communities, moved a little and listed in another order.
        let new = vec![vec![10.2, 9.9], vec![0.1, 0.1], vec![9.8, 0.3], vec![0.0, 9.7]];
        assert_eq!(align(&previous, &new).matched, vec![Some(3), Some(0), Some(1), Some(2)]);
        // One community moved far away: no match; the others still match.
        let moved = vec![vec![10.2, 9.9], vec![0.1, 0.1], vec![30.0, 30.0], vec![0.0, 9.7]];
        assert_eq!(align(&previous, &moved).matched, vec![Some(3), Some(0), None, Some(2)]);
        // More communities than before: the extra one is new.
        let more = vec![vec![0.0, 0.2], vec![5.0, 5.0], vec![10.0, 0.1], vec![0.1, 10.0], vec![10.0, 10.0]];
        assert_eq!(align(&previous, &more).matched, vec![Some(0), None, Some(1), Some(2), Some(3)]);
        // Fewer: each still finds its own.
        let fewer = vec![vec![0.0, 10.1], vec![9.9, 0.0]];
        assert_eq!(align(&previous, &fewer).matched, vec![Some(2), Some(1)]);
    }
}
