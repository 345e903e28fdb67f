//! `taglake serve`: real PostgreSQL clients against the server — `psql`
//! and Python's `psycopg` (libpq underneath) — plus raw sockets for the
//! faults. Every server here is the built binary, started as a child
//! process on a free port, over one generated, tagged warehouse.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::peers::{Peer, program, require, require_for};
use crate::{Tagged, copy_dir, tagged, taglake_ok};

/// 3,000 generated members, ingested and tagged once, read by every server
/// here (the live-refresh tests copy it first).
pub(crate) fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| {
        let t = tagged(3_000, 23);
        std::fs::create_dir(t.dir.join("exports")).unwrap();
        t
    })
}

/// A copy of the fixture's warehouse, for a test that re-tags it.
fn fixture_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture().dir.join("warehouse"), &tmp.path().join("warehouse"));
    tmp
}

/// A running `taglake serve`, killed when dropped.
pub(crate) struct Server {
    server: crate::Listening,
    pub(crate) port: u16,
}

impl std::ops::Deref for Server {
    type Target = crate::Listening;
    fn deref(&self) -> &crate::Listening {
        &self.server
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut crate::Listening {
        &mut self.server
    }
}

impl Server {
    pub(crate) fn start(cwd: &Path, args: &[&str]) -> Server {
        let server = crate::Listening::start("serve", cwd, args);
        Server { port: server.port, server }
    }

    /// `psql -c …` as `user`, unaligned and tuples-only.
    pub(crate) fn psql(&self, sql: &str, env: &[(&str, &str)]) -> Output {
        Command::new(program(Peer::Psql))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "analyst", "-d", "taglake", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "20")
            .env_remove("PGPASSWORD")
            .envs(env.iter().copied())
            .output()
            .expect("psql runs (apt-get install postgresql-client)")
    }

