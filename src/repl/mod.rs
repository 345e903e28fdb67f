//! `taglake sql` without a statement: the interactive SQL prompt.
//!
//! A module of its own because a prompt is more than one statement run in a
//! loop: it reads lines until a `;` ends a statement (outside quotes and
//! comments), keeps a history file, completes names with Tab and has
//! backslash commands (`\d`, `\format`, `\timing`, …). The parts that decide
//! something — [`split`] (where statements end) and [`complete`] (what Tab
//! offers) — are plain functions over text and a [`Names`] catalog, tested
//! below without a terminal; the rest is wiring to `rustyline` and to
//! [`crate::sql::render`], which prints results as the one-shot command does.
//!
//! With standard input not a terminal (`taglake sql < script.sql`, or the
//! tests' pipes) the same lines are read without prompt or history, and the
//! command fails at the end if any statement or command failed.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt64Array};
use clap::ValueEnum;
use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use rustyline::completion::Completer;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use taglake_storage::Warehouse;

use crate::sql::{SqlArgs, SqlFormat};

const PROMPT: &str = "taglake> ";
const CONTINUE: &str = "    ...> ";

/// Runs the prompt (or reads standard input) over the warehouse of `a`.
pub async fn run(a: SqlArgs) -> Result<()> {
    if a.out.is_some() {
        bail!("--out needs a statement; in the prompt, COPY (SELECT …) TO 'file' writes a result to a file");
    }
    if a.format == SqlFormat::Parquet {
        bail!("--format parquet needs a statement and --out FILE; the prompt prints table, csv or json");
    }
    let wh = Warehouse::open(&a.wh.warehouse)?;
    let (ctx, _) = crate::distributed::session(&wh, &a.cluster).await?;
    let names = Arc::new(Names::read(&ctx).await?);
    let interactive = std::io::stdin().is_terminal();
    let mut repl = Repl { ctx, names, format: a.format, timing: false, interactive, run: 0, failed: 0 };
    if !interactive {
        return repl.piped().await;
    }
    println!(
        "taglake sql over {} ({}). End statements with ;  \\help for help, \\q to quit.",
        wh.root().display(),
        match repl.names.tables.len() {
            0 => "no tables yet".to_string(),
            n => format!("{n} table{}", if n == 1 { "" } else { "s" }),
        }
    );
    repl.interactive(a.history.or_else(default_history)).await
}

/// `$HOME/.taglake_history`, or no history file without a home.
fn default_history() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".taglake_history"))
}

// ── Names: what the session's catalog holds ───────────────────────────────

/// The tables of a session and their columns, for completion and `\d`.
#[derive(Default, Debug)]
pub(crate) struct Names {
    tables: Vec<TableNames>,
}

#[derive(Debug)]
struct TableNames {
    name: String,
    columns: Vec<Column>,
}

#[derive(Debug)]
struct Column {
    name: String,
    data_type: String,
    nullable: bool,
}

impl Names {
    /// Reads every table of the session's default schema (the warehouse
    /// tables, and views made in the session) with its columns, so tag
    /// columns appear as soon as a table carries them.
    async fn read(ctx: &SessionContext) -> Result<Names> {
        let state = ctx.state();
        let options = &state.config_options().catalog;
        let mut names = taglake_query::tables(ctx);
        if let Some(schema) = ctx.catalog(&options.default_catalog).and_then(|c| c.schema(&options.default_schema)) {
            names.extend(schema.table_names());
        }
        names.sort();
        names.dedup();
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            let provider = ctx.table_provider(TableReference::bare(name.as_str())).await?;
            let columns = provider
                .schema()
                .fields()
                .iter()
                .map(|f| Column {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect();
            tables.push(TableNames { name, columns });
        }
        Ok(Names { tables })
    }

    /// Names from `(table, columns)` pairs, for tests.
    #[cfg(test)]
    fn of(tables: &[(&str, &[&str])]) -> Names {
        let tables = tables
            .iter()
            .map(|(name, columns)| TableNames {
                name: name.to_string(),
                columns: columns
                    .iter()
                    .map(|c| Column { name: c.to_string(), data_type: "Utf8".into(), nullable: true })
                    .collect(),
            })
            .collect();
        Names { tables }
    }

    /// The table an identifier names: case-insensitively when unquoted (as
    /// SQL folds it), exactly when quoted.
    fn table(&self, ident: &str, quoted: bool) -> Option<&TableNames> {
        self.tables.iter().find(|t| if quoted { t.name == ident } else { t.name.eq_ignore_ascii_case(ident) })
    }
}

// ── Lexing: words, quotes, comments ───────────────────────────────────────

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A keyword, an unquoted identifier or a number.
    Word,
    /// A "quoted identifier".
    Quoted,
    /// A 'string literal'.
    Str,
    /// `-- to the end of the line` or `/* block */`.
    Comment,
    /// Any other character: `;`, `,`, `.`, `(`, …
    Symbol(char),
}

