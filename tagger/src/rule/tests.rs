//! Semantics tests and the differential property test.
//!
//! Every rule evaluated here goes through both [`Program::eval`] and
//! [`naive::eval`], and the two must agree member by member; the property
//! test does the same for random well-typed rules over random data.
//! Parser and type-checker tests live next to their code.

use proptest::prelude::*;
use proptest::sample::select;

use super::naive::{self, Value};
use super::*;

/// An [`Env`] for tests: columns in slot order, built up by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct TestEnv {
    cols: Vec<(String, VarType, Vec<String>)>,
}

impl TestEnv {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn add(mut self, name: &str, ty: VarType, dict: Vec<String>) -> Self {
        self.cols.push((name.to_string(), ty, dict));
        self
    }

    pub(crate) fn num(self, name: &str) -> Self {
        self.add(name, VarType::Num, vec![])
    }

    pub(crate) fn bool(self, name: &str) -> Self {
        self.add(name, VarType::Bool, vec![])
    }

    pub(crate) fn text(self, name: &str, dict: &[&str]) -> Self {
        self.add(name, VarType::Text, dict.iter().map(|s| s.to_string()).collect())
    }
}

impl Env for TestEnv {
    fn resolve(&self, name: &str) -> Option<(usize, VarType)> {
        self.cols.iter().position(|c| c.0 == name).map(|i| (i, self.cols[i].1))
    }

    fn dictionary(&self, slot: usize) -> &[String] {
        &self.cols[slot].2
    }

    fn names(&self) -> Vec<String> {
        self.cols.iter().map(|c| c.0.clone()).collect()
    }
}

/// Owned column data.
#[derive(Debug, Clone)]
enum Col {
    Num(Vec<f64>),
    Bool(Vec<u8>),
    Text(Vec<u32>),
}

impl Col {
    fn as_ref(&self) -> ColumnRef<'_> {
        match self {
            Col::Num(v) => ColumnRef::Num(v),
            Col::Bool(v) => ColumnRef::Bool(v),
            Col::Text(v) => ColumnRef::Text(v),
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Num(v) => v.len(),
            Col::Bool(v) => v.len(),
            Col::Text(v) => v.len(),
        }
    }
}

/// Member `i`'s value of column `name`, as the naive evaluator sees it.
fn row_value(env: &TestEnv, data: &[Col], name: &str, i: usize) -> Value {
    let (slot, _) = env.resolve(name).expect("rules only name known columns");
    match &data[slot] {
        Col::Num(v) => Value::Num(Some(v[i])), // NaN stays NaN: naive must read it as null
        Col::Bool(v) => Value::Bool(match v[i] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
        Col::Text(v) => Value::Text(env.dictionary(slot).get(v[i] as usize).cloned()),
    }
}

/// The naive verdict for every member.
fn naive_all(expr: &Expr, env: &TestEnv, data: &[Col], len: usize) -> Vec<Option<bool>> {
    (0..len).map(|i| naive::eval(expr, &|name: &str| row_value(env, data, name, i))).collect()
}

/// The compiled mask for `src`, checked against the naive evaluator with the
/// standard block size and with a tiny one.
fn mask(env: &TestEnv, data: &[Col], src: &str) -> Vec<u8> {
    let expr = parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
    let program = compile(&expr, env).unwrap_or_else(|e| panic!("{}", e.render(src)));
    let len = data.first().map_or(0, Col::len);
    let cols: Vec<ColumnRef<'_>> = data.iter().map(Col::as_ref).collect();
    let mut out = vec![7; 3];
    program.eval(&cols, len, &mut out);
    let mut small = Vec::new();
    program.eval_in_blocks(&cols, len, &mut small, 3);
    assert_eq!(out, small, "block size changes the result of `{src}`");
    let naive: Vec<u8> = naive_all(&expr, env, data, len).iter().map(|v| u8::from(*v == Some(true))).collect();
    assert_eq!(out, naive, "compiled and naive disagree on `{src}`");
    for block in [eval::BLOCK, 3, 64] {
        let mut bits = vec![u64::MAX; 2];
        program.eval_bits_in_blocks(&cols, len, &mut bits, block);
        assert_eq!(bits, naive_bits(&naive), "bits of `{src}` with blocks of {block}");
    }
    out
}

/// A 0/1 mask as a bitset, one bit at a time.
fn naive_bits(mask: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; mask.len().div_ceil(64)];
    for (i, &b) in mask.iter().enumerate() {
        if b == 1 {
            words[i / 64] |= 1 << (i % 64);
        }
    }
    words
}

