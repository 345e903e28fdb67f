//! `taglake scheduler`, `taglake executor` and the `--cluster` flag.
//!
//! The commands and the flag exist in every build, so scripts written for a
//! cluster fail with a clear message on a build without it; the cluster
//! itself (Ballista) is compiled in with `--features distributed`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use datafusion::prelude::SessionContext;
use taglake_query::TagSet;
use taglake_storage::Warehouse;

use crate::args::DistributedArg;

#[derive(Args)]
pub struct SchedulerArgs {
    /// Address to listen on (gRPC, for clients and executors). Ballista has
    /// no logins: bind a private network's address, never a public one.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: SocketAddr,
    /// The host name executors and clients reach this scheduler at, when it is not the bind address.
    #[arg(long)]
    pub external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor counts as lost
    /// and its tasks run elsewhere (1 to 86400).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub executor_timeout: u64,
}

#[derive(Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT.
    #[arg(long)]
    pub scheduler: String,
    /// Address of this executor's Arrow Flight service (results, shuffle
    /// data); its gRPC service takes the next port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: SocketAddr,
    /// The host name others reach this executor at, when it is not the bind address.
    #[arg(long)]
    pub external_host: Option<String>,
    /// Tasks run at once, 1 to 1024 [default: the machine's cores].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub slots: Option<usize>,
    /// Folder for shuffle files [default: a temporary folder].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seconds between heartbeats to the scheduler (1 to 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub heartbeat: u64,
}

/// A SQL session over the warehouse: embedded, or on the cluster `--cluster` names.
pub async fn session(wh: &Warehouse, cluster: &DistributedArg) -> Result<(SessionContext, Option<Arc<TagSet>>)> {
    match &cluster.cluster {
        None => Ok(taglake_query::open(wh).await?),
        Some(url) => imp::connect(url, wh).await,
    }
}

pub async fn scheduler(a: SchedulerArgs) -> Result<()> {
    imp::scheduler(a).await
}

/// `taglake tag --cluster`: the refresh by ranges of members on the cluster.
pub async fn refresh(
    url: &str,
    wh: &Warehouse,
    lock: &taglake_storage::WriterLock,
    options: &taglake_tagger::RefreshOptions,
    range_members: Option<usize>,
) -> Result<taglake_tagger::RefreshSummary> {
    imp::refresh(url, wh, lock, options, range_members).await
}

pub async fn executor(a: ExecutorArgs) -> Result<()> {
    imp::executor(a).await
}

/// `taglake serve --cluster`: where the server runs warehouse queries.
pub async fn serve_cluster(url: &str) -> Result<Arc<dyn taglake_serve::live::Cluster>> {
    imp::serve_cluster(url).await
}

#[cfg(feature = "distributed")]
mod imp {
    use std::io::Write;
    use std::time::Duration;

