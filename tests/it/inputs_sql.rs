//! Deep and long inputs to the query layer — fifty thousand parentheses, a
//! hundred thousand NOTs, OR chains of hundreds of thousands of tags — give
//! the right answer or a clear error, never a crash: through `taglake
//! audience count`, `taglake sql` (one statement and the prompt reading
//! standard input), and `taglake serve` with psql (simple protocol) and
//! psycopg (extended protocol).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::peers::{Peer, program, require};
use crate::serve::Server;
use crate::tag_reference::runtime;
use crate::{Tagged, tagged, taglake, taglake_ok, taglake_with_input};

/// Generated, ingested and tagged once for this module.
fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| tagged(1_000, 31))
}

/// Tags every generated base has, early in `members`' columns.
const TAGS: [&str; 6] = ["tier_gold", "tier_silver", "dormant_30_60", "dormant_60_90", "one_time_buyer", "value_core"];

fn or_chain(tags: &[String], terms: usize) -> String {
    (0..terms).map(|i| tags[i % tags.len()].as_str()).collect::<Vec<_>>().join(" OR ")
}

fn deep_parentheses() -> String {
    format!("{}tier_gold{}", "(".repeat(50_000), ")".repeat(50_000))
}

fn not_chain() -> String {
    format!("{}tier_gold", "NOT ".repeat(100_000))
}

/// The command failed with an error message (exit code 1), not a crash.
fn clear_error(out: &Output, want: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "not a clean failure: {:?}\n{}", out.status, tail(&stderr));
    assert!(stderr.contains(want), "expected {want:?} in\n{}", tail(&stderr));
    assert!(!stderr.contains("overflow"), "{}", tail(&stderr));
    stderr
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(2_000)..]
}

/// The count `taglake sql` prints for `statement` read from standard input.
fn piped_count(dir: &Path, statement: &str) -> u64 {
    let out = taglake_with_input(&["sql", "--format", "csv"], dir, &format!("{statement};\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", tail(&stdout), tail(&String::from_utf8_lossy(&out.stderr)));
    stdout.lines().nth(1).unwrap_or_default().trim().parse().unwrap_or_else(|_| panic!("{stdout}"))
}

fn audience_count(dir: &Path, expr: &str) -> u64 {
    let csv = taglake_ok(&["audience", "count", expr, "--format", "csv"], dir);
    csv.lines().nth(1).unwrap().split(',').rev().nth(2).unwrap().parse().unwrap()
}

/// The home-store tags and, by an independent path (the `features`
/// table's `home_store` text, no bitmap), how many members have one of
/// the first `n` of them.
fn home_stores(dir: &Path, n: usize) -> (Vec<String>, u64) {
    let wh = taglake_storage::Warehouse::open(dir.join("warehouse")).unwrap();
    let info = runtime().block_on(taglake_tagger::snapshot::info(&wh, None)).unwrap();
    let stores: Vec<(String, String)> = info
        .tags
        .iter()
        .filter(|t| t.name.starts_with("home_store_") && t.members > 0)
        .map(|t| (t.name.clone(), t.rule.trim_start_matches("home_store = ").to_string()))
        .take(n)
        .collect();
    assert_eq!(stores.len(), n, "the fixture has {} home stores with members", stores.len());
    let list = stores.iter().map(|(_, raw)| raw.as_str()).collect::<Vec<_>>().join(", ");
    let ctx = runtime().block_on(taglake_query::session(&wh)).unwrap();
    let sql = format!("SELECT count(*) FROM features WHERE home_store IN ({list})");
    let want = runtime().block_on(taglake_query::sql_number(&ctx, &sql)).unwrap().unwrap();
    (stores.into_iter().map(|(name, _)| name).collect(), want as u64)
}

#[test]
fn the_cli_survives_deep_audiences_and_long_sql() {
    let dir = &fixture().dir;
    // 50,000 parentheses and a 100,000-long NOT chain in the audience language.
    let out = taglake(&["audience", "count", &deep_parentheses()], dir);
    let e = clear_error(&out, "the audience is nested too deeply: more than 200 levels");
    assert!(e.contains("(at position 201)") && e.len() < 1_000, "{e}");
    let out = taglake_with_input(&["sql"], dir, &format!("SELECT count(*) FROM audience('{}');\n", not_chain()));
    clear_error(&out, "the audience is nested too deeply");
    // The same in SQL: the parser's recursion limit holds parentheses and NOT.
    let out = taglake(&["sql", &format!("SELECT count(*) FROM members WHERE {}", deep_parentheses())], dir);
    clear_error(&out, "more deeply than the SQL parser allows");
    let out = taglake_with_input(&["sql"], dir, &format!("SELECT count(*) FROM members WHERE {};\n", not_chain()));
    clear_error(&out, "error: ");
    // A chain of another operator past the depth limit.
    let sum = vec!["points_balance"; 100_000].join(" + ");
    let out = taglake_with_input(&["sql"], dir, &format!("SELECT sum({sum}) FROM members;\n"));
    clear_error(&out, "nests more than 400 levels deep");
    // 300,000 ORed tags: the right count.
    let tags: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
    let want = audience_count(dir, &TAGS.join(" OR "));
    assert!(want > 0);
    assert_eq!(piped_count(dir, &format!("SELECT count(*) FROM members WHERE {}", or_chain(&tags, 300_000))), want);
    // A marketer's 5,000-term OR of home stores: the right count.
    let (stores, want) = home_stores(dir, 500);
    let five_thousand = or_chain(&stores, 5_000);
    assert_eq!(piped_count(dir, &format!("SELECT count(*) FROM members WHERE {five_thousand}")), want);
    assert_eq!(piped_count(dir, &format!("SELECT count(*) FROM audience('{five_thousand}')")), want);
    assert_eq!(audience_count(dir, &stores.join(" OR ")), want);
}

/// psql reading `sql` from a file (the text is too long for an argument).
fn psql_file(server: &Server, dir: &Path, sql: &str) -> Output {
    let file = dir.join("statement.sql");
    std::fs::write(&file, format!("{sql};\n")).unwrap();
    Command::new(program(Peer::Psql))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "analyst", "-d", "taglake", "-f"])
        .arg(&file)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("psql runs (apt-get install postgresql-client)")
}

