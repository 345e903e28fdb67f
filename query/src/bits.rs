//! A tag's members as roaring containers the query layer can reach.
//!
//! `roaring` keeps its containers private, so every operation on its
//! bitmaps produces a bitmap: counting `a AND b AND c` builds two
//! intermediate bitmaps only to take the length of the last. [`Bits`] holds
//! the same containers (parsed from the portable format the snapshot
//! stores, the one CRoaring, pyroaring and ClickHouse read) in a form the
//! count engine in [`crate::count`] walks directly: per 16-bit key, a sorted
//! array (up to 4,096 members), a 1,024-word bitset or a list of runs, with
//! each container's cardinality, so a tag's size is known without a scan.
//!
//! A damaged stored bitmap is an error naming what is wrong, never a panic:
//! the bytes come from files anyone can edit.

use roaring::RoaringBitmap;

/// Words of one bitset container (65,536 bits).
pub(crate) const WORDS: usize = 1024;
/// Largest container stored as a sorted array.
pub(crate) const ARRAY_MAX: usize = 4096;

/// One bitset container.
pub(crate) type Words = [u64; WORDS];

const COOKIE_NO_RUNS: u32 = 12346;
const COOKIE_RUNS: u16 = 12347;
/// From this many containers on, the run format stores offsets too.
const OFFSETS_FROM: usize = 4;

/// The members under one 16-bit key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Store {
    /// Sorted, distinct low halves (at most [`ARRAY_MAX`]).
    Array(Box<[u16]>),
    /// One bit per low half.
    Bitset(Box<Words>),
    /// Sorted, disjoint, non-adjacent runs `(first, last)`, inclusive.
    Runs(Box<[(u16, u16)]>),
}

impl Store {
    /// The container of a bitset holding `card` members (its population
    /// count): an array up to [`ARRAY_MAX`] members, else the bitset.
    pub(crate) fn from_words(words: &Words, card: u32) -> Store {
        if card as usize > ARRAY_MAX {
            return Store::Bitset(Box::new(*words));
        }
        let mut low = Vec::with_capacity(card as usize);
        for (i, &w) in words.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                low.push((i as u16) << 6 | w.trailing_zeros() as u16);
                w &= w - 1;
            }
        }
        Store::Array(low.into())
    }

    /// Whether `low` is in the container.
    pub(crate) fn contains(&self, low: u16) -> bool {
        match self {
            Store::Array(a) => a.binary_search(&low).is_ok(),
            Store::Bitset(w) => w[usize::from(low >> 6)] >> (low & 63) & 1 == 1,
            Store::Runs(r) => {
                let i = r.partition_point(|&(first, _)| first <= low);
                i > 0 && r[i - 1].1 >= low
            }
        }
    }
}

/// A set of member keys as roaring containers (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bits {
    keys: Box<[u16]>,
    stores: Box<[Store]>,
    cards: Box<[u32]>,
    len: u64,
}