/// Three-valued result per member: TRUE where `src` tags, FALSE where
/// `not (src)` tags, unknown where neither does.
fn truth(env: &TestEnv, data: &[Col], src: &str) -> Vec<Option<bool>> {
    let t = mask(env, data, src);
    let f = mask(env, data, &format!("not ({src})"));
    t.iter()
        .zip(&f)
        .map(|(&t, &f)| match (t, f) {
            (1, 0) => Some(true),
            (0, 1) => Some(false),
            (0, 0) => None,
            _ => panic!("`{src}` is both true and false"),
        })
        .collect()
}

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
const U: Option<bool> = None;
const NAN: f64 = f64::NAN;

/// Two booleans over all nine combinations of false, true, null.
fn kleene() -> (TestEnv, Vec<Col>) {
    let env = TestEnv::new().bool("a").bool("b");
    let a = vec![0, 0, 0, 1, 1, 1, 2, 2, 2];
    let b = vec![0, 1, 2, 0, 1, 2, 0, 1, 2];
    (env, vec![Col::Bool(a), Col::Bool(b)])
}

#[test]
fn kleene_truth_tables() {
    let (env, data) = kleene();
    //                                        a: F  F  F  T  T  T  U  U  U
    //                                        b: F  T  U  F  T  U  F  T  U
    assert_eq!(truth(&env, &data, "a and b"), [F, F, F, F, T, U, F, U, U]);
    assert_eq!(truth(&env, &data, "a or b"), [F, T, U, T, T, T, U, T, U]);
    assert_eq!(truth(&env, &data, "not a"), [T, T, T, F, F, F, U, U, U]);
    assert_eq!(truth(&env, &data, "a = b"), [T, F, U, F, T, U, U, U, U]);
    assert_eq!(truth(&env, &data, "a != b"), [F, T, U, T, F, U, U, U, U]);
    assert_eq!(truth(&env, &data, "a is null"), [F, F, F, F, F, F, T, T, T]);
    assert_eq!(truth(&env, &data, "(a and b) is not null"), [T, T, T, T, T, F, T, F, F]);
    assert_eq!(truth(&env, &data, "a = true"), truth(&env, &data, "a"));
    assert_eq!(truth(&env, &data, "a = false"), truth(&env, &data, "not a"));
    assert_eq!(truth(&env, &data, "a in (true, false)"), [T, T, T, T, T, T, U, U, U]);
    assert_eq!(truth(&env, &data, "a not in (false)"), [F, F, F, T, T, T, U, U, U]);
    assert_eq!(truth(&env, &data, "coalesce(a, b)"), [F, F, F, T, T, T, F, T, U]);
    assert_eq!(truth(&env, &data, "coalesce(a, b, true)"), [F, F, F, T, T, T, F, T, T]);
    assert_eq!(truth(&env, &data, "nullif(a, b)"), [U, F, F, T, U, T, U, U, U]);
    assert_eq!(truth(&env, &data, "a and null"), [F, F, F, U, U, U, U, U, U]);
    assert_eq!(truth(&env, &data, "a or null"), [U, U, U, T, T, T, U, U, U]);
    // De Morgan holds in three-valued logic.
    assert_eq!(truth(&env, &data, "not (a and b)"), truth(&env, &data, "not a or not b"));
}

fn numbers() -> (TestEnv, Vec<Col>) {
    let env = TestEnv::new().num("x").num("y");
    let x = vec![NAN, 1.0, 2.0, 3.0, -2.0, 0.0];
    let y = vec![2.0, NAN, 2.0, 0.0, 4.0, -0.0];
    (env, vec![Col::Num(x), Col::Num(y)])
}

#[test]
fn comparisons_with_constants_and_columns() {
    let (env, data) = numbers();
    //                                    x: NaN 1  2  3  -2 0
    assert_eq!(truth(&env, &data, "x = 2"), [U, F, T, F, F, F]);
    assert_eq!(truth(&env, &data, "x == 2"), [U, F, T, F, F, F]);
    assert_eq!(truth(&env, &data, "x != 2"), [U, T, F, T, T, T]);
    assert_eq!(truth(&env, &data, "x <> 2"), [U, T, F, T, T, T]);
    assert_eq!(truth(&env, &data, "x < 2"), [U, T, F, F, T, T]);
    assert_eq!(truth(&env, &data, "x <= 2"), [U, T, T, F, T, T]);
    assert_eq!(truth(&env, &data, "x > 2"), [U, F, F, T, F, F]);
    assert_eq!(truth(&env, &data, "x >= 2"), [U, F, T, T, F, F]);
    assert_eq!(truth(&env, &data, "2 <= x"), truth(&env, &data, "x >= 2"));
    //                                    y: 2  NaN 2  0  4  -0
    assert_eq!(truth(&env, &data, "x < y"), [U, U, F, F, T, F]);
    assert_eq!(truth(&env, &data, "x = y"), [U, U, T, F, F, T]);
    assert_eq!(truth(&env, &data, "x != y"), [U, U, F, T, T, F]);
    assert_eq!(truth(&env, &data, "x + 1 >= y * 1.5"), [U, U, T, T, F, T]);
}

