//! The tree of a parsed audience expression.
//!
//! Its own module, below both the parser ([`crate::audience`], which builds
//! it) and the count engine ([`crate::count`], which evaluates it), since
//! the parser's API evaluates through the engine.

/// A parsed audience over the tags of one [`TagSet`](crate::TagSet) (by position).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Members with the tag at this position.
    Tag(usize),
    /// Everyone (`true`) or no one (`false`).
    Const(bool),
    /// Members of the universe not in the operand.
    Not(Box<Node>),
    /// Members in every operand.
    And(Vec<Node>),
    /// Members in any operand.
    Or(Vec<Node>),
}
