//! The audience builder's model: blocks of conditions, the expression
//! they make, and the way back from an expression to blocks.
//!
//! A marketer builds an audience as a list of [`Block`]s: "has all of",
//! "has any of", "has none of" a few tags, a condition on a member
//! attribute ("whose city is in Shanghai, Beijing"), or an expression
//! typed by hand.
//! Each block after the first is joined to everything before it by AND or
//! OR, read left to right, so the running total after each block is a
//! funnel: `((b1 op2 b2) op3 b3) …`. The blocks are one audience
//! expression ([`expression`]), written by `taglake_query::audience::display`
//! with the fewest parentheses, and an expression in that shape reads back
//! into the same kind of blocks ([`blocks_of`]); any other expression
//! becomes a single expression block. Every count is
//! `taglake_query::audience::count` over the parsed tree, the function
//! `taglake audience count` calls, and every error is the parser's
//! message, the text the CLI prints.

use taglake_query::TagSet;
use taglake_query::attribute::{self, Arity, Cmp};
use taglake_query::audience::{self, AudienceError, Node};

/// Most blocks one audience may have.
pub const MAX_BLOCKS: usize = 30;

/// Most characters an expression (or one block's text) may have: an
/// audience typed or built by a person is far shorter.
pub const MAX_EXPRESSION: usize = 10_000;

/// What a block asks of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has every one of the tags.
    All,
    /// Has at least one of the tags.
    Any,
    /// Has none of the tags.
    None,
    /// A condition on a member attribute ([`Condition`]).
    Attr,
    /// Matches an audience expression.
    Expr,
}

impl Kind {
    /// Every kind, in the order the form offers them.
    pub const ALL: [Kind; 5] = [Kind::All, Kind::Any, Kind::None, Kind::Attr, Kind::Expr];

    /// The form value.
    pub fn code(self) -> &'static str {
        match self {
            Kind::All => "all",
            Kind::Any => "any",
            Kind::None => "none",
            Kind::Attr => "attr",
            Kind::Expr => "expr",
        }
    }

    /// From a form value (anything unknown is "all").
    pub fn from_code(code: &str) -> Kind {
        match code {
            "any" => Kind::Any,
            "none" => Kind::None,
            "attr" => Kind::Attr,
            "expr" => Kind::Expr,
            _ => Kind::All,
        }
    }

    /// How the page labels it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::All => "has all of",
            Kind::Any => "has any of",
            Kind::None => "has none of",
            Kind::Attr => "whose attribute",
            Kind::Expr => "matches the expression",
        }
    }
}

/// How a block joins everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Members of the blocks before who are also in this one.
    And,
    /// Members of the blocks before, and this block's too.
    Or,
}

impl Join {
    /// The form value, which is also the keyword.
    pub fn code(self) -> &'static str {
        match self {
            Join::And => "AND",
            Join::Or => "OR",
        }
    }

    /// From a form value (anything unknown is AND).
    pub fn from_code(code: &str) -> Join {
        if code.eq_ignore_ascii_case("or") { Join::Or } else { Join::And }
    }
}

/// One block: how it joins the blocks before it (ignored on the first),
/// what it asks, and its text: tag names (separated by spaces or commas),
/// for [`Kind::Expr`] an expression, and for [`Kind::Attr`] the
/// [`Condition`] its fields make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// How it joins the blocks before it.
    pub join: Join,
    /// What it asks.
    pub kind: Kind,
    /// Tag names, or the expression.
    pub text: String,
    /// The condition of a [`Kind::Attr`] block.
    pub condition: Condition,
}

/// A condition on a member attribute as the form holds it: the column, the
/// operator's symbol and the values as typed (`Shanghai, Beijing`; quotes
/// optional).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    /// A `members` column.
    pub column: String,
    /// An operator's symbol (`=`, `IN`, `IS NULL`, …).
    pub op: String,
    /// The values as typed.
    pub value: String,
}

impl Condition {
    /// The operator (`=` when the symbol is unknown).
    pub fn cmp(&self) -> Cmp {
        Cmp::from_symbol(&self.op).unwrap_or(Cmp::Eq)
    }

