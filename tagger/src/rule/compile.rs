//! From a syntax tree to a [`Program`]: type checking, then lowering.
//!
//! **Checking** resolves names against the [`Env`], gives every node a type
//! and rejects what the language does not allow, each error pointing at the
//! operand at fault. Text literals become dictionary codes here, once.
//! Constant sub-expressions are folded as they are built.
//!
//! **Lowering** removes three-valued logic from the hot path. A condition is
//! compiled for one *polarity*: "where is it TRUE" or "where is it FALSE".
//! `not` just flips the polarity, `and`/`or` swap under FALSE (De Morgan
//! holds in Kleene logic), and at the leaves both polarities are plain
//! predicates that are false on null: TRUE(`x >= c`) is the IEEE `x >= c`
//! and FALSE(`x >= c`) is the IEEE `x < c`, both false for NaN. The few
//! constructs that need to see "unknown" itself (`is null` on a condition,
//! `coalesce`/`nullif` of conditions, `=` between conditions) combine the
//! TRUE and FALSE masks of their operands. The result is a [`Pred`] tree of
//! 0/1 masks, evaluated by `eval.rs`.

use std::collections::{BTreeMap, HashSet};

use super::ast::{ArithOp, CmpOp, Expr, ExprKind};
use super::{Env, RuleError, VarType};

/// A compiled rule, ready to run over chunks of members (see
/// [`Program::eval`]). Immutable, so one program serves every thread.
#[derive(Debug, Clone)]
pub struct Program {
    pub(crate) root: Pred,
    /// Every slot the program reads, with the type it must have; sorted.
    pub(crate) reads: Vec<(usize, VarType)>,
}

impl Program {
    /// Slots the program reads, ascending. A slot whose use was folded away
    /// (as in `x > 1 or true`) is not read.
    pub fn slots(&self) -> Vec<usize> {
        self.reads.iter().map(|&(slot, _)| slot).collect()
    }
}

/// A number-valued computation over a block of members. Null is NaN.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Num {
    Const(f64),
    Col(usize),
    Unary(UnOp, Box<Num>),
    Bin(BinFn, Box<Num>, Box<Num>),
}

/// Functions of one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Abs,
    Floor,
    Ceil,
}

/// Functions of two numbers. `coalesce`, `least` and `greatest` of many
/// arguments are left folds of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinFn {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Coalesce,
    Least,
    Greatest,
    NullIf,
}

/// Number comparisons as IEEE predicates: all are false when either side is
/// NaN, which is what makes them exact TRUE (or FALSE) masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    /// Both known and different: `(a < b) | (a > b)`.
    OrdNe,
}

impl Cmp {
    /// TRUE (`want`) or FALSE (`!want`) of `a op b`.
    fn of(op: CmpOp, want: bool) -> Cmp {
        let t = match op {
            CmpOp::Eq => Cmp::Eq,
            CmpOp::Ne => Cmp::OrdNe,
            CmpOp::Lt => Cmp::Lt,
            CmpOp::Le => Cmp::Le,
            CmpOp::Gt => Cmp::Gt,
            CmpOp::Ge => Cmp::Ge,
        };
        if want { t } else { t.negate() }
    }

    /// Where `a op b` is known and false.
    fn negate(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Ge,
            Cmp::Le => Cmp::Gt,
            Cmp::Gt => Cmp::Le,
            Cmp::Ge => Cmp::Lt,
            Cmp::Eq => Cmp::OrdNe,
            Cmp::OrdNe => Cmp::Eq,
        }
    }

    /// The same test with the operands swapped.
    pub(crate) fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            Cmp::Eq | Cmp::OrdNe => self,
        }
    }
}

/// A two-valued mask over a block of members (1 = the predicate holds).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pred {
    Const(bool),
    /// `a op b`; a constant operand is always on the right.
    Cmp(Cmp, Num, Num),
    /// `x op c`, or `x` is null: `coalesce(x, d) op c` where `d op c` holds.
    CmpOrNull(Cmp, Num, f64),
    /// `lo <= x <= hi` (`inside`) or `x < lo | x > hi`, constants known.
    Range {
        x: Num,
        lo: f64,
        hi: f64,
        inside: bool,
    },
    /// `x` equals one of `set` (`member`), or is known and equals none.
    InNum {
        x: Num,
        set: Vec<f64>,
        member: bool,
    },
    /// `x` is NaN (`nan`) or is not.
    IsNan {
        x: Num,
        nan: bool,
    },
    /// A boolean column holds `want` (0 or 1).
    BoolIs {
        slot: usize,
        want: u8,
    },
    /// A boolean column is null (any byte but 0 and 1), or is not.
    BoolNull {
        slot: usize,
        null: bool,
    },
    /// A text column holds `code` (`eq`), or holds a known other code.
    TextEq {
        slot: usize,
        code: u32,
        n: u32,
        eq: bool,
    },
    /// A text column holds one of a few codes (repeated to fill the array),
    /// tested in one pass without lookups.
    TextAny {
        slot: usize,
        codes: [u32; 4],
    },
    /// A text column's code is in the bitset; `n` (and anything above, i.e.
    /// null) is never in it.
    TextSet {
        slot: usize,
        bits: Vec<u64>,
        n: u32,
    },
    /// A text column is null (code >= n), or is not.
    TextNull {
        slot: usize,
        n: u32,
        null: bool,
    },
    Not(Box<Pred>),
    And(Vec<Pred>),
    Or(Vec<Pred>),
}

