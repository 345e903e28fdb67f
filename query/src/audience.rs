//! Audience expressions: tag names combined with `AND`, `OR`, `NOT` and
//! parentheses, evaluated as roaring-bitmap algebra.
//!
//! `tier_gold AND category_lover_beauty AND NOT (dormant_60_90 OR in_experiment)`
//! is what a marketer types; the same tree is what SQL filters on tag
//! columns are translated into (see `members`), so the CLI, `audience('…')`
//! and `WHERE tier_gold AND NOT …` share one evaluator. Keywords are
//! case-insensitive, `NOT` binds tighter than `AND`, which binds tighter
//! than `OR`. Errors give the position with a caret and, for an unknown
//! tag, the closest known name.

use std::borrow::Cow;
use std::fmt;

use roaring::RoaringBitmap;

use crate::tagset::TagSet;

/// A parsed audience over the tags of one [`TagSet`] (by position).
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

/// A parse error with the position (0-based, in characters) it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct AudienceError {
    /// The expression as given.
    pub text: String,
    /// Character offset the error points at.
    pub position: usize,
    /// How many characters the caret underlines.
    pub width: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for AudienceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (at position {})", self.message, self.position + 1)?;
        writeln!(f, "  {}", self.text)?;
        write!(f, "  {}{}", " ".repeat(self.position), "^".repeat(self.width.max(1)))
    }
}

impl std::error::Error for AudienceError {}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    And,
    Or,
    Not,
    Open,
    Close,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("`{w}`"),
            Token::And => "AND".into(),
            Token::Or => "OR".into(),
            Token::Not => "NOT".into(),
            Token::Open => "`(`".into(),
            Token::Close => "`)`".into(),
            Token::End => "the end".into(),
        }
    }
}

/// Parses `text` against the tags of `tags`.
pub fn parse(text: &str, tags: &TagSet) -> Result<Node, AudienceError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { text, tokens, at: 0, tags };
    if matches!(p.peek().0, Token::End) {
        return Err(p.error(0, 0, "the audience is empty: give tag names joined by AND, OR, NOT".into()));
    }
    let node = p.or()?;
    match p.peek() {
        (Token::End, _, _) => Ok(node),
        (Token::Close, pos, w) => Err(p.error(pos, w, "unbalanced `)`".into())),
        (t, pos, w) => {
            let message = format!("expected AND, OR or the end, found {}", t.describe());
            Err(p.error(pos, w, message))
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize, usize)>, AudienceError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let token = match c {
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            c if c.is_alphanumeric() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                match word.to_ascii_uppercase().as_str() {
                    "AND" => Token::And,
                    "OR" => Token::Or,
                    "NOT" => Token::Not,
                    _ => Token::Word(word),
                }
            }
            other => {
                let hint = match other {
                    '&' => "; write AND",
                    '|' => "; write OR",
                    '!' | '-' => "; write NOT",
                    '\'' | '"' => "; tag names are written without quotes",
                    _ => "",
                };
                return Err(AudienceError {
                    text: text.into(),
                    position: start,
                    width: 1,
                    message: format!("unexpected character `{other}`{hint}"),
                });
            }
        };
        out.push((token, start, i - start));
    }
    out.push((Token::End, chars.len(), 1));
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(Token, usize, usize)>,
    at: usize,
    tags: &'a TagSet,
}