#[derive(Copy, Clone, Debug)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// False for a quote or comment still open at the end of the text.
    closed: bool,
}

impl Token {
    /// Whether a cursor at `pos` is inside this quote or comment.
    fn holds(&self, pos: usize) -> bool {
        self.start < pos && (pos < self.end || (pos == self.end && !self.closed))
    }
}

/// Splits SQL text into tokens. Quotes end at the next unpaired quote
/// (`''` and `""` escape one); block comments do not nest.
fn lex(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let find = |from: usize, needle: &[u8]| b[from.min(b.len())..].windows(needle.len()).position(|w| w == needle);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (kind, end, closed) = match c {
            b'\'' | b'"' => {
                let mut j = i + 1;
                let (end, closed) = loop {
                    match b[j..].iter().position(|&x| x == c) {
                        None => break (b.len(), false),
                        Some(k) if b.get(j + k + 1) == Some(&c) => j += k + 2,
                        Some(k) => break (j + k + 1, true),
                    }
                };
                (if c == b'\'' { Kind::Str } else { Kind::Quoted }, end, closed)
            }
            b'-' if b.get(i + 1) == Some(&b'-') => match find(i, b"\n") {
                Some(k) => (Kind::Comment, i + k, true),
                None => (Kind::Comment, b.len(), false),
            },
            b'/' if b.get(i + 1) == Some(&b'*') => match find(i + 2, b"*/") {
                Some(k) => (Kind::Comment, i + 2 + k + 2, true),
                None => (Kind::Comment, b.len(), false),
            },
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ if is_word_byte(c) => {
                let end = b[i..].iter().position(|&x| !is_word_byte(x)).map_or(b.len(), |k| i + k);
                (Kind::Word, end, true)
            }
            _ => (Kind::Symbol(c as char), i + 1, true),
        };
        tokens.push(Token { kind, start: i, end, closed });
        i = end;
    }
    tokens
}

/// Letters, digits, `_` and every byte of a non-ASCII character (so a word
/// never ends inside a character).
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Splits `text` at every `;` outside quotes and comments into the complete
/// statements (trimmed, without the `;`; those with nothing but comments
/// are dropped) and the unfinished rest after the last `;`.
pub(crate) fn split(text: &str) -> (Vec<&str>, &str) {
    let mut statements = Vec::new();
    let (mut from, mut code) = (0, false);
    for t in lex(text) {
        match t.kind {
            Kind::Symbol(';') => {
                if code {
                    statements.push(text[from..t.start].trim());
                }
                (from, code) = (t.end, false);
            }
            Kind::Comment => {}
            _ => code = true,
        }
    }
    (statements, &text[from..])
}

/// Whether `text` holds nothing but whitespace and finished comments.
fn is_blank(text: &str) -> bool {
    lex(text).iter().all(|t| t.kind == Kind::Comment && t.closed)
}

// ── Completion ────────────────────────────────────────────────────────────

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