#[test]
fn between_in_and_is_null() {
    let (env, data) = numbers();
    //                                                   x: NaN 1  2  3  -2 0
    assert_eq!(truth(&env, &data, "x between 1 and 2"), [U, T, T, F, F, F]);
    assert_eq!(truth(&env, &data, "x not between 1 and 2"), [U, F, F, T, T, T]);
    assert_eq!(truth(&env, &data, "x between 2 and 1"), [U, F, F, F, F, F]);
    assert_eq!(truth(&env, &data, "x between null and 2"), [U, U, U, F, U, U]);
    assert_eq!(truth(&env, &data, "x between y - 1 and y"), [U, U, T, F, F, T]);
    assert_eq!(truth(&env, &data, "x in (1, 3, -2)"), [U, T, F, T, T, F]);
    assert_eq!(truth(&env, &data, "x not in (1, 3, -2)"), [U, F, T, F, F, T]);
    assert_eq!(truth(&env, &data, "x in (0)"), [U, F, F, F, F, T]);
    assert_eq!(truth(&env, &data, "x in (-0)"), [U, F, F, F, F, T]);
    assert_eq!(truth(&env, &data, "x is null"), [T, F, F, F, F, F]);
    assert_eq!(truth(&env, &data, "x is not null"), [F, T, T, T, T, T]);
    assert_eq!(truth(&env, &data, "x + y is null"), [T, T, F, F, F, F]);
}

#[test]
fn arithmetic_and_division_by_zero() {
    let (env, data) = numbers();
    //                                                  x: NaN 1  2  3  -2 0
    //                                                  y: 2  NaN 2  0  4  -0
    assert_eq!(truth(&env, &data, "x / y is null"), [T, T, F, T, F, T]);
    assert_eq!(truth(&env, &data, "x % y is null"), [T, T, F, T, F, T]);
    assert_eq!(truth(&env, &data, "x / 0 is null"), [T, T, T, T, T, T]);
    assert_eq!(truth(&env, &data, "x % 0 is null"), [T, T, T, T, T, T]);
    assert_eq!(truth(&env, &data, "x / y > 0"), [U, U, T, U, F, U]);
    assert_eq!(truth(&env, &data, "x / nullif(y, 0) >= 1"), [U, U, T, U, F, U]);
    assert_eq!(truth(&env, &data, "x / nullif(y, 2) is null"), [T, T, T, T, F, T]);
    assert_eq!(truth(&env, &data, "-x = x * -1"), [U, T, T, T, T, T]);
    assert_eq!(truth(&env, &data, "x - y * 2 = -3"), [U, U, F, F, F, F]);
    assert_eq!(truth(&env, &data, "x % 2 = -0"), [U, F, T, F, T, T]);
    assert_eq!(truth(&env, &data, "-7 % 2 = -1"), [T; 6]);
    assert_eq!(truth(&env, &data, "1e300 * 1e300 - 1e300 * 1e300 is null"), [T; 6]);
    assert_eq!(truth(&env, &data, "1_000 + 1.5e3 = 2500"), [T; 6]);
}

#[test]
fn functions() {
    let env = TestEnv::new().num("p").num("q");
    let data = vec![Col::Num(vec![NAN, -1.5, 2.5, NAN]), Col::Num(vec![3.0, NAN, 1.0, NAN])];
    //                                                               p: NaN -1.5 2.5 NaN
    //                                                               q: 3   NaN  1   NaN
    assert_eq!(truth(&env, &data, "coalesce(p, 0) >= 0"), [T, F, T, T]);
    assert_eq!(truth(&env, &data, "coalesce(p, q, 7) = 7"), [F, F, F, T]);
    assert_eq!(truth(&env, &data, "coalesce(p, q) is null"), [F, F, F, T]);
    assert_eq!(truth(&env, &data, "coalesce(null, p) = p"), [U, T, T, U]);
    assert_eq!(truth(&env, &data, "nullif(p, 2.5) is null"), [T, F, T, T]);
    assert_eq!(truth(&env, &data, "abs(p) = 1.5"), [U, T, F, U]);
    assert_eq!(truth(&env, &data, "floor(p) = -2"), [U, T, F, U]);
    assert_eq!(truth(&env, &data, "ceil(p) = 3"), [U, F, T, U]);
    assert_eq!(truth(&env, &data, "least(p, q) = 1"), [F, F, T, U]);
    assert_eq!(truth(&env, &data, "least(p, q) = 3"), [T, F, F, U]);
    assert_eq!(truth(&env, &data, "greatest(p, q) = -1.5"), [F, T, F, U]);
    assert_eq!(truth(&env, &data, "greatest(p, q, 2) = 2"), [F, T, F, T]);
    assert_eq!(truth(&env, &data, "least(p) is null"), [T, F, F, T]);
    assert_eq!(truth(&env, &data, "Coalesce(p, 1) > 0"), [T, F, T, T]);
}