impl Parser<'_> {
    fn peek(&self) -> (Token, usize, usize) {
        self.tokens[self.at].clone()
    }

    fn error(&self, position: usize, width: usize, message: String) -> AudienceError {
        AudienceError { text: self.text.into(), position, width, message }
    }

    fn or(&mut self) -> Result<Node, AudienceError> {
        self.chain(Token::Or, Self::and, Node::Or)
    }

    fn and(&mut self) -> Result<Node, AudienceError> {
        self.chain(Token::And, Self::unary, Node::And)
    }

    /// `operand (op operand)*`, one node when there is no `op`.
    fn chain(
        &mut self,
        op: Token,
        operand: fn(&mut Self) -> Result<Node, AudienceError>,
        join: fn(Vec<Node>) -> Node,
    ) -> Result<Node, AudienceError> {
        let mut items = vec![operand(self)?];
        while self.peek().0 == op {
            self.at += 1;
            items.push(operand(self)?);
        }
        Ok(if items.len() == 1 { items.pop().expect("one") } else { join(items) })
    }

    fn unary(&mut self) -> Result<Node, AudienceError> {
        let (token, pos, width) = self.peek();
        self.at += 1;
        match token {
            Token::Not => Ok(Node::Not(Box::new(self.unary()?))),
            Token::Open => {
                let inner = self.or()?;
                match self.peek() {
                    (Token::Close, _, _) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    (t, p, w) => {
                        let message =
                            format!("expected `)` to close the `(` at position {}, found {}", pos + 1, t.describe());
                        Err(self.error(p, w, message))
                    }
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("true") => Ok(Node::Const(true)),
            Token::Word(w) if w.eq_ignore_ascii_case("false") => Ok(Node::Const(false)),
            Token::Word(w) => match self.tags.position(&w) {
                Some(i) => Ok(Node::Tag(i)),
                None => {
                    let hint = self.tags.suggest(&w).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                    let snapshot = match self.tags.snapshot {
                        Some(v) => format!(" in snapshot {v}"),
                        None => " (the warehouse has not been tagged yet: run `taglake tag`)".into(),
                    };
                    Err(self.error(pos, width, format!("unknown tag `{w}`{snapshot}{hint}")))
                }
            },
            t => Err(self.error(pos, width, format!("expected a tag name, NOT or `(`, found {}", t.describe()))),
        }
    }
}

/// The members an audience selects, within the universe of `tags`. Fails
/// only when a stored bitmap cannot be read.
pub fn evaluate(node: &Node, tags: &TagSet) -> crate::Result<RoaringBitmap> {
    Ok(eval(node, tags)?.into_owned())
}

fn eval<'a>(node: &Node, tags: &'a TagSet) -> crate::Result<Cow<'a, RoaringBitmap>> {
    Ok(match node {
        Node::Tag(i) => Cow::Borrowed(tags.bitmap(*i)?),
        Node::Const(true) => Cow::Borrowed(tags.universe()?),
        Node::Const(false) => Cow::Owned(RoaringBitmap::new()),
        Node::Not(inner) => Cow::Owned(tags.universe()? - eval(inner, tags)?.as_ref()),
        Node::And(items) => {
            // Intersect the positive operands smallest first, then subtract
            // the negated ones: `NOT x` is never materialised inside an AND.
            let mut positive: Vec<Cow<'_, RoaringBitmap>> = Vec::new();
            let mut negative = Vec::new();
            for item in items {
                match item {
                    Node::Not(inner) => negative.push(inner.as_ref()),
                    other => positive.push(eval(other, tags)?),
                }
            }
            positive.sort_by_key(|b| b.len());
            let mut acc = match positive.first() {
                Some(first) => first.as_ref().clone(),
                None => tags.universe()?.clone(),
            };
            for b in positive.iter().skip(1) {
                if acc.is_empty() {
                    break;
                }
                acc &= b.as_ref();
            }
            for n in negative {
                if acc.is_empty() {
                    break;
                }
                acc -= eval(n, tags)?.as_ref();
            }
            Cow::Owned(acc)
        }
        Node::Or(items) => {
            let mut acc = RoaringBitmap::new();
            for item in items {
                acc |= eval(item, tags)?.as_ref();
            }
            Cow::Owned(acc)
        }
    })
}

/// `n` members drawn uniformly from `keys`, the same for the same seed:
/// the `n` keys with the smallest seeded hash, in key order.
pub fn sample(keys: &RoaringBitmap, n: usize, seed: u64) -> Vec<u32> {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finaliser: every input bit affects every output bit.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let salt = mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
    let mut heap = std::collections::BinaryHeap::with_capacity(n + 1);
    for k in keys {
        let h = (mix(salt ^ u64::from(k)), k);
        if heap.len() < n {
            heap.push(h);
        } else if heap.peek().is_some_and(|top| h < *top) {
            heap.pop();
            heap.push(h);
        }
    }
    let mut out: Vec<u32> = heap.into_iter().map(|(_, k)| k).collect();
    out.sort_unstable();
    out
}

