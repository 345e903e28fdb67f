//! The studio's accept loop: plain HTTP or TLS, a bound on open
//! connections, a deadline for the TLS handshake and for each request's
//! headers. hyper speaks HTTP/1.1 on each socket; the axum router of
//! [`crate::app`] answers. A bad socket ends its own task only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use taglake_serve::listen::{Acceptor, tls_acceptor};
use taglake_serve::live::Live;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::StudioConfig;
use crate::data::Data;
use crate::session::Sessions;
use crate::{Error, Result, log};

/// Most connections open at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest a client may take for the TLS handshake or a request's headers.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running studio.
pub struct Studio {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
}

impl Studio {
    /// Loads the warehouse (tags warmed), binds the address and serves in
    /// the background, picking up new snapshots every refresh interval.
    /// Needs tokio's multi-thread runtime (reading tags scans the warehouse).
    pub async fn start(config: StudioConfig) -> Result<Studio> {
        // Checked when the configuration was built, and again where the socket opens.
        StudioConfig::check_exposure(config.listen(), config.users())?;
        let tls = config.tls().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
        let wh = taglake_storage::Warehouse::open(config.warehouse())?;
        let live = Live::open(wh, None).await?;
        let listener = TcpListener::bind(config.listen())
            .await
            .map_err(|source| Error::Listen { addr: config.listen().to_string(), source })?;
        let addr =
            listener.local_addr().map_err(|source| Error::Listen { addr: config.listen().to_string(), source })?;
        let watch = live.watch(config.refresh_interval());
        let sessions = Sessions::new(config.session_idle(), config.session_max());
        let app = App::new(Data::new(live), config.users().cloned(), sessions, tls.is_some())
            .with_export_dir(config.export_dir().map(std::path::Path::to_path_buf));
        let app = Arc::new(app);
        let router = router(app);
        let accept = tokio::spawn(accept(listener, router, tls));
        Ok(Studio { addr, accept, watch })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the accept task ends (it does not, short of a panic).
    pub async fn wait(self) -> Result<()> {
        let Studio { accept, watch, .. } = self;
        let stopped = accept.await;
        watch.abort();
        stopped.map_err(|e| Error::Listen { addr: "the studio's socket".into(), source: std::io::Error::other(e) })
    }
}

/// Every route of the studio: the pages' routers (one per page module),
/// login and logout behind the session gate; the assets outside it; the
/// body limit and the security headers around everything.
pub fn router(app: Arc<App>) -> axum::Router {
    use axum::extract::{DefaultBodyLimit, Request};
    use axum::middleware;
    let pages = axum::Router::new()
        .merge(crate::pages::overview::router())
        .merge(crate::pages::tags::router())
        .merge(crate::pages::builder::router())
        .merge(crate::pages::audiences::router())
        .merge(crate::pages::communities::router())
        .merge(crate::pages::experiments::router())
        .merge(crate::app::routes())
        .layer(middleware::from_fn_with_state(app.clone(), crate::app::gate));
    axum::Router::new()
        .route(
            "/assets/{file}",
            axum::routing::get(|req: Request| async move { crate::assets::serve(req.uri().path()) }),
        )
        .merge(pages)
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(crate::app::MAX_BODY))
        .layer(middleware::from_fn(crate::app::headers))
        .with_state(app)
}

async fn accept(listener: TcpListener, router: axum::Router, tls: Option<Acceptor>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving.
                log(format_args!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => http(TokioIo::new(socket), router, peer).await,
                Some(tls) => match tokio::time::timeout(DEADLINE, tls.accept(socket)).await {
                    Ok(Ok(stream)) => http(TokioIo::new(stream), router, peer).await,
                    Ok(Err(e)) => log(format_args!("{peer}: TLS handshake failed: {e}")),
                    Err(_) => log(format_args!("{peer}: TLS handshake took too long")),
                },
            }
        });
    }
}

async fn http<S>(io: TokioIo<S>, router: axum::Router, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(DEADLINE)
        .max_buf_size(64 * 1024)
        .serve_connection(io, TowerToHyperService::new(router))
        .await;
    if let Err(e) = served
        && !e.is_incomplete_message()
        && !e.is_timeout()
    {
        log(format_args!("{peer}: connection closed: {e}"));
    }
}