fn stores() -> (TestEnv, Vec<Col>) {
    let env = TestEnv::new().text("home_store", &["S0001", "S0042", "it's"]).text("channel", &["app", "store", "web"]);
    // Codes: null, out-of-range (also null), then each value.
    let store = vec![u32::MAX, 9, 0, 1, 2, 1];
    let channel = vec![0, 1, 2, u32::MAX, 0, 3];
    (env, vec![Col::Text(store), Col::Text(channel)])
}

#[test]
fn text_equality_in_and_null() {
    let (env, data) = stores();
    //                                                    store: null null S0001 S0042 it's S0042
    assert_eq!(truth(&env, &data, "home_store = 'S0042'"), [U, U, F, T, F, T]);
    assert_eq!(truth(&env, &data, "'S0042' = home_store"), [U, U, F, T, F, T]);
    assert_eq!(truth(&env, &data, "home_store != 'S0042'"), [U, U, T, F, T, F]);
    assert_eq!(truth(&env, &data, "home_store = 'it''s'"), [U, U, F, F, T, F]);
    // A literal that is not in the dictionary matches nobody.
    assert_eq!(truth(&env, &data, "home_store = 'S9999'"), [U, U, F, F, F, F]);
    assert_eq!(truth(&env, &data, "home_store <> 'S9999'"), [U, U, T, T, T, T]);
    assert_eq!(truth(&env, &data, "home_store in ('S9999', 'S0001')"), [U, U, T, F, F, F]);
    assert_eq!(truth(&env, &data, "home_store in ('S9999', 'S8888')"), [U, U, F, F, F, F]);
    assert_eq!(truth(&env, &data, "home_store not in ('S0001', 'it''s')"), [U, U, F, T, F, T]);
    assert_eq!(truth(&env, &data, "home_store is null"), [T, T, F, F, F, F]);
    assert_eq!(truth(&env, &data, "home_store is not null"), [F, F, T, T, T, T]);
    //                                                         channel: app store web null app null
    assert_eq!(truth(&env, &data, "channel in ('app', 'store')"), [T, T, F, U, T, U]);
    assert_eq!(truth(&env, &data, "channel not in ('app', 'store')"), [F, F, T, U, F, U]);
    assert_eq!(truth(&env, &data, "'x' is null or 'x' is not null"), [T; 6]);
}