impl Bits {
    /// Parses the roaring portable format, checking every invariant the
    /// count engine relies on (sorted distinct keys and values, runs in
    /// order, cardinalities that match).
    pub fn from_portable(bytes: &[u8]) -> Result<Bits, String> {
        let mut r = Reader { bytes, at: 0 };
        let cookie = r.u32()?;
        let (size, runs) = if cookie == COOKIE_NO_RUNS {
            (r.u32()? as usize, None)
        } else if cookie as u16 == COOKIE_RUNS {
            let size = (cookie >> 16) as usize + 1;
            (size, Some(r.take(size.div_ceil(8))?.to_vec()))
        } else {
            return Err(format!("not a roaring bitmap (cookie {cookie})"));
        };
        if size > 1 << 16 {
            return Err(format!("{size} containers, more than 65,536"));
        }
        let mut header = Vec::with_capacity(size);
        for _ in 0..size {
            header.push((r.u16()?, u32::from(r.u16()?) + 1));
        }
        if runs.is_none() || size >= OFFSETS_FROM {
            r.take(4 * size)?;
        }
        let mut keys = Vec::with_capacity(size);
        let mut stores = Vec::with_capacity(size);
        let mut cards = Vec::with_capacity(size);
        let mut len = 0u64;
        for (i, &(key, card)) in header.iter().enumerate() {
            if keys.last().is_some_and(|&last| last >= key) {
                return Err(format!("container keys out of order at container {i}"));
            }
            let is_run = runs.as_ref().is_some_and(|r| r[i / 8] >> (i % 8) & 1 == 1);
            let store = if is_run {
                let n = usize::from(r.u16()?);
                let mut list = Vec::with_capacity(n);
                let mut total = 0u32;
                for _ in 0..n {
                    let first = r.u16()?;
                    let last = u32::from(first) + u32::from(r.u16()?);
                    if last > u32::from(u16::MAX) {
                        return Err(format!("container {i}: a run ends past 65,535"));
                    }
                    if list.last().is_some_and(|&(_, prev): &(u16, u16)| u32::from(prev) + 1 >= u32::from(first)) {
                        return Err(format!("container {i}: runs overlap or are out of order"));
                    }
                    total += last - u32::from(first) + 1;
                    list.push((first, last as u16));
                }
                if total != card {
                    return Err(format!("container {i}: runs hold {total} members, the header says {card}"));
                }
                Store::Runs(list.into())
            } else if card as usize <= ARRAY_MAX {
                let raw = r.take(2 * card as usize)?;
                let values: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                if values.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("container {i}: values out of order"));
                }
                Store::Array(values.into())
            } else {
                let raw = r.take(8 * WORDS)?;
                let mut words: Box<Words> = Box::new([0; WORDS]);
                for (w, c) in words.iter_mut().zip(raw.chunks_exact(8)) {
                    *w = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
                }
                let total = popcount(&words);
                if total != u64::from(card) {
                    return Err(format!("container {i}: the bitset holds {total} members, the header says {card}"));
                }
                Store::Bitset(words)
            };
            keys.push(key);
            stores.push(store);
            cards.push(card);
            len += u64::from(card);
        }
        Ok(Bits { keys: keys.into(), stores: stores.into(), cards: cards.into(), len })
    }

    /// The same members as `bitmap`: its portable bytes parsed, a copy at
    /// memory speed (the member universe at 42 M is ~640 containers, not
    /// 42 M single members).
    pub fn from_roaring(bitmap: &RoaringBitmap) -> Bits {
        let mut bytes = Vec::with_capacity(bitmap.serialized_size());
        match bitmap.serialize_into(&mut bytes).map_err(|e| e.to_string()).and_then(|()| Bits::from_portable(&bytes)) {
            Ok(bits) => bits,
            // Not reached (roaring writes the portable format): member by member.
            Err(_) => Bits::from_sorted(bitmap.iter()),
        }
    }

    /// The members of a sorted, distinct sequence.
    fn from_sorted(members: impl Iterator<Item = u32>) -> Bits {
        let mut built = Builder::default();
        let mut key = None;
        let mut low = Vec::new();
        for k in members {
            let high = (k >> 16) as u16;
            if key != Some(high) {
                if let Some(done) = key {
                    built.push_sorted(done, &low);
                }
                key = Some(high);
                low.clear();
            }
            low.push(k as u16);
        }
        if let Some(done) = key {
            built.push_sorted(done, &low);
        }
        built.finish()
    }

    /// The roaring portable format of these members (what the snapshot
    /// stores and every roaring library reads).
    pub fn to_portable(&self) -> Vec<u8> {
        let size = self.keys.len();
        let has_runs = self.stores.iter().any(|s| matches!(s, Store::Runs(_)));
        let mut out = Vec::with_capacity(8 + 8 * size + self.stores.iter().map(stored_size).sum::<usize>());
        if has_runs {
            out.extend_from_slice(&(u32::from(COOKIE_RUNS) | ((size as u32 - 1) << 16)).to_le_bytes());
            let mut flags = vec![0u8; size.div_ceil(8)];
            for (i, s) in self.stores.iter().enumerate() {
                if matches!(s, Store::Runs(_)) {
                    flags[i / 8] |= 1 << (i % 8);
                }
            }
            out.extend_from_slice(&flags);
        } else {
            out.extend_from_slice(&COOKIE_NO_RUNS.to_le_bytes());
            out.extend_from_slice(&(size as u32).to_le_bytes());
        }
        for (&key, &card) in self.keys.iter().zip(self.cards.iter()) {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&((card - 1) as u16).to_le_bytes());
        }
        if !has_runs || size >= OFFSETS_FROM {
            let mut offset = (out.len() + 4 * size) as u32;
            for s in self.stores.iter() {
                out.extend_from_slice(&offset.to_le_bytes());
                offset += stored_size(s) as u32;
            }
        }
        for s in self.stores.iter() {
            match s {
                Store::Array(a) => a.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
                Store::Bitset(w) => w.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
                Store::Runs(r) => {
                    out.extend_from_slice(&(r.len() as u16).to_le_bytes());
                    for &(first, last) in r.iter() {
                        out.extend_from_slice(&first.to_le_bytes());
                        out.extend_from_slice(&(last - first).to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// The same members as a `roaring` bitmap.
    pub fn to_roaring(&self) -> RoaringBitmap {
        let bytes = self.to_portable();
        RoaringBitmap::deserialize_unchecked_from(&bytes[..]).unwrap_or_else(|_| self.iter().collect())
    }

    /// How many members: the containers' stored cardinalities, no scan.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest member.
    pub fn max(&self) -> Option<u32> {
        let (key, store) = (self.keys.last()?, self.stores.last()?);
        let low = match store {
            Store::Array(a) => *a.last()?,
            Store::Bitset(w) => {
                let i = w.iter().rposition(|&x| x != 0)?;
                (i as u16) << 6 | (63 - w[i].leading_zeros()) as u16
            }
            Store::Runs(r) => r.last()?.1,
        };
        Some(u32::from(*key) << 16 | u32::from(low))
    }

    /// Whether `key` is a member.
    pub fn contains(&self, key: u32) -> bool {
        self.store((key >> 16) as u16).is_some_and(|(s, _)| s.contains(key as u16))
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().zip(self.stores.iter()).flat_map(|(&key, store)| {
            let high = u32::from(key) << 16;
            let lows: Box<dyn Iterator<Item = u16> + '_> = match store {
                Store::Array(a) => Box::new(a.iter().copied()),
                Store::Bitset(w) => Box::new(w.iter().enumerate().flat_map(|(i, &word)| {
                    let mut word = word;
                    std::iter::from_fn(move || {
                        (word != 0).then(|| {
                            let low = (i as u16) << 6 | word.trailing_zeros() as u16;
                            word &= word - 1;
                            low
                        })
                    })
                })),
                Store::Runs(r) => Box::new(r.iter().flat_map(|&(first, last)| first..=last)),
            };
            lows.map(move |l| high | u32::from(l))
        })
    }

    /// Bytes the containers occupy in memory.
    pub fn heap_size(&self) -> usize {
        self.keys.len() * 6 + self.stores.iter().map(|s| stored_size(s) + size_of::<Store>()).sum::<usize>()
    }

    /// The 16-bit keys that have a container, in order.
    pub(crate) fn keys(&self) -> &[u16] {
        &self.keys
    }

    /// The container under `key` and its cardinality.
    pub(crate) fn store(&self, key: u16) -> Option<(&Store, u32)> {
        self.position(key).map(|i| self.container(i))
    }

    /// Index of the container under `key`.
    pub(crate) fn position(&self, key: u16) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }

    /// The container at index `i` and its cardinality.
    pub(crate) fn container(&self, i: usize) -> (&Store, u32) {
        (&self.stores[i], self.cards[i])
    }
}

impl Bits {
    /// A membership test that walks the containers alongside keys asked
    /// in increasing order (a scan's rows), instead of searching the keys
    /// and then the container for each one. Keys out of order are still
    /// answered, by starting the walk again.
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor { bits: self, at: 0, within: 0, last: 0 }
    }
}

/// See [`Bits::cursor`].
pub(crate) struct Cursor<'a> {
    bits: &'a Bits,
    /// The first container whose key is not below the last key asked.
    at: usize,
    /// In that container (array or runs), the first entry not below it.
    within: usize,
    last: u32,
}