/// Writes a node back as audience text (tag names, minimal parentheses).
pub fn display(node: &Node, tags: &TagSet) -> String {
    fn go(node: &Node, tags: &TagSet, parent: u8, out: &mut String) {
        // Binding strength: OR 1, AND 2, NOT and atoms 3.
        match node {
            Node::Tag(i) => out.push_str(&tags.tag(*i).name),
            Node::Const(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Not(inner) => {
                out.push_str("NOT ");
                go(inner, tags, 3, out);
            }
            Node::And(items) | Node::Or(items) => {
                let (own, sep) = if matches!(node, Node::And(_)) { (2, " AND ") } else { (1, " OR ") };
                if own < parent {
                    out.push('(');
                }
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        out.push_str(sep);
                    }
                    go(item, tags, own, out);
                }
                if own < parent {
                    out.push(')');
                }
            }
        }
    }
    let mut out = String::new();
    go(node, tags, 0, &mut out);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tagset::Tag;
    use proptest::prelude::*;

    /// Five tags over a universe of 0..200 with overlapping patterns.
    pub(crate) fn small_tags() -> TagSet {
        let universe: RoaringBitmap = (0..200).collect();
        let tag = |name: &str, family: &str, f: &dyn Fn(u32) -> bool| {
            Tag::new(name, family, (0..200).filter(|&k| f(k)).collect())
        };
        TagSet::new(
            Some(1),
            vec![
                tag("tier_gold", "tier", &|k| k % 5 == 0),
                tag("tier_regular", "tier", &|k| k % 5 != 0),
                tag("category_lover_beauty", "category_lover", &|k| k % 3 == 0),
                tag("dormant_60_90", "dormant", &|k| k % 7 < 2),
                tag("in_experiment", "experiment", &|k| k >= 180),
            ],
            universe,
        )
    }

    fn err(text: &str) -> String {
        parse(text, &small_tags()).unwrap_err().to_string()
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let t = small_tags();
        let n = parse("tier_gold or category_lover_beauty AND NOT dormant_60_90", &t).unwrap();
        assert_eq!(n, Node::Or(vec![Node::Tag(0), Node::And(vec![Node::Tag(2), Node::Not(Box::new(Node::Tag(3)))])]));
        assert_eq!(display(&n, &t), "tier_gold OR category_lover_beauty AND NOT dormant_60_90");
        let p = parse("(tier_gold OR category_lover_beauty) AND NOT (dormant_60_90 OR in_experiment)", &t).unwrap();
        assert_eq!(display(&p, &t), "(tier_gold OR category_lover_beauty) AND NOT (dormant_60_90 OR in_experiment)");
    }

    #[test]
    fn errors_point_at_the_problem() {
        let caret = format!("  {}{}", " ".repeat(14), "^".repeat(8));
        assert_eq!(
            err("tier_gold AND tier_gld"),
            format!(
                "unknown tag `tier_gld` in snapshot 1; did you mean `tier_gold`? (at position 15)\n  \
                 tier_gold AND tier_gld\n{caret}"
            )
        );
        assert!(err("tier_gold AND").starts_with("expected a tag name, NOT or `(`, found the end (at position 14)"));
        assert!(err("(tier_gold").starts_with("expected `)` to close the `(` at position 1, found the end"));
        assert!(err("tier_gold)").starts_with("unbalanced `)` (at position 10)"));
        assert!(err("tier_gold tier_regular").starts_with("expected AND, OR or the end, found `tier_regular`"));
        assert!(err("tier_gold && x").starts_with("unexpected character `&`; write AND (at position 11)"));
        assert!(err("'tier_gold'").contains("written without quotes"));
        assert!(err("  ").starts_with("the audience is empty"));
    }

    #[test]
    fn samples_are_seeded_uniform_and_within_the_audience() {
        let keys: RoaringBitmap = (0..10_000).filter(|k| k % 3 == 0).collect();
        let a = sample(&keys, 50, 7);
        assert_eq!(a.len(), 50);
        assert!(a.iter().all(|k| keys.contains(*k)) && a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample(&keys, 50, 7));
        assert_ne!(a, sample(&keys, 50, 8));
        assert_eq!(sample(&keys, 100_000, 1).len(), keys.len() as usize);
        // Uniform: a 1,000-member sample splits the key range about evenly.
        let low = sample(&keys, 1000, 3).iter().filter(|&&k| k < 5_000).count();
        assert!((430..=570).contains(&low), "{low}");
    }

    #[test]
    fn an_untagged_warehouse_says_so() {
        let t = TagSet::new(None, vec![], RoaringBitmap::new());
        assert!(parse("tier_gold", &t).unwrap_err().message.contains("run `taglake tag`"));
    }

    /// Naive per-member evaluation: the reference for the bitmap algebra.
    fn member_has(node: &Node, t: &TagSet, k: u32) -> bool {
        match node {
            Node::Tag(i) => t.bitmap(*i).unwrap().contains(k),
            Node::Const(b) => *b,
            Node::Not(n) => !member_has(n, t, k),
            Node::And(v) => v.iter().all(|n| member_has(n, t, k)),
            Node::Or(v) => v.iter().any(|n| member_has(n, t, k)),
        }
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![(0usize..5).prop_map(Node::Tag), any::<bool>().prop_map(Node::Const)];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|n| Node::Not(Box::new(n))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
                prop::collection::vec(inner, 2..4).prop_map(Node::Or),
            ]
        })
    }

    proptest! {
        #[test]
        fn bitmap_algebra_equals_a_per_member_loop(n in node()) {
            let t = small_tags();
            let want: RoaringBitmap = t.universe().unwrap().iter().filter(|&k| member_has(&n, &t, k)).collect();
            prop_assert_eq!(evaluate(&n, &t).unwrap(), want);
            // Printing and parsing back gives the same members.
            let again = parse(&display(&n, &t), &t).unwrap();
            prop_assert_eq!(evaluate(&again, &t).unwrap(), evaluate(&n, &t).unwrap());
        }
    }
}