#[test]
fn text_sets_beyond_one_word() {
    // More than 63 values: the bitset spans several words.
    let names: Vec<String> = (0..200).map(|i| format!("S{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let env = TestEnv::new().text("home_store", &refs);
    let codes: Vec<u32> = (0..205).chain([u32::MAX]).collect();
    let data = vec![Col::Text(codes)];
    let m = mask(&env, &data, "home_store in ('S0003', 'S0064', 'S0199', 'S0200')");
    let hits: Vec<usize> = (0..m.len()).filter(|&i| m[i] == 1).collect();
    assert_eq!(hits, [3, 64, 199]);
    let m = mask(&env, &data, "home_store not in ('S0003', 'S0064', 'S0199')");
    assert_eq!(m.iter().map(|&b| b as usize).sum::<usize>(), 197);
}

#[test]
fn catalog_examples() {
    let env = TestEnv::new()
        .num("growth_value")
        .num("orders_total")
        .num("recency_days")
        .bool("lifecycle_growth")
        .bool("lifecycle_mature")
        .num("birthday_month")
        .text("home_store", &["S0001", "S0042"])
        .text("channel", &["app", "store", "web"])
        .num("age")
        .num("spend_365d")
        .num("orders_365d")
        .num("points_balance");
    let data = vec![
        Col::Num(vec![6000.0, 5999.0, NAN, 9000.0]),
        Col::Num(vec![1.0, 0.0, 3.0, NAN]),
        Col::Num(vec![30.0, 59.0, 60.0, 29.0]),
        Col::Bool(vec![0, 1, 0, 0]),
        Col::Bool(vec![0, 0, 0, 1]),
        Col::Num(vec![3.0, 4.0, NAN, 3.0]),
        Col::Text(vec![1, 0, u32::MAX, 1]),
        Col::Text(vec![0, 1, 2, u32::MAX]),
        Col::Num(vec![24.0, 25.0, NAN, 18.0]),
        Col::Num(vec![400.0, 1000.0, 600.0, 0.0]),
        Col::Num(vec![2.0, 0.0, 3.0, 0.0]),
        Col::Num(vec![500.0, NAN, 499.5, 0.0]),
    ];
    let cases: &[(&str, [u8; 4])] = &[
        ("growth_value >= 6000", [1, 0, 0, 1]),
        ("orders_total > 0 and recency_days between 30 and 59", [1, 0, 0, 0]),
        ("not (lifecycle_growth or lifecycle_mature) and orders_total > 0", [1, 0, 1, 0]),
        ("birthday_month = 3", [1, 0, 0, 1]),
        ("home_store = 'S0042'", [1, 0, 0, 1]),
        ("channel in ('app', 'store')", [1, 1, 0, 0]),
        ("age is not null and age < 25", [1, 0, 0, 1]),
        ("spend_365d / nullif(orders_365d, 0) >= 200", [1, 0, 1, 0]),
        ("coalesce(points_balance, 0) >= 500", [1, 0, 0, 0]),
    ];
    for (src, want) in cases {
        assert_eq!(mask(&env, &data, src), want, "{src}");
    }
}

#[test]
fn chunks_longer_than_a_block() {
    let env = TestEnv::new().num("x").bool("b").text("t", &["a", "b", "c"]);
    let n = 3 * eval::BLOCK + 17;
    let x: Vec<f64> = (0..n).map(|i| if i % 7 == 0 { NAN } else { (i % 100) as f64 }).collect();
    let b: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let t: Vec<u32> = (0..n).map(|i| if i % 5 == 0 { u32::MAX } else { (i % 3) as u32 }).collect();
    let data = vec![Col::Num(x), Col::Bool(b), Col::Text(t)];
    for src in [
        "x >= 50",
        "x / (x - 50) > 1 or not b",
        "(x between 10 and 20 or t in ('a', 'c')) and coalesce(b, true)",
        "floor(x / 10) in (1, 3, 5) and x % 2 != 0",
    ] {
        let m = mask(&env, &data, src);
        assert_eq!(m.len(), n);
    }
}

#[test]
fn empty_chunks_and_reused_output() {
    let env = TestEnv::new().num("x");
    let data = vec![Col::Num(vec![])];
    assert_eq!(mask(&env, &data, "x > 1"), [] as [u8; 0]);
    // Columns may be longer than `len`; `out` is cleared first.
    let program = compile(&parse("x > 1").unwrap(), &env).unwrap();
    let mut out = vec![9; 10];
    program.eval(&[ColumnRef::Num(&[0.0, 2.0, 3.0])], 2, &mut out);
    assert_eq!(out, [0, 1]);
}

#[test]
fn packing_masks_at_any_offset() {
    // Masks of every length around word boundaries, packed at every offset
    // into a bitset that already has bits set: the new bits are ORed in.
    for len in [0usize, 1, 7, 8, 63, 64, 65, 127, 128, 200] {
        let mask: Vec<u8> = (0..len).map(|i| u8::from((i * 7 + i / 3) % 5 < 2)).collect();
        for start in [0usize, 1, 8, 63, 64, 100] {
            let words = (start + len).div_ceil(64) + 1;
            let mut got = vec![0u64; words];
            got[0] |= 1;
            pack_mask(&mask, start, &mut got);
            let mut want = vec![0u64; words];
            want[0] |= 1;
            for (i, &b) in mask.iter().enumerate() {
                want[(start + i) / 64] |= u64::from(b) << ((start + i) % 64);
            }
            assert_eq!(got, want, "{len} bits at {start}");
        }
    }
}

#[test]
#[should_panic(expected = "the rule reads slot 0 as a number column of at least 2 values, but got a text column")]
fn wrong_column_type_is_a_caller_bug() {
    let env = TestEnv::new().num("x");
    let program = compile(&parse("x > 1").unwrap(), &env).unwrap();
    program.eval(&[ColumnRef::Text(&[0, 1])], 2, &mut Vec::new());
}

// ---------------------------------------------------------------------------
// The differential property test.

/// Column values: nulls, signs, zeros of both signs, huge and infinite
/// values, and every constant rules use, so `>=` vs `>` and NaN handling are
/// exercised at the boundaries.
const VALUES: [f64; 16] =
    [NAN, 0.0, -0.0, 1.0, -1.0, 2.0, 3.0, 0.5, -2.5, 30.0, 59.0, 200.0, 6000.0, 1e300, -1e300, f64::INFINITY];
/// Constants in rules (finite: a rule cannot spell NaN or infinity).
const CONSTANTS: [f64; 13] = [0.0, -0.0, 1.0, -1.0, 2.0, 3.0, 0.5, -2.5, 30.0, 59.0, 200.0, 6000.0, 1e300];
/// Text values dictionaries are drawn from; literals add one never present.
const WORDS: [&str; 6] = ["a", "b", "c", "it's", "Zürich", ""];
const LITERALS: [&str; 7] = ["a", "b", "c", "it's", "Zürich", "", "absent"];
const NUMS: [&str; 4] = ["n0", "n1", "n2", "n3"];
const BOOLS: [&str; 2] = ["b0", "b1"];
const TEXTS: [&str; 2] = ["t0", "t1"];

fn node(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::default())
}

fn boxed(e: Expr) -> Box<Expr> {
    Box::new(e)
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    node(ExprKind::Call { name: name.into(), args })
}

/// A bare `null` cannot be compared (that is a compile error); `coalesce(null)`
/// is the same value in a form that may.
fn comparable(e: Expr) -> Expr {
    if matches!(e.kind, ExprKind::Null) { call("coalesce", vec![e]) } else { e }
}

fn cmp_ops() -> impl Strategy<Value = CmpOp> {
    select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge])
}

