//! What Tab offers: table names, column names and keywords from the
//! session's catalog, chosen by where the cursor is in the statement, and
//! the `rustyline` helper that asks for them.

use std::sync::Arc;

use rustyline::Helper;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;

use super::lexer::{Kind, Token, lex};
use super::{Names, TableNames};

/// Keywords offered by completion (and never taken for a table alias).
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "ALL", "ALTER", "ANALYZE", "AND", "ANY", "ARRAY_AGG", "AS", "ASC", "AVG", "BETWEEN", "BY", "CASE", "CAST",
    "COALESCE", "COPY", "COUNT", "CREATE", "CROSS", "CURRENT_DATE", "DATE", "DATE_TRUNC", "DESC", "DESCRIBE",
    "DISTINCT", "DROP", "ELSE", "END", "EXCEPT", "EXISTS", "EXPLAIN", "EXTRACT", "FALSE", "FILTER", "FIRST", "FROM",
    "FULL", "GROUP", "HAVING", "ILIKE", "IN", "INNER", "INTERSECT", "INTERVAL", "INTO", "IS", "JOIN", "LAST", "LEFT",
    "LIKE", "LIMIT", "MAX", "MIN", "NOT", "NULL", "NULLS", "OFFSET", "ON", "OR", "ORDER", "OUTER", "OVER",
    "PARTITION", "RIGHT", "SELECT", "SET", "SHOW", "SUM", "TABLE", "THEN", "TO", "TRUE", "UNION", "USING", "VALUES",
    "VIEW", "WHEN", "WHERE", "WINDOW", "WITH",
];

/// Keywords after which a table name comes.
const BEFORE_TABLE: &[&str] = &["FROM", "JOIN", "INTO", "TABLE", "UPDATE", "DESCRIBE"];