    use anyhow::{Context, Result};
    use taglake_distributed::ClusterUrl;
    use taglake_distributed::process::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};

    use super::*;

    pub async fn connect(url: &str, wh: &Warehouse) -> Result<(SessionContext, Option<Arc<TagSet>>)> {
        Ok(taglake_distributed::connect(&ClusterUrl::parse(url)?, wh).await?)
    }

    /// The server's view of a cluster: pinned-file tables, a remote state.
    struct ServeCluster {
        url: ClusterUrl,
        state: datafusion::execution::SessionState,
    }

    #[async_trait::async_trait]
    impl taglake_serve::live::Cluster for ServeCluster {
        async fn providers(
            &self,
            wh: &Warehouse,
        ) -> std::result::Result<Vec<(taglake_storage::Table, Arc<dyn datafusion::catalog::TableProvider>)>, String>
        {
            taglake_distributed::providers(wh).await.map_err(|e| e.to_string())
        }

        fn state(&self) -> datafusion::execution::SessionState {
            self.state.clone()
        }

        fn name(&self) -> String {
            self.url.to_string()
        }
    }

    pub async fn serve_cluster(url: &str) -> Result<Arc<dyn taglake_serve::live::Cluster>> {
        let url = ClusterUrl::parse(url)?;
        let state = taglake_distributed::remote_state(&url).await?;
        Ok(Arc::new(ServeCluster { url, state }))
    }

    /// Range tasks skip the orders row groups outside their members; with
    /// orders in time order none can be skipped, and the user should know.
    async fn warn_about_layout(wh: &Warehouse) -> Result<()> {
        let files = taglake_storage::scan::table_files(wh, taglake_storage::Table::Orders).await?;
        let spread = taglake_storage::scan::member_key_spread(taglake_storage::Table::Orders, &files)?;
        if let Some(spread) = spread.filter(|s| s.scattered()) {
            eprintln!(
                "warning: the orders files are not in member order (a row group spans {:.0} % of the members on \
                 average), so every range task reads most order lines; `taglake optimize orders` rewrites them in \
                 member order",
                100.0 * spread.spread
            );
        }
        Ok(())
    }

    pub async fn refresh(
        url: &str,
        wh: &Warehouse,
        lock: &taglake_storage::WriterLock,
        options: &taglake_tagger::RefreshOptions,
        range_members: Option<usize>,
    ) -> Result<taglake_tagger::RefreshSummary> {
        warn_about_layout(wh).await?;
        let cluster = taglake_distributed::refresh::ClusterRefresh { range_members };
        Ok(taglake_distributed::refresh::refresh(&ClusterUrl::parse(url)?, wh, lock, options, &cluster).await?)
    }

    /// Ballista's log on stderr: `info` unless RUST_LOG says otherwise.
    fn log() {
        let env = env_logger::Env::default().default_filter_or("info,datafusion=warn,h2=warn,tower=warn,hyper=warn");
        let _ = env_logger::Builder::from_env(env).try_init();
    }

    pub async fn scheduler(a: SchedulerArgs) -> Result<()> {
        log();
        let listener =
            tokio::net::TcpListener::bind(a.bind).await.with_context(|| format!("--bind {}: cannot listen", a.bind))?;
        let bound = listener.local_addr()?;
        // The one stdout line, for scripts and tests; the rest goes to stderr.
        let _ = writeln!(std::io::stdout(), "listening on {bound}");
        eprintln!("taglake scheduler: clients use --cluster df://{bound}; executors use --scheduler {bound}");
        let options = SchedulerOptions {
            external_host: a.external_host,
            executor_timeout: Duration::from_secs(a.executor_timeout),
        };
        tokio::select! {
            r = run_scheduler(listener, options) => Ok(r?),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    }

    pub async fn executor(a: ExecutorArgs) -> Result<()> {
        let (host, port) = a
            .scheduler
            .trim_start_matches("df://")
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .filter(|(h, p)| !h.is_empty() && *p > 0)
            .with_context(|| format!("--scheduler {:?}: expected HOST:PORT, e.g. localhost:50050", a.scheduler))?;
        log();
        let slots = a.slots.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        eprintln!(
            "taglake executor: {slots} slots, flight on {}, gRPC on port {}, scheduler {host}:{port}",
            a.bind,
            a.bind.port().saturating_add(1)
        );
        let options = ExecutorOptions {
            scheduler: (host, port),
            bind: a.bind,
            external_host: a.external_host,
            slots,
            work_dir: a.work_dir,
            heartbeat: Duration::from_secs(a.heartbeat),
        };
        Ok(run_executor(options).await?)
    }
}

#[cfg(not(feature = "distributed"))]
mod imp {
    use anyhow::{Result, bail};

    use super::*;

    const NOT_BUILT: &str = "this taglake was built without cluster support; build it with \
                             `cargo build --release --features distributed`";

    pub async fn connect(_url: &str, _wh: &Warehouse) -> Result<(SessionContext, Option<Arc<TagSet>>)> {
        bail!("--cluster: {NOT_BUILT}")
    }

    pub async fn refresh(
        _url: &str,
        _wh: &Warehouse,
        _lock: &taglake_storage::WriterLock,
        _options: &taglake_tagger::RefreshOptions,
        _range_members: Option<usize>,
    ) -> Result<taglake_tagger::RefreshSummary> {
        bail!("--cluster: {NOT_BUILT}")
    }

    pub async fn scheduler(_a: SchedulerArgs) -> Result<()> {
        bail!("{NOT_BUILT}")
    }

    pub async fn serve_cluster(_url: &str) -> Result<Arc<dyn taglake_serve::live::Cluster>> {
        bail!("--cluster: {NOT_BUILT}")
    }

    pub async fn executor(_a: ExecutorArgs) -> Result<()> {
        bail!("{NOT_BUILT}")
    }
}