/// Compiles a parsed rule against the columns `env` describes.
pub fn compile(expr: &Expr, env: &dyn Env) -> std::result::Result<Program, RuleError> {
    let checker = Checker { env };
    let cond = match checker.check(expr)? {
        Typed::Bool(c) => c,
        Typed::Null => Cond::Const(None),
        other => {
            return Err(RuleError::new(
                expr.span,
                format!("a rule must be a condition; `{}` is {}", show(expr), other.article()),
            ));
        }
    };
    let root = lower(&cond, true);
    let mut reads = BTreeMap::new();
    root.collect_reads(&mut reads);
    Ok(Program { root, reads: reads.into_iter().collect() })
}

/// A condition after checking, before lowering: still three-valued.
#[derive(Debug, Clone)]
enum Cond {
    Const(Option<bool>),
    Col(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    CmpNum(CmpOp, Num, Num),
    /// `a = b` (`eq`) or `a != b` between conditions.
    EqBool {
        eq: bool,
        a: Box<Cond>,
        b: Box<Cond>,
    },
    /// A text column is one of `codes` (`= 'x'` is a one-code list).
    TextIn {
        slot: usize,
        n: u32,
        codes: Vec<u32>,
        negated: bool,
    },
    TextIsNull {
        slot: usize,
        n: u32,
        negated: bool,
    },
    NumIsNull {
        x: Num,
        negated: bool,
    },
    BoolIsNull {
        x: Box<Cond>,
        negated: bool,
    },
    Between {
        x: Num,
        lo: Num,
        hi: Num,
        negated: bool,
    },
    InNum {
        x: Num,
        set: Vec<f64>,
        negated: bool,
    },
    InBool {
        x: Box<Cond>,
        set: Vec<bool>,
        negated: bool,
    },
    Coalesce(Vec<Cond>),
    NullIf(Box<Cond>, Box<Cond>),
}

/// The checked form of an expression of each type.
enum Typed {
    Num(Num),
    Bool(Cond),
    Text(Text),
    /// The `null` literal (or something made only of it), before it takes
    /// the type its context needs.
    Null,
}

enum Text {
    Col(usize),
    Lit(String),
}

impl Typed {
    fn ty(&self) -> Option<VarType> {
        match self {
            Typed::Num(_) => Some(VarType::Num),
            Typed::Bool(_) => Some(VarType::Bool),
            Typed::Text(_) => Some(VarType::Text),
            Typed::Null => None,
        }
    }

    fn article(&self) -> &'static str {
        self.ty().map_or("null", VarType::article)
    }

    fn noun(&self) -> &'static str {
        self.ty().map_or("null", VarType::noun)
    }
}

/// The functions a rule may call.
const FUNCTIONS: [&str; 7] = ["abs", "ceil", "coalesce", "floor", "greatest", "least", "nullif"];

struct Checker<'e> {
    env: &'e dyn Env,
}

type Result<T> = std::result::Result<T, RuleError>;