    /// As audience text: the values quoted as the column needs (text and
    /// dates in quotes unless typed with them, integers bare), lists split
    /// at commas outside quotes. The parser checks the rest.
    pub fn expression(&self) -> String {
        let column = self.column.trim();
        let cmp = self.cmp();
        let quoted = attribute::column(column).is_ok_and(attribute::quoted);
        let write = |v: &str| {
            let v = v.trim();
            if !quoted || v.starts_with('\'') { v.to_string() } else { attribute::quote(v) }
        };
        let values: Vec<String> = match cmp.arity() {
            Arity::None => Vec::new(),
            Arity::One => vec![write(&self.value)],
            Arity::List => split_values(&self.value).iter().map(|v| write(v)).collect(),
        };
        attribute::write(column, cmp, &values)
    }

    /// The form's fields for a parsed condition: values without their
    /// quotes unless a quote or comma in one needs them.
    fn of(c: &attribute::Condition) -> Condition {
        let values: Vec<String> = c
            .values_text()
            .into_iter()
            .map(|v| match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(inner) if !inner.contains(['\'', ',']) && inner.trim() == inner && !inner.is_empty() => {
                    inner.to_string()
                }
                _ => v,
            })
            .collect();
        Condition { column: c.column().to_string(), op: c.cmp().symbol().to_string(), value: values.join(", ") }
    }
}

/// The values typed in a list field, split at commas outside quotes.
fn split_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
}

impl Block {
    /// A block of tag names.
    pub fn tags(join: Join, kind: Kind, names: &[&str]) -> Block {
        Block { join, kind, text: names.join(" "), condition: Condition::default() }
    }

    /// An expression block.
    pub fn expr(join: Join, text: String) -> Block {
        Block { join, kind: Kind::Expr, text, condition: Condition::default() }
    }

    /// A block of one condition on a member attribute.
    pub fn attribute(join: Join, condition: Condition) -> Block {
        Block { join, kind: Kind::Attr, text: String::new(), condition }
    }

    /// The tag names of a tag block.
    pub fn names(&self) -> Vec<&str> {
        self.text.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect()
    }

    /// Whether the block asks nothing yet (it is left out).
    pub fn is_empty(&self) -> bool {
        match self.kind {
            Kind::Attr => {
                let c = &self.condition;
                c.column.trim().is_empty() || (c.cmp().arity() != Arity::None && c.value.trim().is_empty())
            }
            _ => self.text.trim().is_empty(),
        }
    }

    /// The block alone as audience text.
    pub fn expression(&self) -> String {
        let names = self.names();
        match self.kind {
            Kind::Expr => self.text.clone(),
            Kind::Attr => self.condition.expression(),
            Kind::All => names.join(" AND "),
            Kind::Any => names.join(" OR "),
            Kind::None if names.len() == 1 => format!("NOT {}", names[0]),
            Kind::None => format!("NOT ({})", names.join(" OR ")),
        }
    }

    /// The block parsed against `tags`: the CLI's parser and its errors.
    pub fn parse(&self, tags: &TagSet) -> Result<Node, String> {
        let text = self.expression();
        check_length(&text)?;
        audience::parse(&text, tags).map_err(|e| e.to_string())
    }
}

/// An error when `text` is longer than [`MAX_EXPRESSION`].
pub fn check_length(text: &str) -> Result<(), String> {
    let n = text.chars().count();
    if n > MAX_EXPRESSION {
        return Err(format!("the expression has {n} characters; the studio takes at most {MAX_EXPRESSION}"));
    }
    Ok(())
}

/// Parses a whole expression as `taglake audience count` does.
pub fn parse(text: &str, tags: &TagSet) -> Result<Node, String> {
    check_length(text)?;
    audience::parse(text, tags).map_err(|e: AudienceError| e.to_string())
}