/// Keywords that start a clause: after `FROM a,` the next name is a table,
/// after `SELECT a,` a column.
const CLAUSES: &[&str] =
    &["SELECT", "FROM", "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "ON", "USING", "JOIN", "WINDOW", "VALUES", "SET"];

/// Backslash commands, as completion offers them.
const COMMANDS: &[&str] = &["\\d", "\\format", "\\help", "\\q", "\\timing"];

pub(super) fn is_keyword(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// What Tab offers at byte `pos` of `line`: the byte where the replaced
/// word starts and the candidates, matched case-insensitively on the word's
/// start. Table names after `FROM`/`JOIN` (and `\d`); after `name.` the
/// columns of that table (or alias); elsewhere the columns of the tables the
/// statement names (all columns when it names none), then keywords, in the
/// case the word was started in. Nothing inside quotes (a quoted identifier
/// is left as typed) or comments. Names that SQL would fold or cannot read
/// bare are offered quoted.
pub(crate) fn complete(line: &str, pos: usize, names: &Names) -> (usize, Vec<String>) {
    let nothing = (pos, Vec::new());
    if pos > line.len() || !line.is_char_boundary(pos) {
        return nothing;
    }
    if line.trim_start().starts_with('\\') {
        return complete_command(line, pos, names);
    }
    let tokens = lex(line);
    if tokens.iter().any(|t| matches!(t.kind, Kind::Str | Kind::Quoted | Kind::Comment) && t.holds(pos)) {
        return nothing;
    }
    let (start, word) = match tokens.iter().find(|t| t.kind == Kind::Word && t.start < pos && pos <= t.end) {
        Some(t) => (t.start, &line[t.start..pos]),
        None => (pos, ""),
    };
    if word.starts_with(|c: char| c.is_ascii_digit()) {
        return nothing;
    }
    // The statement around the cursor, without comments.
    let first = tokens.iter().rposition(|t| t.kind == Kind::Symbol(';') && t.end <= start).map_or(0, |i| i + 1);
    let statement: Vec<Token> = tokens[first..]
        .iter()
        .take_while(|t| t.kind != Kind::Symbol(';'))
        .filter(|t| t.kind != Kind::Comment)
        .copied()
        .collect();
    let before: Vec<Token> = statement.iter().filter(|t| t.end <= start).copied().collect();
    let text = |t: &Token| &line[t.start..t.end];
    let ident = |t: &Token| match t.kind {
        Kind::Word => Some((text(t).to_string(), false)),
        Kind::Quoted if t.closed => Some((text(t)[1..text(t).len() - 1].replace("\"\"", "\""), true)),
        _ => None,
    };

    // Tables the statement names, and their aliases (`members m`, `members AS m`).
    let mut named: Vec<&TableNames> = Vec::new();
    let mut aliases: Vec<(String, &TableNames)> = Vec::new();
    for (i, t) in statement.iter().enumerate() {
        let Some(table) = ident(t).filter(|_| t.start != start).and_then(|(n, q)| names.table(&n, q)) else {
            continue;
        };
        if !named.iter().any(|n| n.name == table.name) {
            named.push(table);
        }
        let mut next = statement.get(i + 1);
        if next.is_some_and(|n| n.kind == Kind::Word && text(n).eq_ignore_ascii_case("AS")) {
            next = statement.get(i + 2);
        }
        if let Some(alias) = next.filter(|n| n.start != start).and_then(ident)
            && (alias.1 || !is_keyword(&alias.0, KEYWORDS))
        {
            aliases.push((alias.0, table));
        }
    }

    let matches = |name: &str| name.to_lowercase().starts_with(&word.to_lowercase());
    let columns_of = |tables: &[&TableNames]| {
        let mut columns: Vec<&str> =
            tables.iter().flat_map(|t| t.columns.iter().map(|c| c.name.as_str())).filter(|c| matches(c)).collect();
        columns.sort_unstable();
        columns.dedup();
        columns.into_iter().map(quote).collect::<Vec<_>>()
    };
    let all: Vec<&TableNames> = names.tables.iter().collect();
    let candidates = match before.as_slice() {
        // `qualifier.word`: the columns of that table or alias (of every
        // table when the qualifier is neither).
        [.., q, dot] if dot.kind == Kind::Symbol('.') && dot.end == start => {
            let Some((qualifier, quoted)) = ident(q) else { return nothing };
            let table = names.table(&qualifier, quoted).or_else(|| {
                let same = |a: &String| if quoted { *a == qualifier } else { a.eq_ignore_ascii_case(&qualifier) };
                aliases.iter().find(|(a, _)| same(a)).map(|(_, t)| *t)
            });
            match table {
                Some(t) => columns_of(&[t]),
                None => columns_of(&all),
            }
        }
        [.., prev] if table_position(&before, prev, text) => {
            names.tables.iter().map(|t| t.name.as_str()).filter(|n| matches(n)).map(quote).collect()
        }
        _ => {
            let mut candidates = columns_of(if named.is_empty() { &all } else { &named });
            let upper = word.chars().next().is_none_or(char::is_uppercase);
            candidates.extend(
                KEYWORDS.iter().filter(|k| matches(k)).map(|k| if upper { k.to_string() } else { k.to_lowercase() }),
            );
            candidates
        }
    };
    (start, candidates)
}

/// Whether the word after `prev` names a table: right after `FROM`, `JOIN`,
/// …, or after a comma in a `FROM` list.
fn table_position<'a>(before: &[Token], prev: &Token, text: impl Fn(&Token) -> &'a str) -> bool {
    match prev.kind {
        Kind::Word => is_keyword(text(prev), BEFORE_TABLE),
        Kind::Symbol(',') => before
            .iter()
            .rev()
            .find(|t| t.kind == Kind::Word && is_keyword(text(t), CLAUSES))
            .is_some_and(|t| text(t).eq_ignore_ascii_case("FROM")),
        _ => false,
    }
}

/// A name as SQL reads it: bare when it is lower case letters, digits and
/// `_`, else in double quotes.
fn quote(name: &str) -> String {
    let bare = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

/// Completion on a backslash command line: the command, then its argument.
fn complete_command(line: &str, pos: usize, names: &Names) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[start..];
    let lower = word.to_lowercase();
    let mut words = before.split_whitespace();
    let command = words.next().unwrap_or_default();
    let offer = |options: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        options.filter(|o| o.to_lowercase().starts_with(&lower)).map(str::to_string).collect()
    };
    if before[..start].trim().is_empty() {
        return (start, offer(&mut COMMANDS.iter().copied()));
    }
    if before[..start].split_whitespace().count() > 1 {
        return (pos, Vec::new());
    }
    let candidates = match command {
        "\\d" => offer(&mut names.tables.iter().map(|t| t.name.as_str())),
        "\\format" => offer(&mut ["table", "csv", "json"].into_iter()),
        "\\timing" => offer(&mut ["on", "off"].into_iter()),
        _ => Vec::new(),
    };
    (start, candidates)
}
/// The `rustyline` helper: completion over the session's names, with the
/// earlier lines of an unfinished statement as context.
pub(super) struct Prompt {
    pub(super) names: Arc<Names>,
    pub(super) pending: String,
}

impl Completer for Prompt {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        let text = format!("{}{line}", self.pending);
        let (start, candidates) = complete(&text, self.pending.len() + pos, &self.names);
        Ok((start.saturating_sub(self.pending.len()), candidates))
    }
}

impl Hinter for Prompt {
    type Hint = String;
}

impl Highlighter for Prompt {}

impl Validator for Prompt {}

