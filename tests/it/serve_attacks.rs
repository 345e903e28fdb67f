//! `taglake serve` against hostile and unlucky clients: psql, psycopg and
//! raw protocol bytes, each attack followed by the same questions — is it
//! the same server process, does it still answer, was nothing created.
//!
//! The raw messages come from a small Python wire client ([`WIRE`]), so
//! the tests can send what no driver would: absurd `max_rows`, mismatched
//! format codes, half-finished logins.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use crate::peers::{Peer, require};
use crate::serve::{Server, audience_count, fixture};

/// A minimal PostgreSQL wire client in Python, prepended to scripts.
const WIRE: &str = r#"
import os, socket, struct, json, base64, time
PORT = int(os.environ["PORT"])
def msg(t, body=b""):
    return t + struct.pack("!i", len(body) + 4) + body
def cstr(s):
    return (s if isinstance(s, bytes) else s.encode()) + b"\0"
def recvn(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("closed")
        out += chunk
    return out
def read(s):
    t = recvn(s, 1)
    n = struct.unpack("!i", recvn(s, 4))[0]
    return t, recvn(s, n - 4)
def fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode()
    return out
def startup(user="analyst", timeout=60):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    params = cstr("user") + cstr(user) + cstr("database") + cstr("taglake") + b"\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    return s
def login(user="analyst"):
    s = startup(user)
    until(s, b"Z")
    return s
def until(s, last=b"Z"):
    """Messages up to and including the first of type `last`, as (type, body)."""
    got = []
    while True:
        t, body = read(s)
        got.append((t, body))
        if t == last:
            return got
def summary(got):
    """Rows sent, the command tags, errors (code, message) and whether it suspended."""
    rows = sum(1 for t, _ in got if t == b"D")
    tags = [b.rstrip(b"\0").decode() for t, b in got if t == b"C"]
    errors = [(fields(b).get("C"), fields(b).get("M")) for t, b in got if t == b"E"]
    return {"rows": rows, "tags": tags, "errors": errors, "suspended": any(t == b"s" for t, _ in got)}
def parse(name, sql):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", 0))
def bind(portal, stmt, result_formats=(), params=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return msg(b"B", body)
def execute(portal, max_rows):
    return msg(b"E", cstr(portal) + struct.pack("!i", max_rows))
SYNC = msg(b"S")
def simple(s, sql):
    s.sendall(msg(b"Q", cstr(sql)))
    return summary(until(s, b"Z"))
"#;

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("the server runs");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Fails the test unless the server process is the one started and
    /// still answers a query.
    fn still_serving(&mut self, pid: u32) {
        assert!(self.child.try_wait().unwrap().is_none(), "the server exited:\n{}", self.log());
        assert_eq!(self.pid(), pid);
        assert_eq!(self.psql_ok("SELECT 40 + 2").trim(), "42", "{}", self.log());
    }

    fn wire(&self, script: &str) -> serde_json::Value {
        let out = self.python(&format!("{WIRE}\n{script}"), &[]);
        serde_json::from_str(out.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {out}\n{}", self.log()))
    }
}

/// Every attack of one client that used to take the server down, write
/// through its read-only policy or escape its limits, against one server:
/// afterwards it is the same process, it answers, nothing was created and
/// its memory is back near its idle level.
#[test]
fn one_server_survives_every_attack() {
    if !require(&[Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let exports = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &f.dir,
        &[
            "--export-dir",
            exports.path().to_str().unwrap(),
            "--export-max",
            "64KiB",
            "--max-cursors",
            "4",
            "--statement-timeout",
            "5s",
        ],
    );
    let pid = server.pid();
    let members = audience_count(&f.dir, "tier_regular OR NOT tier_regular");
    // Warm up (first queries load what every later one uses), then measure.
    for _ in 0..3 {
        server.psql_ok("SELECT count(*) FROM members WHERE tier_gold");
        server.psql_ok("SELECT member_id FROM members ORDER BY member_id LIMIT 5");
    }
    let idle = server.rss_kib();

    // 1. FETCH with an absurd count streams what there is (it used to
    // pre-allocate room for 10^13 rows and abort the process).
    let out = server.psql_ok("DECLARE c CURSOR FOR SELECT member_id FROM members; FETCH 10000000000000 FROM c");
    assert_eq!(out.lines().filter(|l| *l != "DECLARE CURSOR").count() as u64, members);
    let err = server.psql_err("DECLARE c CURSOR FOR SELECT 1; FETCH 99999999999999999999999 FROM c");
    assert!(err.contains("out of range for type bigint"), "{err}");
    let err = server.psql_err("DECLARE c CURSOR FOR SELECT 1; FETCH BACKWARD 1 FROM c");
    assert!(err.contains("cursor can only scan forward"), "{err}");
    server.still_serving(pid);

    // 2. Execute with an absurd or negative max_rows, and a portal read in steps.
    let out = server.wire(
        r#"
s = login()
out = {}
for rows in (2147483647, -1, -2147483648):
    s.sendall(parse("", "SELECT member_id FROM members") + bind("", "") + execute("", rows) + SYNC)
    out[str(rows)] = summary(until(s))
s.sendall(parse("", "SELECT member_id FROM members") + bind("p", "") + execute("p", 1000) + execute("p", 1000) + SYNC)
out["steps"] = summary(until(s))
print(json.dumps(out))
"#,
    );
    for rows in ["2147483647", "-1", "-2147483648"] {
        assert_eq!(out[rows]["rows"], members, "{out}");
        assert_eq!(out[rows]["errors"], serde_json::json!([]), "{out}");
    }
    assert_eq!(out["steps"]["rows"], 2000.min(members), "{out}");
    server.still_serving(pid);

    // 3. A Bind whose format codes do not match the columns (pgwire
    // indexed past them and panicked): an error, and the connection goes on.
    let out = server.wire(
        r#"
s = login()
s.sendall(parse("", "SELECT 1 AS a, 2 AS b, 3 AS c") + bind("", "", result_formats=(0, 1)) + execute("", 0) + SYNC)
bad = summary(until(s))
s.sendall(parse("", "SELECT 1 AS a") + bind("", "", result_formats=(7,)) + execute("", 0) + SYNC)
code = summary(until(s))
after = simple(s, "SELECT 5")
print(json.dumps({"bad": bad, "code": code, "after": after}))
"#,
    );
    assert_eq!(out["bad"]["errors"][0][0], "08P01", "{out}");
    assert!(out["bad"]["errors"][0][1].as_str().unwrap().contains("2 result formats but query has 3 columns"), "{out}");
    assert_eq!(out["code"]["errors"][0][0], "22023", "{out}");
    assert_eq!(out["after"]["rows"], 1, "{out}");
    server.still_serving(pid);

    // 4. SELECT … INTO by every path: prepared (extended protocol), in a
    // cursor, as a COPY source. Each is refused; no table appears.
    let out = server.python(
        r#"
import os, json, psycopg
c = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake", autocommit=True)
out = {}
for name, sql, prepare in [("prepared", "SELECT 1 AS a INTO leak_prepared", True),
                           ("extended", "SELECT member_id INTO leak_extended FROM members", False),
                           ("cursor", "DECLARE k CURSOR FOR SELECT 1 AS a INTO leak_cursor", True),
                           ("copy", "COPY (SELECT 1 AS a INTO leak_copy) TO 'leak.csv'", False)]:
    try:
        c.execute(sql, prepare=prepare)
        out[name] = "no error"
    except psycopg.Error as e:
        out[name] = e.sqlstate
try:
    with c.cursor("named") as cur:
        cur.execute("SELECT 1 AS a INTO leak_named")
        cur.fetchall()
    out["named"] = "no error"
except psycopg.Error as e:
    out["named"] = e.sqlstate
print(json.dumps(out))
"#,
        &[],
    );
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for path in ["prepared", "extended", "cursor", "named"] {
        assert_eq!(out[path], "25006", "{path}: {out}");
    }
    assert!(out["copy"] == "25006" || out["copy"] == "42601", "{out}");
    let tables = server.psql_ok("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'leak%'");
    assert_eq!(tables.trim(), "", "a table was created");
    server.still_serving(pid);

    // 5. Cursors: at most --max-cursors per connection, server-side cursors
    // with parameters work, and each FETCH runs under the statement timeout.
    let err = server.psql_err(
        "DECLARE a CURSOR FOR SELECT 1; DECLARE b CURSOR FOR SELECT 1; DECLARE c CURSOR FOR SELECT 1; \
         DECLARE d CURSOR FOR SELECT 1; DECLARE e CURSOR FOR SELECT 1",
    );
    assert!(err.contains("already holds 4 open cursors") && err.contains("--max-cursors 4"), "{err}");
    let out = server.wire(
        r#"
s = login()
s.sendall(parse("", "SELECT member_id FROM members"))
for i in range(5):
    s.sendall(bind("p%d" % i, "") + execute("p%d" % i, 1))
s.sendall(SYNC)
portals = summary(until(s))
print(json.dumps(portals))
"#,
    );
    assert_eq!(out["rows"], 4, "four portals suspended after a row each: {out}");
    assert!(out["errors"][0][1].as_str().unwrap().contains("--max-cursors 4"), "{out}");
    let out = server.python(
        r#"
import os, json, psycopg
c = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake")
with c.cursor("gold") as cur:
    cur.execute("SELECT member_id FROM members WHERE points_balance >= %s ORDER BY member_id", (100,))
    first = cur.fetchmany(7)
    rest = cur.fetchall()
c.commit()
out = {"first": len(first), "all": len(first) + len(rest)}
try:
    # The session lowers its deadline to 1 s (as in serve::a_statement_over_
    # its_timeout…): a FETCH must keep to it like any statement.
    c.execute("SET statement_timeout = '1s'")
    c.execute("DECLARE slow CURSOR FOR SELECT count(*) FROM orders a, orders b WHERE a.quantity * b.quantity = -1")
    c.execute("FETCH ALL FROM slow").fetchall()
    out["slow"] = "finished"
except psycopg.Error as e:
    out["slow"] = e.sqlstate
print(json.dumps(out))
"#,
        &[],
    );
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let want = server.psql_ok("SELECT count(*) FROM members WHERE points_balance >= 100");
    assert_eq!(out["first"], 7, "{out}");
    assert_eq!(out["all"].to_string(), want.trim(), "{out}");
    assert_eq!(out["slow"], "57014", "{out}");
    server.still_serving(pid);

    // 6. COPY … TO stops at --export-max and leaves nothing; a small one works.
    let err = server.psql_err("COPY (SELECT * FROM orders) TO 'big.csv' WITH (FORMAT csv, HEADER)");
    assert!(err.contains("--export-max") && err.contains("nothing was kept"), "{err}");
    assert!(!exports.path().join("big.csv").exists());
    server.psql_ok("COPY (SELECT member_id FROM members LIMIT 10) TO 'small.csv'");
    let files: Vec<String> =
        std::fs::read_dir(exports.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(files, ["small.csv"], "only the small export exists");
    server.still_serving(pid);

    // The same process, serving, with its memory back near its idle level.
    let mut rss = server.rss_kib();
    for _ in 0..50 {
        if rss <= idle + idle / 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        rss = server.rss_kib();
    }
    assert!(rss <= idle + idle / 5, "memory {rss} KiB after the attacks, {idle} KiB idle");
    server.still_serving(pid);
}

/// Cursors and queries of one connection share `--connection-memory` (the
/// accounting itself is tested in `taglake_serve::pool`): a cursor's query
/// runs under the limits, its memory is given back when it is closed, and
/// the server goes on.
#[test]
fn a_connections_cursors_share_its_memory() {
    if !require(&[Peer::Psql]) {
        return;
    }
    let f = fixture();
    let mut server = Server::start(&f.dir, &["--query-memory", "1MiB", "--connection-memory", "1MiB"]);
    let pid = server.pid();
    // A query whose aggregation emits early under memory pressure: its
    // cursor holds part of the connection's memory while it is open.
    let heavy =
        "SELECT o.order_id, array_agg(p.sku) FROM orders o CROSS JOIN products p GROUP BY o.order_id ORDER BY 1";
    let alone = server.psql_err(heavy);
    assert!(alone.contains("per-query limit of 1 MiB (taglake serve --query-memory)"), "{alone}");
    // With the cursor open, the same query on its connection fails too
    // (which limit it meets first depends on how much the cursor kept).
    let out = server.psql(&format!("DECLARE c CURSOR FOR {heavy}; {heavy}"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--connection-memory") || err.contains("--query-memory"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DECLARE CURSOR"));
    // Closing the cursor gives its memory back to the connection.
    let out = server.psql_ok(&format!("DECLARE c CURSOR FOR {heavy}; CLOSE c; SELECT count(*) FROM members"));
    assert!(out.ends_with(&format!("{}\n", audience_count(&f.dir, "tier_regular OR NOT tier_regular"))), "{out}");
    server.still_serving(pid);
}

/// A client that never finishes logging in holds no connection slot and
/// is closed after `--auth-timeout`; silent sockets past `--max-pending`
/// are closed at once; a logged-in client that goes quiet is closed after
/// `--idle-timeout` (57P05).
#[test]
fn silent_and_half_logged_in_sockets_cannot_lock_anyone_out() {
    if !require(&[Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    let out = crate::taglake_with_input(&["passwd", "analyst", "--users", users.to_str().unwrap()], &f.dir, "pw\n");
    assert!(out.status.success());
    let mut server = Server::start(
        &f.dir,
        &[
            "--users",
            users.to_str().unwrap(),
            "--max-connections",
            "1",
            "--max-pending",
            "4",
            "--auth-timeout",
            "2s",
            "--idle-timeout",
            "2s",
        ],
    );
    let pid = server.pid();
    let addr = format!("127.0.0.1:{}", server.port);
    // A client that starts a SCRAM login and stops answering.
    let out = server.python(
        &format!(
            "{WIRE}\n{}",
            r#"
s = startup()
t, body = read(s)   # AuthenticationSASL
started = time.time()
import subprocess
env = dict(os.environ, PGPASSWORD="pw", PGCONNECT_TIMEOUT="20")
r = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(PORT), "-U", "analyst", "-d", "taglake", "-c", "SELECT 7"],
                   env=env, capture_output=True, text=True)
s.settimeout(30)
try:
    closed = s.recv(100) == b""
except ConnectionResetError:
    closed = True
print(json.dumps({"sasl": t.decode(), "psql": r.stdout.strip() or r.stderr.strip(), "closed": closed,
                  "waited": time.time() - started}))
"#
        ),
        &[],
    );
    let out: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(out["sasl"], "R", "{out}");
    assert_eq!(out["psql"], "7", "a half-logged-in client holds no slot: {out}\n{}", server.log());
    assert_eq!(out["closed"], true, "the half-logged-in client is closed at the authentication timeout: {out}");
    assert!(out["waited"].as_f64().unwrap() < 30.0, "{out}");
    // Silent sockets: the first --max-pending wait, the rest are closed at
    // once; all are gone by the authentication timeout.
    let silent: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server closes a silent socket");
    }
    assert!(server.log().contains("did not log in within the authentication timeout"), "{}", server.log());
    assert!(server.log().contains("--max-pending"), "{}", server.log());
    // A session that goes quiet is ended, with PostgreSQL's code.
    let out = server.wire(
        r#"
import psycopg
c = psycopg.connect(host="127.0.0.1", port=PORT, user="analyst", password="pw", dbname="taglake", autocommit=True)
c.execute("SELECT 1")
time.sleep(3.5)
try:
    c.execute("SELECT 1")
    out = "still open"
except psycopg.Error as e:
    out = str(e)
print(json.dumps(out))
"#,
    );
    assert!(out.as_str().unwrap().contains("idle-session timeout") || server.log().contains("idle"), "{out}");
    let ok = server.psql("SELECT 8", &[("PGPASSWORD", "pw")]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "8", "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(server.child.try_wait().unwrap().is_none());
    assert_eq!(server.pid(), pid);
}

/// SCRAM answers an unknown user the way it answers a known one with a
/// wrong password: the same iteration count and salt length, the same
/// salt on every attempt, and the same error after the proof.
#[test]
fn unknown_users_cannot_be_told_from_known_ones() {
    if !require(&[Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    let out = crate::taglake_with_input(&["passwd", "analyst", "--users", users.to_str().unwrap()], &f.dir, "pw\n");
    assert!(out.status.success());
    let server = Server::start(&f.dir, &["--users", users.to_str().unwrap()]);
    let out = server.wire(
        r#"
def attempt(user):
    s = startup(user)
    t, body = read(s)                      # AuthenticationSASL
    first = "n,,n=%s,r=abcdefghijklmnop" % user
    s.sendall(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first.encode()))
    t, body = read(s)
    if t != b"R":
        return {"step": "client-first", "error": fields(body)}
    server_first = dict(kv.split("=", 1) for kv in body[4:].decode().split(","))
    final = "c=biws,r=%s,p=%s" % (server_first["r"], base64.b64encode(b"\0" * 32).decode())
    s.sendall(msg(b"p", final.encode()))
    t, body = read(s)
    return {"step": "proof", "salt": server_first["s"], "iterations": server_first["i"],
            "error": fields(body) if t == b"E" else None}
print(json.dumps({"known": attempt("analyst"), "unknown": attempt("mallory"), "again": attempt("mallory")}))
"#,
    );
    let (known, unknown, again) = (&out["known"], &out["unknown"], &out["again"]);
    assert_eq!(unknown["step"], "proof", "an unknown user gets a challenge: {out}");
    assert_eq!(known["iterations"], unknown["iterations"], "{out}");
    let len = |v: &serde_json::Value| v["salt"].as_str().unwrap().len();
    assert_eq!(len(known), len(unknown), "{out}");
    assert_eq!(unknown["salt"], again["salt"], "the same salt on every attempt: {out}");
    assert_eq!(known["error"]["C"], unknown["error"]["C"], "{out}");
    assert_eq!(
        known["error"]["M"].as_str().unwrap().replace("analyst", "USER"),
        unknown["error"]["M"].as_str().unwrap().replace("mallory", "USER"),
        "{out}"
    );
}

/// Settings that would open a loophole stop the server at start.
#[test]
fn loophole_settings_are_refused_at_start() {
    let f = fixture();
    let refused = |args: &[&str], why: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_taglake"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(&f.dir)
            .env_remove("TAGLAKE_WAREHOUSE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A safety net, not a timing: a server that accepted the settings
        // would serve forever.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() && waited < 600 {
            std::thread::sleep(Duration::from_millis(100));
            waited += 1;
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: the server started");
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    };
    // An export directory holding the warehouse (COPY could overwrite its Delta logs).
    refused(&["--export-dir", "."], "it contains the warehouse");
    refused(&["--export-dir", "warehouse/orders"], "it is inside the warehouse");
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    let out = crate::taglake_with_input(&["passwd", "analyst", "--users", users.to_str().unwrap()], &f.dir, "pw\n");
    assert!(out.status.success());
    refused(&["--users", users.to_str().unwrap(), "--export-dir", tmp.path().to_str().unwrap()], "the users file");
    // Weak SCRAM secrets.
    let text = std::fs::read_to_string(&users).unwrap().replace(":4096:", ":1000:");
    let weak = tmp.path().join("weak");
    std::fs::write(&weak, text).unwrap();
    refused(&["--users", weak.to_str().unwrap()], "iterations 1000 is below 4096");
    refused(&["--query-memory", "2GiB", "--connection-memory", "1GiB"], "--connection-memory '1GiB' is below");
    for flag in ["--max-pending", "--max-cursors"] {
        refused(&[flag, "0"], &format!("{flag} must be at least 1"));
    }
    refused(&["--idle-timeout", "0s"], "--idle-timeout '0s'");
    refused(&["--auth-timeout", "soon"], "--auth-timeout 'soon'");
    refused(&["--export-max", "lots"], "--export-max 'lots'");
}