impl Cursor<'_> {
    /// Whether `k` is in the set.
    pub(crate) fn contains(&mut self, k: u32) -> bool {
        if k < self.last {
            (self.at, self.within) = (0, 0);
        }
        self.last = k;
        let (high, low) = ((k >> 16) as u16, k as u16);
        let keys = &self.bits.keys;
        if keys.get(self.at).is_some_and(|&key| key < high) {
            self.at += keys[self.at..].partition_point(|&key| key < high);
            self.within = 0;
        }
        if keys.get(self.at) != Some(&high) {
            return false;
        }
        match &self.bits.stores[self.at] {
            Store::Bitset(w) => w[usize::from(low >> 6)] >> (low & 63) & 1 == 1,
            Store::Array(a) => {
                self.within += a[self.within..].iter().take_while(|&&x| x < low).count();
                a.get(self.within) == Some(&low)
            }
            Store::Runs(r) => {
                self.within += r[self.within..].iter().take_while(|&&(_, last)| last < low).count();
                r.get(self.within).is_some_and(|&(first, _)| first <= low)
            }
        }
    }
}

/// Builds [`Bits`] container by container, in key order.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    keys: Vec<u16>,
    stores: Vec<Store>,
    cards: Vec<u32>,
    len: u64,
}

impl Builder {
    /// Adds the container of `key` from its sorted, distinct low halves.
    pub(crate) fn push_sorted(&mut self, key: u16, low: &[u16]) {
        if low.is_empty() {
            return;
        }
        let store = if low.len() <= ARRAY_MAX {
            Store::Array(low.into())
        } else {
            let mut words: Box<Words> = Box::new([0; WORDS]);
            set_bits(&mut words, low);
            Store::Bitset(words)
        };
        self.push(key, store, low.len() as u32);
    }

