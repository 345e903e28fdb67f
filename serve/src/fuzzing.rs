//! The server's message handling, driven by arbitrary bytes: the harness
//! of the `serve_messages` fuzz target (`fuzz/`) and of its stable-Rust
//! driver (a `proptest` test, `#[ignore]`d, in this module).
//!
//! One [`Harness`] holds a runtime and a server over an empty warehouse
//! (the catalog, `pg_catalog` and every statement path are there; no
//! warehouse table is needed to reach the protocol code). [`Harness::run`]
//! opens an in-memory connection, logs in, sends the bytes as they are and
//! reads everything the server answers until it closes the connection or
//! the bytes run out. It panics — the fuzzer's signal — when the server
//! panicked while handling them (the connection loop turns a panic into
//! an error for the client, so it is counted, see
//! [`Handlers::panics`]) or when the connection did not end in time.

use std::sync::Arc;
use std::time::Duration;

use datafusion_postgres::pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState};
use datafusion_postgres::pgwire::tokio::server::PgWireMessageServerCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::config::ServeConfig;
use crate::connection::{Limits, serve};
use crate::handler::Handlers;
use crate::live::Live;

/// A server to throw bytes at.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    handlers: Arc<Handlers>,
    _warehouse: tempfile::TempDir,
}

/// The startup message every run begins with (protocol 3.0, no password).
pub fn startup_message() -> Vec<u8> {
    let mut params = Vec::new();
    for part in ["user", "fuzz", "database", "taglake", "application_name", "fuzz"] {
        params.extend_from_slice(part.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut out = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&196608u32.to_be_bytes());
    out.extend_from_slice(&params);
    out
}

impl Harness {
    /// A server over an empty warehouse in a temporary directory, with
    /// short limits so that no input can keep a run busy for long.
    pub fn new() -> Harness {
        let warehouse = tempfile::tempdir().expect("a temporary directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handlers = runtime.block_on(async {
            let config = ServeConfig::builder(warehouse.path())
                .listen("127.0.0.1:0")
                .statement_timeout("2s")
                .query_memory("64MiB")
                .connection_memory("128MiB")
                .max_cursors(4)
                .build()
                .expect("a valid configuration");
            let wh = taglake_storage::Warehouse::open(config.warehouse()).expect("an empty warehouse opens");
            let live = Live::open(wh, None).await.expect("an empty warehouse loads");
            Arc::new(Handlers::new(live, Arc::new(config)))
        });
        Harness { runtime, handlers, _warehouse: warehouse }
    }

    /// Sends `bytes` after a login on a fresh connection and reads every
    /// answer. Panics if the server panicked or the connection hung.
    pub fn run(&self, bytes: &[u8]) {
        let before = self.handlers.panics();
        let handlers = self.handlers.clone();
        let mut input = startup_message();
        input.extend_from_slice(bytes);
        // A Terminate ends the session at once when the bytes left the
        // framing intact; otherwise the idle timeout ends it.
        input.extend_from_slice(&[b'X', 0, 0, 0, 4]);
        let finished = self.runtime.block_on(async move {
            let (client, server) = tokio::io::duplex(64 << 10);
            let mut framed = Framed::new(
                server,
                PgWireMessageServerCodec::new(DefaultClient::new("127.0.0.1:5433".parse().expect("an address"), false)),
            );
            framed.set_state(PgWireConnectionState::AwaitingStartup);
            let parts = handlers.parts();
            let limits = Limits {
                login_deadline: tokio::time::Instant::now() + Duration::from_secs(2),
                idle: Duration::from_millis(200),
                idle_setting: "idle_timeout".into(),
                message: Duration::from_secs(4),
            };
            let serving = tokio::spawn(serve(framed, parts, None, limits));
            let (mut from_server, mut to_server) = tokio::io::split(client);
            let talk = async move {
                let _ = to_server.write_all(&input).await;
                // Keep our end open: the idle timeout ends the session.
                let mut sink = vec![0u8; 64 << 10];
                while matches!(from_server.read(&mut sink).await, Ok(n) if n > 0) {}
                drop(to_server);
            };
            tokio::time::timeout(Duration::from_secs(30), async {
                talk.await;
                let _ = serving.await;
            })
            .await
            .is_ok()
        });
        assert!(finished, "the connection did not end within 30 s of its last byte");
        assert_eq!(
            self.handlers.panics(),
            before,
            "the server panicked while handling these bytes (see the log above)"
        );
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut out = s.as_bytes().to_vec();
        out.push(0);
        out
    }

    const SQL: &[&str] = &[
        "SELECT 1",
        "SELECT $1::int + 1",
        "SELECT 1 AS a, 'x' AS b, 2.5 AS c",
        "SELECT * FROM pg_catalog.pg_class LIMIT 3",
        "SELECT 1 AS a INTO t",
        "DECLARE c CURSOR FOR SELECT generate_series(1, 100000) AS n",
        "DECLARE c CURSOR FOR SELECT $1::text AS t",
        "FETCH 10000000000000 FROM c",
        "FETCH ALL FROM c",
        "FETCH BACKWARD 2 FROM c",
        "CLOSE c",
        "CLOSE ALL",
        "BEGIN",
        "COMMIT",
        "SET statement_timeout = '10ms'",
        "SHOW ALL",
        "COPY (SELECT 1) TO 'x.csv'",
        "CREATE TABLE t (a int)",
        "EXPLAIN ANALYZE SELECT 1 AS a INTO t",
        "SELECT count(*) FROM generate_series(1, 1000000)",
        "",
        ";;",
    ];

    /// One protocol message, well-formed or close to it.
    fn any_message() -> impl Strategy<Value = Vec<u8>> {
        let sql = prop::sample::select(SQL);
        let name = prop::sample::select(&["", "s", "p", "c"][..]);
        prop_oneof![
            sql.clone().prop_map(|q| message(b'Q', &cstr(q))),
            (name.clone(), sql, prop::collection::vec(any::<u32>(), 0..3)).prop_map(|(n, q, types)| {
                let mut body = cstr(n);
                body.extend(cstr(q));
                body.extend((types.len() as i16).to_be_bytes());
                for t in types {
                    body.extend(t.to_be_bytes());
                }
                message(b'P', &body)
            }),
            (
                name.clone(),
                name.clone(),
                prop::collection::vec(-2i16..3, 0..4),
                prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..6)), 0..3),
                prop::collection::vec(-2i16..3, 0..5),
            )
                .prop_map(|(portal, stmt, pformats, params, rformats)| {
                    let mut body = cstr(portal);
                    body.extend(cstr(stmt));
                    body.extend((pformats.len() as i16).to_be_bytes());
                    for f in pformats {
                        body.extend(f.to_be_bytes());
                    }
                    body.extend((params.len() as i16).to_be_bytes());
                    for p in params {
                        match p {
                            None => body.extend((-1i32).to_be_bytes()),
                            Some(v) => {
                                body.extend((v.len() as i32).to_be_bytes());
                                body.extend(v);
                            }
                        }
                    }
                    body.extend((rformats.len() as i16).to_be_bytes());
                    for f in rformats {
                        body.extend(f.to_be_bytes());
                    }
                    message(b'B', &body)
                }),
            (name.clone(), prop_oneof![Just(i32::MAX), Just(-1), Just(i32::MIN), Just(0), 1i32..5]).prop_map(
                |(p, rows)| {
                    let mut body = cstr(p);
                    body.extend(rows.to_be_bytes());
                    message(b'E', &body)
                }
            ),
            (prop_oneof![Just(b'S'), Just(b'P')], name.clone()).prop_map(|(t, n)| {
                let mut body = vec![t];
                body.extend(cstr(n));
                message(b'D', &body)
            }),
            (prop_oneof![Just(b'S'), Just(b'P')], name).prop_map(|(t, n)| {
                let mut body = vec![t];
                body.extend(cstr(n));
                message(b'C', &body)
            }),
            Just(message(b'S', &[])),
            Just(message(b'H', &[])),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    /// The stable driver of the `serve_messages` fuzz target: sequences
    /// of (mostly) well-formed messages with absurd fields, and raw bytes,
    /// for `TAGLAKE_FUZZ_SECONDS` (default 20) seconds. A failing sequence
    /// is shrunk and printed; add it to [`known_inputs_are_handled`].
    #[test]
    #[ignore = "long: run with --ignored (see the README's fuzzing section)"]
    fn messages_never_panic_or_hang() {
        use proptest::test_runner::TestCaseError;
        let strategy = prop::collection::vec(any_message(), 0..12);
        taglake_storage::fuzzing::run_for("serve_messages", &strategy, 256, |sequence| {
            std::panic::catch_unwind(|| harness().run(&sequence.concat()))
                .map_err(|_| TestCaseError::fail("the server panicked or hung"))
        });
    }

    fn harness() -> &'static Harness {
        static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
        H.get_or_init(Harness::new)
    }

    /// Inputs the fuzzers found or that once broke a path: each runs
    /// without a panic and the connection ends.
    #[test]
    fn known_inputs_are_handled() {
        let select = |portal_formats: &[i16]| {
            let mut bind = cstr("");
            bind.extend(cstr(""));
            bind.extend(0i16.to_be_bytes());
            bind.extend(0i16.to_be_bytes());
            bind.extend((portal_formats.len() as i16).to_be_bytes());
            for f in portal_formats {
                bind.extend(f.to_be_bytes());
            }
            let mut parse = cstr("");
            parse.extend(cstr("SELECT 1 AS a, 2 AS b, 3 AS c"));
            parse.extend(0i16.to_be_bytes());
            let mut execute = cstr("");
            execute.extend((-1i32).to_be_bytes());
            [message(b'P', &parse), message(b'B', &bind), message(b'E', &execute), message(b'S', &[])].concat()
        };
        let h = harness();
        h.run(&select(&[0, 1]));
        h.run(&select(&[0, 1, 0, 1]));
        h.run(&message(b'Q', &cstr("DECLARE c CURSOR FOR SELECT 1; FETCH 10000000000000 FROM c")));
        h.run(b"\xff\xff\xff\xff");
        h.run(&[]);
    }
}