fn is_keyword(word: &str, list: &[&str]) -> bool {
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

// ── The session: statements, commands, output ─────────────────────────────

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Flow {
    Continue,
    Quit,
}

struct Repl {
    ctx: SessionContext,
    names: Arc<Names>,
    format: SqlFormat,
    timing: bool,
    interactive: bool,
    /// Statements and commands run, and how many of them failed.
    run: usize,
    failed: usize,
}

/// A backslash command on its own line, or `quit` / `exit`.
fn command(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.starts_with('\\') {
        return Some(line);
    }
    let word = line.trim_end_matches(';').trim_end();
    (word.eq_ignore_ascii_case("quit") || word.eq_ignore_ascii_case("exit")).then_some("\\q")
}

impl Repl {
    /// Takes one line of input: runs a command, or adds it to `pending` and
    /// runs every statement it completes; what is left stays pending.
    async fn feed(&mut self, pending: &mut String, line: &str) -> Flow {
        if is_blank(pending) {
            pending.clear();
            if let Some(c) = command(line) {
                return self.command(c);
            }
        }
        pending.push_str(line);
        pending.push('\n');
        let (statements, rest) = split(pending);
        let ended = !statements.is_empty();
        let statements: Vec<String> = statements.into_iter().map(str::to_string).collect();
        *pending = rest.to_string();
        for s in &statements {
            self.statement(s).await;
        }
        // `SELECT 1; \d` : a command after the last statement of a line.
        if let Some(c) = command(pending).filter(|_| ended) {
            let c = c.to_string();
            pending.clear();
            return self.command(&c);
        }
        if is_blank(pending) {
            pending.clear();
        }
        Flow::Continue
    }

    /// At the end of input, what is pending runs as a last statement.
    async fn finish(&mut self, pending: &mut String) {
        if !is_blank(pending) {
            let statement = std::mem::take(pending);
            self.statement(statement.trim()).await;
        }
    }

    async fn statement(&mut self, text: &str) {
        self.run += 1;
        let start = Instant::now();
        let result = if self.interactive {
            // Ctrl-C cancels the statement, not the session.
            tokio::select! {
                r = taglake_query::sql(&self.ctx, text) => r.map_err(anyhow::Error::from),
                () = interrupted() => Err(anyhow!("cancelled")),
            }
        } else {
            taglake_query::sql(&self.ctx, text).await.map_err(anyhow::Error::from)
        };
        let result = result.and_then(|batches| self.print(&batches, self.timing.then(|| start.elapsed())));
        if let Err(e) = result {
            self.fail(&e);
            return;
        }
        // A new or dropped table or view changes what completion offers.
        let first = lex(text).into_iter().find(|t| t.kind != Kind::Comment).map_or("", |t| &text[t.start..t.end]);
        if is_keyword(first, &["CREATE", "DROP", "ALTER"]) {
            match Names::read(&self.ctx).await {
                Ok(names) => self.names = Arc::new(names),
                Err(e) => eprintln!("warning: cannot read the tables again for completion: {e:#}"),
            }
        }
    }

    /// Prints a result in the current format; with `elapsed`, a CSV or
    /// JSON result's time goes to standard error, apart from the data.
    fn print(&self, batches: &[RecordBatch], elapsed: Option<Duration>) -> Result<()> {
        let bytes = crate::sql::render(batches, self.format, elapsed)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        out.flush()?;
        if self.format != SqlFormat::Table && elapsed.is_some() {
            eprintln!("{}", crate::sql::rows_line(batches, elapsed));
        }
        Ok(())
    }

    fn fail(&mut self, e: &anyhow::Error) {
        self.failed += 1;
        eprintln!("error: {e:#}");
    }

    fn command(&mut self, line: &str) -> Flow {
        self.run += 1;
        match self.try_command(line) {
            Ok(flow) => flow,
            Err(e) => {
                self.fail(&e);
                Flow::Continue
            }
        }
    }

    fn try_command(&mut self, line: &str) -> Result<Flow> {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let arg = words.next();
        if let Some(extra) = words.next() {
            bail!("{name} takes at most one argument, got `{extra}` too");
        }
        match (name, arg) {
            ("\\q" | "\\quit", None) => return Ok(Flow::Quit),
            ("\\d", None) => {
                let tables = &self.names.tables;
                let batch = RecordBatch::try_from_iter([
                    ("table", Arc::new(StringArray::from_iter_values(tables.iter().map(|t| &t.name))) as ArrayRef),
                    ("columns", Arc::new(UInt64Array::from_iter_values(tables.iter().map(|t| t.columns.len() as u64)))),
                ])?;
                self.print(&[batch], None)?;
            }
            ("\\d", Some(table)) => {
                let quoted = table.len() > 1 && table.starts_with('"') && table.ends_with('"');
                let ident = if quoted { &table[1..table.len() - 1] } else { table };
                let Some(t) = self.names.table(ident, quoted) else {
                    let have: Vec<&str> = self.names.tables.iter().map(|t| t.name.as_str()).collect();
                    let hint = taglake_storage::suggest(ident, have.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    bail!("no table `{ident}`{hint} (tables: {})", have.join(", "));
                };
                let c = &t.columns;
                let batch = RecordBatch::try_from_iter([
                    ("column", Arc::new(StringArray::from_iter_values(c.iter().map(|c| &c.name))) as ArrayRef),
                    ("type", Arc::new(StringArray::from_iter_values(c.iter().map(|c| &c.data_type)))),
                    ("nullable", Arc::new(BooleanArray::from_iter(c.iter().map(|c| Some(c.nullable))))),
                ])?;
                self.print(&[batch], None)?;
            }
            ("\\timing", arg) => {
                self.timing = match arg.map(str::to_lowercase).as_deref() {
                    None => !self.timing,
                    Some("on") => true,
                    Some("off") => false,
                    Some(other) => bail!("\\timing takes on or off, got `{other}`"),
                };
                eprintln!("timing {}", if self.timing { "on" } else { "off" });
            }
            ("\\format", None) => eprintln!("format {}", self.format.name()),
            ("\\format", Some(f)) => {
                let format =
                    SqlFormat::from_str(f, true).ok().filter(|f| *f != SqlFormat::Parquet).ok_or_else(|| {
                        anyhow!(
                            "\\format takes table, csv or json, got `{f}` (COPY (…) TO 'file.parquet' writes Parquet)"
                        )
                    })?;
                self.format = format;
                eprintln!("format {}", format.name());
            }
            ("\\help" | "\\?" | "\\h", None) => print!("{}", help(self.format, self.timing)),
            _ => bail!("unknown command `{line}`; \\help lists the commands"),
        }
        Ok(Flow::Continue)
    }

    /// Reads standard input that is not a terminal: no prompt, no history.
    async fn piped(&mut self) -> Result<()> {
        let mut pending = String::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading standard input")?;
            if self.feed(&mut pending, &line).await == Flow::Quit {
                pending.clear();
                break;
            }
        }
        self.finish(&mut pending).await;
        if self.failed > 0 {
            bail!("{} of {} statements and commands failed", self.failed, self.run);
        }
        Ok(())
    }

    /// The prompt on a terminal.
    async fn interactive(&mut self, history: Option<PathBuf>) -> Result<()> {
        let config = Config::builder()
            .max_history_size(5_000)?
            .history_ignore_dups(true)?
            .history_ignore_space(true)
            .auto_add_history(false)
            .completion_type(CompletionType::List)
            .build();
        let mut editor: Editor<Prompt, FileHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(Prompt { names: Arc::clone(&self.names), pending: String::new() }));
        if let Some(path) = history.as_deref().filter(|p| p.exists())
            && let Err(e) = editor.load_history(path)
        {
            eprintln!("warning: cannot read the history file {}: {e}", path.display());
        }
        let mut history_ok = true;
        // The lines of the input that is not finished yet, and all lines
        // since the last finished input (one history entry).
        let (mut pending, mut entry) = (String::new(), String::new());
        loop {
            if let Some(helper) = editor.helper_mut() {
                helper.names = Arc::clone(&self.names);
                helper.pending.clone_from(&pending);
            }
            let line = match editor.readline(if pending.is_empty() { PROMPT } else { CONTINUE }) {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => {
                    pending.clear();
                    entry.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e).context("reading the prompt"),
            };
            if !entry.is_empty() {
                entry.push('\n');
            }
            entry.push_str(&line);
            let flow = self.feed(&mut pending, &line).await;
            if pending.is_empty() && !entry.trim().is_empty() {
                editor.add_history_entry(entry.trim_end())?;
                if let Some(path) = history.as_deref().filter(|_| history_ok)
                    && let Err(e) = editor.append_history(path)
                {
                    eprintln!("warning: cannot write the history file {}: {e}", path.display());
                    history_ok = false;
                }
            }
            if pending.is_empty() {
                entry.clear();
            }
            if flow == Flow::Quit {
                break;
            }
        }
        Ok(())
    }
}