    pub(crate) fn psql_ok(&self, sql: &str) -> String {
        let out = self.psql(sql, &[]);
        assert!(out.status.success(), "psql -c {sql:?}:\n{}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn psql_err(&self, sql: &str) -> String {
        let out = self.psql(sql, &[]);
        assert!(!out.status.success(), "psql -c {sql:?} should fail, printed {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// Runs a Python script with psycopg; `PORT` is in its environment.
    pub(crate) fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(program(Peer::Psycopg))
            .args(["-c", script])
            .args(args)
            .env("PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

pub(crate) fn audience_count(dir: &Path, expr: &str) -> u64 {
    let csv = taglake_ok(&["audience", "count", expr, "--format", "csv"], dir);
    let line = csv.lines().nth(1).unwrap();
    line.split(',').rev().nth(2).unwrap().parse().unwrap()
}

#[test]
fn psql_counts_what_the_audience_command_counts() {
    if !require(&[Peer::Psql]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &[]);
    let expr = "tier_gold AND NOT dormant_90_plus";
    let want = audience_count(&f.dir, expr);
    assert!(want > 0);
    let got = server.psql_ok("SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus");
    assert_eq!(got.trim(), want.to_string());
    let got = server.psql_ok("SELECT count(*) FROM audience('tier_gold AND NOT dormant_90_plus')");
    assert_eq!(got.trim(), want.to_string());
    // Attributes and tags together, and a join with orders.
    let got = server.psql_ok(
        "SELECT count(DISTINCT m.member_key) FROM members m JOIN orders o ON o.member_key = m.member_key \
         WHERE m.tier_gold AND NOT m.dormant_90_plus",
    );
    assert!(got.trim().parse::<u64>().unwrap() <= want);
}

#[test]
fn psql_lists_tables_and_columns() {
    if !require(&[Peer::Psql]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &[]);
    let tables = server.psql_ok("\\dt");
    for t in ["members", "orders", "products", "tags", "features"] {
        assert!(tables.lines().any(|l| l.split('|').nth(1) == Some(t)), "\\dt misses {t}:\n{tables}");
    }
    let columns = server.psql_ok("\\d members");
    for c in ["member_id", "tier_gold", "dormant_90_plus", "in_experiment"] {
        assert!(columns.lines().any(|l| l.starts_with(&format!("{c}|"))), "\\d members misses {c}:\n{columns}");
    }
    let n = server.psql_ok(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'members' AND data_type = 'Boolean'",
    );
    assert!(n.trim().parse::<u64>().unwrap() > 20, "{n}");
}

#[test]
fn writes_and_path_escapes_are_refused_and_exports_stay_inside() {
    if !require(&[Peer::Psql]) {
        return;
    }
    let f = fixture();
    let exports = f.dir.join("exports").canonicalize().unwrap();
    let outside = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), exports.join("escape")).unwrap_or(());
    let server = Server::start(&f.dir, &["--export-dir", exports.to_str().unwrap()]);
    for (sql, want) in [
        ("DROP TABLE members", "taglake serve is read-only: DROP TABLE is not allowed"),
        ("DELETE FROM members", "taglake serve is read-only: DELETE is not allowed"),
        ("INSERT INTO members (member_id) VALUES ('x')", "taglake serve is read-only: INSERT is not allowed"),
        ("CREATE TABLE t AS SELECT 1", "taglake serve is read-only: CREATE TABLE is not allowed"),
        ("CREATE VIEW v AS SELECT 1", "taglake serve is read-only: CREATE VIEW is not allowed"),
        ("COPY members FROM '/tmp/x.csv'", "taglake serve is read-only: COPY … FROM is not allowed"),
        ("COPY (SELECT 1) TO '../x.csv'", "'..' is not allowed in the path"),
        ("COPY (SELECT 1) TO '/etc/taglake-x.csv'", "it resolves outside the export directory"),
        ("COPY (SELECT 1) TO 'escape/x.csv'", "it resolves outside the export directory"),
        ("COPY (SELECT 1) TO 's3://bucket/x.csv'", "URLs are not allowed"),
        ("COPY members TO PROGRAM 'true'", "COPY … TO PROGRAM is never allowed"),
    ] {
        let err = server.psql_err(sql);
        assert!(err.contains(want), "{sql}: {err}");
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing was written outside");
    let out = server.psql_ok(
        "COPY (SELECT member_id FROM members WHERE tier_gold ORDER BY member_id) TO 'gold.csv' WITH (FORMAT csv, HEADER)",
    );
    assert!(out.starts_with("COPY "), "{out}");
    let written = std::fs::read_to_string(exports.join("gold.csv")).unwrap();
    let want = audience_count(&f.dir, "tier_gold");
    assert_eq!(written.lines().count() as u64, want + 1);
    assert_eq!(written.lines().next(), Some("member_id"));
    server.psql_ok("COPY (SELECT member_id, city FROM members) TO 'sub/dir/all.parquet'");
    assert!(exports.join("sub/dir/all.parquet").is_file());
    // The server is read-only for everything else, and still serving.
    assert_eq!(server.psql_ok("SELECT 1").trim(), "1");
    let no_dir = Server::start(&f.dir, &[]);
    let err = no_dir.psql_err("COPY (SELECT 1) TO 'x.csv'");
    assert!(err.contains("this server has no export directory (start it with taglake serve --export-dir)"), "{err}");
}

/// psycopg (libpq): the extended protocol, prepared statements with
/// parameters, binary results, catalog queries and errors with SQLSTATE.
const PSYCOPG_CLIENT: &str = r#"
import os, sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake", autocommit=True)
cur = conn.cursor()
out = {}
cur.execute("SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus")
out["count"] = cur.fetchone()[0]
# The expression decides the plan: bound on the client side it works; as a
# server-side parameter it is refused with a clear message.
ccur = psycopg.ClientCursor(conn)
ccur.execute("SELECT count(*) FROM audience(%s)", ("tier_gold AND NOT dormant_90_plus",))
out["audience_param"] = ccur.fetchone()[0]
try:
    cur.execute("SELECT count(*) FROM audience(%s)", ("tier_gold",))
    out["audience_server_param"] = "no error"
except psycopg.Error as e:
    out["audience_server_param"] = str(e)
# A prepared statement with parameters, executed several times.
q = "SELECT count(*) FROM members WHERE tier_gold AND points_balance >= %s"
out["points"] = [cur.execute(q, (p,), prepare=True).fetchone()[0] for p in (0, 100, 1000, 0)]
# Binary results.
bcur = conn.cursor(binary=True)
bcur.execute("SELECT member_key, tier_gold FROM members WHERE tier_gold ORDER BY member_key LIMIT 3")
out["binary"] = [[int(k), bool(t)] for k, t in bcur.fetchall()]
cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
out["tables"] = [r[0] for r in cur.fetchall()]
errors = {}
for name, sql in [("unknown_table", "SELECT * FROM memberz"), ("unknown_column", "SELECT nope FROM members"),
                  ("syntax", "SELEC 1"), ("write", "DROP TABLE members"), ("bad_audience", "SELECT count(*) FROM audience('tier_gld')")]:
    try:
        cur.execute(sql)
        errors[name] = "no error"
    except psycopg.Error as e:
        errors[name] = [e.sqlstate, str(e).splitlines()[0]]
out["errors"] = errors
# The connection survives its errors.
cur.execute("SELECT 41 + 1")
out["after"] = cur.fetchone()[0]
import json; print(json.dumps(out))
"#;

#[test]
fn psycopg_runs_prepared_binary_and_catalog_queries() {
    if !require(&[Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &[]);
    let out: serde_json::Value = serde_json::from_str(&server.python(PSYCOPG_CLIENT, &[])).unwrap();
    let want = audience_count(&f.dir, "tier_gold AND NOT dormant_90_plus");
    assert_eq!(out["count"], want);
    assert_eq!(out["audience_param"], want);
    let refused = out["audience_server_param"].as_str().unwrap();
    assert!(refused.contains("audience() takes one text literal, not the parameter $1"), "{refused}");
    let gold = audience_count(&f.dir, "tier_gold");
    let points = server.psql_ok("SELECT count(*) FROM members WHERE tier_gold AND points_balance >= 100");
    let p = out["points"].as_array().unwrap();
    assert_eq!((p[0].as_u64(), p[3].as_u64()), (Some(gold), Some(gold)));
    assert_eq!(p[1].as_u64().unwrap().to_string(), points.trim());
    assert!(p[2].as_u64() <= p[1].as_u64());
    let first = server.psql_ok("SELECT member_key FROM members WHERE tier_gold ORDER BY member_key LIMIT 3");
    let keys: Vec<String> = out["binary"].as_array().unwrap().iter().map(|r| r[0].to_string()).collect();
    assert_eq!(keys.join("\n"), first.trim());
    assert!(out["binary"].as_array().unwrap().iter().all(|r| r[1] == true));
    let tables: Vec<&str> = out["tables"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tables.contains(&"members") && tables.contains(&"orders"), "{tables:?}");
    let e = &out["errors"];
    assert_eq!(e["unknown_table"][0], "42P01", "{e}");
    assert!(e["unknown_table"][1].as_str().unwrap().contains("did you mean `members`?"), "{e}");
    assert_eq!(e["unknown_column"][0], "42703", "{e}");
    assert_eq!(e["syntax"][0], "42601", "{e}");
    assert_eq!(e["write"][0], "25006", "{e}");
    assert!(e["bad_audience"][1].as_str().unwrap().contains("did you mean"), "{e}");
    assert_eq!(out["after"], 42);
}

/// One connection runs a query over its memory limit while others keep
/// counting; prints what each saw.
const OVER_LIMIT: &str = r#"
import os, sys, json, threading, psycopg
port = int(os.environ["PORT"])
def connect():
    return psycopg.connect(host="127.0.0.1", port=port, user="analyst", dbname="taglake", autocommit=True)
result = {"heavy": None, "light": []}
def heavy():
    try:
        with connect() as c:
            c.execute("SELECT o.order_id, array_agg(p.sku) FROM orders o CROSS JOIN products p GROUP BY o.order_id ORDER BY 1").fetchall()
        result["heavy"] = "no error"
    except psycopg.Error as e:
        result["heavy"] = [e.sqlstate, str(e)]
def light():
    with connect() as c:
        for _ in range(20):
            result["light"].append(c.execute("SELECT count(*) FROM members WHERE tier_gold").fetchone()[0])
threads = [threading.Thread(target=heavy)] + [threading.Thread(target=light) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(result))
"#;

#[test]
fn a_query_over_its_memory_limit_fails_alone() {
    if !require(&[Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &["--query-memory", "4MiB"]);
    let out: serde_json::Value = serde_json::from_str(&server.python(OVER_LIMIT, &[])).unwrap();
    assert_eq!(out["heavy"][0], "53200", "{out}");
    let msg = out["heavy"][1].as_str().unwrap();
    assert!(msg.contains("per-query limit of 4 MiB (taglake serve --query-memory)"), "{msg}");
    let gold = audience_count(&f.dir, "tier_gold");
    let light = out["light"].as_array().unwrap();
    assert_eq!(light.len(), 60);
    assert!(light.iter().all(|c| c.as_u64() == Some(gold)), "{out}");
    assert_eq!(server.psql_ok("SELECT count(*) FROM members WHERE tier_gold").trim(), gold.to_string());
}

#[test]
fn a_statement_over_its_timeout_is_cancelled_and_the_server_goes_on() {
    if !require(&[Peer::Psql]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &["--statement-timeout", "1s"]);
    // A nested-loop join that runs for minutes in a debug build.
    let slow = "SELECT count(*) FROM orders a, orders b WHERE a.quantity * b.quantity = -1";
    let err = server.psql_err(slow);
    assert!(err.contains("canceling statement due to statement timeout (1.000s)"), "{err}");
    // A client may lower the limit, not raise it.
    let err = server.psql_err(&format!("SET statement_timeout = '100ms'; {slow}"));
    assert!(err.contains("statement timeout (0.100s)"), "{err}");
    let err = server.psql_err(&format!("SET statement_timeout = '1h'; {slow}"));
    assert!(err.contains("statement timeout (1.000s)"), "{err}");
    assert_eq!(server.psql_ok("SELECT 1").trim(), "1");
}

#[test]
fn connections_over_the_limit_get_a_postgres_error() {
    if !require(&[Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &["--max-connections", "2"]);
    let script = r#"
import os, psycopg
port = int(os.environ["PORT"])
def connect():
    return psycopg.connect(host="127.0.0.1", port=port, user="analyst", dbname="taglake", autocommit=True)
a, b = connect(), connect()
try:
    connect()
    print("third connected")
except psycopg.OperationalError as e:
    print("refused:", str(e).strip().splitlines()[-1])
a.close()
import time
for _ in range(100):
    try:
        c = connect(); print("after close:", c.execute("SELECT 7").fetchone()[0]); break
    except psycopg.OperationalError:
        time.sleep(0.1)
print("b still works:", b.execute("SELECT 8").fetchone()[0])
"#;
    let out = server.python(script, &[]);
    assert!(
        out.contains("refused: ")
            && out.contains("sorry, too many clients already (taglake serve --max-connections 2)"),
        "{out}"
    );
    assert!(out.contains("after close: 7"), "{out}");
    assert!(out.contains("b still works: 8"), "{out}");
}

#[test]
fn garbage_and_truncated_messages_close_only_their_connection() {
    let f = fixture();
    let server = Server::start(&f.dir, &[]);
    let addr = format!("127.0.0.1:{}", server.port);
    let hold = TcpStream::connect(&addr).unwrap(); // an idle socket that never speaks
    let mut bad_inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64],
        vec![0, 0, 0, 8],                         // truncated startup
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0], // absurd length
        {
            // a startup with a length that runs past the bytes sent
            let mut v = vec![0, 0, 1, 0, 0, 3, 0, 0];
            v.extend_from_slice(b"user\0x");
            v
        },
    ];
    let mut draw = taglake_base::seeded::SplitMix64::new(1);
    for _ in 0..20 {
        let n = (draw.next_u64() % 200) as usize + 1;
        bad_inputs.push((0..n).map(|_| draw.next_u64() as u8).collect());
    }
    for bytes in &bad_inputs {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // the server closes it (or times it out)
    }
    assert!(server.child_alive());
    // A logged-in connection that then sends garbage mid-session.
    if !require_for("the mid-session garbage", &[Peer::Psycopg, Peer::Psql]) {
        return;
    }
    let script = r#"
import os, socket, psycopg
c = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake", autocommit=True)
s = socket.fromfd(c.fileno(), socket.AF_INET, socket.SOCK_STREAM)
s.sendall(b"Q\x00\x00\x00\x03\xff\xff")   # a Query message with a length below its own header
try:
    c.execute("SELECT 1"); print("still open")
except psycopg.Error as e:
    print("closed")
"#;
    let out = server.python(script, &[]);
    assert!(out.contains("closed") || out.contains("still open"), "{out}");
    drop(hold);
    assert_eq!(server.psql_ok("SELECT count(*) > 0 FROM members").trim(), "t");
    assert!(server.child_alive());
}

impl Server {
    fn child_alive(&self) -> bool {
        // The server still accepts connections (`try_wait` would need `&mut`).
        TcpStream::connect(format!("127.0.0.1:{}", self.port)).is_ok()
    }
}

#[test]
fn a_new_snapshot_is_served_without_a_restart() {
    if !require(&[Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let tmp = fixture_copy();
    let dir = tmp.path();
    let server = Server::start(dir, &["--refresh-interval", "200ms"]);
    let expr = "dormant_90_plus";
    let before = audience_count(dir, expr);
    let sql = "SELECT count(*) FROM members WHERE dormant_90_plus";
    assert_eq!(server.psql_ok(sql).trim(), before.to_string());
    // A client holding a prepared statement across the refresh.
    let script = r#"
import os, sys, time, psycopg
c = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake", autocommit=True)
q = "SELECT count(*) FROM members WHERE dormant_90_plus AND points_balance >= %s"
print(c.execute(q, (0,), prepare=True).fetchone()[0], flush=True)
want = int(sys.argv[1])
for _ in range(600):
    n = c.execute(q, (0,), prepare=True).fetchone()[0]
    if n == want: break
    time.sleep(0.1)
print(n)
"#;
    // Re-tag a year later: many more members are dormant.
    taglake_ok(&["tag", "--as-of", "2030-01-01"], dir);
    let after = audience_count(dir, expr);
    assert_ne!(before, after);
    let out = server.python(script, &[&after.to_string()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last().copied(), Some(after.to_string().as_str()), "{out}\n{}", server.log());
    assert_eq!(server.psql_ok(sql).trim(), after.to_string());
    assert!(server.log().contains("tag snapshot 2"), "{}", server.log());
}

#[test]
fn logins_use_scram_over_tls_and_public_addresses_need_users() {
    let f = fixture();
    // Without users, anything but loopback is refused before listening.
    let out = crate::taglake(&["serve", "--listen", "0.0.0.0:0"], &f.dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without authentication"), "{err}");
    if !require_for("the logins", &[Peer::Openssl, Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    let out =
        crate::taglake_with_input(&["passwd", "analyst", "--users", users.to_str().unwrap()], &f.dir, "s3cret pw\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let made = Command::new(program(Peer::Openssl))
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server = Server::start(
        &f.dir,
        &[
            "--users",
            users.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--require-tls",
        ],
    );
    let tls = [("PGSSLMODE", "require"), ("PGPASSWORD", "s3cret pw")];
    let ok = server.psql("SELECT ssl FROM (SELECT true AS ssl)", &tls);
    assert!(ok.status.success(), "{}\n{}", String::from_utf8_lossy(&ok.stderr), server.log());
    let gold = audience_count(&f.dir, "tier_gold");
    let n = server.psql("SELECT count(*) FROM members WHERE tier_gold", &tls);
    assert_eq!(String::from_utf8_lossy(&n.stdout).trim(), gold.to_string());
    let wrong = server.psql("SELECT 1", &[("PGSSLMODE", "require"), ("PGPASSWORD", "nope")]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("assword authentication failed"), "{wrong:?}");
    let nobody = Command::new(program(Peer::Psql))
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "nobody",
            "-d",
            "x",
            "-c",
            "SELECT 1",
        ])
        .envs([("PGSSLMODE", "require"), ("PGPASSWORD", "s3cret pw")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("assword authentication failed"), "{nobody:?}");
    let plain = server.psql("SELECT 1", &[("PGSSLMODE", "disable"), ("PGPASSWORD", "s3cret pw")]);
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("this server accepts TLS connections only"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    // psycopg logs in over TLS too (SCRAM, channel binding if it wants it).
    let script = r#"
import os, psycopg
c = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", password="s3cret pw", dbname="taglake", sslmode="require")
print(c.execute("SELECT count(*) FROM members WHERE tier_gold").fetchone()[0], c.pgconn.ssl_in_use)
"#;
    assert_eq!(server.python(script, &[]).trim(), format!("{gold} True"));

    // With users it starts.
    let public = Server::start(&f.dir, &["--users", users.to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    let n = public.psql("SELECT count(*) FROM members WHERE tier_gold", &[("PGPASSWORD", "s3cret pw")]);
    assert_eq!(String::from_utf8_lossy(&n.stdout).trim(), gold.to_string(), "{}", String::from_utf8_lossy(&n.stderr));
}

/// In process: a query planned (and one already streaming) before a
/// refresh finishes on the snapshot it started with; a new plan sees the
/// new one, and the old plan is known to be stale.
#[test]
fn running_queries_finish_on_their_snapshot_across_a_refresh() {
    use datafusion::sql::parser::Statement as DfStatement;
    let tmp = fixture_copy();
    let dir = tmp.path();
    let rt = crate::tag_reference::runtime();
    let wh = taglake_storage::Warehouse::open(dir.join("warehouse")).unwrap();
    let live = rt.block_on(taglake_serve::live::Live::open(wh, None)).unwrap();
    let sql = "SELECT count(*) FROM members WHERE dormant_90_plus";
    let plan = |live: &taglake_serve::live::Live| {
        let statement = datafusion::sql::parser::DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        assert!(matches!(statement, DfStatement::Statement(_)));
        rt.block_on(live.context().state().statement_to_plan(statement)).unwrap()
    };
    let count = |plan: datafusion::logical_expr::LogicalPlan| {
        let ctx = live.query_context(64 << 20).unwrap();
        let batches = rt.block_on(async { ctx.execute_logical_plan(plan).await?.collect().await }).unwrap();
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batches[0].column(0).as_ref()).value(0)
            as u64
    };
    let before = audience_count(dir, "dormant_90_plus");
    let old = plan(&live);
    // A stream started before the refresh, read after it.
    let ctx = live.query_context(64 << 20).unwrap();
    let mut running =
        rt.block_on(async { ctx.execute_logical_plan(old.clone()).await?.execute_stream().await }).unwrap();
    assert!(live.is_current(&old));
    assert_eq!(live.served().snapshot, Some(1));

    taglake_ok(&["tag", "--as-of", "2030-01-01"], dir);
    let after = audience_count(dir, "dormant_90_plus");
    assert_ne!(before, after);
    assert!(rt.block_on(live.refresh()).unwrap(), "the new snapshot is installed");
    assert!(!rt.block_on(live.refresh()).unwrap(), "and only once");
    assert_eq!(live.served().snapshot, Some(2));

    let streamed = rt.block_on(futures::StreamExt::next(&mut running)).unwrap().unwrap();
    let streamed =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(streamed.column(0).as_ref()).value(0);
    assert_eq!(streamed as u64, before, "the running query finished on its snapshot");
    assert!(!live.is_current(&old), "the old plan is stale");
    assert_eq!(count(old), before, "an old plan still answers from its own snapshot");
    assert_eq!(count(plan(&live)), after, "a new plan sees the new snapshot");
}

/// psql's Ctrl-C: a cancel request on its own socket stops the running
/// statement (57014), and the connection goes on.
#[test]
fn a_cancel_request_stops_the_running_statement() {
    if !require(&[Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let server = Server::start(&f.dir, &["--max-connections", "1"]);
    let script = r#"
import os, threading, time, psycopg
c = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake", autocommit=True)
res = {}
def run():
    try:
        c.execute("SELECT count(*) FROM orders a, orders b WHERE a.quantity * b.quantity = -1").fetchone()
        res["r"] = "finished"
    except psycopg.Error as e:
        res["r"] = f"{e.sqlstate} {e}"
th = threading.Thread(target=run); th.start()
time.sleep(1.0)
c.cancel_safe()   # a second socket, past the one-connection limit: never refused
th.join()
print(res["r"]); print(c.execute("SELECT 5").fetchone()[0])
"#;
    let out = server.python(script, &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["57014 canceling statement due to user request", "5"], "{out}");
}
