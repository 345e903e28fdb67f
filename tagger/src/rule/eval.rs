//! Runs a [`Program`] over a chunk of members, column at a time.
//!
//! The chunk is cut into blocks of [`BLOCK`] members so that the output
//! mask and any intermediate buffers stay in cache while every node of the
//! rule passes over them. Within a block each node is one loop over plain
//! slices (`fill1`, `fill2`, `map1`, `map2`), generic over a closure so that
//! each operator gets its own monomorphised loop the compiler can vectorise;
//! the operator itself is chosen once per block, outside the loop (the
//! `per_*` macros). The shapes catalogs use most need no intermediate buffer
//! at all: a column against a constant, `between` constants, short `in`
//! lists (unrolled), text codes, tag columns, and `u / v op c` over two
//! columns.
//!
//! Masks are folded in place: a leaf either sets the mask, or ANDs / ORs
//! itself into it ([`Mode`]), so `a and b and c` is three passes over one
//! buffer. Number buffers come from a per-thread pool and are reused for the
//! next node and the next call, so steady-state evaluation does not allocate.
//!
//! The default x86-64 target has neither AVX2 nor POPCNT, so its loops
//! compare two numbers per instruction. Each loop (`fill1`, `fill2`,
//! `map1`, `map2`, [`pack_mask`]) is also compiled for AVX2 and POPCNT,
//! and the processor is asked at run time which to use ([`wide`]): the
//! binary runs everywhere and uses the wider lanes where they exist. Both
//! builds do the same operations in the same order, so their results are
//! bit-identical; the property tests run both against the naive evaluator.

#[cfg(test)]
use std::cell::Cell;
use std::cell::RefCell;

use super::compile::{BinFn, Cmp, Num, Pred, Program, UnOp};
use super::{ColumnRef, VarType};

/// Members per block: a 4 KiB mask and 32 KiB number buffers.
pub(crate) const BLOCK: usize = 4096;

// Scalar semantics, shared by constant folding and by the loops below.

impl UnOp {
    #[inline(always)]
    pub(crate) fn apply(self, x: f64) -> f64 {
        match self {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Floor => x.floor(),
            UnOp::Ceil => x.ceil(),
        }
    }
}

impl BinFn {
    #[inline(always)]
    pub(crate) fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinFn::Add => a + b,
            BinFn::Sub => a - b,
            BinFn::Mul => a * b,
            BinFn::Div => {
                if b == 0.0 {
                    f64::NAN
                } else {
                    a / b
                }
            }
            BinFn::Rem => {
                if b == 0.0 {
                    f64::NAN
                } else {
                    a % b
                }
            }
            BinFn::Coalesce => {
                if a.is_nan() {
                    b
                } else {
                    a
                }
            }
            // f64::min/max return the other operand when one is NaN: exactly
            // "nulls are ignored" (null only when both are null).
            BinFn::Least => a.min(b),
            BinFn::Greatest => a.max(b),
            BinFn::NullIf => {
                if a == b {
                    f64::NAN
                } else {
                    a
                }
            }
        }
    }
}

impl Cmp {
    #[inline(always)]
    pub(crate) fn apply(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::OrdNe => (a < b) | (a > b),
        }
    }
}

/// Expands `$body` once per variant, with `$name` a constant of that
/// variant, so the operator is fixed inside each generated loop.
macro_rules! per_variant {
    ($value:expr, $ty:ident { $($variant:ident),* }, $name:ident => $body:expr) => {
        match $value {
            $($ty::$variant => {
                const $name: $ty = $ty::$variant;
                $body
            })*
        }
    };
}

macro_rules! per_cmp {
    ($value:expr, $name:ident => $body:expr) => {
        per_variant!($value, Cmp { Lt, Le, Gt, Ge, Eq, OrdNe }, $name => $body)
    };
}

macro_rules! per_bin {
    ($value:expr, $name:ident => $body:expr) => {
        per_variant!($value, BinFn { Add, Sub, Mul, Div, Rem, Coalesce, Least, Greatest, NullIf }, $name => $body)
    };
}