/// `running op block`, flattening chains of the same operator.
fn join(running: Option<Node>, op: Join, block: Node) -> Node {
    let Some(running) = running else { return block };
    match (op, running) {
        (Join::And, Node::And(mut items)) => {
            items.push(block);
            Node::And(items)
        }
        (Join::Or, Node::Or(mut items)) => {
            items.push(block);
            Node::Or(items)
        }
        (Join::And, r) => Node::And(vec![r, block]),
        (Join::Or, r) => Node::Or(vec![r, block]),
    }
}

/// One step of the funnel: a block's own tree and the audience of all the
/// blocks up to it.
#[derive(Debug, Clone)]
pub struct Step {
    /// The block's position among all blocks.
    pub block: usize,
    /// The block alone.
    pub own: Node,
    /// The blocks up to this one, folded left to right.
    pub running: Node,
}

/// Each non-empty block parsed, and the running audience after each, or
/// the errors by block position.
pub fn steps(blocks: &[Block], tags: &TagSet) -> Result<Vec<Step>, Vec<(usize, String)>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut running: Option<Node> = None;
    for (i, b) in blocks.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
        match b.parse(tags) {
            Ok(own) => {
                let r = join(running.take(), b.join, own.clone());
                running = Some(r.clone());
                out.push(Step { block: i, own, running: r });
            }
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The blocks as one audience expression (`None` when every block is empty).
pub fn expression(blocks: &[Block], tags: &TagSet) -> Result<Option<String>, Vec<(usize, String)>> {
    Ok(steps(blocks, tags)?.last().map(|s| audience::display(&s.running, tags)))
}

/// The tag names of `items` when every one is a tag.
fn all_tags<'a>(items: &[Node], tags: &'a TagSet) -> Option<Vec<&'a str>> {
    items
        .iter()
        .map(|n| match n {
            Node::Tag(t) => Some(tags.tag(*t).name.as_str()),
            _ => None,
        })
        .collect()
}

/// One node as a single block joined by `op`: a tag list when it has a
/// block's shape, else an expression block.
fn single(node: &Node, op: Join, tags: &TagSet) -> Block {
    match node {
        Node::Tag(t) => Block::tags(op, Kind::All, &[&tags.tag(*t).name]),
        Node::Attr(a) => Block::attribute(op, Condition::of(a.condition())),
        Node::And(items) => match all_tags(items, tags) {
            Some(names) => Block::tags(op, Kind::All, &names),
            None => Block::expr(op, audience::display(node, tags)),
        },
        Node::Or(items) => match all_tags(items, tags) {
            Some(names) => Block::tags(op, Kind::Any, &names),
            None => Block::expr(op, audience::display(node, tags)),
        },
        Node::Not(inner) => match inner.as_ref() {
            Node::Tag(t) => Block::tags(op, Kind::None, &[&tags.tag(*t).name]),
            Node::Or(items) => match all_tags(items, tags) {
                Some(names) => Block::tags(op, Kind::None, &names),
                None => Block::expr(op, audience::display(node, tags)),
            },
            _ => Block::expr(op, audience::display(node, tags)),
        },
        Node::Const(_) => Block::expr(op, audience::display(node, tags)),
    }
}