fn psql_ok(server: &Server, dir: &Path, sql: &str) -> String {
    let out = psql_file(server, dir, sql);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\nserver log:\n{}", tail(&stderr), tail(&server.log()));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn psql_err(server: &Server, dir: &Path, sql: &str, want: &str) {
    let out = psql_file(server, dir, sql);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(want), "expected {want:?} in\n{}", tail(&stderr));
}

/// psycopg (the extended protocol: Parse, Bind, Execute) runs each
/// statement of a file given as the first argument, separated by lines of
/// `--`, and prints one JSON list: the count or the error of each.
const PSYCOPG_EACH: &str = r#"
import json, os, sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="analyst", dbname="taglake", autocommit=True)
out = []
for sql in open(sys.argv[1]).read().split("\n--\n"):
    try:
        out.append(conn.execute(sql).fetchone()[0])
    except psycopg.Error as e:
        out.append([e.sqlstate, str(e)[:300]])
print(json.dumps(out))
"#;

#[test]
fn the_server_survives_deep_audiences_and_long_sql() {
    if !require(&[Peer::Psql, Peer::Psycopg]) {
        return;
    }
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&f.dir, &[]);
    let tags: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
    let want = audience_count(&f.dir, &TAGS.join(" OR "));
    let (stores, stores_want) = home_stores(&f.dir, 500);
    let long = format!("SELECT count(*) FROM members WHERE {}", or_chain(&tags, 300_000));
    let marketer = format!("SELECT count(*) FROM members WHERE {}", or_chain(&stores, 5_000));
    // psql: the simple query protocol.
    psql_err(&server, tmp.path(), &format!("SELECT count(*) FROM audience('{}')", deep_parentheses()), "too deeply");
    psql_err(&server, tmp.path(), &format!("SELECT count(*) FROM audience('{}')", not_chain()), "too deeply");
    let parentheses = format!("SELECT count(*) FROM members WHERE {}", deep_parentheses());
    psql_err(&server, tmp.path(), &parentheses, "more deeply than the SQL parser allows");
    let nots = format!("SELECT count(*) FROM members WHERE {}", not_chain());
    psql_err(&server, tmp.path(), &nots, "ERROR");
    assert_eq!(psql_ok(&server, tmp.path(), &long), want.to_string());
    assert_eq!(psql_ok(&server, tmp.path(), &marketer), stores_want.to_string());
    // A sum of 399 terms is within the limit, 100,000 are not.
    let sum = |n: usize| format!("SELECT {}", vec!["1"; n].join(" + "));
    assert_eq!(psql_ok(&server, tmp.path(), &sum(399)), "399");
    psql_err(&server, tmp.path(), &sum(100_000), "nests more than 400 levels deep");
    // psycopg: the extended protocol parses through another entry point.
    let file = tmp.path().join("statements.sql");
    std::fs::write(&file, [long.as_str(), &marketer, &parentheses, &nots, &sum(100_000)].join("\n--\n")).unwrap();
    let out: serde_json::Value = serde_json::from_str(&server.python(PSYCOPG_EACH, &[file.to_str().unwrap()])).unwrap();
    assert_eq!(out[0], want, "{out}");
    assert_eq!(out[1], stores_want, "{out}");
    assert_eq!(out[2][0], "54001", "{out}");
    assert!(out[3][1].is_string(), "{out}");
    assert_eq!(out[4][0], "54001", "{out}");
    // The server is still up and answering.
    assert_eq!(
        psql_ok(&server, tmp.path(), "SELECT count(*) FROM members WHERE tier_gold"),
        audience_count(&f.dir, "tier_gold").to_string()
    );
    assert!(!server.log().contains("overflow"), "{}", tail(&server.log()));
}