impl Helper for Prompt {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::of(&[
            ("members", &["member_key", "member_id", "gender", "tier_gold", "lifecycle_decline", "Home Store"]),
            ("member_ids", &["member_id", "member_key"]),
            ("orders", &["member_key", "order_id", "amount", "ordered_at"]),
            ("products", &["sku", "category"]),
        ])
    }

    /// Completes at the end of `line` (or at `|`, which is removed).
    fn at(line: &str) -> (usize, Vec<String>) {
        let pos = line.find('|').unwrap_or(line.len());
        complete(&line.replace('|', ""), pos, &names())
    }

    fn offered(line: &str) -> Vec<String> {
        at(line).1
    }

    #[test]
    fn table_names_after_from_and_join() {
        assert_eq!(at("SELECT * FROM mem"), (14, vec!["members".to_string(), "member_ids".to_string()]));
        assert_eq!(offered("select * from members m join o"), ["orders"]);
        assert_eq!(offered("SELECT * FROM members, pro"), ["products"]);
        assert_eq!(offered("SELECT * FROM "), ["members", "member_ids", "orders", "products"]);
        // A comma in the select list is not a FROM list.
        assert!(offered("SELECT gender, mem").contains(&"member_id".to_string()));
        assert!(!offered("SELECT gender, mem").contains(&"members".to_string()));
    }

    #[test]
    fn column_names_of_the_named_tables_and_keywords() {
        // The statement names members: its columns (tags included), no others.
        assert_eq!(offered("SELECT count(*) FROM members WHERE tier"), ["tier_gold"]);
        assert_eq!(offered("SELECT | FROM products"), {
            let mut v = vec!["category".to_string(), "sku".to_string()];
            v.extend(KEYWORDS.iter().map(|k| k.to_string()));
            v
        });
        // No table named yet: every table's columns, once each.
        assert_eq!(offered("SELECT member_"), ["member_id", "member_key"]);
        assert_eq!(offered("SELECT amount FROM orders ORD"), ["order_id", "ordered_at", "ORDER"]);
    }

    #[test]
    fn qualified_names_take_the_tables_or_aliases_columns() {
        assert_eq!(at("SELECT o.am| FROM orders o"), (9, vec!["amount".to_string()]));
        assert_eq!(offered("SELECT o.| FROM orders AS o"), ["amount", "member_key", "order_id", "ordered_at"]);
        assert_eq!(offered("SELECT products.c"), ["category"]);
        assert_eq!(offered("SELECT m.g| FROM members m JOIN orders o ON m.member_key = o.member_key"), ["gender"]);
    }

    #[test]
    fn matching_ignores_case_and_keywords_follow_the_typed_case() {
        assert_eq!(offered("SELECT * FROM MEMB"), ["members", "member_ids"]);
        assert_eq!(offered("SELECT TIER_G"), ["tier_gold"]);
        assert_eq!(offered("sel"), ["select"]);
        assert_eq!(offered("SEL"), ["SELECT"]);
        assert_eq!(offered("Sel"), ["SELECT"]);
    }

    #[test]
    fn quoted_identifiers_strings_and_comments_are_left_alone() {
        assert_eq!(at("SELECT \"mem"), (11, vec![]));
        assert_eq!(offered("SELECT * FROM members WHERE gender = 'fe"), Vec::<String>::new());
        assert_eq!(offered("SELECT 1 -- from mem"), Vec::<String>::new());
        assert_eq!(offered("SELECT /* from mem"), Vec::<String>::new());
        // After a closed quote completion works again; names that need
        // quotes are offered quoted.
        assert_eq!(offered("SELECT 'a', ho"), ["\"Home Store\""]);
        assert_eq!(offered("SELECT \"members\".gen"), ["gender"]);
        assert_eq!(offered("SELECT 12"), Vec::<String>::new());
        // A quote left open after the cursor is no name.
        assert_eq!(offered("SELECT gen| FROM \""), ["gender"]);
    }

    #[test]
    fn only_the_statement_under_the_cursor_counts() {
        // The first statement names products; the second names nothing yet.
        assert_eq!(offered("SELECT sku FROM products; SELECT cat"), ["category"]);
        // The cursor's statement names members further on.
        assert_eq!(offered("SELECT 1 FROM orders; SELECT member_| FROM members"), ["member_id", "member_key"]);
        assert_eq!(offered("SELECT amo| FROM orders; SELECT 1 FROM products"), ["amount"]);
    }

    #[test]
    fn commands_complete_their_names_and_arguments() {
        assert_eq!(at("\\ti"), (0, vec!["\\timing".to_string()]));
        assert_eq!(offered("\\d"), ["\\d"]);
        assert_eq!(at("\\d ord"), (3, vec!["orders".to_string()]));
        assert_eq!(offered("\\format c"), ["csv"]);
        assert_eq!(offered("\\format csv x"), Vec::<String>::new());
    }

    #[test]
    fn names_needing_quotes_are_quoted() {
        assert_eq!(quote("tier_gold"), "tier_gold");
        assert_eq!(quote("_x1"), "_x1");
        assert_eq!(quote("Home Store"), "\"Home Store\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote("1st"), "\"1st\"");
    }
}