/// Blocks for an expression: the left-to-right fold the builder writes
/// reads back as blocks (runs of tags and of `NOT tag` inside an AND merge
/// into one "all of" / "none of" block); anything else is one expression
/// block. The blocks always select the same members as `node`.
pub fn blocks_of(node: &Node, tags: &TagSet) -> Vec<Block> {
    let items = match node {
        Node::And(items) | Node::Or(items) => items,
        other => return vec![single(other, Join::And, tags)],
    };
    let op = if matches!(node, Node::And(_)) { Join::And } else { Join::Or };
    // The first item is everything before the second: it may be a fold itself.
    let mut out = match &items[0] {
        first @ (Node::And(_) | Node::Or(_)) if all_tags(std::slice::from_ref(first), tags).is_none() => {
            let inner = blocks_of(first, tags);
            if inner.len() > 1 { inner } else { vec![single(first, Join::And, tags)] }
        }
        first => vec![single(first, Join::And, tags)],
    };
    for item in &items[1..] {
        let next = single(item, op, tags);
        // Inside an AND, `a AND b` is one "all of" block and `NOT a AND NOT b` one "none of" block.
        let first = out.len() == 1;
        let last = out.last_mut().expect("one block at least");
        // Only into a block joined by AND (or the first): `x OR y` then `AND z` is not `x OR (y AND z)`.
        let joined_by_and = last.join == Join::And || first;
        if op == Join::And && joined_by_and && next.kind == last.kind && matches!(next.kind, Kind::All | Kind::None) {
            last.text = format!("{} {}", last.text, next.text);
        } else {
            out.push(next);
        }
    }
    let single_tags = out.iter().all(|b| b.kind == Kind::All && b.names().len() == 1);
    if op == Join::Or && out.len() > 1 && single_tags && out[1..].iter().all(|b| b.join == Join::Or) {
        // `a OR b OR c`: one "any of" block reads better than three.
        let names: Vec<String> = out.iter().map(|b| b.text.clone()).collect();
        return vec![Block::tags(Join::And, Kind::Any, &names.iter().map(String::as_str).collect::<Vec<_>>())];
    }
    out
}

#[cfg(test)]
mod tests {
    use roaring::RoaringBitmap;
    use taglake_query::tagset::Tag;

    use super::*;

    /// Six tags over members 0..100: t0 holds multiples of 2, t1 of 3, …
    fn tags() -> TagSet {
        let names = ["tier_gold", "beauty", "dormant", "snacks", "toys", "vip"];
        let tags = names
            .iter()
            .enumerate()
            .map(|(i, n)| Tag::new(*n, "f", (0..100u32).filter(|k| k % (i as u32 + 2) == 0).collect::<RoaringBitmap>()))
            .collect();
        TagSet::new(Some(3), tags, (0..100u32).collect())
    }

    fn count(text: &str, tags: &TagSet) -> u64 {
        audience::count(&audience::parse(text, tags).unwrap(), tags).unwrap()
    }

    #[test]
    fn blocks_make_the_expression_a_marketer_would_write() {
        let t = tags();
        let blocks = [
            Block::tags(Join::And, Kind::All, &["tier_gold", "beauty"]),
            Block::tags(Join::And, Kind::None, &["dormant"]),
            Block::tags(Join::Or, Kind::Any, &["snacks", "toys"]),
            Block::expr(Join::And, "vip or not vip".into()),
        ];
        let expr = expression(&blocks, &t).unwrap().unwrap();
        assert_eq!(expr, "(tier_gold AND beauty AND NOT dormant OR snacks OR toys) AND (vip OR NOT vip)");
        let steps = steps(&blocks, &t).unwrap();
        let funnel: Vec<u64> = steps.iter().map(|s| audience::count(&s.running, &t).unwrap()).collect();
        assert_eq!(funnel[0], count("tier_gold AND beauty", &t));
        assert_eq!(funnel[1], count("tier_gold AND beauty AND NOT dormant", &t));
        assert_eq!(funnel[2], count("(tier_gold AND beauty AND NOT dormant) OR snacks OR toys", &t));
        assert_eq!(funnel[3], count(&expr, &t));
    }

    #[test]
    fn an_expression_in_the_builders_shape_reads_back_into_blocks() {
        let t = tags();
        let read = |text: &str| blocks_of(&audience::parse(text, &t).unwrap(), &t);
        assert_eq!(
            read("tier_gold AND beauty AND NOT dormant"),
            [
                Block::tags(Join::And, Kind::All, &["tier_gold", "beauty"]),
                Block::tags(Join::And, Kind::None, &["dormant"])
            ]
        );
        assert_eq!(read("snacks or toys"), [Block::tags(Join::And, Kind::Any, &["snacks", "toys"])]);
        assert_eq!(
            read("tier_gold AND NOT (dormant OR vip) AND (snacks OR toys)"),
            [
                Block::tags(Join::And, Kind::All, &["tier_gold"]),
                Block::tags(Join::And, Kind::None, &["dormant", "vip"]),
                Block::tags(Join::And, Kind::Any, &["snacks", "toys"]),
            ]
        );
        assert_eq!(
            read("(tier_gold AND beauty) OR vip"),
            [Block::tags(Join::And, Kind::All, &["tier_gold", "beauty"]), Block::tags(Join::Or, Kind::All, &["vip"])]
        );
        // Not the builder's shape: one expression block, the same members.
        let odd = read("NOT (tier_gold AND beauty)");
        assert_eq!(odd, [Block::expr(Join::And, "NOT (tier_gold AND beauty)".into())]);
    }

