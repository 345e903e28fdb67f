//! Counting an audience without building it.
//!
//! `audience count` and the `count(*)` of a tag query want one number, yet
//! bitmap algebra builds a bitmap per operator: `a AND b AND c AND d AND e
//! AND f` made five intermediate bitmaps at 10 M members to read one length.
//! This engine works one 16-bit key (65,536 members) at a time over the
//! stored containers ([`Bits`]):
//!
//! - a single tag is its stored cardinality, O(1);
//! - only the keys every positive operand of an `AND` has are visited;
//! - under a key, when the smallest positive operand is a short sorted
//!   array, each of its members is probed in the others (`NOT` operands
//!   included) and nothing is built;
//! - otherwise the whole expression is fused into one 1,024-word buffer
//!   that stays in the L1 cache (`a & b & (c | d) & !e`, operand by
//!   operand, stopping as soon as it is empty) and counted;
//! - keys are spread over the cores when there are many.
//!
//! The same walk also builds the selection when one is needed
//! ([`select`]), so `NOT x` and an `AND` chain never materialise
//! intermediate bitmaps there either. Buffers come from a per-thread pool:
//! after the first query a count allocates only its small plan.
//!
//! Both are checked against the bitmap algebra of [`crate::audience`] by
//! property tests over random expressions and bitmaps with every container
//! kind, including the 4,096-member array/bitset edge.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::bits::{Bits, Builder, Store, WORDS, Words, popcount, popcount_and, set_bits};
use crate::node::Node;
use crate::tagset::TagSet;

/// From this many keys on, keys are counted in parallel.
const PARALLEL_KEYS: usize = 48;
/// A driving array at most this long is probed member by member; a longer
/// one is fused word-wise (probing costs a look-up per member and operand,
/// fusing ~1,024 word operations per operand).
const PROBE_MAX: u32 = 1024;

/// How many members the audience `node` selects within the universe of
/// `tags` (the same number as `audience::evaluate(node, tags)?.len()`).
pub fn count(node: &Node, tags: &TagSet) -> crate::Result<u64> {
    let plan = Plan::new(node, tags)?;
    Ok(plan.count())
}

/// How many members of `within` the audience `node` selects: the count of
/// `within AND node`, for many `node`s over one audience built once with
/// [`select`] (a breakdown's groups).
pub fn count_within(within: &Bits, node: &Node, tags: &TagSet) -> crate::Result<u64> {
    let mut leaves = vec![within];
    let expr = match compile(node, tags, &mut leaves)? {
        Expr::Empty => Expr::Empty,
        Expr::And(mut pos, neg) => {
            pos.insert(0, Expr::Leaf(0));
            Expr::And(pos, neg)
        }
        e => Expr::And(vec![Expr::Leaf(0), e], Vec::new()),
    };
    Ok(Plan { expr, leaves }.count())
}

/// The members the audience `node` selects, as containers.
pub fn select(node: &Node, tags: &TagSet) -> crate::Result<Bits> {
    let plan = Plan::new(node, tags)?;
    Ok(plan.select())
}

/// An expression over the operands' containers.
#[derive(Debug)]
enum Expr {
    /// Operand `i` of the plan.
    Leaf(usize),
    /// No one.
    Empty,
    /// In every positive operand and in no negative one (at least one
    /// positive operand: `NOT x` alone is `universe AND NOT x`).
    And(Vec<Expr>, Vec<Expr>),
    /// In any operand (at least two).
    Or(Vec<Expr>),
}

/// A compiled audience: the expression and the bitmaps it reads.
struct Plan<'a> {
    expr: Expr,
    leaves: Vec<&'a Bits>,
}