impl Checker<'_> {
    fn check(&self, e: &Expr) -> Result<Typed> {
        Ok(match &e.kind {
            ExprKind::Num(v) => Typed::Num(Num::Const(*v)),
            ExprKind::Text(s) => Typed::Text(Text::Lit(s.clone())),
            ExprKind::Bool(b) => Typed::Bool(Cond::Const(Some(*b))),
            ExprKind::Null => Typed::Null,
            ExprKind::Ident(name) => match self.env.resolve(name) {
                Some((slot, VarType::Num)) => Typed::Num(Num::Col(slot)),
                Some((slot, VarType::Bool)) => Typed::Bool(Cond::Col(slot)),
                Some((slot, VarType::Text)) => Typed::Text(Text::Col(slot)),
                None => {
                    let mut message = format!("unknown feature or tag `{name}`");
                    if let Some(s) = suggest(name, self.env.names()) {
                        message += &format!("; did you mean `{s}`?");
                    }
                    return Err(RuleError::new(e.span, message));
                }
            },
            ExprKind::Neg(x) => Typed::Num(unary(UnOp::Neg, self.num(x, "`-` needs a number")?)),
            ExprKind::Arith { op, lhs, rhs } => {
                let need = format!("`{}` needs numbers", op.symbol());
                let f = match op {
                    ArithOp::Add => BinFn::Add,
                    ArithOp::Sub => BinFn::Sub,
                    ArithOp::Mul => BinFn::Mul,
                    ArithOp::Div => BinFn::Div,
                    ArithOp::Rem => BinFn::Rem,
                };
                Typed::Num(bin(f, self.num(lhs, &need)?, self.num(rhs, &need)?))
            }
            ExprKind::Not(x) => Typed::Bool(Cond::Not(Box::new(self.cond(x, "`not` needs a boolean")?))),
            ExprKind::And(items) => Typed::Bool(Cond::And(
                items.iter().map(|x| self.cond(x, "`and` needs booleans")).collect::<Result<_>>()?,
            )),
            ExprKind::Or(items) => {
                Typed::Bool(Cond::Or(items.iter().map(|x| self.cond(x, "`or` needs booleans")).collect::<Result<_>>()?))
            }
            ExprKind::Compare { op, lhs, rhs } => Typed::Bool(self.compare(*op, lhs, rhs)?),
            ExprKind::Between { expr, low, high, negated } => {
                let need = "`between` needs numbers";
                let x = self.num(expr, need)?;
                let (lo, hi) = (self.num(low, need)?, self.num(high, need)?);
                Typed::Bool(Cond::Between { x, lo, hi, negated: *negated })
            }
            ExprKind::In { expr, list, negated } => Typed::Bool(self.in_list(expr, list, *negated)?),
            ExprKind::IsNull { expr, negated } => {
                let negated = *negated;
                Typed::Bool(match self.check(expr)? {
                    Typed::Num(x) => match x {
                        Num::Const(c) => Cond::Const(Some(c.is_nan() != negated)),
                        x => Cond::NumIsNull { x, negated },
                    },
                    Typed::Bool(x) => Cond::BoolIsNull { x: Box::new(x), negated },
                    Typed::Text(Text::Col(slot)) => Cond::TextIsNull { slot, n: self.dict_len(slot), negated },
                    Typed::Text(Text::Lit(_)) => Cond::Const(Some(negated)),
                    Typed::Null => Cond::Const(Some(!negated)),
                })
            }
            ExprKind::Call { name, args } => self.call(name, args, e)?,
        })
    }

    /// A number operand of `need` ("`+` needs numbers"); null is a NaN constant.
    fn num(&self, e: &Expr, need: &str) -> Result<Num> {
        match self.check(e)? {
            Typed::Num(n) => Ok(n),
            Typed::Null => Ok(Num::Const(f64::NAN)),
            other => Err(wrong(e, need, &other)),
        }
    }

    /// A condition operand of `need`; null is the unknown constant.
    fn cond(&self, e: &Expr, need: &str) -> Result<Cond> {
        match self.check(e)? {
            Typed::Bool(c) => Ok(c),
            Typed::Null => Ok(Cond::Const(None)),
            other => Err(wrong(e, need, &other)),
        }
    }

    fn dict_len(&self, slot: usize) -> u32 {
        // Codes are u32 with u32::MAX for null; a dictionary cannot be longer.
        u32::try_from(self.env.dictionary(slot).len()).unwrap_or(u32::MAX)
    }

    /// Dictionary size and the codes of `literals` in the slot's dictionary.
    /// A literal that is not in it has no code and so matches no member.
    fn codes<'s>(&self, slot: usize, literals: impl IntoIterator<Item = &'s str>) -> (u32, Vec<u32>) {
        let wanted: HashSet<&str> = literals.into_iter().collect();
        let n = self.dict_len(slot);
        let codes = (0..n).zip(self.env.dictionary(slot)).filter(|(_, s)| wanted.contains(s.as_str())).map(|(i, _)| i);
        (n, codes.collect())
    }

    fn compare(&self, op: CmpOp, lhs: &Expr, rhs: &Expr) -> Result<Cond> {
        let a = self.check(lhs)?;
        let b = self.check(rhs)?;
        for (side, other) in [(rhs, lhs), (lhs, rhs)] {
            if matches!(side.kind, ExprKind::Null) {
                let message = match op {
                    CmpOp::Eq => format!("`= null` is never true; write `{} is null`", show(other)),
                    CmpOp::Ne => format!("`!= null` is never true; write `{} is not null`", show(other)),
                    _ => format!(
                        "comparing with `null` is never true; test for a missing value with `{} is null`",
                        show(other)
                    ),
                };
                return Err(RuleError::new(side.span, message));
            }
        }
        let equality = matches!(op, CmpOp::Eq | CmpOp::Ne);
        let only_equality = |who: &Expr, t: &Typed| {
            RuleError::new(
                who.span,
                format!(
                    "{} `{}` can only be compared with `=` or `!=`{}, not `{}`",
                    t.noun(),
                    show(who),
                    if matches!(t, Typed::Text(_)) { " (or `in`)" } else { "" },
                    op.symbol()
                ),
            )
        };
        Ok(match (a, b) {
            (Typed::Num(x), Typed::Num(y)) => Cond::CmpNum(op, x, y),
            (Typed::Num(x), Typed::Null) => Cond::CmpNum(op, x, Num::Const(f64::NAN)),
            (Typed::Null, Typed::Num(y)) => Cond::CmpNum(op, Num::Const(f64::NAN), y),
            (Typed::Null, Typed::Null) => Cond::Const(None),
            (a @ (Typed::Bool(_) | Typed::Text(_)), Typed::Null) if !equality => return Err(only_equality(lhs, &a)),
            (Typed::Null, b @ (Typed::Bool(_) | Typed::Text(_))) if !equality => return Err(only_equality(rhs, &b)),
            (Typed::Bool(_) | Typed::Text(_), Typed::Null) | (Typed::Null, Typed::Bool(_) | Typed::Text(_)) => {
                Cond::Const(None)
            }
            (a @ Typed::Bool(_), Typed::Bool(_)) if !equality => return Err(only_equality(lhs, &a)),
            (Typed::Bool(x), Typed::Bool(y)) => Cond::EqBool { eq: op == CmpOp::Eq, a: Box::new(x), b: Box::new(y) },
            (Typed::Text(x), Typed::Text(y)) => {
                if !equality {
                    let (who, t) =
                        if matches!(y, Text::Col(_)) { (rhs, Typed::Text(y)) } else { (lhs, Typed::Text(x)) };
                    return Err(only_equality(who, &t));
                }
                match (x, y) {
                    (Text::Col(slot), Text::Lit(lit)) | (Text::Lit(lit), Text::Col(slot)) => {
                        let (n, codes) = self.codes(slot, [lit.as_str()]);
                        Cond::TextIn { slot, n, codes, negated: op == CmpOp::Ne }
                    }
                    (Text::Col(_), Text::Col(_)) => {
                        return Err(RuleError::new(
                            rhs.span,
                            format!(
                                "cannot compare text `{}` with text `{}`: text is compared only with a literal, like `{} = 'S0042'`",
                                show(lhs),
                                show(rhs),
                                show(lhs)
                            ),
                        ));
                    }
                    (Text::Lit(_), Text::Lit(_)) => {
                        return Err(RuleError::new(
                            lhs.span,
                            "cannot compare two text literals; one side must be a text feature",
                        ));
                    }
                }
            }
            (a, b) => {
                return Err(RuleError::new(
                    rhs.span,
                    format!("cannot compare {} `{}` with {}", a.noun(), show(lhs), b.article()),
                ));
            }
        })
    }

    fn in_list(&self, expr: &Expr, list: &[Expr], negated: bool) -> Result<Cond> {
        let x = self.check(expr)?;
        // Every item must have the type of `x`.
        let item_ty = |e: &Expr| match e.kind {
            ExprKind::Num(_) => VarType::Num,
            ExprKind::Bool(_) => VarType::Bool,
            _ => VarType::Text,
        };
        let want = match x.ty() {
            Some(ty) => ty,
            None => list.first().map_or(VarType::Num, item_ty),
        };
        if let Some(bad) = list.iter().find(|e| item_ty(e) != want) {
            let message = match x.ty() {
                Some(_) => format!(
                    "`{}` is {}, but `{}` in the list is {}",
                    show(expr),
                    want.article(),
                    show(bad),
                    item_ty(bad).article()
                ),
                None => "the items of an `in` list must all have one type".to_string(),
            };
            return Err(RuleError::new(bad.span, message));
        }
        Ok(match x {
            Typed::Null => Cond::Const(None),
            Typed::Num(x) => {
                let mut set: Vec<f64> =
                    list.iter().filter_map(|e| if let ExprKind::Num(v) = e.kind { Some(v) } else { None }).collect();
                set.sort_by(f64::total_cmp);
                set.dedup_by(|a, b| a == b);
                Cond::InNum { x, set, negated }
            }
            Typed::Bool(x) => {
                let mut set: Vec<bool> =
                    list.iter().filter_map(|e| if let ExprKind::Bool(b) = e.kind { Some(b) } else { None }).collect();
                set.sort();
                set.dedup();
                Cond::InBool { x: Box::new(x), set, negated }
            }
            Typed::Text(Text::Col(slot)) => {
                let literals =
                    list.iter().filter_map(|e| if let ExprKind::Text(s) = &e.kind { Some(s.as_str()) } else { None });
                let (n, codes) = self.codes(slot, literals);
                Cond::TextIn { slot, n, codes, negated }
            }
            Typed::Text(Text::Lit(_)) => {
                return Err(RuleError::new(
                    expr.span,
                    "the left side of a text `in` must be a text feature, not a literal",
                ));
            }
        })
    }

    fn call(&self, name: &str, args: &[Expr], call: &Expr) -> Result<Typed> {
        let arity = |min: usize, max: Option<usize>| -> Result<()> {
            let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
            let message = match max {
                Some(max) if args.len() != max => {
                    format!("`{name}` takes {max} {}, but got {}", plural(max), args.len())
                }
                None if args.len() < min => format!("`{name}` takes at least {min} {}", plural(min)),
                _ => return Ok(()),
            };
            Err(RuleError::new(call.span, message))
        };
        let need = format!("`{name}` needs numbers");
        Ok(match name {
            "abs" | "floor" | "ceil" => {
                arity(1, Some(1))?;
                let op = match name {
                    "abs" => UnOp::Abs,
                    "floor" => UnOp::Floor,
                    _ => UnOp::Ceil,
                };
                Typed::Num(unary(op, self.num(&args[0], &format!("`{name}` needs a number"))?))
            }
            "least" | "greatest" => {
                arity(1, None)?;
                let f = if name == "least" { BinFn::Least } else { BinFn::Greatest };
                let mut nums = args.iter().map(|a| self.num(a, &need));
                let first = nums.next().unwrap_or(Ok(Num::Const(f64::NAN)))?;
                Typed::Num(nums.try_fold(first, |acc, x| Ok::<_, RuleError>(bin(f, acc, x?)))?)
            }
            "coalesce" | "nullif" => {
                if name == "coalesce" {
                    arity(1, None)?;
                } else {
                    arity(2, Some(2))?;
                }
                let typed = self.same_type(name, args)?;
                let is_num = typed.iter().any(|t| matches!(t, Typed::Num(_)));
                let is_bool = typed.iter().any(|t| matches!(t, Typed::Bool(_)));
                if is_num {
                    let mut nums = typed.into_iter().map(|t| match t {
                        Typed::Num(n) => n,
                        _ => Num::Const(f64::NAN),
                    });
                    let first = nums.next().unwrap_or(Num::Const(f64::NAN));
                    let f = if name == "coalesce" { BinFn::Coalesce } else { BinFn::NullIf };
                    Typed::Num(nums.fold(first, |acc, x| bin(f, acc, x)))
                } else if is_bool {
                    let mut conds: Vec<Cond> = typed
                        .into_iter()
                        .map(|t| match t {
                            Typed::Bool(c) => c,
                            _ => Cond::Const(None),
                        })
                        .collect();
                    Typed::Bool(if name == "coalesce" {
                        Cond::Coalesce(conds)
                    } else {
                        let b = conds.pop().unwrap_or(Cond::Const(None));
                        let a = conds.pop().unwrap_or(Cond::Const(None));
                        Cond::NullIf(Box::new(a), Box::new(b))
                    })
                } else {
                    Typed::Null
                }
            }
            _ => {
                let message = if self.env.resolve(name).is_some() {
                    format!("`{name}` is a feature or tag, not a function")
                } else if let Some(s) = suggest(name, FUNCTIONS.map(String::from)) {
                    format!("unknown function `{name}`; did you mean `{s}`?")
                } else {
                    format!("unknown function `{name}` (functions are {})", FUNCTIONS.join(", "))
                };
                return Err(RuleError::new(call.span, message));
            }
        })
    }

    /// Checks the arguments of `coalesce`/`nullif`: numbers or booleans, one
    /// type for all (null fits any).
    fn same_type(&self, name: &str, args: &[Expr]) -> Result<Vec<Typed>> {
        let mut first: Option<(&Expr, VarType)> = None;
        let mut out = Vec::with_capacity(args.len());
        for arg in args {
            let t = self.check(arg)?;
            if let Some(ty) = t.ty() {
                if ty == VarType::Text {
                    return Err(wrong(arg, &format!("`{name}` needs numbers or booleans"), &t));
                }
                match first {
                    Some((e, fty)) if fty != ty => {
                        return Err(RuleError::new(
                            arg.span,
                            format!(
                                "`{name}` needs arguments of one type, but `{}` is {} and `{}` is {}",
                                show(e),
                                fty.article(),
                                show(arg),
                                ty.article()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => first = Some((arg, ty)),
                }
            }
            out.push(t);
        }
        Ok(out)
    }
}

/// "`and` needs booleans, but `recency_days` is a number".
fn wrong(e: &Expr, need: &str, got: &Typed) -> RuleError {
    RuleError::new(e.span, format!("{need}, but `{}` is {}", show(e), got.article()))
}

/// An expression for a message: canonical text, shortened when long.
fn show(e: &Expr) -> String {
    let s = e.to_string();
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s }
}

fn unary(op: UnOp, x: Num) -> Num {
    match x {
        Num::Const(c) => Num::Const(op.apply(c)),
        x => Num::Unary(op, Box::new(x)),
    }
}

fn bin(f: BinFn, a: Num, b: Num) -> Num {
    match (f, a, b) {
        (f, Num::Const(x), Num::Const(y)) => Num::Const(f.apply(x, y)),
        // `x / nullif(y, 0)` is `x / y`: dividing by zero is null anyway.
        (BinFn::Div | BinFn::Rem, a, Num::Bin(BinFn::NullIf, y, zero)) if *zero == Num::Const(0.0) => {
            Num::Bin(f, Box::new(a), y)
        }
        (f, a, b) => Num::Bin(f, Box::new(a), Box::new(b)),
    }
}

/// [`taglake_base::suggest`] over owned names.
pub(crate) fn suggest(name: &str, candidates: impl IntoIterator<Item = String>) -> Option<String> {
    let candidates: Vec<String> = candidates.into_iter().collect();
    taglake_base::suggest(name, candidates.iter().map(String::as_str)).map(str::to_string)
}

// ---------------------------------------------------------------------------
// Lowering

/// The mask of members where `c` is `want` (TRUE or FALSE).
fn lower(c: &Cond, want: bool) -> Pred {
    match c {
        Cond::Const(v) => Pred::Const(*v == Some(want)),
        Cond::Col(slot) => Pred::BoolIs { slot: *slot, want: u8::from(want) },
        Cond::Not(x) => lower(x, !want),
        Cond::And(xs) if want => all(xs.iter().map(|x| lower(x, true))),
        Cond::And(xs) => any(xs.iter().map(|x| lower(x, false))),
        Cond::Or(xs) if want => any(xs.iter().map(|x| lower(x, true))),
        Cond::Or(xs) => all(xs.iter().map(|x| lower(x, false))),
        Cond::CmpNum(op, a, b) => cmp(Cmp::of(*op, want), a.clone(), b.clone()),
        Cond::EqBool { eq, a, b } => {
            // TRUE(a != b) is FALSE(a = b).
            let same = want == *eq;
            match (&**a, &**b) {
                (x, Cond::Const(v)) | (Cond::Const(v), x) => match v {
                    // `x = true` is `x`; `x = false` is `not x`.
                    Some(v) => lower(x, same == *v),
                    None => Pred::Const(false),
                },
                (a, b) if same => any([all([lower(a, true), lower(b, true)]), all([lower(a, false), lower(b, false)])]),
                (a, b) => any([all([lower(a, true), lower(b, false)]), all([lower(a, false), lower(b, true)])]),
            }
        }
        Cond::TextIn { slot, n, codes, negated } => {
            // The codes that make the condition `want`: the listed ones, or
            // every other known code.
            let members: Vec<u32> =
                if want != *negated { codes.clone() } else { (0..*n).filter(|c| !codes.contains(c)).collect() };
            text_member(*slot, *n, members)
        }
        Cond::TextIsNull { slot, n, negated } => Pred::TextNull { slot: *slot, n: *n, null: want != *negated },
        Cond::NumIsNull { x, negated } => Pred::IsNan { x: x.clone(), nan: want != *negated },
        Cond::BoolIsNull { x, negated } => {
            let null = want != *negated;
            if let Cond::Col(slot) = **x {
                return Pred::BoolNull { slot, null };
            }
            let known = any([lower(x, true), lower(x, false)]);
            if null { not(known) } else { known }
        }
        Cond::Between { x, lo, hi, negated } => {
            let inside = want != *negated;
            match (x, lo, hi) {
                // Constant bounds on a non-constant value: one pass. A null
                // bound needs no care: IEEE comparisons with NaN are false.
                (x, Num::Const(lo), Num::Const(hi)) if !matches!(x, Num::Const(_)) => {
                    Pred::Range { x: x.clone(), lo: *lo, hi: *hi, inside }
                }
                _ if inside => all([cmp(Cmp::Ge, x.clone(), lo.clone()), cmp(Cmp::Le, x.clone(), hi.clone())]),
                _ => any([cmp(Cmp::Lt, x.clone(), lo.clone()), cmp(Cmp::Gt, x.clone(), hi.clone())]),
            }
        }
        Cond::InNum { x, set, negated } => {
            let member = want != *negated;
            match (x, &set[..]) {
                (Num::Const(v), _) => {
                    Pred::Const(if member { set.contains(v) } else { !v.is_nan() && !set.contains(v) })
                }
                (x, [v]) => cmp(if member { Cmp::Eq } else { Cmp::OrdNe }, x.clone(), Num::Const(*v)),
                (x, _) => Pred::InNum { x: x.clone(), set: set.clone(), member },
            }
        }
        Cond::InBool { x, set, negated } => {
            // `x in (v, …)` is `x = v or …`; known-and-not-in is FALSE of that.
            if want != *negated {
                any(set.iter().map(|&v| lower(x, v)))
            } else {
                all(set.iter().map(|&v| lower(x, !v)))
            }
        }
        Cond::Coalesce(xs) => coalesce(xs, want),
        // nullif(a, b) is a unless a = b is TRUE: TRUE where a is TRUE and b
        // is not, FALSE where a is FALSE and b is not.
        Cond::NullIf(a, b) => all([lower(a, want), not(lower(b, want))]),
    }
}

/// coalesce(a, rest…) is `want` where a is, or where a is null and the rest is.
fn coalesce(xs: &[Cond], want: bool) -> Pred {
    match xs {
        [] => Pred::Const(false),
        [x] => lower(x, want),
        [x, rest @ ..] => any([lower(x, want), all([not(lower(x, !want)), coalesce(rest, want)])]),
    }
}

fn cmp(op: Cmp, a: Num, b: Num) -> Pred {
    match (a, b) {
        (Num::Const(x), Num::Const(y)) => Pred::Const(op.apply(x, y)),
        // A null constant makes every comparison false.
        (_, Num::Const(c)) | (Num::Const(c), _) if c.is_nan() => Pred::Const(false),
        (a @ Num::Const(_), b) => cmp(op.flip(), b, a),
        // `coalesce(x, d) op c`: `x op c` where x is known, `d op c` elsewhere.
        (Num::Bin(BinFn::Coalesce, x, d), Num::Const(c)) if matches!(*d, Num::Const(d) if !d.is_nan()) => {
            let Num::Const(d) = *d else { unreachable!("matched a constant") };
            match (op.apply(d, c), *x) {
                (false, x) => cmp(op, x, Num::Const(c)),
                (true, x) => Pred::CmpOrNull(op, x, c),
            }
        }
        (a, b) => Pred::Cmp(op, a, b),
    }
}

/// Conjunction, flattened, with constants folded.
fn all(items: impl IntoIterator<Item = Pred>) -> Pred {
    let mut out = Vec::new();
    for p in items {
        match p {
            Pred::Const(true) => {}
            Pred::Const(false) => return Pred::Const(false),
            Pred::And(inner) => out.extend(inner),
            p => out.push(p),
        }
    }
    match out.len() {
        0 => Pred::Const(true),
        1 => out.pop().unwrap_or(Pred::Const(true)),
        _ => Pred::And(out),
    }
}

/// Disjunction, flattened, with constants folded.
fn any(items: impl IntoIterator<Item = Pred>) -> Pred {
    let mut out = Vec::new();
    for p in items {
        match p {
            Pred::Const(false) => {}
            Pred::Const(true) => return Pred::Const(true),
            Pred::Or(inner) => out.extend(inner),
            p => out.push(p),
        }
    }
    match out.len() {
        0 => Pred::Const(false),
        1 => out.pop().unwrap_or(Pred::Const(false)),
        _ => Pred::Or(out),
    }
}

fn not(p: Pred) -> Pred {
    match p {
        Pred::Const(b) => Pred::Const(!b),
        Pred::Not(inner) => *inner,
        p => Pred::Not(Box::new(p)),
    }
}

/// A text column's code is one of `members` (all below `n`, sorted), in the
/// cheapest form: one comparison when one code is in or one is out.
fn text_member(slot: usize, n: u32, members: Vec<u32>) -> Pred {
    match members.len() as u64 {
        0 => Pred::Const(false),
        1 => Pred::TextEq { slot, code: members[0], n, eq: true },
        m if m == u64::from(n) => Pred::TextNull { slot, n, null: false },
        m if m + 1 == u64::from(n) => {
            let missing = (0..n).zip(&members).find(|(c, m)| c != *m).map_or(n - 1, |(c, _)| c);
            Pred::TextEq { slot, code: missing, n, eq: false }
        }
        2..=4 => Pred::TextAny { slot, codes: [0, 1, 2, 3].map(|i| members[i.min(members.len() - 1)]) },
        _ => Pred::TextSet { slot, bits: bitset(n, members.into_iter()), n },
    }
}

/// A bitset over codes `0..=n` holding `codes`; bit `n` (null) stays clear.
fn bitset(n: u32, codes: impl Iterator<Item = u32>) -> Vec<u64> {
    let mut bits = vec![0u64; n as usize / 64 + 1];
    for c in codes {
        bits[c as usize / 64] |= 1 << (c % 64);
    }
    bits
}

impl Pred {
    fn collect_reads(&self, reads: &mut BTreeMap<usize, VarType>) {
        match self {
            Pred::Const(_) => {}
            Pred::Cmp(_, a, b) => {
                a.collect_reads(reads);
                b.collect_reads(reads);
            }
            Pred::CmpOrNull(_, x, _) | Pred::Range { x, .. } | Pred::InNum { x, .. } | Pred::IsNan { x, .. } => {
                x.collect_reads(reads)
            }
            Pred::BoolIs { slot, .. } | Pred::BoolNull { slot, .. } => {
                reads.insert(*slot, VarType::Bool);
            }
            Pred::TextEq { slot, .. }
            | Pred::TextAny { slot, .. }
            | Pred::TextSet { slot, .. }
            | Pred::TextNull { slot, .. } => {
                reads.insert(*slot, VarType::Text);
            }
            Pred::Not(p) => p.collect_reads(reads),
            Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| p.collect_reads(reads)),
        }
    }
}

impl Num {
    fn collect_reads(&self, reads: &mut BTreeMap<usize, VarType>) {
        match self {
            Num::Const(_) => {}
            Num::Col(slot) => {
                reads.insert(*slot, VarType::Num);
            }
            Num::Unary(_, x) => x.collect_reads(reads),
            Num::Bin(_, a, b) => {
                a.collect_reads(reads);
                b.collect_reads(reads);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::parse;
    use crate::rule::tests::TestEnv;

    fn env() -> TestEnv {
        TestEnv::new()
            .num("recency_days")
            .num("spend_365d")
            .num("orders_365d")
            .num("growth_value")
            .bool("lifecycle_growth")
            .text("home_store", &["S0001", "S0042"])
            .text("channel", &["app", "store", "web", "email"])
    }

    fn err(src: &str) -> (usize, String) {
        let e = compile(&parse(src).unwrap(), &env()).expect_err(src);
        (e.pos, e.message)
    }

    #[test]
    fn type_errors_name_the_operand_at_fault() {
        let cases: &[(&str, usize, &str)] = &[
            ("recency_days and growth_value > 1", 1, "`and` needs booleans, but `recency_days` is a number"),
            ("lifecycle_growth or home_store", 21, "`or` needs booleans, but `home_store` is text"),
            ("not spend_365d", 5, "`not` needs a boolean, but `spend_365d` is a number"),
            ("spend_365d * 2", 1, "a rule must be a condition; `spend_365d * 2` is a number"),
            ("home_store", 1, "a rule must be a condition; `home_store` is text"),
            ("home_store = 5", 14, "cannot compare text `home_store` with a number"),
            ("5 = home_store", 5, "cannot compare number `5` with text"),
            ("lifecycle_growth = 1", 20, "cannot compare boolean `lifecycle_growth` with a number"),
            ("home_store + 1 > 2", 1, "`+` needs numbers, but `home_store` is text"),
            ("-lifecycle_growth > 2", 2, "`-` needs a number, but `lifecycle_growth` is a boolean"),
            ("home_store < 'S1'", 1, "text `home_store` can only be compared with `=` or `!=` (or `in`), not `<`"),
            ("'S1' >= home_store", 9, "text `home_store` can only be compared with `=` or `!=` (or `in`), not `>=`"),
            ("lifecycle_growth < true", 1, "boolean `lifecycle_growth` can only be compared with `=` or `!=`, not `<`"),
            (
                "home_store = channel",
                14,
                "cannot compare text `home_store` with text `channel`: text is compared only with a literal, like `home_store = 'S0042'`",
            ),
            ("'a' = 'b'", 1, "cannot compare two text literals; one side must be a text feature"),
            ("recency_days = null", 16, "`= null` is never true; write `recency_days is null`"),
            ("null <> home_store", 1, "`!= null` is never true; write `home_store is not null`"),
            (
                "spend_365d > null",
                14,
                "comparing with `null` is never true; test for a missing value with `spend_365d is null`",
            ),
            ("home_store between 'a' and 'b'", 1, "`between` needs numbers, but `home_store` is text"),
            ("channel in ('app', 3)", 20, "`channel` is text, but `3` in the list is a number"),
            ("recency_days in (1, 'x')", 21, "`recency_days` is a number, but `'x'` in the list is text"),
            ("'app' in ('app')", 1, "the left side of a text `in` must be a text feature, not a literal"),
            ("abs(home_store) > 1", 5, "`abs` needs a number, but `home_store` is text"),
            ("least(1, lifecycle_growth) > 1", 10, "`least` needs numbers, but `lifecycle_growth` is a boolean"),
            (
                "coalesce(spend_365d, lifecycle_growth)",
                22,
                "`coalesce` needs arguments of one type, but `spend_365d` is a number and `lifecycle_growth` is a boolean",
            ),
            ("coalesce(home_store, 'x') = 'x'", 10, "`coalesce` needs numbers or booleans, but `home_store` is text"),
            ("nullif(spend_365d) > 1", 1, "`nullif` takes 2 arguments, but got 1"),
            ("abs(1, 2) > 1", 1, "`abs` takes 1 argument, but got 2"),
            ("coalesce() > 1", 1, "`coalesce` takes at least 1 argument"),
            ("greatest() > 1", 1, "`greatest` takes at least 1 argument"),
            ("flor(spend_365d) > 1", 1, "unknown function `flor`; did you mean `floor`?"),
            (
                "sqrt(spend_365d) > 1",
                1,
                "unknown function `sqrt` (functions are abs, ceil, coalesce, floor, greatest, least, nullif)",
            ),
            ("recency_days(3) > 1", 1, "`recency_days` is a feature or tag, not a function"),
        ];
        for &(src, pos, message) in cases {
            assert_eq!(err(src), (pos, message.to_string()), "{src}");
        }
    }

    #[test]
    fn unknown_names_suggest_a_close_one() {
        let cases: &[(&str, &str)] = &[
            ("recency_day > 3", "unknown feature or tag `recency_day`; did you mean `recency_days`?"),
            ("recnecy_days > 3", "unknown feature or tag `recnecy_days`; did you mean `recency_days`?"),
            ("recency > 3", "unknown feature or tag `recency`; did you mean `recency_days`?"),
            ("spend_365d_total > 3", "unknown feature or tag `spend_365d_total`; did you mean `spend_365d`?"),
            ("orders_total > 3", "unknown feature or tag `orders_total`; did you mean `orders_365d`?"),
            ("basket_size > 3", "unknown feature or tag `basket_size`"),
            ("lifecycle", "unknown feature or tag `lifecycle`; did you mean `lifecycle_growth`?"),
        ];
        for &(src, message) in cases {
            assert_eq!(err(src), (1, message.to_string()), "{src}");
        }
        // The unknown name is reported where it is, not at the rule's start.
        assert_eq!(err("growth_value > 1 and chanel = 'app'").0, 22);
    }

    #[test]
    fn suggestions_prefer_the_closest() {
        let names = || ["recency_days", "recency_weeks", "frequency"].map(String::from);
        assert_eq!(suggest("recency_dys", names()).as_deref(), Some("recency_days"));
        assert_eq!(suggest("recency_", names()).as_deref(), Some("recency_days"));
        assert_eq!(suggest("frequenc", names()).as_deref(), Some("frequency"));
        assert_eq!(suggest("monetary", names()), None);
        assert_eq!(suggest("x", ["y", "xy", "abc"].map(String::from)).as_deref(), Some("xy"));
    }

    #[test]
    fn constants_fold_and_common_shapes_compile_to_one_leaf() {
        let root = |src: &str| compile(&parse(src).unwrap(), &env()).unwrap().root;
        let col = |s| Num::Col(s);
        assert_eq!(root("growth_value >= 6000"), Pred::Cmp(Cmp::Ge, col(3), Num::Const(6000.0)));
        assert_eq!(root("6000 <= growth_value"), Pred::Cmp(Cmp::Ge, col(3), Num::Const(6000.0)));
        assert_eq!(root("not growth_value >= 2 * 3000"), Pred::Cmp(Cmp::Lt, col(3), Num::Const(6000.0)));
        assert_eq!(root("recency_days between 30 and 59"), Pred::Range { x: col(0), lo: 30.0, hi: 59.0, inside: true });
        assert_eq!(
            root("recency_days not between -1 and 1"),
            Pred::Range { x: col(0), lo: -1.0, hi: 1.0, inside: false }
        );
        assert_eq!(root("home_store = 'S0042'"), Pred::TextEq { slot: 5, code: 1, n: 2, eq: true });
        assert_eq!(root("home_store = 'S9999'"), Pred::Const(false));
        assert_eq!(root("home_store != 'S9999'"), Pred::TextNull { slot: 5, n: 2, null: false });
        assert_eq!(root("channel in ('app', 'web', 'fax')"), Pred::TextAny { slot: 6, codes: [0, 2, 2, 2] });
        assert_eq!(root("channel not in ('app', 'web')"), Pred::TextAny { slot: 6, codes: [1, 3, 3, 3] });
        assert_eq!(root("channel not in ('app')"), Pred::TextEq { slot: 6, code: 0, n: 4, eq: false });
        assert_eq!(root("channel in ('app', 'store', 'web')"), Pred::TextEq { slot: 6, code: 3, n: 4, eq: false });
        assert_eq!(root("channel in ('app', 'store', 'web', 'email')"), Pred::TextNull { slot: 6, n: 4, null: false });
        assert_eq!(root("channel not in ('app', 'store', 'web', 'email', 'fax')"), Pred::Const(false));
        assert_eq!(root("not lifecycle_growth"), Pred::BoolIs { slot: 4, want: 0 });
        assert_eq!(root("lifecycle_growth = false"), Pred::BoolIs { slot: 4, want: 0 });
        assert_eq!(root("lifecycle_growth is not null"), Pred::BoolNull { slot: 4, null: false });
        assert_eq!(root("growth_value > 1 or true"), Pred::Const(true));
        // Peepholes for the catalog's favourite shapes.
        assert_eq!(root("coalesce(growth_value, 0) >= 500"), Pred::Cmp(Cmp::Ge, col(3), Num::Const(500.0)));
        assert_eq!(root("coalesce(growth_value, 600) >= 500"), Pred::CmpOrNull(Cmp::Ge, col(3), 500.0));
        assert_eq!(root("not coalesce(growth_value, 0) >= 500"), Pred::CmpOrNull(Cmp::Lt, col(3), 500.0));
        assert_eq!(
            root("spend_365d / nullif(orders_365d, 0) >= 200"),
            Pred::Cmp(Cmp::Ge, Num::Bin(BinFn::Div, Box::new(col(1)), Box::new(col(2))), Num::Const(200.0))
        );
        assert_eq!(root("growth_value > null + 1 or 1 / 0 is null"), Pred::Const(true));
        assert_eq!(root("null"), Pred::Const(false));
        assert_eq!(
            root("not (lifecycle_growth or growth_value > 1)"),
            Pred::And(vec![Pred::BoolIs { slot: 4, want: 0 }, Pred::Cmp(Cmp::Le, col(3), Num::Const(1.0))])
        );
    }

    #[test]
    fn slots_are_what_the_program_reads() {
        let slots = |src: &str| compile(&parse(src).unwrap(), &env()).unwrap().slots();
        assert_eq!(slots("channel = 'app' and spend_365d / nullif(orders_365d, 0) >= 200"), [1, 2, 6]);
        assert_eq!(slots("growth_value > 1 or true"), [] as [usize; 0]);
    }

    #[test]
    fn programs_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Program>();
    }
}
