//! `taglake studio`: the web audience builder (crate `taglake-studio`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use taglake_studio::{Studio, StudioConfig};

#[derive(Args)]
pub struct StudioArgs {
    /// Address to listen on. Anything but loopback needs --users.
    #[arg(long, default_value = taglake_studio::config::DEFAULT_LISTEN)]
    listen: String,
    /// Users file (the one `taglake serve` reads, written by `taglake passwd`); people must log in.
    #[arg(long)]
    users: Option<PathBuf>,
    /// TLS certificate chain (PEM): serve HTTPS.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Directory audience exports will be written into (it may not hold or lie inside the warehouse).
    #[arg(long)]
    export_dir: Option<PathBuf>,
    /// How often to look for a new snapshot, saved audience or community model (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    refresh_interval: String,
    #[command(flatten)]
    wh: crate::args::WarehouseArg,
}

pub async fn studio(a: StudioArgs) -> Result<()> {
    let config = StudioConfig::builder(&a.wh.warehouse)
        .listen(a.listen)
        .users(a.users)
        .tls_cert(a.tls_cert)
        .tls_key(a.tls_key)
        .export_dir(a.export_dir)
        .refresh_interval(a.refresh_interval)
        .build()?;
    let logins = match config.users() {
        Some(u) => format!("logins for {} user(s)", u.names().count()),
        None => "no logins (loopback only)".into(),
    };
    let scheme = if config.tls().is_some() { "https" } else { "http" };
    let studio = Studio::start(config).await?;
    // The only line on stdout is the address (scripts and tests read it).
    let _ = writeln!(std::io::stdout(), "listening on {}", studio.local_addr());
    let _ = std::io::stdout().flush();
    eprintln!("taglake studio on {scheme}://{}/ · {logins} · read-only", studio.local_addr());
    tokio::select! {
        r = studio.wait() => r.map_err(Into::into),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping");
            Ok(())
        }
    }
}
