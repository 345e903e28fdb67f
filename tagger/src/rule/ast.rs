//! The syntax tree of a rule, and its canonical text form.
//!
//! The tree stays close to what the author wrote (no folding, no rewriting)
//! so that errors found later can point at the right place and `Display`
//! can print the rule back. Equality ignores spans: two trees are equal when
//! they mean the same rule text up to spacing, keyword case and redundant
//! parentheses, which is what `parse(display(e)) == e` needs.

use std::collections::HashSet;
use std::fmt;

/// Where a node came from in the rule text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Byte offset of the node's first byte.
    pub start: usize,
    /// Byte offset one past the node's last byte.
    pub end: usize,
    /// 1-based character position of `start`, as reported in [`RuleError`](super::RuleError).
    pub pos: usize,
}

impl Span {
    /// The span from the start of `self` to the end of `other`.
    pub(crate) fn to(self, other: Span) -> Span {
        Span { start: self.start, end: other.end, pos: self.pos }
    }
}

/// A parsed rule (or part of one).
#[derive(Debug, Clone)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it is in the rule text.
    pub span: Span,
}

/// Equal when the rules are the same; spans are ignored.
impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

/// The kinds of nodes. Operands are boxed [`Expr`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A number literal (finite; `-5` is a literal, `-x` is [`ExprKind::Neg`]).
    Num(f64),
    /// A text literal, unquoted.
    Text(String),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A feature or tag name.
    Ident(String),
    /// `name(args…)`; the name is lowercase.
    Call {
        /// Function name.
        name: String,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// `-x`.
    Neg(Box<Expr>),
    /// `a + b`, `a - b`, `a * b`, `a / b`, `a % b`.
    Arith {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `a = b`, `a < b`, …
    Compare {
        /// The operator.
        op: CmpOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `x [not] between low and high` (inclusive).
    Between {
        /// The tested value.
        expr: Box<Expr>,
        /// Lower bound.
        low: Box<Expr>,
        /// Upper bound.
        high: Box<Expr>,
        /// `not between`.
        negated: bool,
    },
    /// `x [not] in (literal, …)`.
    In {
        /// The tested value.
        expr: Box<Expr>,
        /// Literals only ([`ExprKind::Num`], [`ExprKind::Text`], [`ExprKind::Bool`]).
        list: Vec<Expr>,
        /// `not in`.
        negated: bool,
    },
    /// `x is [not] null`.
    IsNull {
        /// The tested value.
        expr: Box<Expr>,
        /// `is not null`.
        negated: bool,
    },
    /// `not x`.
    Not(Box<Expr>),
    /// `a and b and …` (two or more operands).
    And(Vec<Expr>),
    /// `a or b or …` (two or more operands).
    Or(Vec<Expr>),
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (null when dividing by zero)
    Div,
    /// `%` (remainder with the sign of the dividend; null for zero divisor)
    Rem,
}

impl ArithOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Rem => "%",
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=` or `==`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The canonical spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

impl Expr {
    pub(crate) fn new(kind: ExprKind, span: Span) -> Self {
        Expr { kind, span }
    }

    /// The distinct feature and tag names the rule refers to (not function
    /// names), in order of first appearance.
    pub fn identifiers(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        // Explicit stack, children pushed in reverse, so the walk is in text order.
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match &e.kind {
                ExprKind::Ident(name) => {
                    if seen.insert(name.as_str()) {
                        out.push(name.clone());
                    }
                }
                kind => {
                    let before = stack.len();
                    kind.for_each_child(|c| stack.push(c));
                    stack[before..].reverse();
                }
            }
        }
        out
    }

    /// Binding strength: a child printed where a stronger form is needed gets
    /// parentheses. Mirrors the grammar levels in `parser.rs`.
    fn precedence(&self) -> u8 {
        match &self.kind {
            ExprKind::Or(_) => 1,
            ExprKind::And(_) => 2,
            ExprKind::Not(_) => 3,
            ExprKind::Compare { .. } | ExprKind::Between { .. } | ExprKind::In { .. } | ExprKind::IsNull { .. } => 4,
            ExprKind::Arith { op: ArithOp::Add | ArithOp::Sub, .. } => 5,
            ExprKind::Arith { .. } => 6,
            ExprKind::Neg(_) => 7,
            ExprKind::Num(v) if v.is_sign_negative() => 7,
            _ => 8,
        }
    }

    /// Prints `self`, in parentheses when it binds looser than `min`.
    fn fmt_at(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        if self.precedence() < min {
            write!(f, "(")?;
            self.fmt_bare(f)?;
            write!(f, ")")
        } else {
            self.fmt_bare(f)
        }
    }

    fn fmt_bare(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Num(v) => write!(f, "{}", format_number(*v)),
            ExprKind::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Null => write!(f, "null"),
            ExprKind::Ident(name) => write!(f, "{name}"),
            ExprKind::Call { name, args } => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    a.fmt_at(f, 0)?;
                }
                write!(f, ")")
            }
            ExprKind::Neg(x) => {
                write!(f, "-")?;
                // `-(5)` is not the literal `-5`, and `--x` reads like a comment.
                if matches!(x.kind, ExprKind::Num(_) | ExprKind::Neg(_)) {
                    write!(f, "(")?;
                    x.fmt_bare(f)?;
                    write!(f, ")")
                } else {
                    x.fmt_at(f, 7)
                }
            }
            ExprKind::Arith { op, lhs, rhs } => {
                let p = self.precedence();
                lhs.fmt_at(f, p)?;
                write!(f, " {} ", op.symbol())?;
                rhs.fmt_at(f, p + 1)
            }
            ExprKind::Compare { op, lhs, rhs } => {
                lhs.fmt_at(f, 5)?;
                write!(f, " {} ", op.symbol())?;
                rhs.fmt_at(f, 5)
            }
            ExprKind::Between { expr, low, high, negated } => {
                expr.fmt_at(f, 5)?;
                write!(f, "{} between ", if *negated { " not" } else { "" })?;
                low.fmt_at(f, 5)?;
                write!(f, " and ")?;
                high.fmt_at(f, 5)
            }
            ExprKind::In { expr, list, negated } => {
                expr.fmt_at(f, 5)?;
                write!(f, "{} in (", if *negated { " not" } else { "" })?;
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    item.fmt_bare(f)?;
                }
                write!(f, ")")
            }
            ExprKind::IsNull { expr, negated } => {
                expr.fmt_at(f, 5)?;
                write!(f, " is {}null", if *negated { "not " } else { "" })
            }
            ExprKind::Not(x) => {
                write!(f, "not ")?;
                x.fmt_at(f, 3)
            }
            ExprKind::And(items) | ExprKind::Or(items) => {
                let (word, min) = if matches!(self.kind, ExprKind::And(_)) { ("and", 3) } else { ("or", 2) };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, " {word} ")?;
                    }
                    item.fmt_at(f, min)?;
                }
                Ok(())
            }
        }
    }
}

impl ExprKind {
    /// Calls `f` on each direct child, in text order.
    pub(crate) fn for_each_child<'e>(&'e self, mut f: impl FnMut(&'e Expr)) {
        match self {
            ExprKind::Num(_) | ExprKind::Text(_) | ExprKind::Bool(_) | ExprKind::Null | ExprKind::Ident(_) => {}
            ExprKind::Call { args: items, .. } | ExprKind::And(items) | ExprKind::Or(items) => items.iter().for_each(f),
            ExprKind::Neg(x) | ExprKind::Not(x) | ExprKind::IsNull { expr: x, .. } => f(x),
            ExprKind::Arith { lhs, rhs, .. } | ExprKind::Compare { lhs, rhs, .. } => {
                f(lhs);
                f(rhs);
            }
            ExprKind::Between { expr, low, high, .. } => {
                f(expr);
                f(low);
                f(high);
            }
            ExprKind::In { expr, list, .. } => {
                f(expr);
                list.iter().for_each(f);
            }
        }
    }
}

/// Shortest text that reads back as the same `f64`; exponent form for very
/// large or small magnitudes so `1e300` does not print 301 digits.
pub(crate) fn format_number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-6..1e16).contains(&a) { format!("{v:e}") } else { format!("{v}") }
}

/// The canonical form: lowercase keywords, single spaces, `=` and `!=`,
/// parentheses only where needed. Parses back to an equal [`Expr`].
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_bare(f)
    }
}
