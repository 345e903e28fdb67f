//! One connection's message loop, with the limits `pgwire`'s own loop
//! leaves out.
//!
//! `pgwire` decodes messages and dispatches them to the handlers; this
//! loop drives it (instead of `pgwire::tokio::process_socket`) because a
//! shared server needs more around each message:
//!
//! - **Logging in is bounded**: the socket holds a place among
//!   `--max-pending` connections still logging in (taken at accept, see
//!   [`crate::listen`]) and must finish TLS, startup and authentication
//!   within `--auth-timeout`, or it is closed. Only a logged-in connection
//!   takes one of the `--max-connections` slots ([`crate::handler::Startup`]).
//! - **Idle sessions end**: a logged-in connection that sends nothing for
//!   `--idle-timeout` gets FATAL 57P05 and is closed.
//! - **A message cannot hang its connection forever**: the work of one
//!   message (planning, running, sending rows to a client that stopped
//!   reading) is bounded by the statement timeout plus a grace period;
//!   past it the connection is closed.
//! - **A panic is one statement's error**: the handlers run under
//!   `catch_unwind`; a panic anywhere in them (ours, DataFusion's,
//!   pgwire's) ends that statement with SQLSTATE XX000 and the connection
//!   goes on. A panic while logging in closes that connection only.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler, NoopHandler, PgWireConnectionState};
use datafusion_postgres::pgwire::error::PgWireError;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::log;
use crate::reply::{LogErrors, Prepared, user_error};

/// A negotiated socket, speaking the protocol.
pub type Socket<S> = Framed<S, PgWireMessageServerCodec<Prepared>>;

/// How long past the statement timeout one message may keep its
/// connection busy (rows still being written to a slow reader).
pub const GRACE: Duration = Duration::from_secs(10);

/// The limits of one connection's loop.
#[derive(Debug, Clone)]
pub struct Limits {
    /// When logging in must be finished.
    pub login_deadline: Instant,
    /// Longest silence of a logged-in connection.
    pub idle: Duration,
    /// How the message that closes an idle connection names that setting.
    pub idle_setting: String,
    /// Longest the work of one message may take.
    pub message: Duration,
}

/// The handlers one connection's loop drives.
pub struct Parts<A, Q, E, X> {
    /// Logs in (one per connection: it holds the login's state).
    pub startup: Arc<A>,
    /// Simple-protocol queries.
    pub simple: Arc<Q>,
    /// Extended-protocol messages.
    pub extended: Arc<E>,
    /// Cancel requests.
    pub cancel: Arc<X>,
    /// Counts the panics caught (each ended one statement or login with an
    /// error): zero on a healthy server, and what the fuzz target checks.
    pub panics: Arc<AtomicUsize>,
}

/// Serves one socket until the client leaves, breaks the protocol or hits
/// a limit. `pending` is released once the client has logged in.
pub async fn serve<S, A, Q, E, X>(
    mut socket: Framed<S, PgWireMessageServerCodec<E::Statement>>,
    parts: Parts<A, Q, E, X>,
    mut pending: Option<OwnedSemaphorePermit>,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    A: StartupHandler,
    Q: SimpleQueryHandler,
    E: ExtendedQueryHandler,
    X: CancelHandler,
{
    let Parts { startup, simple, extended, cancel, panics } = parts;
    let copy = Arc::new(NoopHandler);
    let errors = LogErrors;
    let peer = socket.socket_addr();
    loop {
        let logging_in = logging_in(&socket);
        if !logging_in {
            pending.take();
        }
        let next = if logging_in {
            match tokio::time::timeout_at(limits.login_deadline, socket.next()).await {
                Ok(m) => m,
                Err(_) => {
                    log(format_args!("{peer}: closed, did not log in within the authentication timeout"));
                    let _ = socket.close().await;
                    return;
                }
            }
        } else {
            match tokio::time::timeout(limits.idle, socket.next()).await {
                Ok(m) => m,
                Err(_) => {
                    log(format_args!("{peer}: closed after {:?} idle", limits.idle));
                    let message = format!(
                        "terminating connection due to idle-session timeout ({}s, {})",
                        limits.idle.as_secs(),
                        limits.idle_setting
                    );
                    fatal(&mut socket, "57P05", message).await;
                    return;
                }
            }
        };
        let Some(Ok(message)) = next else { return };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return;
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(e) => e,
            _ => message.is_extended_query(),
        };
        let work = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        );
        let outcome = tokio::time::timeout(limits.message, AssertUnwindSafe(work).catch_unwind()).await;
        let error = match outcome {
            Ok(Ok(Ok(()))) => continue,
            Ok(Ok(Err(e))) => e,
            Ok(Err(panic)) => {
                panics.fetch_add(1, Ordering::Relaxed);
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                log(format_args!("{peer}: a statement panicked and was abandoned: {what}"));
                let severity = if logging_in { "FATAL" } else { "ERROR" };
                user_error(
                    severity,
                    "XX000",
                    format!("internal error, the statement was abandoned (a bug in taglake serve): {what}"),
                )
            }
            Err(_) => {
                log(format_args!("{peer}: closed, one message kept the connection busy past {:?}", limits.message));
                let message = format!(
                    "terminating connection: a statement and the sending of its rows took longer than {}s",
                    limits.message.as_secs()
                );
                fatal(&mut socket, "57014", message).await;
                return;
            }
        };
        let mut error = error;
        errors.on_error(&socket, &mut error);
        let fatal_error = logging_in || is_fatal(&error);
        if process_error(&mut socket, error, extended_query).await.is_err() || fatal_error {
            let _ = socket.close().await;
            return;
        }
    }
}