fn constant() -> impl Strategy<Value = Expr> + Clone {
    select(CONSTANTS.to_vec()).prop_map(|v| node(ExprKind::Num(v)))
}

fn ident(names: &'static [&'static str]) -> impl Strategy<Value = Expr> + Clone {
    select(names).prop_map(|n| node(ExprKind::Ident(n.into())))
}

/// Random number-valued expressions.
fn num_expr() -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![4 => ident(&NUMS), 3 => constant(), 1 => Just(node(ExprKind::Null))];
    leaf.prop_recursive(3, 12, 3, |inner| {
        let arith = select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::Rem]);
        prop_oneof![
            3 => (arith, inner.clone(), inner.clone())
                .prop_map(|(op, a, b)| node(ExprKind::Arith { op, lhs: boxed(a), rhs: boxed(b) })),
            1 => inner.clone().prop_map(|x| node(ExprKind::Neg(boxed(x)))),
            1 => (select(vec!["abs", "floor", "ceil"]), inner.clone()).prop_map(|(f, x)| call(f, vec![x])),
            2 => (select(vec!["coalesce", "least", "greatest"]), prop::collection::vec(inner.clone(), 1..=3))
                .prop_map(|(f, xs)| call(f, xs)),
            1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| call("nullif", vec![a, b])),
            // The shapes the compiler rewrites: `x / nullif(y, c)`, `coalesce(x, c)`.
            1 => (inner.clone(), inner.clone(), constant(), any::<bool>()).prop_map(|(a, b, c, rem)| {
                let op = if rem { ArithOp::Rem } else { ArithOp::Div };
                node(ExprKind::Arith { op, lhs: boxed(a), rhs: boxed(call("nullif", vec![b, c])) })
            }),
            1 => (inner, constant()).prop_map(|(a, c)| call("coalesce", vec![a, c])),
        ]
    })
    .boxed()
}

/// Random conditions: every leaf form over numbers, booleans and text, then
/// the logical connectives and the functions on conditions.
fn bool_expr() -> BoxedStrategy<Expr> {
    let num = num_expr();
    let text_col = ident(&TEXTS);
    let text_lit = select(LITERALS.to_vec()).prop_map(|s| node(ExprKind::Text(s.into())));
    let leaf = prop_oneof![
        4 => (num.clone(), cmp_ops(), num.clone()).prop_map(|(a, op, b)| {
            node(ExprKind::Compare { op, lhs: boxed(comparable(a)), rhs: boxed(comparable(b)) })
        }),
        3 => (ident(&NUMS), cmp_ops(), constant()).prop_map(|(a, op, b)| {
            node(ExprKind::Compare { op, lhs: boxed(a), rhs: boxed(b) })
        }),
        2 => (num.clone(), constant(), constant(), any::<bool>()).prop_map(|(x, lo, hi, negated)| {
            node(ExprKind::Between { expr: boxed(x), low: boxed(lo), high: boxed(hi), negated })
        }),
        1 => (num.clone(), num.clone(), num.clone(), any::<bool>()).prop_map(|(x, lo, hi, negated)| {
            node(ExprKind::Between { expr: boxed(x), low: boxed(lo), high: boxed(hi), negated })
        }),
        2 => (num.clone(), prop::collection::vec(constant(), 1..=4), any::<bool>())
            .prop_map(|(x, list, negated)| node(ExprKind::In { expr: boxed(x), list, negated })),
        1 => (num, any::<bool>()).prop_map(|(x, negated)| node(ExprKind::IsNull { expr: boxed(x), negated })),
        3 => ident(&BOOLS),
        3 => (text_col.clone(), select(vec![CmpOp::Eq, CmpOp::Ne]), text_lit.clone(), any::<bool>()).prop_map(
            |(col, op, lit, swap)| {
                let (lhs, rhs) = if swap { (lit, col) } else { (col, lit) };
                node(ExprKind::Compare { op, lhs: boxed(lhs), rhs: boxed(rhs) })
            }
        ),
        2 => (text_col.clone(), prop::collection::vec(text_lit, 1..=4), any::<bool>())
            .prop_map(|(x, list, negated)| node(ExprKind::In { expr: boxed(x), list, negated })),
        1 => (text_col, any::<bool>()).prop_map(|(x, negated)| node(ExprKind::IsNull { expr: boxed(x), negated })),
        1 => any::<bool>().prop_map(|b| node(ExprKind::Bool(b))),
        1 => Just(node(ExprKind::Null)),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 2..=3).prop_map(|xs| node(ExprKind::And(xs))),
            3 => prop::collection::vec(inner.clone(), 2..=3).prop_map(|xs| node(ExprKind::Or(xs))),
            2 => inner.clone().prop_map(|x| node(ExprKind::Not(boxed(x)))),
            1 => (inner.clone(), select(vec![CmpOp::Eq, CmpOp::Ne]), inner.clone()).prop_map(|(a, op, b)| {
                node(ExprKind::Compare { op, lhs: boxed(comparable(a)), rhs: boxed(comparable(b)) })
            }),
            1 => (inner.clone(), any::<bool>())
                .prop_map(|(x, negated)| node(ExprKind::IsNull { expr: boxed(x), negated })),
            1 => (inner.clone(), prop::collection::vec(any::<bool>(), 1..=2), any::<bool>()).prop_map(
                |(x, list, negated)| {
                    let list = list.into_iter().map(|b| node(ExprKind::Bool(b))).collect();
                    node(ExprKind::In { expr: boxed(x), list, negated })
                }
            ),
            1 => prop::collection::vec(inner.clone(), 1..=3).prop_map(|xs| call("coalesce", xs)),
            1 => (inner.clone(), inner).prop_map(|(a, b)| call("nullif", vec![a, b])),
        ]
    })
    .boxed()
}

