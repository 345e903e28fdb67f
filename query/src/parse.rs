//! SQL text to statements that every later walk over them can afford.
//!
//! sqlparser builds a chain of infix operators (`a OR b OR c …`, `x + y + …`,
//! `x IS NULL IS NULL …`) and of `UNION` / `INTERSECT` / `EXCEPT` in a loop,
//! as a left-deep tree: a `WHERE` of 300,000 `OR`ed tags is a tree 300,000
//! levels deep. Everything after the parser walks such a tree recursively —
//! dropping it, cloning it, printing it, DataFusion's planner and
//! optimizer, the tag-filter pushdown — and overflows the stack of the
//! thread it runs on (2 MiB for a server's tokio worker), which aborts the
//! whole process. Nesting by parentheses, `NOT` or subqueries is not the
//! problem: the parser's recursion limit refuses it.
//!
//! So SQL is parsed here before anything else sees it:
//!
//! 1. The text is split into tokens (a loop, no recursion); more than
//!    [`MAX_TOKENS`] is an error.
//! 2. A text of more than [`SHALLOW_TOKENS`] tokens is parsed on a thread of
//!    its own whose stack grows with the token count (at most
//!    [`STACK_PER_TOKEN`] bytes each, reserved, touched only as deep as a
//!    tree really goes), so neither the parser nor the drop of a half-built
//!    deep tree after a syntax error can overflow.
//! 3. On that thread each statement is walked once ([`Guard`]): every
//!    `AND` / `OR` chain of more than [`BALANCE_FROM`] terms is rebuilt as a
//!    balanced tree, `log₂ n` deep (`AND` and `OR` are associative, also in
//!    SQL's three-valued logic, and DataFusion promises no evaluation
//!    order), each half in parentheses so that printing and parsing it again
//!    gives the same tree; then an expression still nested more than
//!    [`MAX_DEPTH`] levels, or set operations nested more than
//!    [`MAX_SET_OPERATIONS`], is an error naming the limit, and the tree is
//!    dropped on that thread.
//!
//! What leaves this module is at most [`MAX_DEPTH`] expressions deep, which
//! every recursive walk downstream handles on a 2 MiB stack. Shorter texts
//! cannot nest deeper than that, so they are parsed on the caller's thread.
//!
//! [`statements`] serves a session (the CLI, the prompt): its statements go
//! to DataFusion's planner as they are. [`balanced_text`] serves a server
//! whose protocol library parses text itself: the same text when nothing
//! needed balancing, else the balanced statements printed back.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::ControlFlow;

use datafusion::common::config::Dialect as DialectName;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::sql::parser::{CopyToSource, DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Query, SetExpr, Statement, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, dialect_from_str};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::{Error, Result};

/// Tokens (words, literals, operators; not whitespace) one SQL text may have.
pub const MAX_TOKENS: usize = 1_000_000;

/// How deep expressions may nest once `AND` / `OR` chains are balanced.
pub const MAX_DEPTH: usize = 400;

/// How deep `UNION` / `INTERSECT` / `EXCEPT` may nest.
pub const MAX_SET_OPERATIONS: usize = 400;

/// `AND` / `OR` chains with more terms than this are balanced. Shorter ones
/// keep their shape, so the column names and plans of ordinary queries do
/// not change.
pub const BALANCE_FROM: usize = 64;

/// Texts of at most this many tokens cannot nest deeper than [`MAX_DEPTH`]
/// (every level of a chain takes an operator and an operand) and are
/// parsed on the caller's thread.
pub const SHALLOW_TOKENS: usize = 2 * MAX_DEPTH;

/// Stack reserved per token for a longer text's parser thread: enough for
/// the deepest tree its tokens can make to be built, walked and dropped.
pub const STACK_PER_TOKEN: usize = 1024;

/// Stack of a parser thread besides [`STACK_PER_TOKEN`].
const STACK_BASE: usize = 8 << 20;