/// Resolves on Ctrl-C; never, if the signal cannot be listened to.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn help(format: SqlFormat, timing: bool) -> String {
    format!(
        "SQL (DataFusion) over the warehouse tables; a statement ends with ; and may span lines.
  \\d            list the tables
  \\d TABLE      the columns of TABLE with their types
  \\format FMT   print results as table, csv or json (now {})
  \\timing       print \"N rows in X ms\" after each statement (now {})
  \\help         this help
  \\q            quit (also quit, exit or Ctrl-D)
Tab completes table names, column names and keywords; Ctrl-C clears the input
or cancels the running statement. COPY (SELECT …) TO 'file.parquet' writes a file.
",
        format.name(),
        if timing { "on" } else { "off" }
    )
}

/// The `rustyline` helper: completion over the session's names, with the
/// earlier lines of an unfinished statement as context.
struct Prompt {
    names: Arc<Names>,
    pending: String,
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
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(split("SELECT 1; SELECT 2;"), (vec!["SELECT 1", "SELECT 2"], ""));
        assert_eq!(split("SELECT 'a;b' AS s; SELECT"), (vec!["SELECT 'a;b' AS s"], " SELECT"));
        assert_eq!(split("SELECT 'it''s;' ;"), (vec!["SELECT 'it''s;'"], ""));
        assert_eq!(split("SELECT \"a;b\" FROM t;"), (vec!["SELECT \"a;b\" FROM t"], ""));
        assert_eq!(split("SELECT 1 -- no; end\n, 2;"), (vec!["SELECT 1 -- no; end\n, 2"], ""));
        assert_eq!(split("SELECT /* ; */ 1;\n"), (vec!["SELECT /* ; */ 1"], "\n"));
        assert_eq!(split("SELECT\n  1\n"), (vec![], "SELECT\n  1\n"));
        // A quote or comment still open swallows the `;`.
        assert_eq!(split("SELECT 'a;\n"), (vec![], "SELECT 'a;\n"));
        assert_eq!(split("SELECT /* a;\n"), (vec![], "SELECT /* a;\n"));
        // Empty statements and comment-only ones are dropped.
        assert_eq!(split(";; -- c\n;SELECT 1;"), (vec!["SELECT 1"], ""));
        assert_eq!(split("SELECT 'é;' , \"ü\";x"), (vec!["SELECT 'é;' , \"ü\""], "x"));
    }

    #[test]
    fn blank_input_is_whitespace_and_finished_comments() {
        assert!(is_blank(""));
        assert!(is_blank("  -- note\n /* c */\n"));
        assert!(!is_blank("/* open\n"));
        assert!(!is_blank("SELECT"));
    }

    #[test]
    fn commands_are_backslashes_quit_and_exit() {
        assert_eq!(command("  \\d members "), Some("\\d members"));
        assert_eq!(command("quit"), Some("\\q"));
        assert_eq!(command("EXIT;"), Some("\\q"));
        assert_eq!(command("quitting"), None);
        assert_eq!(command("SELECT 1"), None);
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
