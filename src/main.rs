//! The `taglake` command: one subcommand per pipeline stage.
//!
//! Each stage is a library crate (`taglake-ingest`, `taglake-datasets`, …);
//! this binary only parses arguments, shows progress on a terminal and
//! prints the one-line summaries a nightly pipeline logs.

mod args;
mod audience;
mod cli;
mod cluster;
mod distributed;
mod ingest;
mod nightly;
mod repl;
mod report;
mod serve;
mod sql;
mod studio;
mod tags;

fn main() -> std::process::ExitCode {
    cli::run()
}