/// A random environment (slot order, dictionaries) with random chunk data.
fn env_and_data() -> impl Strategy<Value = (TestEnv, Vec<Col>, usize)> {
    let names: Vec<&'static str> = NUMS.iter().chain(&BOOLS).chain(&TEXTS).copied().collect();
    let dict = || proptest::sample::subsequence(WORDS.to_vec(), 0..=WORDS.len()).prop_shuffle();
    (Just(names).prop_shuffle(), dict(), dict(), 0usize..80, 1usize..20).prop_flat_map(|(order, d0, d1, len, block)| {
        let mut env = TestEnv::new();
        let mut cols = Vec::new();
        for name in order {
            let col: BoxedStrategy<Col> = match name.as_bytes()[0] {
                b'n' => {
                    env = env.num(name);
                    prop::collection::vec(select(VALUES.to_vec()), len).prop_map(Col::Num).boxed()
                }
                b'b' => {
                    env = env.bool(name);
                    prop::collection::vec(prop_oneof![3 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)], len)
                        .prop_map(Col::Bool)
                        .boxed()
                }
                _ => {
                    let dict = if name == "t0" { &d0 } else { &d1 };
                    env = env.text(name, dict);
                    // Codes in range, just past it, and the null code.
                    let n = dict.len() as u32;
                    let code = prop_oneof![6 => 0..n.max(1), 1 => Just(n), 1 => Just(u32::MAX)];
                    prop::collection::vec(code, len).prop_map(Col::Text).boxed()
                }
            };
            cols.push(col);
        }
        (Just(env), cols, Just(block))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Any well-typed rule prints, parses back to itself, compiles, and the
    /// compiled program tags exactly the members the naive evaluator finds TRUE.
    #[test]
    fn compiled_matches_naive(expr in bool_expr(), (env, data, block) in env_and_data()) {
        let text = expr.to_string();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(e.render(&text)))?;
        prop_assert_eq!(&parsed, &expr, "display does not round-trip: {}", text);
        let program = compile(&parsed, &env).map_err(|e| TestCaseError::fail(e.render(&text)))?;
        let len = data.first().map_or(0, Col::len);
        let cols: Vec<ColumnRef<'_>> = data.iter().map(Col::as_ref).collect();
        let mut out = Vec::new();
        program.eval_in_blocks(&cols, len, &mut out, block);
        let naive = naive_all(&parsed, &env, &data, len);
        let mut bits = Vec::new();
        program.eval_bits_in_blocks(&cols, len, &mut bits, block);
        let naive_mask: Vec<u8> = naive.iter().map(|v| u8::from(*v == Some(true))).collect();
        prop_assert_eq!(&bits, &naive_bits(&naive_mask), "bits of `{}` with blocks of {}", text, block);
        // The default-target build of the loops gives the same answer.
        let (plain, plain_bits) = eval::with_plain_loops(|| {
            let (mut out, mut bits) = (Vec::new(), Vec::new());
            program.eval_in_blocks(&cols, len, &mut out, block);
            program.eval_bits_in_blocks(&cols, len, &mut bits, block);
            (out, bits)
        });
        prop_assert_eq!(&plain, &out, "plain loops on `{}`", text);
        prop_assert_eq!(&plain_bits, &bits, "plain loops' bits of `{}`", text);
        for i in 0..len {
            prop_assert_eq!(
                out[i] == 1,
                naive[i] == Some(true),
                "member {} of `{}`: compiled {} but naive {:?}; row {:?}",
                i, text, out[i], naive[i],
                parsed.identifiers().iter().map(|n| (n.clone(), row_value(&env, &data, n, i))).collect::<Vec<_>>()
            );
        }
    }

    /// Arbitrary text never panics the parser, and whatever parses prints
    /// back to an equal tree.
    #[test]
    fn parser_is_total(src in "[a-c0-9 ()'=<>!+*/%,._-]{0,30}|(and|or|not|in|is|null|between|x|1|-|\\(|\\)| )*") {
        if let Ok(e) = parse(&src) {
            let text = e.to_string();
            let again = parse(&text);
            prop_assert_eq!(again.as_ref(), Ok(&e), "{} printed as {}", src, text);
        }
    }
}