    /// Adds a container as it is.
    pub(crate) fn push(&mut self, key: u16, store: Store, card: u32) {
        debug_assert!(self.keys.last().is_none_or(|&k| k < key), "containers are pushed in key order");
        self.keys.push(key);
        self.stores.push(store);
        self.cards.push(card);
        self.len += u64::from(card);
    }

    pub(crate) fn finish(self) -> Bits {
        Bits { keys: self.keys.into(), stores: self.stores.into(), cards: self.cards.into(), len: self.len }
    }
}

/// Bytes a container takes in the portable format.
fn stored_size(s: &Store) -> usize {
    match s {
        Store::Array(a) => 2 * a.len(),
        Store::Bitset(_) => 8 * WORDS,
        Store::Runs(r) => 2 + 4 * r.len(),
    }
}

/// Sets the bits of `lows` in `out`.
pub(crate) fn set_bits(out: &mut Words, lows: &[u16]) {
    for &l in lows {
        out[usize::from(l >> 6)] |= 1 << (l & 63);
    }
}

/// Members in a bitset container.
pub(crate) fn popcount(words: &Words) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT (checked just above).
            #[allow(unsafe_code)]
            return unsafe { popcount_native(words) };
        }
    }
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// [`popcount`] compiled with the POPCNT instruction (the default target
/// lacks it and counts bits with a dozen shifts and masks per word).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
#[allow(unsafe_code)]
unsafe fn popcount_native(words: &Words) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// Members in both bitset containers (the population count of `a & b`,
/// nothing written).
pub(crate) fn popcount_and(a: &Words, b: &Words) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT (checked just above).
            #[allow(unsafe_code)]
            return unsafe { popcount_and_native(a, b) };
        }
    }
    a.iter().zip(b.iter()).map(|(x, y)| u64::from((x & y).count_ones())).sum()
}

/// [`popcount_and`] compiled with the POPCNT instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
#[allow(unsafe_code)]
unsafe fn popcount_and_native(a: &Words, b: &Words) -> u64 {
    a.iter().zip(b.iter()).map(|(x, y)| u64::from((x & y).count_ones())).sum()
}

