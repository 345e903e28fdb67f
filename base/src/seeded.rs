//! Seeded hashing and sampling: the same seed gives the same members on
//! every machine, in every version, whatever the thread count.
//!
//! Everything rests on splitmix64 (Steele, Lea and Flood, 2014): its
//! output function [`mix64`] is a bijection of 64-bit words in which every
//! input bit affects every output bit, and its generator [`SplitMix64`]
//! steps by the golden-ratio increment [`GOLDEN`]. [`Seeded`] hashes keys
//! under a seed; [`sample`] keeps the `n` keys of smallest seeded hash, a
//! uniform sample that depends only on the keys and the seed (not on the
//! order they come in), so `audience sample` and the sample `cluster` fits
//! on draw members the same way.

/// The golden-ratio increment of splitmix64: 2⁶⁴ / φ, rounded to odd.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: a bijective 64-bit mixer with full
/// avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The splitmix64 generator: a 64-bit state stepped by [`GOLDEN`] and
/// mixed by [`mix64`]. Small and fast; used to seed larger generators and
/// to draw test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose first state is `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
}

/// A hash of keys under a seed: `mix64(mix64(seed + GOLDEN) ^ key)`.
/// Different seeds give unrelated orders of the same keys.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    salt: u64,
}

impl Seeded {
    /// The hash of `seed`.
    pub fn new(seed: u64) -> Self {
        Self { salt: mix64(seed.wrapping_add(GOLDEN)) }
    }

    /// The seeded hash of one key.
    pub fn hash(&self, key: u64) -> u64 {
        mix64(self.salt ^ key)
    }
}

/// `n` of `keys` drawn uniformly, the same for the same seed: the `n` keys
/// with the smallest [`Seeded`] hash, in ascending key order. All keys when
/// there are at most `n`. Memory is `O(n)` whatever the number of keys.
pub fn sample(keys: impl IntoIterator<Item = u32>, n: usize, seed: u64) -> Vec<u32> {
    let seeded = Seeded::new(seed);
    let keys = keys.into_iter();
    // Never more than the keys: `n` may be anything a user typed, so room
    // is reserved only for as many keys as the iterator promises.
    let (fewest, most) = keys.size_hint();
    let n = n.min(most.unwrap_or(usize::MAX));
    let mut heap = std::collections::BinaryHeap::with_capacity(n.min(most.unwrap_or(fewest)).saturating_add(1));
    for k in keys {
        let h = (seeded.hash(u64::from(k)), k);
        if heap.len() < n {
            heap.push(h);
        } else if heap.peek().is_some_and(|top| h < *top) {
            heap.pop();
            heap.push(h);
        }
    }
    let mut out: Vec<u32> = heap.into_iter().map(|(_, k)| k).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splitmix64_matches_reference_vector() {
        // Reference output of the original C implementation for seed 1234567.
        let mut sm = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| sm.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn samples_are_seeded_uniform_and_bounded() {
        let keys = 0..100_000u32;
        let a = sample(keys.clone(), 1000, 7);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, sample(keys.clone(), 1000, 7));
        assert_ne!(a, sample(keys.clone(), 1000, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        // About 5 % of the keys are below 5,000: 50 of 1,000, give or take.
        let low = a.iter().filter(|&&k| k < 5_000).count();
        assert!((25..=80).contains(&low), "{low}");
        assert_eq!(sample(0..10u32, usize::MAX, 1).len(), 10);
        assert!(sample(0..10u32, 0, 1).is_empty());
        // An iterator that does not say how long it is, and a huge `n`.
        assert_eq!(sample((0..10u32).filter(|k| k % 2 == 0), usize::MAX, 1), [0, 2, 4, 6, 8]);
    }

    proptest! {
        /// The sample is the n smallest seeded hashes, whatever the order
        /// the keys come in.
        #[test]
        fn sample_equals_sorting_every_hash(keys in proptest::collection::btree_set(any::<u32>(), 0..300), n in 0usize..400, seed: u64) {
            let seeded = Seeded::new(seed);
            let mut by_hash: Vec<(u64, u32)> = keys.iter().map(|&k| (seeded.hash(u64::from(k)), k)).collect();
            by_hash.sort_unstable();
            let mut want: Vec<u32> = by_hash.into_iter().take(n).map(|(_, k)| k).collect();
            want.sort_unstable();
            prop_assert_eq!(sample(keys.iter().rev().copied(), n, seed), want);
        }
    }
}