/// The statements of `text` in `state`'s SQL dialect and recursion limit,
/// with long `AND` / `OR` chains balanced. Fails on a syntax error and on
/// the limits above, with a message that names them.
pub fn statements(state: &SessionState, text: &str) -> Result<VecDeque<DfStatement>> {
    let options = &state.config_options().sql_parser;
    let name = options.dialect;
    let limit = options.recursion_limit.get();
    let tokens = tokenize(dialect(name)?.as_ref(), text)?;
    on_stack(tokens.len(), move || {
        let dialect = dialect(name)?;
        let df_error = |e: DataFusionError| match e.find_root() {
            DataFusionError::SQL(e, _) => parser_error(e.as_ref().clone()),
            _ => Error::datafusion(e),
        };
        let mut parser = DFParserBuilder::new(tokens)
            .with_dialect(dialect.as_ref())
            .with_recursion_limit(limit)
            .build()
            .map_err(df_error)?;
        let mut statements = parser.parse_statements().map_err(df_error)?;
        let mut guard = Guard::default();
        for s in &mut statements {
            guard.df_statement(s)?;
        }
        Ok(statements)
    })
}

/// `text` as a PostgreSQL-dialect parser should read it: the same text when
/// no chain needed balancing, else its statements with long `AND` / `OR`
/// chains balanced, printed back (`;`-separated). Fails on the limits above
/// and on a syntax error in a text too long to be handed on safely.
pub fn balanced_text(text: &str) -> Result<Cow<'_, str>> {
    let tokens = tokenize(&PostgreSqlDialect {}, text)?;
    if tokens.len() <= SHALLOW_TOKENS {
        // Nothing this short nests too deep: the caller's parser reads it
        // as written (and reports its own syntax errors).
        return Ok(Cow::Borrowed(text));
    }
    let printed = on_stack(tokens.len(), move || {
        let mut statements = Parser::new(&PostgreSqlDialect {})
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .map_err(parser_error)?;
        let mut guard = Guard::default();
        for s in &mut statements {
            guard.statement(s)?;
        }
        Ok(guard.balanced.then(|| statements.iter().map(Statement::to_string).collect::<Vec<_>>().join(";\n")))
    })?;
    Ok(printed.map_or(Cow::Borrowed(text), Cow::Owned))
}

/// A parser error as this crate's: the recursion limit is a limit, the rest syntax.
fn parser_error(e: ParserError) -> Error {
    match e {
        ParserError::RecursionLimitExceeded => Error::TooComplex(
            "the statement nests parentheses, NOT, subqueries or function calls more deeply than the SQL parser \
             allows (its recursion limit, 50 levels by default)"
                .into(),
        ),
        other => Error::Sql(other.to_string()),
    }
}

fn dialect(name: DialectName) -> Result<Box<dyn Dialect>> {
    dialect_from_str(name).ok_or_else(|| Error::Sql(format!("unsupported SQL dialect {name}")))
}

/// The tokens of `text` without whitespace, at most [`MAX_TOKENS`].
fn tokenize(dialect: &dyn Dialect, text: &str) -> Result<Vec<TokenWithSpan>> {
    let mut tokens = Tokenizer::new(dialect, text)
        .tokenize_with_location()
        .map_err(|e| Error::Sql(format!("sql parser error: {e}")))?;
    tokens.retain(|t| !matches!(t.token, Token::Whitespace(_)));
    if tokens.len() > MAX_TOKENS {
        return Err(Error::TooComplex(format!(
            "the SQL text has {} tokens; taglake reads at most {MAX_TOKENS} in one text",
            tokens.len()
        )));
    }
    Ok(tokens)
}

