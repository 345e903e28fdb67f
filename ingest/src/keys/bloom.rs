//! A split-block Bloom filter over keys that are already uniform hashes.
//!
//! Each key sets one bit in each of the 8 words of one 64-byte block, so a
//! probe touches a single cache line (the layout Parquet's own bloom
//! filters use). The block is chosen from the key's high 64 bits by a
//! multiply-shift, which keeps block order equal to key order: probing keys
//! in sorted order walks the filter from front to back, so a probe pass
//! reads it sequentially (and a small probe set reads only the blocks it
//! needs). With [`BITS_PER_KEY`] bits per key about 1 % of absent keys pass.

/// Filter bits per key.
pub const BITS_PER_KEY: u64 = 10;
/// Bytes of one block.
pub const BLOCK_BYTES: usize = 64;

/// Blocks a filter of `keys` keys has (at least one).
pub fn blocks_for(keys: u64) -> u64 {
    (keys * BITS_PER_KEY).div_ceil(BLOCK_BYTES as u64 * 8).max(1)
}

/// The block of a key in a filter of `blocks` blocks; non-decreasing in the key.
pub fn block_of(key: u128, blocks: u64) -> u64 {
    (((key >> 64) as u64 as u128 * blocks as u128) >> 64) as u64
}

/// The 8 words' bit masks of a key (6 bits of its low half per word).
fn masks(key: u128) -> [u64; 8] {
    let low = key as u64;
    std::array::from_fn(|w| 1u64 << ((low >> (6 * w)) & 63))
}

/// A filter being built in memory.
pub struct BloomBuilder {
    words: Vec<u64>,
    blocks: u64,
}

impl BloomBuilder {
    /// An empty filter sized for `keys` keys.
    pub fn new(keys: u64) -> Self {
        let blocks = blocks_for(keys);
        BloomBuilder { words: vec![0; blocks as usize * 8], blocks }
    }

    /// Adds a key.
    pub fn insert(&mut self, key: u128) {
        let b = block_of(key, self.blocks) as usize * 8;
        for (w, m) in self.words[b..b + 8].iter_mut().zip(masks(key)) {
            *w |= m;
        }
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The filter's bytes (little-endian words).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// Whether `key` may be in the filter whose block `block` (64 bytes) is given.
pub fn block_may_contain(block: &[u8], key: u128) -> bool {
    masks(key).iter().enumerate().all(|(w, m)| {
        let word = u64::from_le_bytes(block[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
        word & m != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let n = 200_000u64;
        let mut b = BloomBuilder::new(n);
        for i in 0..n {
            b.insert(key(i));
        }
        let bytes = b.to_bytes();
        let probe = |k: u128| {
            let blk = block_of(k, b.blocks()) as usize;
            block_may_contain(&bytes[blk * BLOCK_BYTES..(blk + 1) * BLOCK_BYTES], k)
        };
        assert!((0..n).all(|i| probe(key(i))));
        let false_pos = (n..n + 200_000).filter(|i| probe(key(*i))).count();
        let rate = false_pos as f64 / 200_000.0;
        assert!(rate < 0.02, "false positive rate {rate}");
    }

    #[test]
    fn block_order_follows_key_order() {
        let blocks = 1_000;
        let mut keys: Vec<u128> = (0..10_000).map(key).collect();
        keys.sort_unstable();
        let b: Vec<u64> = keys.iter().map(|k| block_of(*k, blocks)).collect();
        assert!(b.windows(2).all(|w| w[0] <= w[1]));
        assert!(b.iter().all(|x| *x < blocks));
        assert_eq!(block_of(u128::MAX, blocks), blocks - 1);
        assert_eq!(block_of(0, blocks), 0);
    }
}