    #[test]
    fn blocks_read_back_select_the_same_members() {
        let t = tags();
        for text in [
            "tier_gold AND beauty AND NOT dormant",
            "(tier_gold AND beauty AND NOT dormant OR snacks) AND vip",
            "tier_gold OR beauty AND dormant",
            "NOT NOT vip",
            "((snacks))",
            "true AND vip",
            "NOT tier_gold AND NOT beauty AND toys",
        ] {
            let blocks = blocks_of(&audience::parse(text, &t).unwrap(), &t);
            let back = expression(&blocks, &t).unwrap().unwrap();
            assert_eq!(count(&back, &t), count(text, &t), "{text} → {blocks:?} → {back}");
            // And a second round trip is stable.
            let again = blocks_of(&audience::parse(&back, &t).unwrap(), &t);
            assert_eq!(expression(&again, &t).unwrap().unwrap(), back, "{text}");
        }
    }

    #[test]
    fn errors_are_the_clis_and_name_their_block() {
        let t = tags();
        let blocks = [
            Block::tags(Join::And, Kind::All, &["tier_gold"]),
            Block::tags(Join::And, Kind::None, &["dormat"]),
            Block::tags(Join::And, Kind::All, &["   "]),
        ];
        let errors = steps(&blocks, &t).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert_eq!(errors[0].1, audience::parse("NOT dormat", &t).unwrap_err().to_string());
        assert!(
            errors[0].1.starts_with("unknown tag `dormat` in snapshot 3; did you mean `dormant`?"),
            "{}",
            errors[0].1
        );
        let long = "vip OR ".repeat(2000) + "vip";
        assert!(parse(&long, &t).unwrap_err().contains("at most 10000"));
        assert_eq!(expression(&[], &t).unwrap(), None);
    }

    #[test]
    fn attribute_blocks_quote_their_values_and_read_back() {
        let t = tags();
        let cond = |column: &str, op: &str, value: &str| Condition {
            column: column.into(),
            op: op.into(),
            value: value.into(),
        };
        let blocks = [
            Block::tags(Join::And, Kind::All, &["tier_gold"]),
            Block::attribute(Join::And, cond("city", "IN", "Shanghai, 'a, b', it's")),
            Block::attribute(Join::Or, cond("points_balance", ">=", " 1000 ")),
            Block::attribute(Join::And, cond("birthday", "IS NULL", "ignored")),
            Block::attribute(Join::And, cond("registered_at", "<", "2024-03-01")),
        ];
        assert_eq!(blocks[2].expression(), "points_balance >= 1000");
        let expr = expression(&blocks, &t).unwrap().unwrap();
        assert_eq!(
            expr,
            "(tier_gold AND city IN ('Shanghai', 'a, b', 'it''s') OR points_balance >= 1000) AND birthday IS NULL \
             AND registered_at < '2024-03-01'"
        );
        let back = blocks_of(&audience::parse(&expr, &t).unwrap(), &t);
        assert_eq!(back[1].condition, cond("city", "IN", "Shanghai, 'a, b', 'it''s'"));
        assert_eq!(expression(&back, &t).unwrap().unwrap(), expr);
        // Half-filled conditions are left out; a wrong one is the parser's error.
        assert!(Block::attribute(Join::And, cond("city", "=", " ")).is_empty());
        assert!(!Block::attribute(Join::And, cond("city", "IS NOT NULL", "")).is_empty());
        let bad = Block::attribute(Join::And, cond("points_balance", ">", "many"));
        assert!(bad.parse(&t).unwrap_err().contains("is an integer"));
    }
}
