//! `taglake serve` (the PostgreSQL wire protocol) and `taglake passwd`
//! (its users file).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use taglake_serve::{ServeConfig, Users};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --users.
    #[arg(long, default_value = taglake_serve::config::DEFAULT_LISTEN)]
    listen: String,
    /// Users file (SCRAM-SHA-256 secrets, written by `taglake passwd`); clients must log in.
    #[arg(long)]
    users: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Refuse connections that do not use TLS.
    #[arg(long)]
    require_tls: bool,
    /// Directory `COPY (…) TO 'file'` may write into; without it COPY is refused.
    /// It may not hold the warehouse, the users file or the TLS files.
    #[arg(long)]
    export_dir: Option<PathBuf>,
    /// Largest file one `COPY … TO` may write (e.g. 500MiB, 10GiB); a larger export fails and leaves nothing.
    #[arg(long, default_value = "10GiB")]
    export_max: String,
    /// Memory one query may use for sorts, joins and aggregations (e.g. 512MiB, 2GiB).
    #[arg(long, default_value = "1GiB")]
    query_memory: String,
    /// Memory all the queries and open cursors of one connection may use together (at least --query-memory).
    #[arg(long, default_value = "2GiB")]
    connection_memory: String,
    /// Longest a statement may run, rows streaming included (e.g. 30s, 5m); each FETCH and Execute is one.
    #[arg(long, default_value = "5m")]
    statement_timeout: String,
    /// Most logged-in connections at once; the next login is told "too many clients".
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Most connections still logging in at once (they hold no --max-connections slot); more are closed unread.
    #[arg(long, default_value_t = 16)]
    max_pending: usize,
    /// Most open cursors (and suspended portals) per connection.
    #[arg(long, default_value_t = 16)]
    max_cursors: usize,
    /// Longest a new connection may take to negotiate TLS and log in (e.g. 10s).
    #[arg(long, default_value = "10s")]
    auth_timeout: String,
    /// A logged-in connection silent this long is closed (e.g. 30m, 2h).
    #[arg(long, default_value = "30m")]
    idle_timeout: String,
    /// How often to look for a new tag snapshot or table version.
    #[arg(long, default_value = "5s")]
    refresh_interval: String,
    #[command(flatten)]
    cluster: crate::args::DistributedArg,
    #[command(flatten)]
    wh: crate::args::WarehouseArg,
}

pub async fn serve(a: ServeArgs) -> Result<()> {
    let config = ServeConfig::builder(&a.wh.warehouse)
        .setting_names(|setting| format!("taglake serve {}", crate::report::flag(setting)))
        .listen(a.listen)
        .tls_cert(a.tls_cert)
        .tls_key(a.tls_key)
        .require_tls(a.require_tls)
        .export_max(a.export_max)
        .query_memory(a.query_memory)
        .connection_memory(a.connection_memory)
        .statement_timeout(a.statement_timeout)
        .max_connections(a.max_connections)
        .max_pending(a.max_pending)
        .max_cursors(a.max_cursors)
        .auth_timeout(a.auth_timeout)
        .idle_timeout(a.idle_timeout)
        .refresh_interval(a.refresh_interval);
    let config = match a.users {
        Some(u) => config.users(u),
        None => config,
    };
    let config = match a.export_dir {
        Some(d) => config.export_dir(d),
        None => config,
    };
    let config = config.build()?;
    let auth = match config.users() {
        Some(u) => format!("SCRAM-SHA-256, {} user(s)", u.names().count()),
        None => "no authentication (loopback only)".into(),
    };
    let tls = if config.require_tls() {
        "required"
    } else if config.tls().is_some() {
        "offered"
    } else {
        "off"
    };
    let exports = config
        .export_dir()
        .map_or("refused".into(), |d| format!("into {} (at most {} MiB each)", d.display(), config.export_max() >> 20));
    let limits = format!(
        "{} MiB per query, {} MiB per connection, {}s statement timeout, {} connections (+{} logging in, {}s to log \
         in, {}s idle), {} cursors per connection",
        config.query_memory() >> 20,
        config.connection_memory() >> 20,
        config.statement_timeout().as_secs_f64(),
        config.max_connections(),
        config.max_pending(),
        config.auth_timeout().as_secs_f64(),
        config.idle_timeout().as_secs_f64(),
        config.max_cursors()
    );
    let cluster = match &a.cluster.cluster {
        Some(url) => Some(crate::distributed::serve_cluster(url).await?),
        None => None,
    };
    let on = a.cluster.cluster.as_ref().map_or(String::new(), |u| format!("; queries on the cluster {u}"));
    let server = taglake_serve::Server::start(config, cluster).await?;
    // The only line on stdout is the address (scripts and tests read it);
    // nothing fails if no one reads further.
    let _ = writeln!(std::io::stdout(), "listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    eprintln!(
        "listening on {}; auth: {auth}; TLS: {tls}; COPY TO: {exports}; {limits}; read-only{on}",
        server.local_addr()
    );
    tokio::select! {
        r = server.wait() => r.map_err(Into::into),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping");
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct PasswdArgs {
    /// The user to add or whose password to replace.
    name: String,
    /// The users file (created, readable by its owner only).
    #[arg(long)]
    users: PathBuf,
}

/// Reads the password from the first line of standard input (without echo
/// on a terminal), so it never appears in the shell history or `ps`.
pub fn passwd(a: PasswdArgs) -> Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprint!("password for {}: ", a.name);
        std::io::stderr().flush().ok();
        echo(false);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if interactive {
        echo(true);
        eprintln!();
    }
    read.context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password given (type it, or pipe it: printf '%s\\n' \"$PW\" | taglake passwd NAME --users FILE)");
    }
    let added = Users::set_password(&a.users, &a.name, password)?;
    println!("{} user '{}' in {}", if added { "added" } else { "changed the password of" }, a.name, a.users.display());
    Ok(())
}

fn echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}