/// Little-endian reads that fail with a message instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
                format!("truncated: {} bytes, needed {} more at byte {}", self.bytes.len(), n, self.at)
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bitmaps with every container kind: sparse arrays, the 4,096/4,097
    /// edge, dense bitsets and (after `optimize`) runs.
    pub(crate) fn bitmap() -> impl Strategy<Value = RoaringBitmap> {
        bitmap_over(6)
    }

    /// [`bitmap`] over the first `keys` 16-bit keys.
    pub(crate) fn bitmap_over(keys: u32) -> impl Strategy<Value = RoaringBitmap> {
        let chunk = (0u32..keys, 0usize..5, any::<u64>(), any::<bool>()).prop_map(|(key, kind, seed, runs)| {
            let base = key << 16;
            let mut b = RoaringBitmap::new();
            let mut draw = taglake_base::seeded::SplitMix64::new(seed);
            let mut next = || draw.next_u64() as u32 & 0xffff;
            match kind {
                0 => (0..(next() % 40)).for_each(|_| {
                    b.insert(base | next());
                }),
                1 => {
                    b.insert_range(base..base + 4096);
                }
                2 => {
                    b.insert_range(base + 1..base + 4098);
                }
                3 => (0..30_000).for_each(|_| {
                    b.insert(base | next());
                }),
                _ => {
                    let start = next();
                    b.insert_range(base | start..=base | (start + next() % 20_000).min(0xffff));
                }
            }
            if runs {
                b.optimize();
            }
            b
        });
        proptest::collection::vec(chunk, 0..(keys as usize).clamp(5, 80))
            .prop_map(|parts| parts.into_iter().fold(RoaringBitmap::new(), |a, b| a | b))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_portable_format_round_trips_with_roaring(mut b in bitmap(), runs in any::<bool>()) {
            if runs {
                b.optimize();
            }
            let mut bytes = Vec::new();
            b.serialize_into(&mut bytes).unwrap();
            let bits = Bits::from_portable(&bytes).unwrap();
            prop_assert_eq!(bits.len(), b.len());
            prop_assert_eq!(bits.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            prop_assert_eq!(&bits, &Bits::from_portable(&bits.to_portable()).unwrap());
            prop_assert_eq!(bits.to_roaring(), b.clone());
            prop_assert_eq!(Bits::from_roaring(&b).iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            for k in b.iter().take(50).chain([0, 65_535, 65_536, 70_000, u32::MAX]) {
                prop_assert_eq!(bits.contains(k), b.contains(k));
            }
        }

        #[test]
        fn a_cursor_answers_as_contains_in_and_out_of_order(
            b in bitmap(),
            mut asked in proptest::collection::vec(0u32..6 << 16, 0..400),
            sorted in any::<bool>(),
        ) {
            let bits = Bits::from_roaring(&b);
            // Members, their neighbours, and random keys.
            asked.extend(b.iter().step_by(97).flat_map(|k| [k.saturating_sub(1), k, k + 1]));
            if sorted {
                asked.sort_unstable();
            }
            let mut cursor = bits.cursor();
            for k in asked {
                prop_assert_eq!(cursor.contains(k), b.contains(k), "key {}", k);
            }
        }

        #[test]
        fn damaged_bytes_are_an_error_not_a_panic(b in bitmap(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let mut bytes = Vec::new();
            b.serialize_into(&mut bytes).unwrap();
            let short = &bytes[..cut.index(bytes.len().max(1)).min(bytes.len())];
            if short.len() < bytes.len() {
                prop_assert!(Bits::from_portable(short).is_err());
            }
            let mut flipped = bytes.clone();
            if !flipped.is_empty() {
                let i = flip.0.index(flipped.len());
                flipped[i] ^= flip.1.max(1);
            }
            // Either an error, or a valid set of containers.
            if let Ok(bits) = Bits::from_portable(&flipped) {
                prop_assert_eq!(bits.iter().count() as u64, bits.len());
            }
        }
    }

    #[test]
    fn the_empty_set_round_trips() {
        let mut bytes = Vec::new();
        RoaringBitmap::new().serialize_into(&mut bytes).unwrap();
        let bits = Bits::from_portable(&bytes).unwrap();
        assert!(bits.is_empty());
        assert_eq!(bits.to_roaring(), RoaringBitmap::new());
        assert!(Bits::from_portable(b"junk").is_err());
        assert!(Bits::from_portable(&[]).is_err());
    }
}

#[cfg(test)]
mod errors {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        Bits::from_portable(bytes).unwrap_err()
    }

    fn portable(b: &RoaringBitmap) -> Vec<u8> {
        let mut bytes = Vec::new();
        b.serialize_into(&mut bytes).unwrap();
        bytes
    }

    /// Each kind of damage is named, with where it is.
    #[test]
    fn damaged_bitmaps_say_what_is_wrong() {
        assert_eq!(err(b"junk"), "not a roaring bitmap (cookie 1802401130)");
        assert_eq!(err(&[]), "truncated: 0 bytes, needed 4 more at byte 0");
        let two: RoaringBitmap = [1, 5, 70_000].into_iter().collect();
        let bytes = portable(&two);
        assert!(err(&bytes[..bytes.len() - 1]).starts_with("truncated:"));
        // Values out of order in the first container (1, 5 → 5, 1).
        let mut swapped = bytes.clone();
        let n = swapped.len();
        swapped.swap(n - 6, n - 4);
        swapped.swap(n - 5, n - 3);
        assert_eq!(err(&swapped), "container 0: values out of order");
        // A dense container whose header claims one member more than its bits.
        let dense: RoaringBitmap = (0..5000).collect();
        let mut bytes = portable(&dense);
        bytes[10] = bytes[10].wrapping_add(1);
        assert_eq!(err(&bytes), "container 0: the bitset holds 5000 members, the header says 5001");
    }
}
