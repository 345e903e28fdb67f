//! `taglake sql` without a statement: the interactive SQL prompt.
//!
//! A module of its own because a prompt is more than one statement run in a
//! loop: it reads lines until a `;` ends a statement (outside quotes and
//! comments), keeps a history file, completes names with Tab and has
//! backslash commands (`\d`, `\format`, `\timing`, …). The parts that decide
//! something — [`lexer::split`] (where statements end) and
//! [`complete::complete`] (what Tab offers) — are plain functions over text
//! and a [`Names`] catalog, tested beside them without a terminal; the rest
//! is wiring to `rustyline` and to [`crate::sql::render`], which prints
//! results as the one-shot command does.
//!
//! With standard input not a terminal (`taglake sql < script.sql`, or the
//! tests' pipes) the same lines are read without prompt or history, and the
//! command fails at the end if any statement or command failed.
//!
//! [`lexer`] finds words, quotes and comments, [`complete`] decides what
//! Tab offers, [`commands`] runs the backslash commands; this module reads
//! the lines and runs the statements.

mod commands;
mod complete;
mod lexer;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arrow::array::RecordBatch;
use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use rustyline::Editor;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use taglake_storage::Warehouse;

use self::commands::command;
use self::complete::{Prompt, is_keyword};
use self::lexer::{Kind, is_blank, lex, split};
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
                Err(e) => {
                    eprintln!("warning: cannot read the tables again for completion: {}", crate::report::error_text(&e))
                }
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
        eprintln!("error: {}", crate::report::error_text(e));
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
