//! Recursive-descent parser for the rule grammar.
//!
//! One function per grammar level, loosest first:
//!
//! ```text
//! expr  := or
//! or    := and ("or" and)*
//! and   := not ("and" not)*
//! not   := "not" not | cmp
//! cmp   := sum [ cmpop sum | ["not"] "between" sum "and" sum
//!              | ["not"] "in" "(" literal ("," literal)* ")" | "is" ["not"] "null" ]
//! sum   := prod (("+" | "-") prod)*
//! prod  := unary (("*" | "/" | "%") unary)*
//! unary := "-" unary | atom
//! atom  := number | 'text' | true | false | null | ident | ident "(" [expr ("," expr)*] ")" | "(" expr ")"
//! ```
//!
//! Messages say what was expected and what was found, because the people who
//! write rules are CRM analysts, not parser authors. Nesting is capped so a
//! hostile or generated rule cannot overflow the stack of a later pass.

use super::RuleError;
use super::ast::{ArithOp, CmpOp, Expr, ExprKind};
use super::lexer::{Kw, Lexer, Sym, Tok, Token};

/// How deep parentheses, `not`, `-` and operator chains may nest.
const MAX_DEPTH: usize = 200;

/// Parses a rule.
pub fn parse(src: &str) -> std::result::Result<Expr, RuleError> {
    let mut lexer = Lexer::new(src);
    let tok = lexer.next_token()?;
    let mut p = Parser { lexer, tok, depth: 0 };
    if p.tok.tok == Tok::End {
        return Err(RuleError::new(p.tok.span, "the rule is empty"));
    }
    let e = p.or()?;
    match p.tok.tok {
        Tok::End => Ok(e),
        Tok::Sym(Sym::RParen) => Err(RuleError::new(p.tok.span, "`)` without a matching `(`")),
        _ => Err(p.expected("an operator or the end of the rule")),
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// The current (not yet consumed) token.
    tok: Token,
    depth: usize,
}

type Result<T> = std::result::Result<T, RuleError>;

impl Parser<'_> {
    /// Consumes the current token and returns it.
    fn bump(&mut self) -> Result<Token> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.tok, next))
    }

    fn at_kw(&self, kw: Kw) -> bool {
        self.tok.tok == Tok::Kw(kw)
    }

    fn at_sym(&self, sym: Sym) -> bool {
        self.tok.tok == Tok::Sym(sym)
    }

    /// "expected X but found `Y`" at the current token.
    fn expected(&self, what: &str) -> RuleError {
        let message = if self.tok.tok == Tok::End {
            format!("unexpected end of rule; expected {what}")
        } else {
            let text = self.lexer.text(&self.tok);
            let text = if text.chars().count() > 30 {
                format!("{}…", text.chars().take(30).collect::<String>())
            } else {
                text.to_string()
            };
            format!("expected {what} but found `{text}`")
        };
        RuleError::new(self.tok.span, message)
    }

    fn expect_sym(&mut self, sym: Sym, what: &str) -> Result<Token> {
        if self.at_sym(sym) { self.bump() } else { Err(self.expected(what)) }
    }

    /// One level deeper; errors past [`MAX_DEPTH`]. Callers restore `depth`.
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(RuleError::new(
                self.tok.span,
                format!("the rule is nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr> {
        self.chain(Kw::Or, Self::and, ExprKind::Or)
    }

    fn and(&mut self) -> Result<Expr> {
        self.chain(Kw::And, Self::not, ExprKind::And)
    }

    /// `item (kw item)*`, as one n-ary node when there are several items.
    fn chain(&mut self, kw: Kw, item: fn(&mut Self) -> Result<Expr>, node: fn(Vec<Expr>) -> ExprKind) -> Result<Expr> {
        let first = item(self)?;
        if !self.at_kw(kw) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_kw(kw) {
            self.bump()?;
            items.push(item(self)?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Expr::new(node(items), span))
    }

    fn not(&mut self) -> Result<Expr> {
        if !self.at_kw(Kw::Not) {
            return self.cmp();
        }
        let kw = self.bump()?;
        self.enter()?;
        let x = self.not()?;
        self.depth -= 1;
        let span = kw.span.to(x.span);
        Ok(Expr::new(ExprKind::Not(Box::new(x)), span))
    }

    fn cmp(&mut self) -> Result<Expr> {
        let lhs = self.sum()?;
        let e = match self.tok.tok {
            Tok::Sym(sym) if cmp_op(sym).is_some() => {
                self.bump()?;
                let rhs = self.sum()?;
                let span = lhs.span.to(rhs.span);
                let op = cmp_op(sym).unwrap_or(CmpOp::Eq);
                Expr::new(ExprKind::Compare { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span)
            }
            Tok::Kw(Kw::Between) => self.between(lhs, false)?,
            Tok::Kw(Kw::In) => self.in_list(lhs, false)?,
            Tok::Kw(Kw::Not) => {
                self.bump()?;
                match self.tok.tok {
                    Tok::Kw(Kw::Between) => self.between(lhs, true)?,
                    Tok::Kw(Kw::In) => self.in_list(lhs, true)?,
                    _ => return Err(self.expected("`between` or `in` after `not`")),
                }
            }
            Tok::Kw(Kw::Is) => {
                self.bump()?;
                let negated = self.at_kw(Kw::Not);
                if negated {
                    self.bump()?;
                }
                if !self.at_kw(Kw::Null) {
                    return Err(self.expected(if negated { "`null`" } else { "`null` or `not null`" }));
                }
                let null = self.bump()?;
                let span = lhs.span.to(null.span);
                Expr::new(ExprKind::IsNull { expr: Box::new(lhs), negated }, span)
            }
            _ => return Ok(lhs),
        };
        let chained = match self.tok.tok {
            Tok::Sym(sym) => cmp_op(sym).is_some(),
            Tok::Kw(kw) => matches!(kw, Kw::Between | Kw::In | Kw::Is | Kw::Not),
            _ => false,
        };
        if chained {
            return Err(RuleError::new(self.tok.span, "comparisons cannot be chained; join them with `and`"));
        }
        Ok(e)
    }

    /// After `x [not]`, at `between`.
    fn between(&mut self, expr: Expr, negated: bool) -> Result<Expr> {
        self.bump()?;
        let low = self.sum()?;
        if !self.at_kw(Kw::And) {
            return Err(self.expected("`and`"));
        }
        self.bump()?;
        let high = self.sum()?;
        let span = expr.span.to(high.span);
        Ok(Expr::new(
            ExprKind::Between { expr: Box::new(expr), low: Box::new(low), high: Box::new(high), negated },
            span,
        ))
    }

    /// After `x [not]`, at `in`.
    fn in_list(&mut self, expr: Expr, negated: bool) -> Result<Expr> {
        self.bump()?;
        self.expect_sym(Sym::LParen, "`(`")?;
        let mut list = Vec::new();
        let close = loop {
            list.push(self.literal()?);
            if self.at_sym(Sym::Comma) {
                self.bump()?;
            } else {
                break self.expect_sym(Sym::RParen, "`,` or `)`")?;
            }
        };
        let span = expr.span.to(close.span);
        Ok(Expr::new(ExprKind::In { expr: Box::new(expr), list, negated }, span))
    }

    /// An `in` list item: a number (possibly negative), text, true or false.
    fn literal(&mut self) -> Result<Expr> {
        let kind = match &self.tok.tok {
            Tok::Num(v) => ExprKind::Num(*v),
            Tok::Text(s) => ExprKind::Text(s.clone()),
            Tok::Kw(Kw::True) => ExprKind::Bool(true),
            Tok::Kw(Kw::False) => ExprKind::Bool(false),
            Tok::Sym(Sym::Minus) => {
                let minus = self.bump()?;
                let Tok::Num(v) = self.tok.tok else { return Err(self.expected("a number after `-`")) };
                let num = self.bump()?;
                return Ok(Expr::new(ExprKind::Num(-v), minus.span.to(num.span)));
            }
            Tok::Kw(Kw::Null) => {
                return Err(RuleError::new(
                    self.tok.span,
                    "`null` cannot be in an `in` list (it never matches); test for a missing value with `is null`",
                ));
            }
            _ => return Err(self.expected("a literal (number, text, true or false)")),
        };
        let t = self.bump()?;
        Ok(Expr::new(kind, t.span))
    }

    fn sum(&mut self) -> Result<Expr> {
        self.arith(Self::prod, |s| match s {
            Sym::Plus => Some(ArithOp::Add),
            Sym::Minus => Some(ArithOp::Sub),
            _ => None,
        })
    }

    fn prod(&mut self) -> Result<Expr> {
        self.arith(Self::unary, |s| match s {
            Sym::Star => Some(ArithOp::Mul),
            Sym::Slash => Some(ArithOp::Div),
            Sym::Percent => Some(ArithOp::Rem),
            _ => None,
        })
    }

    /// A left-associative chain of `operand (op operand)*`.
    fn arith(&mut self, operand: fn(&mut Self) -> Result<Expr>, op_of: fn(Sym) -> Option<ArithOp>) -> Result<Expr> {
        let depth = self.depth;
        let mut lhs = operand(self)?;
        while let Tok::Sym(sym) = self.tok.tok {
            let Some(op) = op_of(sym) else { break };
            self.bump()?;
            // Each link makes the left-deep tree one level deeper.
            self.enter()?;
            let rhs = operand(self)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr::new(ExprKind::Arith { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span);
        }
        self.depth = depth;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr> {
        if !self.at_sym(Sym::Minus) {
            return self.atom();
        }
        let minus = self.bump()?;
        // `-5` is a literal, so constants in rules stay constants.
        if let Tok::Num(v) = self.tok.tok {
            let num = self.bump()?;
            return Ok(Expr::new(ExprKind::Num(-v), minus.span.to(num.span)));
        }
        self.enter()?;
        let x = self.unary()?;
        self.depth -= 1;
        let span = minus.span.to(x.span);
        Ok(Expr::new(ExprKind::Neg(Box::new(x)), span))
    }

    fn atom(&mut self) -> Result<Expr> {
        let kind = match &self.tok.tok {
            Tok::Num(v) => ExprKind::Num(*v),
            Tok::Text(s) => ExprKind::Text(s.clone()),
            Tok::Kw(Kw::True) => ExprKind::Bool(true),
            Tok::Kw(Kw::False) => ExprKind::Bool(false),
            Tok::Kw(Kw::Null) => ExprKind::Null,
            Tok::Word(_) => return self.name(),
            Tok::Sym(Sym::LParen) => {
                self.bump()?;
                self.enter()?;
                let e = self.or()?;
                self.depth -= 1;
                self.expect_sym(Sym::RParen, "`)`")?;
                return Ok(e);
            }
            _ => return Err(self.expected("a value")),
        };
        let t = self.bump()?;
        Ok(Expr::new(kind, t.span))
    }

    /// A feature/tag name or a function call.
    fn name(&mut self) -> Result<Expr> {
        let word = self.bump()?;
        let Tok::Word(name) = word.tok else { unreachable!("name() is called at a word") };
        if !self.at_sym(Sym::LParen) {
            if name.chars().any(|c| c.is_ascii_uppercase()) {
                let lower = name.to_ascii_lowercase();
                return Err(RuleError::new(word.span, format!("names are lowercase; did you mean `{lower}`?")));
            }
            return Ok(Expr::new(ExprKind::Ident(name), word.span));
        }
        self.bump()?;
        let mut args = Vec::new();
        let close = if self.at_sym(Sym::RParen) {
            self.bump()?
        } else {
            loop {
                self.enter()?;
                args.push(self.or()?);
                self.depth -= 1;
                if self.at_sym(Sym::Comma) {
                    self.bump()?;
                } else {
                    break self.expect_sym(Sym::RParen, "`,` or `)`")?;
                }
            }
        };
        // Function names are like keywords: any case.
        let name = name.to_ascii_lowercase();
        Ok(Expr::new(ExprKind::Call { name, args }, word.span.to(close.span)))
    }
}

fn cmp_op(sym: Sym) -> Option<CmpOp> {
    Some(match sym {
        Sym::Eq => CmpOp::Eq,
        Sym::Ne => CmpOp::Ne,
        Sym::Lt => CmpOp::Lt,
        Sym::Le => CmpOp::Le,
        Sym::Gt => CmpOp::Gt,
        Sym::Ge => CmpOp::Ge,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> (usize, String) {
        let e = parse(src).expect_err(src);
        (e.pos, e.message)
    }

    /// The catalog examples, each with its canonical form.
    const EXAMPLES: &[(&str, &str)] = &[
        ("growth_value >= 6000", "growth_value >= 6000"),
        ("orders_total > 0 AND recency_days BETWEEN 30 AND 59", "orders_total > 0 and recency_days between 30 and 59"),
        (
            "not (lifecycle_growth or lifecycle_mature) and orders_total > 0",
            "not (lifecycle_growth or lifecycle_mature) and orders_total > 0",
        ),
        ("birthday_month == 3", "birthday_month = 3"),
        ("home_store = 'S0042'", "home_store = 'S0042'"),
        ("channel in ('app','store')", "channel in ('app', 'store')"),
        ("age is not null and age < 25", "age is not null and age < 25"),
        ("spend_365d / nullif(orders_365d, 0) >= 200", "spend_365d / nullif(orders_365d, 0) >= 200"),
        ("COALESCE(points_balance, 0) >= 500", "coalesce(points_balance, 0) >= 500"),
        ("a <> 1_000 or ((b))", "a != 1000 or b"),
        ("x not between -1 and 1.5e3", "x not between -1 and 1500"),
        ("x not in (-2, 0.5)", "x not in (-2, 0.5)"),
        ("name = 'it''s'", "name = 'it''s'"),
        ("(a and b) and c", "(a and b) and c"),
        ("a and (b and c) or d", "a and (b and c) or d"),
        ("a - (b - c) - d * (e + f) % g > -(5)", "a - (b - c) - d * (e + f) % g > -(5)"),
        ("- - x < --5", "-(-x) < -(-5)"),
        ("-x * y > 1e300", "-x * y > 1e300"),
        ("x > 0.0000001", "x > 1e-7"),
        ("(a > 1) = (b < 2)", "(a > 1) = (b < 2)"),
        ("not not a", "not not a"),
        ("x = -0", "x = -0"),
        ("f()", "f()"),
        ("flag", "flag"),
    ];

    #[test]
    fn examples_print_canonically_and_round_trip() {
        for (src, canonical) in EXAMPLES {
            let e = parse(src).unwrap();
            assert_eq!(e.to_string(), *canonical, "{src}");
            assert_eq!(parse(canonical).unwrap(), e, "{src}");
        }
    }

    #[test]
    fn precedence_follows_the_grammar() {
        let shape = |src: &str| parse(src).unwrap();
        let e = shape("a or b and not c = 1 + 2 * -d");
        let ExprKind::Or(items) = &e.kind else { panic!("{e:?}") };
        let ExprKind::And(items) = &items[1].kind else { panic!("{e:?}") };
        let ExprKind::Not(x) = &items[1].kind else { panic!("{e:?}") };
        let ExprKind::Compare { rhs, .. } = &x.kind else { panic!("{e:?}") };
        let ExprKind::Arith { op: ArithOp::Add, rhs, .. } = &rhs.kind else { panic!("{e:?}") };
        let ExprKind::Arith { op: ArithOp::Mul, rhs, .. } = &rhs.kind else { panic!("{e:?}") };
        assert!(matches!(rhs.kind, ExprKind::Neg(_)));
        // Left associativity.
        assert_eq!(shape("a - b - c"), shape("(a - b) - c"));
        assert_ne!(shape("a - b - c"), shape("a - (b - c)"));
        // `between`'s `and` is not the logical `and`.
        let ExprKind::And(items) = shape("x between 1 and 2 and y").kind else { panic!() };
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn spans_point_into_the_text() {
        let src = "x > 1 and  home_store = 'S1'";
        let ExprKind::And(items) = parse(src).unwrap().kind else { panic!() };
        let s = items[1].span;
        assert_eq!((&src[s.start..s.end], s.pos), ("home_store = 'S1'", 12));
    }

    #[test]
    fn identifiers_in_order_of_first_use() {
        let e = parse("b > 1 and coalesce(a, b, c) > 0 or a in (1) or not d").unwrap();
        assert_eq!(e.identifiers(), ["b", "a", "c", "d"]);
    }

    #[test]
    fn errors_say_what_was_expected_and_found() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "the rule is empty"),
            ("  ", 3, "the rule is empty"),
            ("a > ", 5, "unexpected end of rule; expected a value"),
            ("(a > 1 and b", 13, "unexpected end of rule; expected `)`"),
            ("(a > 1 b)", 8, "expected `)` but found `b`"),
            ("age > (3 and", 13, "unexpected end of rule; expected a value"),
            ("recency_days between 30 59", 25, "expected `and` but found `59`"),
            ("a > 1)", 6, "`)` without a matching `(`"),
            ("a > 1 b", 7, "expected an operator or the end of the rule but found `b`"),
            ("a < b < c", 7, "comparisons cannot be chained; join them with `and`"),
            ("a is null = true", 11, "comparisons cannot be chained; join them with `and`"),
            ("x in 1, 2", 6, "expected `(` but found `1`"),
            ("x in (1 2)", 9, "expected `,` or `)` but found `2`"),
            ("x in (1, y)", 10, "expected a literal (number, text, true or false) but found `y`"),
            (
                "x in (1, null)",
                10,
                "`null` cannot be in an `in` list (it never matches); test for a missing value with `is null`",
            ),
            ("x in (-y)", 8, "expected a number after `-` but found `y`"),
            ("x in ()", 7, "expected a literal (number, text, true or false) but found `)`"),
            ("x is 3", 6, "expected `null` or `not null` but found `3`"),
            ("x is not 3", 10, "expected `null` but found `3`"),
            ("x not = 3", 7, "expected `between` or `in` after `not` but found `=`"),
            ("a and or b", 7, "expected a value but found `or`"),
            ("f(a,", 5, "unexpected end of rule; expected a value"),
            ("f(a b)", 5, "expected `,` or `)` but found `b`"),
            ("Recency_days > 3", 1, "names are lowercase; did you mean `recency_days`?"),
            ("x = 'S0042", 5, "unterminated text literal"),
            ("a = 'x' and ) 'open", 13, "expected a value but found `)`"),
        ];
        for &(src, pos, message) in cases {
            assert_eq!(err(src), (pos, message.to_string()), "{src}");
        }
        // Long tokens are shortened in messages.
        let (_, m) = err("x = 1 'a very long text literal that goes on and on'");
        assert_eq!(m, "expected an operator or the end of the rule but found `'a very long text literal that…`");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}x{} > 1", "(".repeat(500), ")".repeat(500));
        assert_eq!(err(&deep).1, "the rule is nested too deeply (more than 200 levels)");
        let long = format!("x{} > 1", " + x".repeat(500));
        assert_eq!(err(&long).1, "the rule is nested too deeply (more than 200 levels)");
        let nots = format!("{}a", "not ".repeat(500));
        assert!(err(&nots).1.contains("too deeply"));
        // Long flat `and` chains are fine: they are one n-ary node.
        let wide = vec!["a > 1"; 2000].join(" and ");
        assert!(parse(&wide).is_ok());
        // Moderate nesting is fine.
        assert!(parse(&format!("{}x{} > 1", "(".repeat(50), ")".repeat(50))).is_ok());
    }

    #[test]
    fn render_points_at_the_position() {
        let src = "recency_days between 30 59";
        let e = parse(src).unwrap_err();
        assert_eq!(
            e.render(src),
            "expected `and` but found `59`\n  recency_days between 30 59\n                          ^"
        );
        assert_eq!(e.to_string(), "at position 25: expected `and` but found `59`");
        let src = "a > 1 and\n  b >";
        let e = parse(src).unwrap_err();
        assert_eq!(e.render(src), "unexpected end of rule; expected a value (line 2)\n    b >\n       ^");
    }
}