macro_rules! per_arith {
    ($value:expr, $name:ident => $body:expr) => {
        match $value {
            BinFn::Add => {
                const $name: BinFn = BinFn::Add;
                $body
            }
            BinFn::Sub => {
                const $name: BinFn = BinFn::Sub;
                $body
            }
            BinFn::Mul => {
                const $name: BinFn = BinFn::Mul;
                $body
            }
            _ => {
                const $name: BinFn = BinFn::Div;
                $body
            }
        }
    };
}

macro_rules! per_unary {
    ($value:expr, $name:ident => $body:expr) => {
        per_variant!($value, UnOp { Neg, Abs, Floor, Ceil }, $name => $body)
    };
}

impl Program {
    /// Evaluates over `len` members; `columns[slot]` for each slot it reads
    /// (others may be any ColumnRef). Writes `out[i] = 1` where the rule is
    /// TRUE, else 0. `out` is cleared and resized to len.
    ///
    /// # Panics
    ///
    /// When a slot the program reads (see [`Program::slots`]) is missing
    /// from `columns`, has another type than the [`Env`](super::Env) said,
    /// or is shorter than `len`: a bug in the caller.
    pub fn eval(&self, columns: &[ColumnRef<'_>], len: usize, out: &mut Vec<u8>) {
        self.eval_in_blocks(columns, len, out, BLOCK);
    }

    /// [`Program::eval`] with a chosen block size (tests use tiny blocks to
    /// exercise block edges).
    pub(crate) fn eval_in_blocks(&self, columns: &[ColumnRef<'_>], len: usize, out: &mut Vec<u8>, block: usize) {
        self.check_columns(columns, len);
        out.clear();
        out.resize(len, 0);
        SCRATCH.with(|scratch| {
            let pool = &mut *scratch.borrow_mut();
            for (i, chunk) in out.chunks_mut(block.max(1)).enumerate() {
                let start = i * block.max(1);
                let b = Block { cols: columns, start, end: start + chunk.len() };
                pred(&self.root, &b, pool, chunk, Mode::Set);
            }
        });
    }

    /// [`Program::eval`] into a bitset: bit `i % 64` of `out[i / 64]` is 1
    /// where the rule is TRUE for member `i`, and the bits past `len` in the
    /// last word are 0. Each block's byte mask is packed while it is still
    /// in cache, so no byte-per-member mask of the whole chunk is ever
    /// written. `out` is cleared and resized to `len.div_ceil(64)` words.
    ///
    /// # Panics
    ///
    /// As [`Program::eval`].
    pub fn eval_bits(&self, columns: &[ColumnRef<'_>], len: usize, out: &mut Vec<u64>) {
        self.eval_bits_in_blocks(columns, len, out, BLOCK);
    }

    /// [`Program::eval_bits`] with a chosen block size.
    pub(crate) fn eval_bits_in_blocks(&self, columns: &[ColumnRef<'_>], len: usize, out: &mut Vec<u64>, block: usize) {
        self.check_columns(columns, len);
        out.clear();
        out.resize(len.div_ceil(64), 0);
        let block = block.max(1);
        SCRATCH.with(|scratch| {
            let pool = &mut *scratch.borrow_mut();
            let mut mask = pool.mask(block.min(len));
            for start in (0..len).step_by(block) {
                let end = (start + block).min(len);
                let b = Block { cols: columns, start, end };
                let m = &mut mask[..end - start];
                pred(&self.root, &b, pool, m, Mode::Set);
                pack_mask(m, start, out);
            }
            pool.masks.push(mask);
        });
    }

    fn check_columns(&self, columns: &[ColumnRef<'_>], len: usize) {
        for &(slot, ty) in &self.reads {
            let (got, got_len) = match columns.get(slot) {
                Some(ColumnRef::Num(v)) => (Some(VarType::Num), v.len()),
                Some(ColumnRef::Bool(v)) => (Some(VarType::Bool), v.len()),
                Some(ColumnRef::Text(v)) => (Some(VarType::Text), v.len()),
                None => (None, 0),
            };
            assert!(
                got == Some(ty) && got_len >= len,
                "the rule reads slot {slot} as a {} column of at least {len} values, but got {}",
                ty.noun(),
                match got {
                    Some(t) => format!("a {} column of {got_len} values", t.noun()),
                    None => format!("only {} columns", columns.len()),
                }
            );
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Set by [`with_plain_loops`]: this thread runs the default-target loops.
    static PLAIN: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
fn plain_here() -> bool {
    PLAIN.with(Cell::get)
}

#[cfg(not(test))]
#[inline(always)]
fn plain_here() -> bool {
    false
}

/// Set to `1`, the loops run in their default-target build on any
/// processor (to measure what the wide build gains).
pub const PLAIN_LOOPS_ENV: &str = "TAGLAKE_PLAIN_LOOPS";

/// Whether the loops run in their AVX2 build: the processor has AVX2 and
/// POPCNT (std caches the answer), and neither [`PLAIN_LOOPS_ENV`] nor
/// [`with_plain_loops`] asks for the default build.
#[inline(always)]
fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static CAPABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *CAPABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
                && !std::env::var(PLAIN_LOOPS_ENV).is_ok_and(|v| v == "1")
        }) && !plain_here()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` with this thread's loops in their default-target build (the
/// tests compare both builds).
#[cfg(test)]
pub(crate) fn with_plain_loops<T>(f: impl FnOnce() -> T) -> T {
    let before = PLAIN.with(|p| p.replace(true));
    let out = f();
    PLAIN.with(|p| p.set(before));
    out
}

/// Runs `$plain(args…)` compiled for AVX2 and POPCNT where [`wide`] says
/// so, through `$wide`, a `#[target_feature]` twin whose body is the same
/// `#[inline(always)]` loop.
macro_rules! dispatch {
    ($wide:ident, $plain:ident ( $($arg:expr),* )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if wide() {
                // The crate's one kind of unsafe call: a function compiled
                // for AVX2 and POPCNT is only sound on a processor that has
                // them. SAFETY: `wide()` checked both.
                #[allow(unsafe_code)]
                return unsafe { $wide($($arg),*) };
            }
        }
        $plain($($arg),*)
    }};
}

/// ORs a 0/1 byte mask into a bitset at bit `start`: bit `(start + i) % 64`
/// of `words[(start + i) / 64]` is set where `mask[i]` is 1. Bytes other
/// than 0 and 1 are not allowed (masks never hold them).
pub(crate) fn pack_mask(mask: &[u8], start: usize, words: &mut [u64]) {
    dispatch!(pack_mask_wide, pack_mask_loop(mask, start, words))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn pack_mask_wide(mask: &[u8], start: usize, words: &mut [u64]) {
    pack_mask_loop(mask, start, words)
}

#[inline(always)]
fn pack_mask_loop(mask: &[u8], start: usize, words: &mut [u64]) {
    debug_assert!(mask.iter().all(|&b| b <= 1), "a mask holds only 0 and 1");
    let mut i = 0;
    // Up to the next word boundary, one bit at a time.
    while i < mask.len() && !(start + i).is_multiple_of(64) {
        words[(start + i) / 64] |= u64::from(mask[i]) << ((start + i) % 64);
        i += 1;
    }
    // Whole words: eight bytes of 0/1 become one byte of bits by one
    // multiplication (byte k of `x` lands on bit 56 + k, no two partial
    // products overlap, so nothing carries).
    let (whole, rest) = mask[i..].as_chunks::<64>();
    let first = (start + i) / 64;
    for (w, bytes) in words[first..first + whole.len()].iter_mut().zip(whole) {
        let (eights, _) = bytes.as_chunks::<8>();
        let mut packed = [0u8; 8];
        for (p, eight) in packed.iter_mut().zip(eights) {
            *p = (u64::from_le_bytes(*eight).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8;
        }
        *w |= u64::from_le_bytes(packed);
    }
    let tail = start + i + whole.len() * 64;
    for (j, &b) in rest.iter().enumerate() {
        words[(tail + j) / 64] |= u64::from(b) << ((tail + j) % 64);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Reusable buffers. Taken buffers have the right length but stale
/// contents: every user overwrites them in full before reading.
#[derive(Default)]
struct Scratch {
    nums: Vec<Vec<f64>>,
    masks: Vec<Vec<u8>>,
}

impl Scratch {
    fn num(&mut self, len: usize) -> Vec<f64> {
        let mut v = self.nums.pop().unwrap_or_default();
        v.resize(len, 0.0);
        v
    }

    fn mask(&mut self, len: usize) -> Vec<u8> {
        let mut v = self.masks.pop().unwrap_or_default();
        v.resize(len, 0);
        v
    }

    fn give(&mut self, v: NumVal<'_>) {
        if let NumVal::Owned(v) = v {
            self.nums.push(v);
        }
    }
}

/// One block of the chunk: the columns and the member range.
struct Block<'s, 'a> {
    cols: &'s [ColumnRef<'a>],
    start: usize,
    end: usize,
}

impl<'a> Block<'_, 'a> {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn num(&self, slot: usize) -> &'a [f64] {
        match self.cols[slot] {
            ColumnRef::Num(v) => &v[self.start..self.end],
            _ => unreachable!("column types are checked before evaluation"),
        }
    }

    fn bools(&self, slot: usize) -> &'a [u8] {
        match self.cols[slot] {
            ColumnRef::Bool(v) => &v[self.start..self.end],
            _ => unreachable!("column types are checked before evaluation"),
        }
    }

    fn codes(&self, slot: usize) -> &'a [u32] {
        match self.cols[slot] {
            ColumnRef::Text(v) => &v[self.start..self.end],
            _ => unreachable!("column types are checked before evaluation"),
        }
    }
}

/// How a predicate writes its mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// out = p
    Set,
    /// out &= p
    And,
    /// out |= p
    Or,
}

/// `out[i] (mode)= f(a[i])`: the one loop every leaf ends in.
#[inline(always)]
fn fill1<T: Copy>(out: &mut [u8], a: &[T], mode: Mode, f: impl Fn(T) -> bool) {
    dispatch!(fill1_wide, fill1_loop(out, a, mode, f))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn fill1_wide<T: Copy>(out: &mut [u8], a: &[T], mode: Mode, f: impl Fn(T) -> bool) {
    fill1_loop(out, a, mode, f)
}

#[inline(always)]
fn fill1_loop<T: Copy>(out: &mut [u8], a: &[T], mode: Mode, f: impl Fn(T) -> bool) {
    let a = &a[..out.len()];
    match mode {
        Mode::Set => out.iter_mut().zip(a).for_each(|(o, &x)| *o = u8::from(f(x))),
        Mode::And => out.iter_mut().zip(a).for_each(|(o, &x)| *o &= u8::from(f(x))),
        Mode::Or => out.iter_mut().zip(a).for_each(|(o, &x)| *o |= u8::from(f(x))),
    }
}

/// `out[i] (mode)= f(a[i], b[i])`.
#[inline(always)]
fn fill2<T: Copy, U: Copy>(out: &mut [u8], a: &[T], b: &[U], mode: Mode, f: impl Fn(T, U) -> bool) {
    dispatch!(fill2_wide, fill2_loop(out, a, b, mode, f))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn fill2_wide<T: Copy, U: Copy>(out: &mut [u8], a: &[T], b: &[U], mode: Mode, f: impl Fn(T, U) -> bool) {
    fill2_loop(out, a, b, mode, f)
}

#[inline(always)]
fn fill2_loop<T: Copy, U: Copy>(out: &mut [u8], a: &[T], b: &[U], mode: Mode, f: impl Fn(T, U) -> bool) {
    let (a, b) = (&a[..out.len()], &b[..out.len()]);
    let pairs = out.iter_mut().zip(a.iter().zip(b));
    match mode {
        Mode::Set => pairs.for_each(|(o, (&x, &y))| *o = u8::from(f(x, y))),
        Mode::And => pairs.for_each(|(o, (&x, &y))| *o &= u8::from(f(x, y))),
        Mode::Or => pairs.for_each(|(o, (&x, &y))| *o |= u8::from(f(x, y))),
    }
}

/// The same value for every member.
fn fill_const(out: &mut [u8], mode: Mode, v: bool) {
    match (mode, v) {
        (Mode::Set, v) => out.fill(u8::from(v)),
        (Mode::And, false) => out.fill(0),
        (Mode::Or, true) => out.fill(1),
        _ => {}
    }
}

/// A mask made of `parts` folded with `inner` (AND or OR), written into
/// `out` with `mode`. Folds straight into `out` when `mode` allows, through
/// a scratch mask otherwise.
fn fold_parts(
    out: &mut [u8],
    mode: Mode,
    inner: Mode,
    parts: usize,
    pool: &mut Scratch,
    mut part: impl FnMut(usize, &mut [u8], Mode, &mut Scratch),
) {
    let first = |i: usize| if i == 0 { Mode::Set } else { inner };
    if parts == 0 {
        // The empty AND is true, the empty OR false.
        fill_const(out, mode, inner == Mode::And);
    } else if mode == Mode::Set {
        (0..parts).for_each(|i| part(i, out, first(i), pool));
    } else if mode == inner {
        (0..parts).for_each(|i| part(i, out, inner, pool));
    } else {
        let mut tmp = pool.mask(out.len());
        (0..parts).for_each(|i| part(i, &mut tmp, first(i), pool));
        fill1(out, &tmp, mode, |t| t != 0);
        pool.masks.push(tmp);
    }
}

// Long on purpose: one arm per predicate kind, all writing into the same mask with the same scratch pool; the
// hot loop of rule evaluation.
fn pred(p: &Pred, b: &Block<'_, '_>, pool: &mut Scratch, out: &mut [u8], mode: Mode) {
    match p {
        Pred::Const(v) => fill_const(out, mode, *v),
        // `u / v >= c` over two columns (ratios like spend per order): one
        // pass, no intermediate buffer.
        &Pred::Cmp(
            op,
            Num::Bin(f @ (BinFn::Add | BinFn::Sub | BinFn::Mul | BinFn::Div), ref u, ref v),
            Num::Const(c),
        ) if matches!((&**u, &**v), (Num::Col(_), Num::Col(_))) => {
            let (Num::Col(u), Num::Col(v)) = (&**u, &**v) else { unreachable!("matched two columns") };
            let (u, v) = (b.num(*u), b.num(*v));
            per_cmp!(op, OP => per_arith!(f, F => fill2(out, u, v, mode, |p, q| OP.apply(F.apply(p, q), c))));
        }
        Pred::Cmp(op, x, y) => {
            let (x, y) = (num(x, b, pool), num(y, b, pool));
            match (&x, &y) {
                (NumVal::Const(c), NumVal::Const(d)) => fill_const(out, mode, op.apply(*c, *d)),
                (x, NumVal::Const(c)) => {
                    let (s, c) = (x.slice(), *c);
                    per_cmp!(*op, OP => fill1(out, s, mode, |v| OP.apply(v, c)));
                }
                (NumVal::Const(c), y) => {
                    let (s, c) = (y.slice(), *c);
                    per_cmp!(op.flip(), OP => fill1(out, s, mode, |v| OP.apply(v, c)));
                }
                (x, y) => per_cmp!(*op, OP => fill2(out, x.slice(), y.slice(), mode, |a, b| OP.apply(a, b))),
            }
            pool.give(x);
            pool.give(y);
        }
        &Pred::CmpOrNull(op, ref x, c) => {
            let x = num(x, b, pool);
            match &x {
                NumVal::Const(v) => fill_const(out, mode, v.is_nan() || op.apply(*v, c)),
                x => per_cmp!(op, OP => fill1(out, x.slice(), mode, |v| OP.apply(v, c) | v.is_nan())),
            }
            pool.give(x);
        }
        &Pred::Range { ref x, lo, hi, inside } => {
            let x = num(x, b, pool);
            match (&x, inside) {
                (NumVal::Const(c), true) => fill_const(out, mode, (*c >= lo) & (*c <= hi)),
                (NumVal::Const(c), false) => fill_const(out, mode, (*c < lo) | (*c > hi)),
                (x, true) => fill1(out, x.slice(), mode, |v| (v >= lo) & (v <= hi)),
                (x, false) => fill1(out, x.slice(), mode, |v| (v < lo) | (v > hi)),
            }
            pool.give(x);
        }
        Pred::InNum { x, set, member } => {
            let x = num(x, b, pool);
            if let NumVal::Const(c) = x {
                fill_const(out, mode, if *member { set.contains(&c) } else { !c.is_nan() && !set.contains(&c) });
                return;
            }
            let s = x.slice();
            if let Some(a) = pad4(set) {
                // A short list: one pass, the list unrolled.
                if *member {
                    fill1(out, s, mode, |v| (v == a[0]) | (v == a[1]) | (v == a[2]) | (v == a[3]));
                } else {
                    fill1(out, s, mode, |v| !v.is_nan() & (v != a[0]) & (v != a[1]) & (v != a[2]) & (v != a[3]));
                }
            } else if *member {
                // x = c0 or x = c1 or …
                fold_parts(out, mode, Mode::Or, set.len(), pool, |i, o, m, _| {
                    let c = set[i];
                    fill1(o, s, m, |v| v == c);
                });
            } else {
                // x is known and x != c0 and x != c1 and …
                fold_parts(out, mode, Mode::And, set.len() + 1, pool, |i, o, m, _| match i {
                    0 => fill1(o, s, m, |v| !v.is_nan()),
                    _ => {
                        let c = set[i - 1];
                        fill1(o, s, m, |v| v != c);
                    }
                });
            }
            pool.give(x);
        }
        &Pred::IsNan { ref x, nan } => {
            let x = num(x, b, pool);
            match &x {
                NumVal::Const(c) => fill_const(out, mode, c.is_nan() == nan),
                x if nan => fill1(out, x.slice(), mode, |v| v.is_nan()),
                x => fill1(out, x.slice(), mode, |v| !v.is_nan()),
            }
            pool.give(x);
        }
        &Pred::BoolIs { slot, want } => fill1(out, b.bools(slot), mode, |v| v == want),
        &Pred::BoolNull { slot, null: true } => fill1(out, b.bools(slot), mode, |v| v > 1),
        &Pred::BoolNull { slot, null: false } => fill1(out, b.bools(slot), mode, |v| v <= 1),
        &Pred::TextEq { slot, code, eq: true, .. } => fill1(out, b.codes(slot), mode, |v| v == code),
        &Pred::TextEq { slot, code, n, eq: false } => fill1(out, b.codes(slot), mode, |v| (v != code) & (v < n)),
        &Pred::TextAny { slot, codes: a } => {
            fill1(out, b.codes(slot), mode, |v| (v == a[0]) | (v == a[1]) | (v == a[2]) | (v == a[3]));
        }
        &Pred::TextSet { slot, ref bits, n } => {
            let codes = b.codes(slot);
            if let [word] = bits[..] {
                // Up to 63 values: one word, a shift per member.
                fill1(out, codes, mode, |v| (word >> v.min(n)) & 1 != 0);
            } else {
                fill1(out, codes, mode, |v| {
                    let k = v.min(n) as usize;
                    (bits[k / 64] >> (k % 64)) & 1 != 0
                });
            }
        }
        &Pred::TextNull { slot, n, null: true } => fill1(out, b.codes(slot), mode, |v| v >= n),
        &Pred::TextNull { slot, n, null: false } => fill1(out, b.codes(slot), mode, |v| v < n),
        Pred::Not(q) => {
            let mut tmp = pool.mask(out.len());
            pred(q, b, pool, &mut tmp, Mode::Set);
            fill1(out, &tmp, mode, |t| t == 0);
            pool.masks.push(tmp);
        }
        Pred::And(qs) => fold_parts(out, mode, Mode::And, qs.len(), pool, |i, o, m, pool| pred(&qs[i], b, pool, o, m)),
        Pred::Or(qs) => fold_parts(out, mode, Mode::Or, qs.len(), pool, |i, o, m, pool| pred(&qs[i], b, pool, o, m)),
    }
}

/// Up to four values as exactly four, the first repeated.
fn pad4(set: &[f64]) -> Option<[f64; 4]> {
    (1..=4).contains(&set.len()).then(|| [0, 1, 2, 3].map(|i| set[i.min(set.len() - 1)]))
}

/// A number-valued intermediate: a column slice (no copy), a constant, or a
/// pooled buffer.
enum NumVal<'a> {
    Slice(&'a [f64]),
    Const(f64),
    Owned(Vec<f64>),
}

impl NumVal<'_> {
    /// The values of a non-constant.
    fn slice(&self) -> &[f64] {
        match self {
            NumVal::Slice(s) => s,
            NumVal::Owned(v) => v,
            NumVal::Const(_) => unreachable!("constants are handled by the caller"),
        }
    }
}

fn num<'a>(n: &Num, b: &Block<'_, 'a>, pool: &mut Scratch) -> NumVal<'a> {
    match n {
        Num::Const(c) => NumVal::Const(*c),
        Num::Col(slot) => NumVal::Slice(b.num(*slot)),
        Num::Unary(op, x) => {
            let x = num(x, b, pool);
            per_unary!(*op, OP => map1(x, b.len(), pool, |v| OP.apply(v)))
        }
        Num::Bin(f, x, y) => {
            let (x, y) = (num(x, b, pool), num(y, b, pool));
            per_bin!(*f, OP => map2(x, y, b.len(), pool, |u, v| OP.apply(u, v)))
        }
    }
}

/// `f` of every value, in place when `x` is already a buffer.
#[inline(always)]
fn map1<'a>(x: NumVal<'a>, len: usize, pool: &mut Scratch, f: impl Fn(f64) -> f64) -> NumVal<'a> {
    dispatch!(map1_wide, map1_loop(x, len, pool, f))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn map1_wide<'a>(x: NumVal<'a>, len: usize, pool: &mut Scratch, f: impl Fn(f64) -> f64) -> NumVal<'a> {
    map1_loop(x, len, pool, f)
}

#[inline(always)]
fn map1_loop<'a>(x: NumVal<'a>, len: usize, pool: &mut Scratch, f: impl Fn(f64) -> f64) -> NumVal<'a> {
    match x {
        NumVal::Const(c) => NumVal::Const(f(c)),
        NumVal::Owned(mut v) => {
            v.iter_mut().for_each(|e| *e = f(*e));
            NumVal::Owned(v)
        }
        NumVal::Slice(s) => {
            let mut v = pool.num(len);
            v.iter_mut().zip(&s[..len]).for_each(|(o, &e)| *o = f(e));
            NumVal::Owned(v)
        }
    }
}