/// Texts a fuzzer would write: the language's own words, parentheses and
/// `not` runs in any order (runs repeated past the depth limit), stray
/// characters, and printed well-typed rules with such noise put in.
fn rule_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        12 => select(vec![
            "n0", "n1", "n2", "n3", "b0", "b1", "t0", "t1", "zz", "and", "or", "not", "in", "is", "null",
            "between", "true", "false", "(", ")", ",", "=", "==", "<>", "!=", "<", "<=", ">", ">=", "+", "-",
            "*", "/", "%", "abs(", "floor(", "ceil(", "coalesce(", "least(", "greatest(", "nullif(", "days(",
            "0", "1.5", "-3", "1e308", "1e999", "0.000", "99999999999999999999", "'a'", "'it''s'", "'Zürich'",
            "''", "'", "\"b0\"", "(n0", "b0)", "not (", "n0 between 1 and",
        ])
        .prop_map(str::to_string),
        1 => ".{0,4}",
    ];
    let piece = (word, 1usize..4, select(vec![" ", "", "  ", "\n"])).prop_map(|(w, n, sep)| vec![w; n].join(sep));
    let run = (prop::collection::vec(piece, 1..6), prop_oneof![9 => Just(1usize), 1 => 1usize..260])
        .prop_map(|(pieces, times)| pieces.join(" ").repeat(times));
    let soup = prop::collection::vec(run, 1..8).prop_map(|runs| runs.join(" "));
    let printed =
        (bool_expr(), prop::option::of((soup.clone(), any::<prop::sample::Index>()))).prop_map(|(e, noise)| {
            let text = e.to_string();
            match noise {
                None => text,
                Some((noise, at)) => taglake_storage::fuzzing::put_in(&text, &noise, at),
            }
        });
    prop_oneof![soup, printed]
}

/// The stable driver of the `tag_rule` fuzz target (`fuzz/`): any text
/// parses or fails with an error that renders against it; what parses
/// prints back to an equal tree; what compiles evaluates, at any block
/// size, to exactly the members the naive evaluator finds TRUE. Runs
/// `TAGLAKE_FUZZ_SECONDS` (default 20): `cargo test --workspace --lib
/// rule::tests::any_rule_text_parses_or_fails_cleanly -- --ignored --nocapture`.
#[test]
#[ignore = "long: run with --ignored (see the README's fuzzing section)"]
fn any_rule_text_parses_or_fails_cleanly() {
    let counts = std::cell::Cell::new((0u64, 0u64, 0u64));
    let strategy = (rule_text(), env_and_data());
    taglake_storage::fuzzing::run_for("tag_rule", &strategy, 256, |(text, (env, data, block))| {
        let (mut refused, mut rejected, mut compiled) = counts.get();
        match parse(&text) {
            Err(e) => {
                refused += 1;
                let shown = e.render(&text);
                prop_assert!(!shown.trim().is_empty(), "an empty error for {:?}", text);
            }
            Ok(expr) => {
                let printed = expr.to_string();
                let again = parse(&printed).map_err(|e| TestCaseError::fail(e.render(&printed)))?;
                prop_assert_eq!(&again, &expr, "{:?} printed as {:?}", text, printed);
                match compile(&expr, &env) {
                    Err(e) => {
                        rejected += 1;
                        prop_assert!(!e.render(&text).trim().is_empty());
                    }
                    Ok(program) => {
                        compiled += 1;
                        let len = data.first().map_or(0, Col::len);
                        let cols: Vec<ColumnRef<'_>> = data.iter().map(Col::as_ref).collect();
                        let (mut whole, mut blocks) = (Vec::new(), Vec::new());
                        program.eval(&cols, len, &mut whole);
                        program.eval_in_blocks(&cols, len, &mut blocks, block);
                        prop_assert_eq!(&whole, &blocks, "block size {} changes {:?}", block, text);
                        let naive = naive_all(&expr, &env, &data, len);
                        for i in 0..len {
                            prop_assert_eq!(whole[i] == 1, naive[i] == Some(true), "member {} of {:?}", i, text);
                        }
                    }
                }
            }
        }
        counts.set((refused, rejected, compiled));
        Ok(())
    });
    let (refused, rejected, compiled) = counts.get();
    eprintln!("tag_rule: {refused} refused by the parser, {rejected} by the compiler, {compiled} compiled and checked");
}
