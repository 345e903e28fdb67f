//! The backslash commands of the prompt (`\d`, `\format`, `\timing`, `\help`,
//! `\q`), which change the session or describe it instead of running SQL.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt64Array};
use clap::ValueEnum;

use super::{Flow, Repl};
use crate::sql::SqlFormat;

/// A backslash command on its own line, or `quit` / `exit`.
pub(super) fn command(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.starts_with('\\') {
        return Some(line);
    }
    let word = line.trim_end_matches(';').trim_end();
    (word.eq_ignore_ascii_case("quit") || word.eq_ignore_ascii_case("exit")).then_some("\\q")
}
impl Repl {
    pub(super) fn command(&mut self, line: &str) -> Flow {
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
                    let hint = taglake_base::suggest(ident, have.iter().copied())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_backslashes_quit_and_exit() {
        assert_eq!(command("  \\d members "), Some("\\d members"));
        assert_eq!(command("quit"), Some("\\q"));
        assert_eq!(command("EXIT;"), Some("\\q"));
        assert_eq!(command("quitting"), None);
        assert_eq!(command("SELECT 1"), None);
    }
}