/// `f` of every pair, reusing whichever operand is already a buffer.
#[inline(always)]
fn map2<'a>(x: NumVal<'a>, y: NumVal<'a>, len: usize, pool: &mut Scratch, f: impl Fn(f64, f64) -> f64) -> NumVal<'a> {
    dispatch!(map2_wide, map2_loop(x, y, len, pool, f))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn map2_wide<'a>(
    x: NumVal<'a>,
    y: NumVal<'a>,
    len: usize,
    pool: &mut Scratch,
    f: impl Fn(f64, f64) -> f64,
) -> NumVal<'a> {
    map2_loop(x, y, len, pool, f)
}

#[inline(always)]
fn map2_loop<'a>(
    x: NumVal<'a>,
    y: NumVal<'a>,
    len: usize,
    pool: &mut Scratch,
    f: impl Fn(f64, f64) -> f64,
) -> NumVal<'a> {
    match (x, y) {
        (NumVal::Const(c), NumVal::Const(d)) => NumVal::Const(f(c, d)),
        (NumVal::Owned(mut v), y) => {
            match &y {
                NumVal::Const(d) => v.iter_mut().for_each(|e| *e = f(*e, *d)),
                y => v.iter_mut().zip(&y.slice()[..len]).for_each(|(e, &w)| *e = f(*e, w)),
            }
            pool.give(y);
            NumVal::Owned(v)
        }
        (x, NumVal::Owned(mut v)) => {
            match &x {
                NumVal::Const(c) => v.iter_mut().for_each(|e| *e = f(*c, *e)),
                x => v.iter_mut().zip(&x.slice()[..len]).for_each(|(e, &u)| *e = f(u, *e)),
            }
            pool.give(x);
            NumVal::Owned(v)
        }
        (NumVal::Slice(s), NumVal::Const(d)) => {
            let mut v = pool.num(len);
            v.iter_mut().zip(&s[..len]).for_each(|(o, &u)| *o = f(u, d));
            NumVal::Owned(v)
        }
        (NumVal::Const(c), NumVal::Slice(t)) => {
            let mut v = pool.num(len);
            v.iter_mut().zip(&t[..len]).for_each(|(o, &w)| *o = f(c, w));
            NumVal::Owned(v)
        }
        (NumVal::Slice(s), NumVal::Slice(t)) => {
            let mut v = pool.num(len);
            v.iter_mut().zip(s[..len].iter().zip(&t[..len])).for_each(|(o, (&u, &w))| *o = f(u, w));
            NumVal::Owned(v)
        }
    }
}
