//! The tree of a parsed audience expression.
//!
//! Its own module, below both the parser ([`crate::audience`], which builds
//! it) and the count engine ([`crate::count`], which evaluates it), since
//! the parser's API evaluates through the engine.

use std::sync::Arc;

use crate::attribute::Attribute;

/// A parsed audience over the tags of one [`TagSet`](crate::TagSet) (by position).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Members with the tag at this position.
    Tag(usize),
    /// Members whose attribute matches a condition (`city = 'Shanghai'`),
    /// kept by the tag set it was parsed against
    /// ([`TagSet::attribute`](crate::TagSet::attribute)).
    Attr(Arc<Attribute>),
    /// Everyone (`true`) or no one (`false`).
    Const(bool),
    /// Members of the universe not in the operand.
    Not(Box<Node>),
    /// Members in every operand.
    And(Vec<Node>),
    /// Members in any operand.
    Or(Vec<Node>),
}