fn logging_in<S: 'static, T>(socket: &Framed<S, PgWireMessageServerCodec<T>>) -> bool {
    matches!(
        socket.state(),
        PgWireConnectionState::AwaitingSslRequest
            | PgWireConnectionState::AwaitingStartup
            | PgWireConnectionState::AuthenticationInProgress
    )
}

fn is_fatal(error: &PgWireError) -> bool {
    matches!(error, PgWireError::UserError(info) if info.severity == "FATAL" || info.severity == "PANIC")
}

/// Sends one FATAL error and closes the socket (best effort: the client
/// may be gone or not reading).
async fn fatal<S, T>(socket: &mut Framed<S, PgWireMessageServerCodec<T>>, code: &str, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let info = match user_error("FATAL", code, message) {
        PgWireError::UserError(info) => *info,
        _ => return,
    };
    let send = async {
        socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
        socket.close().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use datafusion_postgres::pgwire::api::results::{Response, Tag};
    use datafusion_postgres::pgwire::api::store::PortalStore;
    use datafusion_postgres::pgwire::api::{ClientPortalStore, DefaultClient};
    use futures::Sink;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::fuzzing::startup_message;

    /// A query handler with a bug: `boom` panics.
    struct Buggy;

    #[async_trait]
    impl SimpleQueryHandler for Buggy {
        async fn do_query<C>(
            &self,
            _client: &mut C,
            query: &str,
        ) -> datafusion_postgres::pgwire::error::PgWireResult<Vec<Response>>
        where
            C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
            C::PortalStore: PortalStore,
            C::Error: std::fmt::Debug,
            PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
        {
            assert_ne!(query, "boom", "a bug in a handler");
            Ok(vec![Response::Execution(Tag::new("FINE"))])
        }
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut out = vec![b'Q'];
        out.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        out.extend_from_slice(sql.as_bytes());
        out.push(0);
        out
    }

    /// A panic in a handler ends that statement with XX000; the same
    /// connection then runs the next statement.
    #[test]
    fn a_panic_ends_the_statement_not_the_connection() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let panics = Arc::new(AtomicUsize::new(0));
        let counted = panics.clone();
        let answer = rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut framed = Framed::new(
                server,
                PgWireMessageServerCodec::<String>::new(DefaultClient::new("127.0.0.1:1".parse().unwrap(), false)),
            );
            framed.set_state(PgWireConnectionState::AwaitingStartup);
            let parts = Parts {
                startup: Arc::new(NoopHandler),
                simple: Arc::new(Buggy),
                extended: Arc::new(NoopHandler),
                cancel: Arc::new(NoopHandler),
                panics: counted,
            };
            let limits = Limits {
                login_deadline: Instant::now() + Duration::from_secs(10),
                idle: Duration::from_secs(10),
                idle_setting: "idle_timeout".into(),
                message: Duration::from_secs(10),
            };
            let serving = tokio::spawn(serve(framed, parts, None, limits));
            let mut input = startup_message();
            input.extend(query("boom"));
            input.extend(query("fine"));
            input.extend([b'X', 0, 0, 0, 4]);
            client.write_all(&input).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            serving.await.unwrap();
            answer
        });
        let text = String::from_utf8_lossy(&answer);
        let error = text.find("XX000").expect("an error for the statement that panicked");
        assert!(
            text[error..].contains("internal error, the statement was abandoned (a bug in taglake serve)"),
            "{text}"
        );
        let fine = text.find("FINE").expect("the next statement ran");
        assert!(fine > error);
        assert_eq!(panics.load(Ordering::Relaxed), 1);
    }
}
