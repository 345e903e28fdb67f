//! The accept loop: TLS, the limits on connections, `--require-tls`.
//!
//! `pgwire` speaks the protocol on each socket; this loop decides first
//! whether the socket gets that far. A new socket must find a place among
//! the `--max-pending` connections still logging in, or it is closed at
//! once: silent sockets cannot pile up, and they never take one of the
//! `--max-connections` slots, which only a logged-in client gets (see
//! [`crate::handler::Startup`]). The loop peeks at the first message
//! without consuming it: a plaintext startup on a `--require-tls` server
//! gets a real PostgreSQL error (28000) rather than a dropped socket.
//! Every socket runs in its own task ([`crate::connection`]), so garbage
//! bytes, a truncated message or a client that vanishes end that task and
//! nothing else.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion_postgres::pgwire::tokio::server::negotiate_tls;
use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls;
use taglake_storage::ParamMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ServeConfig;
use crate::connection::{GRACE, Limits, serve};
use crate::handler::Handlers;
use crate::live::Live;
use crate::{Error, Result, file_err, log};

const SSL_REQUEST: u32 = 80877103;
const CANCEL_REQUEST: u32 = 80877102;
const GSSENC_REQUEST: u32 = 80877104;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    live: Arc<Live>,
    accept: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Loads the warehouse (tags warmed), binds the address and starts
    /// serving in the background; warehouse queries run on `cluster` when given.
    /// Needs tokio's multi-thread runtime: reading tags scans the warehouse
    /// (see `taglake_storage::scan::blocking`).
    pub async fn start(config: ServeConfig, cluster: Option<Arc<dyn crate::live::Cluster>>) -> Result<Server> {
        // The configuration was checked when it was built; the rule that
        // protects every member is checked again where the socket opens.
        ServeConfig::check_exposure(config.listen(), config.users())?;
        let wh = taglake_storage::Warehouse::open(config.warehouse())?;
        let live = Live::open(wh, cluster).await?;
        let tls = config.tls().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
        let listener = TcpListener::bind(config.listen())
            .await
            .map_err(|source| Error::Listen { addr: config.listen().to_string(), source })?;
        let addr =
            listener.local_addr().map_err(|source| Error::Listen { addr: config.listen().to_string(), source })?;
        let config = Arc::new(config);
        let handlers = Arc::new(Handlers::new(live.clone(), config.clone()));
        let watch = live.watch(config.refresh_interval());
        let accept = tokio::spawn(accept(listener, handlers, tls, config));
        Ok(Server { addr, live, accept, watch })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live tables it serves.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Serves until the task ends (it does not, short of a panic).
    pub async fn wait(self) -> Result<()> {
        let Server { accept, watch, .. } = self;
        let stopped = accept.await;
        watch.abort();
        stopped.map_err(|e| Error::Config(format!("the server stopped: {e}")))
    }

    /// Stops accepting connections and refreshing (open ones end with it).
    pub fn stop(self) {
        self.accept.abort();
        self.watch.abort();
    }
}

async fn accept(listener: TcpListener, handlers: Arc<Handlers>, tls: Option<TlsAcceptor>, config: Arc<ServeConfig>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(config.max_pending()));
    let mut turned_away = Quiet::default();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving.
                log(format_args!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            // Dropped unread: a flood of silent sockets costs nothing.
            turned_away.note(peer, &config);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (handlers, tls, config) = (handlers.clone(), tls.clone(), config.clone());
        tokio::spawn(async move {
            let limits = Limits {
                login_deadline: tokio::time::Instant::now() + config.auth_timeout(),
                idle: config.idle_timeout(),
                idle_setting: config.setting("idle_timeout"),
                message: config.statement_timeout() + GRACE,
            };
            let mut socket = socket;
            let first = tokio::time::timeout_at(limits.login_deadline, first_request(&mut socket));
            let Ok(Some(first)) = first.await else { return };
            // A cancel request (psql's Ctrl-C) comes on a socket of its own
            // and may be plaintext even when TLS is required.
            if config.require_tls() && first != SSL_REQUEST && first != CANCEL_REQUEST {
                let refusal = refuse(socket, "28000", "this server accepts TLS connections only (use sslmode=require)");
                let _ = tokio::time::timeout_at(limits.login_deadline, refusal).await;
                return;
            }
            let negotiated = tokio::time::timeout_at(limits.login_deadline, negotiate_tls(socket, tls)).await;
            match negotiated {
                Ok(Ok(Some(framed))) => serve(framed, handlers.parts(), Some(permit), limits).await,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => log(format_args!("{peer}: connection closed: {e}")),
                Err(_) => log(format_args!("{peer}: closed, TLS negotiation passed the authentication timeout")),
            }
        });
    }
}

