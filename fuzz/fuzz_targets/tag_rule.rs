//! The tag-rule language: any text parses or fails with a renderable
//! error; a rule that compiles evaluates, and the compiled evaluator agrees
//! with the naive one member by member.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taglake_tagger::rule::naive::{self, Value};
use taglake_tagger::rule::{ColumnRef, Env, VarType, compile, parse};

struct Columns;

const NAMES: [&str; 4] = ["x", "y", "flag", "home_store"];
const STORES: [&str; 2] = ["S1", "S'2"];

impl Env for Columns {
    fn resolve(&self, name: &str) -> Option<(usize, VarType)> {
        let types = [VarType::Num, VarType::Num, VarType::Bool, VarType::Text];
        NAMES.iter().position(|n| *n == name).map(|i| (i, types[i]))
    }
    fn dictionary(&self, slot: usize) -> &[String] {
        static DICT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        if slot == 3 { DICT.get_or_init(|| STORES.iter().map(|s| s.to_string()).collect()) } else { &[] }
    }
    fn names(&self) -> Vec<String> {
        NAMES.iter().map(|n| n.to_string()).collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let expr = match parse(text) {
        Ok(expr) => expr,
        Err(e) => {
            let _ = e.render(text);
            return;
        }
    };
    let _ = expr.to_string();
    let Ok(program) = compile(&expr, &Columns) else { return };
    let x = [0.0, -1.5, f64::NAN, 6000.0, 1e300, -0.0, 3.0, f64::INFINITY];
    let y = [1.0, 0.0, 2.0, f64::NAN, -1e300, 5.0, 3.0, 7.0];
    let flag = [1u8, 0, 2, 1, 0, 1, 0, 1];
    let store = [0u32, 1, u32::MAX, 0, 1, 7, 0, 1];
    let mut mask = Vec::new();
    let columns = [ColumnRef::Num(&x), ColumnRef::Num(&y), ColumnRef::Bool(&flag), ColumnRef::Text(&store)];
    program.eval(&columns, x.len(), &mut mask);
    for m in 0..x.len() {
        let row = |name: &str| match name {
            "x" => Value::Num(Some(x[m]).filter(|v| !v.is_nan())),
            "y" => Value::Num(Some(y[m]).filter(|v| !v.is_nan())),
            "flag" => Value::Bool((flag[m] <= 1).then_some(flag[m] == 1)),
            _ => Value::Text(STORES.get(store[m] as usize).map(|s| s.to_string())),
        };
        let want = naive::eval(&expr, &row) == Some(true);
        assert_eq!(mask[m] == 1, want, "member {m} of {text:?}");
    }
});
