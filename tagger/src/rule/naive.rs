//! The reference evaluator: one member at a time, straight from the tree.
//!
//! It shares nothing with the compiled path except the syntax tree: no type
//! checking, no folding, no polarity tricks, text compared as strings rather
//! than codes, nulls as `Option`s rather than NaN. It is slow and obviously
//! right, which is what the property test needs to hold the fast path to
//! account. Use it for one-off checks (explaining why a member has a tag),
//! never for tagging a population.
//!
//! It expects a rule that [`compile`](super::compile) accepts; parts that
//! would not type-check evaluate to null rather than panicking.

use super::ast::{ArithOp, CmpOp, Expr, ExprKind};

/// A member's value of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number; `None` (or NaN) is null.
    Num(Option<f64>),
    /// A boolean; `None` is null.
    Bool(Option<bool>),
    /// Text; `None` is null.
    Text(Option<String>),
}

/// Row-by-row reference: walks the AST directly, no compilation, written
/// independently of the compiled path. `row(name)` gives the value of a
/// column for this member. Returns Some(true/false) or None (unknown).
pub fn eval(expr: &Expr, row: &dyn Fn(&str) -> Value) -> Option<bool> {
    match value(expr, row) {
        V::Bool(b) => b,
        _ => None,
    }
}

/// A value during evaluation; `Null` is the untyped `null` literal.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Num(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Null,
}

impl V {
    fn is_null(&self) -> bool {
        matches!(self, V::Num(None) | V::Bool(None) | V::Text(None) | V::Null)
    }

    fn num(self) -> Option<f64> {
        match self {
            V::Num(x) => x,
            _ => None,
        }
    }

    fn truth(self) -> Option<bool> {
        match self {
            V::Bool(x) => x,
            _ => None,
        }
    }

    /// The null of this value's type.
    fn null_like(&self) -> V {
        match self {
            V::Num(_) => V::Num(None),
            V::Bool(_) => V::Bool(None),
            V::Text(_) => V::Text(None),
            V::Null => V::Null,
        }
    }
}

/// A number result: NaN (as from `inf - inf`) is null.
fn number(x: f64) -> V {
    V::Num(if x.is_nan() { None } else { Some(x) })
}

fn value(e: &Expr, row: &dyn Fn(&str) -> Value) -> V {
    match &e.kind {
        ExprKind::Num(x) => number(*x),
        ExprKind::Text(s) => V::Text(Some(s.clone())),
        ExprKind::Bool(b) => V::Bool(Some(*b)),
        ExprKind::Null => V::Null,
        ExprKind::Ident(name) => match row(name) {
            Value::Num(x) => V::Num(x.filter(|x| !x.is_nan())),
            Value::Bool(b) => V::Bool(b),
            Value::Text(s) => V::Text(s),
        },
        ExprKind::Neg(x) => match value(x, row).num() {
            Some(x) => number(-x),
            None => V::Num(None),
        },
        ExprKind::Arith { op, lhs, rhs } => {
            let (Some(a), Some(b)) = (value(lhs, row).num(), value(rhs, row).num()) else {
                return V::Num(None);
            };
            match op {
                ArithOp::Add => number(a + b),
                ArithOp::Sub => number(a - b),
                ArithOp::Mul => number(a * b),
                ArithOp::Div | ArithOp::Rem if b == 0.0 => V::Num(None),
                ArithOp::Div => number(a / b),
                ArithOp::Rem => number(a % b),
            }
        }
        ExprKind::Compare { op, lhs, rhs } => V::Bool(compare(*op, &value(lhs, row), &value(rhs, row))),
        ExprKind::Between { expr, low, high, negated } => {
            let x = value(expr, row);
            let ge = compare(CmpOp::Ge, &x, &value(low, row));
            let le = compare(CmpOp::Le, &x, &value(high, row));
            let inside = and(&[ge, le]);
            V::Bool(if *negated { inside.map(|b| !b) } else { inside })
        }
        ExprKind::In { expr, list, negated } => {
            let x = value(expr, row);
            if x.is_null() {
                return V::Bool(None);
            }
            let found = list.iter().any(|item| compare(CmpOp::Eq, &x, &value(item, row)) == Some(true));
            V::Bool(Some(found != *negated))
        }
        ExprKind::IsNull { expr, negated } => V::Bool(Some(value(expr, row).is_null() != *negated)),
        ExprKind::Not(x) => V::Bool(value(x, row).truth().map(|b| !b)),
        ExprKind::And(items) => V::Bool(and(&items.iter().map(|x| value(x, row).truth()).collect::<Vec<_>>())),
        ExprKind::Or(items) => V::Bool(or(&items.iter().map(|x| value(x, row).truth()).collect::<Vec<_>>())),
        ExprKind::Call { name, args } => {
            let args: Vec<V> = args.iter().map(|a| value(a, row)).collect();
            call(name, args)
        }
    }
}

/// SQL comparison: unknown when either side is null.
fn compare(op: CmpOp, a: &V, b: &V) -> Option<bool> {
    let ordering = match (a, b) {
        (V::Num(Some(x)), V::Num(Some(y))) => x.partial_cmp(y)?,
        (V::Bool(Some(x)), V::Bool(Some(y))) => x.cmp(y),
        (V::Text(Some(x)), V::Text(Some(y))) => x.cmp(y),
        _ => return None,
    };
    Some(match op {
        CmpOp::Eq => ordering.is_eq(),
        CmpOp::Ne => ordering.is_ne(),
        CmpOp::Lt => ordering.is_lt(),
        CmpOp::Le => ordering.is_le(),
        CmpOp::Gt => ordering.is_gt(),
        CmpOp::Ge => ordering.is_ge(),
    })
}

/// Kleene AND: false wins, then unknown.
fn and(items: &[Option<bool>]) -> Option<bool> {
    if items.contains(&Some(false)) {
        Some(false)
    } else if items.contains(&None) {
        None
    } else {
        Some(true)
    }
}

/// Kleene OR: true wins, then unknown.
fn or(items: &[Option<bool>]) -> Option<bool> {
    if items.contains(&Some(true)) {
        Some(true)
    } else if items.contains(&None) {
        None
    } else {
        Some(false)
    }
}

fn call(name: &str, args: Vec<V>) -> V {
    let first_num = || args.first().cloned().and_then(V::num);
    match name {
        "coalesce" => {
            let fallback = args.iter().find(|a| !matches!(a, V::Null)).map_or(V::Null, V::null_like);
            args.iter().find(|a| !a.is_null()).cloned().unwrap_or(fallback)
        }
        "nullif" => match &args[..] {
            [a, b] if compare(CmpOp::Eq, a, b) == Some(true) => a.null_like(),
            [a, _] => a.clone(),
            _ => V::Null,
        },
        "abs" => first_num().map_or(V::Num(None), |x| number(x.abs())),
        "floor" => first_num().map_or(V::Num(None), |x| number(x.floor())),
        "ceil" => first_num().map_or(V::Num(None), |x| number(x.ceil())),
        "least" | "greatest" => {
            // Nulls are ignored; null only when every argument is.
            let mut best: Option<f64> = None;
            for x in args.into_iter().filter_map(V::num) {
                best = Some(match best {
                    Some(b) if (name == "least" && b <= x) || (name == "greatest" && b >= x) => b,
                    _ => x,
                });
            }
            V::Num(best)
        }
        _ => V::Null,
    }
}
