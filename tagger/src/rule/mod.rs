//! The tag rule language: `orders_total > 0 and recency_days between 30 and 59`.
//!
//! The tag catalog declares every tag as a condition over per-member features
//! (and over other tags). Tagging runs about a hundred such rules over tens of
//! millions of members, so a rule is handled in three steps, each done once
//! per rule except the last:
//!
//! 1. [`parse`] turns the text into an [`Expr`], a syntax tree that remembers
//!    where every node came from, so later errors can point into the rule.
//! 2. [`compile`] checks the tree against an [`Env`] (which names exist, with
//!    which type, which text values a dictionary holds) and produces a
//!    [`Program`]. Every type error is found here, before any data is read.
//! 3. [`Program::eval`] runs over a chunk of members held as columns
//!    ([`ColumnRef`]) and writes a 0/1 mask: 1 where the rule is TRUE;
//!    [`Program::eval_bits`] writes the same as a bitset, one bit per
//!    member, which is what a tag's bitmap is made of.
//!
//! [`naive`] is a second, deliberately simple evaluator that walks the tree
//! one member at a time. It exists so the compiled path can be checked against
//! something obviously right (see the property test in `tests.rs`).
//!
//! # Semantics
//!
//! Values are SQL-like: numbers (`f64`), booleans and text, each possibly
//! null. Arithmetic with null, and division or modulo by zero, give null;
//! comparisons with null are *unknown*; `and`/`or`/`not` follow Kleene's
//! three-valued logic as in SQL; `is [not] null` is always known. A member
//! gets the tag only where the rule is TRUE: unknown means no tag.
//! Text can only be tested for equality with a literal (`=`, `!=`, `in`) or
//! for null, because a text column is dictionary-encoded and the compiled
//! rule compares codes, never strings.
//!
//! # How evaluation stays fast
//!
//! The compiler pushes every `not` down to the leaves (a rule is compiled for
//! "where is this TRUE" or "where is this FALSE"), which turns three-valued
//! logic into plain two-valued masks: `x >= 6000` is TRUE exactly where the
//! IEEE comparison holds (a null, stored as NaN, compares false) and FALSE
//! exactly where `x < 6000` holds. Leaves are then one tight loop each over a
//! block of members, `and`/`or` fold their children into the same mask in
//! place, and arithmetic works on reusable per-thread buffers. See
//! `compile.rs` and `eval.rs`.
//!
//! # Example
//!
//! ```
//! use taglake_tagger::rule::{compile, parse, ColumnRef, Env, VarType};
//!
//! struct Features;
//! impl Env for Features {
//!     fn resolve(&self, name: &str) -> Option<(usize, VarType)> {
//!         match name {
//!             "growth_value" => Some((0, VarType::Num)),
//!             "home_store" => Some((1, VarType::Text)),
//!             _ => None,
//!         }
//!     }
//!     fn dictionary(&self, _slot: usize) -> &[String] {
//!         static STORES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
//!         STORES.get_or_init(|| vec!["S0001".into(), "S0042".into()])
//!     }
//!     fn names(&self) -> Vec<String> {
//!         vec!["growth_value".into(), "home_store".into()]
//!     }
//! }
//!
//! let rule = parse("growth_value >= 6000 and home_store = 'S0042'").unwrap();
//! let program = compile(&rule, &Features).unwrap();
//! let growth = [7000.0, 9000.0, f64::NAN, 5999.0];
//! let store = [1, 0, 1, 1]; // codes into the dictionary; u32::MAX is null
//! let mut mask = Vec::new();
//! program.eval(&[ColumnRef::Num(&growth), ColumnRef::Text(&store)], 4, &mut mask);
//! assert_eq!(mask, [1, 0, 0, 0]);
//!
//! let err = compile(&parse("growth_valu > 1").unwrap(), &Features).unwrap_err();
//! assert_eq!(err.message, "unknown feature or tag `growth_valu`; did you mean `growth_value`?");
//! ```

mod ast;
mod compile;
mod eval;
mod lexer;
pub mod naive;
mod parser;
#[cfg(test)]
mod tests;

pub use ast::{ArithOp, CmpOp, Expr, ExprKind, Span};
pub use compile::{Program, compile};
pub use eval::PLAIN_LOOPS_ENV;
pub(crate) use eval::pack_mask;
pub use parser::parse;

/// The type of a column (and of an expression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VarType {
    /// A number; null is NaN.
    Num,
    /// A boolean, e.g. another tag.
    Bool,
    /// Dictionary-encoded text.
    Text,
}

impl VarType {
    /// "a number", "a boolean", "text": for messages.
    pub(crate) fn article(self) -> &'static str {
        match self {
            VarType::Num => "a number",
            VarType::Bool => "a boolean",
            VarType::Text => "text",
        }
    }

    /// "number", "boolean", "text": for messages.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            VarType::Num => "number",
            VarType::Bool => "boolean",
            VarType::Text => "text",
        }
    }
}

/// What a rule may refer to. Implemented by the caller (the feature store
/// and the tag catalog).
pub trait Env {
    /// Slot and type of a column, None when unknown.
    fn resolve(&self, name: &str) -> Option<(usize, VarType)>;
    /// Dictionary of a Text slot (code `i` is `dict[i]`).
    fn dictionary(&self, slot: usize) -> &[String];
    /// Every name, for "did you mean" suggestions.
    fn names(&self) -> Vec<String>;
}

/// One column of a chunk, indexed by slot.
///
/// Nulls: NaN in a `Num` column; any byte other than 0 or 1 in a `Bool`
/// column (tags are never null, but a boolean feature may be); in a `Text`
/// column `u32::MAX`, and also any code past the end of the dictionary.
#[derive(Debug, Clone, Copy)]
pub enum ColumnRef<'a> {
    /// Numbers.
    Num(&'a [f64]),
    /// Booleans: 0 false, 1 true.
    Bool(&'a [u8]),
    /// Codes into the slot's dictionary.
    Text(&'a [u32]),
}

/// A rule that does not parse or does not compile, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at position {pos}: {message}")]
pub struct RuleError {
    /// 1-based character position in the rule text (the column, for a
    /// one-line rule).
    pub pos: usize,
    /// What is wrong, in the words of the rule's author.
    pub message: String,
}

impl RuleError {
    pub(crate) fn new(span: Span, message: impl Into<String>) -> Self {
        RuleError { pos: span.pos, message: message.into() }
    }

    /// The message, the line of `src` the error is on and a caret under the
    /// position, ready to print:
    ///
    /// ```text
    /// expected `and` but found `59`
    ///   recency_days between 30 59
    ///                           ^
    /// ```
    pub fn render(&self, src: &str) -> String {
        // Find the line holding character `pos` (1-based; pos may be one past
        // the end for "unexpected end of rule").
        let mut line_no = 1;
        let mut line_start_char = 0;
        for (i, c) in src.chars().enumerate() {
            if i + 1 >= self.pos {
                break;
            }
            if c == '\n' {
                line_no += 1;
                line_start_char = i + 1;
            }
        }
        let line: String = src.chars().skip(line_start_char).take_while(|&c| c != '\n').collect();
        let line = line.trim_end_matches('\r');
        let col = self.pos.saturating_sub(line_start_char + 1);
        // Keep tabs in the padding so the caret lines up however tabs render.
        let pad: String = line.chars().take(col).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let pad = format!("{pad}{}", " ".repeat(col.saturating_sub(line.chars().count())));
        let header =
            if src.contains('\n') { format!("{} (line {line_no})", self.message) } else { self.message.clone() };
        format!("{header}\n  {line}\n  {pad}^")
    }
}
