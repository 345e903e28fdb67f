//! The union of many bitmaps, folded as they arrive.
//!
//! A tag's snapshot bitmap is the union of its bitmaps over every chunk of
//! member keys (65,536 keys, so one roaring container, each). roaring's
//! `a |= b` first compares both sides' cardinalities, and a bitmap's
//! cardinality is a walk over all its containers: folding the chunks into
//! one growing bitmap one by one walks the result once per chunk, which is
//! quadratic in the key space (4,801 tags × 641 chunks × 320 containers on
//! average at 42 M members, all on the one thread that merges in order).
//!
//! [`Union`] merges like a binary counter instead: a bitmap of `2^k`
//! pushes is only ever merged with another of `2^k`, so each container
//! takes part in `log2(pushes)` unions and the whole fold costs
//! `O(n log n)` container visits, whatever the order of the parts.

use roaring::RoaringBitmap;

/// The union of the bitmaps pushed into it; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Union {
    /// Partial unions, each with the number of pushes it holds as a power
    /// of two; strictly decreasing from the first.
    levels: Vec<(u32, RoaringBitmap)>,
}

impl Union {
    /// An empty union.
    pub fn new() -> Union {
        Union::default()
    }

    /// Adds one bitmap to the union (an empty one costs nothing).
    pub fn push(&mut self, bitmap: RoaringBitmap) {
        if bitmap.is_empty() {
            return;
        }
        let (mut level, mut bitmap) = (0, bitmap);
        while let Some((top, _)) = self.levels.last() {
            if *top != level {
                break;
            }
            let (_, mut earlier) = self.levels.pop().expect("a level was just seen");
            earlier |= bitmap;
            (level, bitmap) = (level + 1, earlier);
        }
        self.levels.push((level, bitmap));
    }

    /// The union of everything pushed.
    pub fn finish(self) -> RoaringBitmap {
        self.levels.into_iter().rev().fold(RoaringBitmap::new(), |later, (_, mut earlier)| {
            earlier |= later;
            earlier
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bitmap() -> impl Strategy<Value = RoaringBitmap> {
        prop_oneof![
            // Sparse anywhere, dense in one container, or empty.
            proptest::collection::vec(0u32..1 << 20, 0..40).prop_map(RoaringBitmap::from_iter),
            (0u32..16, 4_000u32..5_000).prop_map(|(c, n)| ((c << 16)..(c << 16) + n).collect()),
            Just(RoaringBitmap::new()),
        ]
    }

    proptest! {
        #[test]
        fn union_is_the_one_by_one_fold(parts in proptest::collection::vec(bitmap(), 0..70)) {
            let mut union = Union::new();
            let mut naive = RoaringBitmap::new();
            for part in parts {
                naive |= &part;
                union.push(part);
            }
            prop_assert_eq!(union.finish(), naive);
        }
    }

    #[test]
    fn chunks_in_key_order_make_one_container_each() {
        let mut union = Union::new();
        for c in 0..1_000u32 {
            union.push([c << 16, (c << 16) + 7].into_iter().collect());
        }
        let all = union.finish();
        assert_eq!(all.len(), 2_000);
        assert_eq!(all.max(), Some((999 << 16) + 7));
    }
}