impl<'a> Plan<'a> {
    fn new(node: &'a Node, tags: &'a TagSet) -> crate::Result<Plan<'a>> {
        let mut leaves = Vec::new();
        let expr = compile(node, tags, &mut leaves)?;
        Ok(Plan { expr, leaves })
    }

    fn count(&self) -> u64 {
        match &self.expr {
            Expr::Leaf(i) => self.leaves[*i].len(),
            Expr::Empty => 0,
            expr => per_key(&self.keys(expr), |key| with_scratch(|s| self.count_at(expr, key, s))).into_iter().sum(),
        }
    }

    fn select(&self) -> Bits {
        let expr = match &self.expr {
            Expr::Leaf(i) => return self.leaves[*i].clone(),
            Expr::Empty => return Bits::default(),
            expr => expr,
        };
        let parts = per_key(&self.keys(expr), |key| {
            with_scratch(|s| {
                self.resolve(key, s);
                let mut out = s.take();
                let card = if self.fill(expr, &mut out, s) { popcount(&out) as u32 } else { 0 };
                let store = (card > 0).then(|| (key, Store::from_words(&out, card), card));
                s.put(out);
                store
            })
        });
        let mut built = Builder::default();
        for (key, store, card) in parts.into_iter().flatten() {
            built.push(key, store, card);
        }
        built.finish()
    }

    /// The keys where the expression can have members: the intersection of
    /// an `AND`'s positive operands' keys, the union of an `OR`'s.
    fn keys(&self, expr: &Expr) -> Vec<u16> {
        fn go(plan: &Plan<'_>, expr: &Expr) -> Vec<u16> {
            match expr {
                Expr::Leaf(i) => plan.leaves[*i].keys().to_vec(),
                Expr::Empty => Vec::new(),
                Expr::And(pos, _) => {
                    let mut sets: Vec<Vec<u16>> = pos.iter().map(|p| go(plan, p)).collect();
                    sets.sort_by_key(Vec::len);
                    let mut acc = sets.swap_remove(0);
                    for other in &sets {
                        acc.retain(|k| other.binary_search(k).is_ok());
                    }
                    acc
                }
                Expr::Or(items) => {
                    let mut all: Vec<u16> = items.iter().flat_map(|i| go(plan, i)).collect();
                    all.sort_unstable();
                    all.dedup();
                    all
                }
            }
        }
        go(self, expr)
    }

    /// Finds each operand's container under `key` (into `s.at`).
    fn resolve(&self, key: u16, s: &mut Scratch) {
        s.at.clear();
        s.at.extend(self.leaves.iter().map(|b| b.position(key)));
    }

    /// Operand `i`'s container under the resolved key and its cardinality.
    fn get(&self, s: &Scratch, i: usize) -> Option<(&'a Store, u32)> {
        s.at[i].map(|at| self.leaves[i].container(at))
    }

    /// Members of `expr` under `key`.
    fn count_at(&self, expr: &Expr, key: u16, s: &mut Scratch) -> u64 {
        self.resolve(key, s);
        if let Some(n) = self.pair(expr, s) {
            return n;
        }
        if let Some((driver, others)) = self.probe(expr, s) {
            return driver.iter().filter(|&&low| others.iter().all(|c| self.meets(c, s, low))).count() as u64;
        }
        let mut out = s.take();
        let n = if self.fill(expr, &mut out, s) { popcount(&out) } else { 0 };
        s.put(out);
        n
    }

    /// `a AND b` or `a AND NOT b` of two operands counted from their
    /// containers' cardinalities and one pass over both (`|a| - |a ∩ b|`
    /// for `NOT`), with nothing built; `None` for other expressions and for
    /// containers of runs.
    fn pair(&self, expr: &Expr, s: &Scratch) -> Option<u64> {
        let (a, b, negated) = match expr {
            Expr::And(pos, neg) => match (&pos[..], &neg[..]) {
                ([Expr::Leaf(a), Expr::Leaf(b)], []) => (*a, *b, false),
                ([Expr::Leaf(a)], [Expr::Leaf(b)]) => (*a, *b, true),
                _ => return None,
            },
            _ => return None,
        };
        let Some((sa, ca)) = self.get(s, a) else { return Some(0) };
        let Some((sb, _)) = self.get(s, b) else { return Some(if negated { u64::from(ca) } else { 0 }) };
        let both = match (sa, sb) {
            (Store::Bitset(x), Store::Bitset(y)) => popcount_and(x, y),
            (Store::Array(x), other) | (other, Store::Array(x)) if !matches!(other, Store::Array(_)) => {
                x.iter().filter(|&&low| other.contains(low)).count() as u64
            }
            (Store::Array(x), Store::Array(y)) => sorted_common(x, y),
            _ => return None,
        };
        Some(if negated { u64::from(ca) - both } else { both })
    }

    /// Whether `low` meets `cond` under the resolved key.
    fn meets(&self, cond: &Cond<'_>, s: &Scratch, low: u16) -> bool {
        match cond {
            Cond::Has(e) => self.has(e, s, low),
            Cond::Lacks(e) => !self.has(e, s, low),
        }
    }

    fn has(&self, e: &Expr, s: &Scratch, low: u16) -> bool {
        match e {
            Expr::Leaf(i) => self.get(s, *i).is_some_and(|(store, _)| store.contains(low)),
            Expr::Empty => false,
            Expr::And(pos, neg) => pos.iter().all(|p| self.has(p, s, low)) && !neg.iter().any(|n| self.has(n, s, low)),
            Expr::Or(items) => items.iter().any(|i| self.has(i, s, low)),
        }
    }

    /// For an `AND` whose smallest positive operand under this key is a
    /// short array: that array and the conditions its members must meet.
    fn probe<'e>(&self, expr: &'e Expr, s: &Scratch) -> Option<(&'a [u16], Vec<Cond<'e>>)> {
        let Expr::And(pos, neg) = expr else { return None };
        let (best, card) = pos
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match p {
                Expr::Leaf(i) => Some((j, self.get(s, *i).map_or(0, |(_, c)| c))),
                _ => None,
            })
            .min_by_key(|&(_, c)| c)?;
        let Expr::Leaf(i) = &pos[best] else { return None };
        let array = match self.get(s, *i) {
            None => &[][..],
            Some((Store::Array(a), _)) if card <= PROBE_MAX => &a[..],
            Some(_) => return None,
        };
        let others = pos
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != best)
            .map(|(_, e)| Cond::Has(e))
            .chain(neg.iter().map(Cond::Lacks))
            .collect();
        Some((array, others))
    }

    /// Writes the members of `expr` under the resolved key into `out`;
    /// `false` when there are none (then `out` may hold anything).
    fn fill(&self, expr: &Expr, out: &mut Words, s: &mut Scratch) -> bool {
        match expr {
            Expr::Leaf(i) => match self.get(s, *i) {
                Some((store, _)) => {
                    load(store, out);
                    true
                }
                None => false,
            },
            Expr::Empty => false,
            Expr::Or(items) => {
                let mut any = false;
                out.fill(0);
                for item in items {
                    any |= self.combine(item, out, s, Op::Or);
                }
                any
            }
            Expr::And(pos, neg) => {
                // Start from the smallest leaf, so the buffer empties early.
                let first = pos
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, p)| match p {
                        Expr::Leaf(i) => self.get(s, *i).map_or(0, |(_, c)| u64::from(c)),
                        _ => u64::MAX,
                    })
                    .map_or(0, |(j, _)| j);
                if !self.fill(&pos[first], out, s) {
                    return false;
                }
                for (j, p) in pos.iter().enumerate() {
                    if j != first && !self.combine(p, out, s, Op::And) {
                        return false;
                    }
                }
                for n in neg {
                    if !self.combine(n, out, s, Op::AndNot) {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// `out = out <op> expr`; whether `out` has members after.
    fn combine(&self, expr: &Expr, out: &mut Words, s: &mut Scratch, op: Op) -> bool {
        match expr {
            Expr::Leaf(i) => match (self.get(s, *i), op) {
                (None, Op::And) => false,
                (None, _) => nonzero(out),
                (Some((store, _)), op) => apply(store, out, op, s),
            },
            Expr::Empty => match op {
                Op::And => false,
                _ => nonzero(out),
            },
            _ => {
                let mut other = s.take();
                let has = self.fill(expr, &mut other, s);
                let result = match (has, op) {
                    (false, Op::And) => false,
                    (false, _) => nonzero(out),
                    (true, op) => words(out, &other, op),
                };
                s.put(other);
                result
            }
        }
    }
}

/// `f` of every key, in key order: on the cores when there are many.
fn per_key<T: Send>(keys: &[u16], f: impl Fn(u16) -> T + Sync + Send) -> Vec<T> {
    if keys.len() >= PARALLEL_KEYS {
        keys.par_iter().map(|&k| f(k)).collect()
    } else {
        keys.iter().map(|&k| f(k)).collect()
    }
}

/// Members of both sorted arrays (a merge).
fn sorted_common(x: &[u16], y: &[u16]) -> u64 {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// A condition a probed member must meet.
enum Cond<'e> {
    Has(&'e Expr),
    Lacks(&'e Expr),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    And,
    Or,
    AndNot,
}

/// `out = store` as a bitset.
fn load(store: &Store, out: &mut Words) {
    match store {
        Store::Bitset(w) => out.copy_from_slice(&w[..]),
        Store::Array(a) => {
            out.fill(0);
            set_bits(out, a);
        }
        Store::Runs(runs) => {
            out.fill(0);
            for &(first, last) in runs.iter() {
                set_range(out, first, last, true);
            }
        }
    }
}

/// `out = out <op> store`; whether `out` has members after.
fn apply(store: &Store, out: &mut Words, op: Op, s: &mut Scratch) -> bool {
    match (store, op) {
        (Store::Bitset(w), op) => words(out, w, op),
        (Store::Array(a), Op::Or) => {
            set_bits(out, a);
            true
        }
        (Store::Array(a), Op::AndNot) => {
            for &l in a.iter() {
                out[usize::from(l >> 6)] &= !(1 << (l & 63));
            }
            nonzero(out)
        }
        (Store::Array(a), Op::And) => {
            // Keep the array's members that are set: at most 4,096 bits.
            let mut kept = s.take();
            kept.fill(0);
            let mut n = 0;
            for &l in a.iter() {
                let (w, bit) = (usize::from(l >> 6), 1u64 << (l & 63));
                if out[w] & bit != 0 {
                    kept[w] |= bit;
                    n += 1;
                }
            }
            out.copy_from_slice(&kept[..]);
            s.put(kept);
            n > 0
        }
        (Store::Runs(runs), Op::Or) => {
            for &(first, last) in runs.iter() {
                set_range(out, first, last, true);
            }
            true
        }
        (Store::Runs(runs), Op::AndNot) => {
            for &(first, last) in runs.iter() {
                set_range(out, first, last, false);
            }
            nonzero(out)
        }
        (Store::Runs(runs), Op::And) => {
            // Clear the gaps between runs.
            let mut next = 0u32;
            for &(first, last) in runs.iter() {
                if u32::from(first) > next {
                    set_range(out, next as u16, first - 1, false);
                }
                next = u32::from(last) + 1;
            }
            if next <= u32::from(u16::MAX) {
                set_range(out, next as u16, u16::MAX, false);
            }
            nonzero(out)
        }
    }
}

/// `out = out <op> other`, word by word; whether `out` has members after.
fn words(out: &mut Words, other: &Words, op: Op) -> bool {
    let mut acc = 0u64;
    match op {
        Op::And => out.iter_mut().zip(other.iter()).for_each(|(o, w)| {
            *o &= w;
            acc |= *o;
        }),
        Op::Or => out.iter_mut().zip(other.iter()).for_each(|(o, w)| {
            *o |= w;
            acc |= *o;
        }),
        Op::AndNot => out.iter_mut().zip(other.iter()).for_each(|(o, w)| {
            *o &= !w;
            acc |= *o;
        }),
    }
    acc != 0
}

fn nonzero(out: &Words) -> bool {
    out.iter().fold(0, |a, w| a | w) != 0
}

/// Sets (or clears) the bits `first..=last`.
fn set_range(out: &mut Words, first: u16, last: u16, on: bool) {
    let (a, b) = (usize::from(first), usize::from(last));
    let (wa, wb) = (a >> 6, b >> 6);
    for (w, word) in out.iter_mut().enumerate().take(wb + 1).skip(wa) {
        let lo = if w == wa { a & 63 } else { 0 };
        let hi = if w == wb { b & 63 } else { 63 };
        let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        if on {
            *word |= mask;
        } else {
            *word &= !mask;
        }
    }
}

/// Compiles `node` over the bitmaps of `tags`, pushing each operand's
/// bitmap once.
fn compile<'a>(node: &'a Node, tags: &'a TagSet, leaves: &mut Vec<&'a Bits>) -> crate::Result<Expr> {
    Ok(match node {
        Node::Tag(i) => leaf_of(tags.bitmap(*i)?, leaves),
        Node::Attr(a) => leaf_of(a.bits(tags.member_files())?, leaves),
        Node::Const(true) => leaf_of(tags.universe_bits()?, leaves),
        Node::Const(false) => Expr::Empty,
        Node::Not(inner) => {
            let universe = leaf_of(tags.universe_bits()?, leaves);
            let inner = compile(inner, tags, leaves)?;
            and(vec![universe], vec![inner])
        }
        Node::And(items) => {
            let mut pos = Vec::new();
            let mut neg = Vec::new();
            for item in items {
                match item {
                    Node::Not(inner) => neg.push(compile(inner, tags, leaves)?),
                    other => pos.push(compile(other, tags, leaves)?),
                }
            }
            if pos.is_empty() {
                pos.push(leaf_of(tags.universe_bits()?, leaves));
            }
            and(pos, neg)
        }
        Node::Or(items) => {
            let mut kept = Vec::new();
            for item in items {
                match compile(item, tags, leaves)? {
                    Expr::Empty => {}
                    e => kept.push(e),
                }
            }
            match kept.len() {
                0 => Expr::Empty,
                1 => kept.pop().expect("one operand"),
                _ => Expr::Or(kept),
            }
        }
    })
}

fn leaf_of<'a>(b: &'a Bits, leaves: &mut Vec<&'a Bits>) -> Expr {
    let i = leaves.iter().position(|l| std::ptr::eq(*l, b)).unwrap_or_else(|| {
        leaves.push(b);
        leaves.len() - 1
    });
    Expr::Leaf(i)
}

/// An `AND`, simplified: empty when a positive operand is, the operand
/// itself when it stands alone; negative operands that are empty dropped.
fn and(pos: Vec<Expr>, neg: Vec<Expr>) -> Expr {
    if pos.iter().any(|p| matches!(p, Expr::Empty)) {
        return Expr::Empty;
    }
    let neg: Vec<Expr> = neg.into_iter().filter(|n| !matches!(n, Expr::Empty)).collect();
    if neg.is_empty() && pos.len() == 1 {
        return pos.into_iter().next().expect("one operand");
    }
    Expr::And(pos, neg)
}

/// Buffers for one thread's counts, kept between queries.
#[derive(Default)]
struct Scratch {
    free: Vec<Box<Words>>,
    /// Each operand's container index under the key being counted.
    at: Vec<Option<usize>>,
}

impl Scratch {
    fn take(&mut self) -> Box<Words> {
        self.free.pop().unwrap_or_else(|| Box::new([0; WORDS]))
    }

    fn put(&mut self, words: Box<Words>) {
        self.free.push(words);
    }
}

/// Runs `f` with this thread's scratch buffers.
fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    }
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // Re-entered on this thread (a nested rayon job): its own buffers.
        Err(_) => f(&mut Scratch::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::tests::{algebra, node};
    use crate::bits::tests::bitmap_over;
    use crate::tagset::Tag;
    use proptest::prelude::*;
    use roaring::RoaringBitmap;

    /// Five tags and a universe from random bitmaps over `keys` keys; the
    /// universe need not hold every tagged member (members deleted since
    /// the snapshot), which the engine must treat as the algebra does.
    fn tag_set(keys: u32) -> impl Strategy<Value = TagSet> {
        (proptest::collection::vec(bitmap_over(keys), 5), bitmap_over(keys), any::<bool>()).prop_map(
            |(bitmaps, universe, superset)| {
                let universe = if superset { bitmaps.iter().fold(universe, |u, b| u | b) } else { universe };
                let tags = bitmaps.into_iter().enumerate().map(|(i, b)| Tag::new(format!("t{i}"), "f", b)).collect();
                TagSet::new(None, tags, universe)
            },
        )
    }

    fn check(n: &Node, t: &TagSet) -> Result<(), TestCaseError> {
        let want = algebra(n, t);
        prop_assert_eq!(count(n, t).unwrap(), want.len(), "count of {:?}", n);
        let selected = select(n, t).unwrap();
        prop_assert_eq!(selected.len(), want.len());
        prop_assert_eq!(selected.to_roaring(), want.clone());
        // Within another audience, built once: a breakdown's counts.
        for other in [Node::Tag(0), Node::Not(Box::new(Node::Tag(1))), Node::Const(true)] {
            let within = select(&other, t).unwrap();
            let both = algebra(&other, t) & &want;
            prop_assert_eq!(count_within(&within, n, t).unwrap(), both.len(), "{:?} within {:?}", n, other);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn counts_and_selections_equal_the_bitmap_algebra(t in tag_set(6), n in node()) {
            check(&n, &t)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Enough keys for the parallel path.
        #[test]
        fn many_keys_count_alike_in_parallel(t in tag_set(PARALLEL_KEYS as u32 * 2), n in node()) {
            check(&n, &t)?;
        }
    }

    #[test]
    fn the_4096_member_edge_and_runs_probe_and_fuse_alike() {
        // t0: an array of exactly 4,096; t1: a bitset of 4,097; t2: runs;
        // t3: a short array (probed); t4: empty.
        let a: RoaringBitmap = (0..4096u32).map(|i| i * 16).collect();
        let b: RoaringBitmap = (0..4097u32).map(|i| i * 15).collect();
        let mut c = RoaringBitmap::new();
        c.insert_range(1000..30_000);
        c.insert_range(40_000..65_536);
        c.optimize();
        let d: RoaringBitmap = (0..300u32).map(|i| i * 200).collect();
        let tags = [a, b, c, d, RoaringBitmap::new()];
        let universe = tags.iter().fold(RoaringBitmap::new(), |u, b| u | b);
        let t = TagSet::new(
            None,
            tags.into_iter().enumerate().map(|(i, b)| Tag::new(format!("t{i}"), "f", b)).collect(),
            universe,
        );
        let tag = Node::Tag;
        let not = |n: Node| Node::Not(Box::new(n));
        for n in [
            Node::And(vec![tag(0), tag(1)]),
            Node::And(vec![tag(0), tag(1), tag(2), not(tag(3))]),
            Node::And(vec![tag(3), tag(0), not(tag(2))]),
            Node::And(vec![tag(3), Node::Or(vec![tag(0), tag(1)]), not(Node::And(vec![tag(2), tag(1)]))]),
            Node::And(vec![tag(2), not(tag(4))]),
            Node::Or(vec![tag(4), Node::Const(false)]),
            not(Node::Or(vec![tag(0), tag(1), tag(2)])),
            Node::And(vec![not(tag(0)), not(tag(3))]),
        ] {
            check(&n, &t).unwrap();
        }
        assert_eq!(count(&tag(0), &t).unwrap(), 4096);
    }
}