/// Logs sockets turned away for `--max-pending`, at most once a second.
#[derive(Default)]
struct Quiet {
    last: Option<std::time::Instant>,
    since: usize,
}

impl Quiet {
    fn note(&mut self, peer: SocketAddr, config: &ServeConfig) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log(format_args!(
                "{peer}: closed, {} connections are still logging in ({}); {} turned away since the last note",
                config.max_pending(),
                config.setting("max_pending"),
                self.since
            ));
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}

/// The first message's code (SSLRequest, or a protocol version), without
/// consuming it; a GSSENCRequest is declined here, as pgwire has no GSS.
async fn first_request(socket: &mut TcpStream) -> Option<u32> {
    let peek = async {
        loop {
            let mut head = [0u8; 8];
            let n = socket.peek(&mut head).await.ok()?;
            if n == 0 {
                return None;
            }
            if n < 8 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if code == GSSENC_REQUEST {
                socket.read_exact(&mut head).await.ok()?;
                socket.write_all(b"N").await.ok()?;
                continue;
            }
            return Some(code);
        }
    };
    peek.await
}

/// Answers a plaintext socket with one FATAL error, the way PostgreSQL
/// refuses a connection: after reading its startup message.
async fn refuse(mut socket: TcpStream, code: &str, message: &str) {
    let answer = async {
        let len = socket.read_u32().await? as usize;
        if !(8..=10_000).contains(&len) {
            return std::io::Result::Ok(());
        }
        let mut rest = vec![0u8; len - 4];
        socket.read_exact(&mut rest).await?;
        let mut body = Vec::new();
        for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = vec![b'E'];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&body);
        socket.write_all(&out).await?;
        socket.flush().await?;
        socket.shutdown().await
    };
    let _ = answer.await;
}

/// The acceptor [`tls_acceptor`] returns (tokio-rustls', through pgwire).
pub use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor as Acceptor;

/// A TLS acceptor for a certificate chain and a private key (PEM), with
/// ring as the crypto provider. Any problem is an error naming the
/// `tls_cert` or `tls_key` setting: a server never falls back to plaintext
/// when TLS was asked for. The studio loads its certificate through this
/// too.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let pem = std::fs::read(cert).map_err(file_err(cert))?;
    let certs =
        rustls_pemfile::certs(&mut BufReader::new(&pem[..])).collect::<std::result::Result<Vec<_>, _>>().map_err(
            |e| Error::Parameter(ParamMessage::param("tls_cert").then_text(format!(" {}: {e}", cert.display()))),
        )?;
    if certs.is_empty() {
        return Err(Error::Parameter(
            ParamMessage::param("tls_cert")
                .then_text(format!(" {}: no certificate in the file (expected PEM)", cert.display())),
        ));
    }
    let key_pem = std::fs::read(key).map_err(file_err(key))?;
    let private = rustls_pemfile::private_key(&mut BufReader::new(&key_pem[..]))
        .map_err(|e| Error::Parameter(ParamMessage::param("tls_key").then_text(format!(" {}: {e}", key.display()))))?
        .ok_or_else(|| {
            Error::Parameter(ParamMessage::param("tls_key").then_text(format!(
                " {}: no private key in the file (expected PEM: PKCS#8, PKCS#1 or SEC1)",
                key.display()
            )))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            Error::Parameter(
                ParamMessage::param("tls_cert").then_text("/").then_param("tls_key").then_text(format!(": {e}")),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