/// Runs `f` here for a short text, else on a thread with a stack for `tokens` tokens.
fn on_stack<T: Send>(tokens: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if tokens <= SHALLOW_TOKENS {
        return f();
    }
    let stack = STACK_BASE + tokens * STACK_PER_TOKEN;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("taglake-sql-parse".into())
            .stack_size(stack)
            .spawn_scoped(scope, f)
            .map_err(|e| {
                Error::TooComplex(format!("cannot start a parser thread with {} MiB of stack: {e}", stack >> 20))
            })?;
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Balances long `AND` / `OR` chains and enforces the depth limits in one
/// walk over a statement.
#[derive(Default)]
struct Guard {
    /// Expressions open around the one being visited.
    depth: usize,
    /// Some chain was rebuilt.
    balanced: bool,
}

impl Guard {
    fn df_statement(&mut self, s: &mut DfStatement) -> Result<()> {
        match s {
            DfStatement::Statement(s) => self.statement(s),
            DfStatement::CopyTo(copy) => match &mut copy.source {
                CopyToSource::Query(q) => {
                    let flow = q.visit(self);
                    self.done(flow)
                }
                CopyToSource::Relation(_) => Ok(()),
            },
            DfStatement::Explain(explain) => self.df_statement(&mut explain.statement),
            DfStatement::CreateExternalTable(create) => {
                let flow = create.columns.visit(self);
                self.done(flow)?;
                let flow = create.order_exprs.visit(self);
                self.done(flow)
            }
            DfStatement::Reset(_) => Ok(()),
        }
    }

    fn statement(&mut self, s: &mut Statement) -> Result<()> {
        let flow = s.visit(self);
        self.done(flow)
    }

    fn done(&self, flow: ControlFlow<String>) -> Result<()> {
        match flow {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(message) => Err(Error::TooComplex(message)),
        }
    }
}

impl VisitorMut for Guard {
    type Break = String;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<String> {
        // Set operations nest through `SetExpr` nodes, which have no visitor
        // hook: measure their nesting here, without recursion, before the
        // walk goes down them. Parenthesised queries are queries of their own.
        let mut stack = vec![(query.body.as_ref(), 0usize)];
        while let Some((body, depth)) = stack.pop() {
            if let SetExpr::SetOperation { left, right, .. } = body {
                if depth >= MAX_SET_OPERATIONS {
                    return ControlFlow::Break(format!(
                        "the query chains more than {MAX_SET_OPERATIONS} UNION / INTERSECT / EXCEPT operations in a \
                         row; taglake reads at most {MAX_SET_OPERATIONS} (combine the parts in steps, e.g. with views)"
                    ));
                }
                stack.push((left, depth + 1));
                stack.push((right, depth + 1));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        if let Expr::BinaryOp { op: op @ (BinaryOperator::And | BinaryOperator::Or), .. } = expr {
            let op = op.clone();
            if chain_terms(expr, &op) > BALANCE_FROM {
                balance(expr, op);
                self.balanced = true;
            }
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(format!(
                "an expression of the statement nests more than {MAX_DEPTH} levels deep; taglake reads at most \
                 {MAX_DEPTH} (a long chain of operators other than AND / OR, such as `a + b + c + …` or \
                 `x::text::text…`, counts one level per operator; AND and OR chains of any length are fine)"
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &mut Expr) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// The terms of the `op` chain rooted at `expr` (1 when `expr` is not an
/// `op`), counted without recursion. Parentheses end a chain.
fn chain_terms(expr: &Expr, op: &BinaryOperator) -> usize {
    let mut terms = 0;
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            _ => terms += 1,
        }
    }
    terms
}

/// Rebuilds the `op` chain rooted at `expr` as a balanced tree of the same
/// terms in the same order, each inner node in parentheses. The old tree
/// is taken apart without recursion (its boxes are emptied one by one).
fn balance(expr: &mut Expr, op: BinaryOperator) {
    let mut terms = Vec::new();
    let mut stack = vec![std::mem::replace(expr, Expr::value(datafusion::sql::sqlparser::ast::Value::Null))];
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(*right);
                stack.push(*left);
            }
            other => terms.push(other),
        }
    }
    *expr = join(terms, &op, false);
}

/// `terms` joined by `op` as a balanced tree; `nested` puts it in parentheses.
fn join(mut terms: Vec<Expr>, op: &BinaryOperator, nested: bool) -> Expr {
    if terms.len() == 1 {
        return terms.pop().expect("one term");
    }
    let right = terms.split_off(terms.len() / 2);
    let tree = Expr::BinaryOp {
        left: Box::new(join(terms, op, true)),
        op: op.clone(),
        right: Box::new(join(right, op, true)),
    };
    if nested { Expr::Nested(Box::new(tree)) } else { tree }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn parse(text: &str) -> Result<VecDeque<DfStatement>> {
        statements(&SessionContext::new().state(), text)
    }

    fn or_chain(terms: usize) -> String {
        (0..terms).map(|i| format!("t{}", i % 7)).collect::<Vec<_>>().join(" OR ")
    }

    /// The depth of an expression tree, measured with an explicit stack.
    fn depth(statement: &DfStatement) -> usize {
        struct Depth(usize, usize);
        impl datafusion::sql::sqlparser::ast::Visitor for Depth {
            type Break = ();
            fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
                self.0 += 1;
                self.1 = self.1.max(self.0);
                ControlFlow::Continue(())
            }
            fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
                self.0 -= 1;
                ControlFlow::Continue(())
            }
        }
        let DfStatement::Statement(s) = statement else { panic!("{statement}") };
        let mut d = Depth(0, 0);
        let _ = datafusion::sql::sqlparser::ast::Visit::visit(s.as_ref(), &mut d);
        d.1
    }

    #[test]
    fn long_or_chains_come_out_balanced_and_short_ones_unchanged() {
        let short = format!("SELECT * FROM t WHERE {}", or_chain(BALANCE_FROM));
        let s = parse(&short).unwrap();
        assert_eq!(s[0].to_string(), short);
        // 300,000 terms: log₂ deep, every term kept in order.
        let long = format!("SELECT * FROM t WHERE {}", or_chain(300_000));
        let s = parse(&long).unwrap();
        assert!(depth(&s[0]) <= 2 * 20, "{}", depth(&s[0]));
        let printed = s[0].to_string();
        let terms: String = printed.chars().filter(|c| !matches!(c, '(' | ')')).collect();
        assert_eq!(terms, long);
    }

    #[test]
    fn balanced_text_reads_back_as_the_same_shallow_tree() {
        assert!(matches!(balanced_text("SELECT 1 WHERE a OR b").unwrap(), Cow::Borrowed(_)));
        let long = format!("SELECT count(*) FROM t WHERE {}; SELECT 2", or_chain(100_000));
        let text = balanced_text(&long).unwrap();
        let Cow::Owned(text) = text else { panic!("not balanced") };
        let again = Parser::parse_sql(&PostgreSqlDialect {}, &text).unwrap();
        assert_eq!(again.len(), 2);
        assert!(matches!(balanced_text(&text).unwrap(), Cow::Borrowed(_)), "balanced twice");
        // A long text with nothing to balance is handed on as it is.
        let wide = format!("SELECT {} FROM t", (0..2_000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "));
        assert!(matches!(balanced_text(&wide).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn deep_chains_of_other_operators_are_errors_not_crashes() {
        for (what, text) in [
            ("plus", format!("SELECT {} FROM t", vec!["1"; 200_000].join(" + "))),
            ("casts", format!("SELECT x{} FROM t", "::text".repeat(100_000))),
            ("is null", format!("SELECT x{} FROM t", " IS NULL".repeat(100_000))),
            ("mixed", format!("SELECT * FROM t WHERE {}", vec!["a + 1 = 2"; 1_000].join(" + "))),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("nests more than {MAX_DEPTH} levels deep")), "{what}: {e}");
            assert!(balanced_text(&text).is_err(), "{what}");
        }
        let unions = vec!["SELECT 1"; 100_000].join(" UNION ALL ");
        let e = parse(&unions).unwrap_err().to_string();
        assert!(e.contains(&format!("more than {MAX_SET_OPERATIONS} UNION")), "{e}");
        // Up to the limits is fine.
        assert!(parse(&format!("SELECT {} FROM t", vec!["1"; MAX_DEPTH].join(" + "))).is_ok());
        assert!(parse(&vec!["SELECT 1"; MAX_SET_OPERATIONS].join(" UNION ALL ")).is_ok());
    }

    #[test]
    fn a_syntax_error_after_a_deep_chain_is_an_error_not_a_crash() {
        // The parser drops the half-built 300,000-level tree when it fails.
        let text = format!("SELECT * FROM t WHERE {} )", vec!["x"; 300_000].join(" + "));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("sql parser error"), "{e}");
        assert!(balanced_text(&text).unwrap_err().to_string().contains("sql parser error"));
    }

    #[test]
    fn parentheses_and_not_are_held_by_the_recursion_limit() {
        let deep = format!("SELECT {}1{}", "(".repeat(50_000), ")".repeat(50_000));
        assert!(matches!(parse(&deep).unwrap_err(), Error::TooComplex(m) if m.contains("recursion limit")));
        assert!(matches!(balanced_text(&deep).unwrap_err(), Error::TooComplex(m) if m.contains("recursion limit")));
        // (sqlparser stops a NOT chain at its limit and then finds the next NOT unexpected.)
        let nots = format!("SELECT * FROM t WHERE {} a", "NOT ".repeat(100_000));
        assert!(parse(&nots).is_err());
        assert!(balanced_text(&nots).is_err());
    }

    #[test]
    fn too_many_tokens_is_an_error() {
        let text = format!("SELECT {}", vec!["1"; MAX_TOKENS / 2 + 1].join(","));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(&format!("taglake reads at most {MAX_TOKENS}")), "{e}");
    }
}
