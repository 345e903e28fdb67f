//! `taglake studio`: the real binary on a free port over a generated,
//! tagged warehouse, driven over HTTP by a small client of this module's
//! own (raw requests, so a test can leave out a cookie or a CSRF token or
//! send a hostile string exactly as written). Every figure a page shows is
//! compared with what the CLI prints for the same question.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::serve::audience_count;
use crate::{Tagged, taglake, taglake_ok, taglake_with_input};

/// 3,000 generated members tagged three times: snapshot 1 and 3 as of the
/// day after the newest order, snapshot 2 45 days before, so the newest
/// snapshot has movement against the one before it.
fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| {
        let t = crate::tagged(3_000, 31);
        let listed = taglake_ok(&["tags", "snapshots"], &t.dir);
        let as_of = listed.lines().nth(1).and_then(|l| l.split_whitespace().nth(1)).unwrap();
        let as_of: chrono::NaiveDate = as_of.parse().unwrap();
        let earlier = (as_of - chrono::Duration::days(45)).to_string();
        taglake_ok(&["tag", "--as-of", &earlier], &t.dir);
        taglake_ok(&["tag"], &t.dir);
        t
    })
}

/// A running `taglake studio`, killed when dropped.
struct Studio {
    server: crate::Listening,
    port: u16,
}

impl Studio {
    fn start(cwd: &Path, args: &[&str]) -> Studio {
        let server = crate::Listening::start("studio", cwd, args);
        Studio { port: server.port, server }
    }

    fn log(&self) -> String {
        self.server.log()
    }

    /// A browser of its own: a cookie jar of one cookie.
    fn browser(&self) -> Browser {
        Browser { port: self.port, cookie: None }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        between(&self.body, "name=\"csrf\" value=\"", "\"").expect("the page has a form with a CSRF token")
    }
}

/// One HTTP/1.1 exchange on a new connection.
fn exchange(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body: String::from_utf8(body).unwrap() }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 4 + size..];
    }
}

struct Browser {
    port: u16,
    cookie: Option<String>,
}

impl Browser {
    fn send(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> Response {
        let cookie = self.cookie.as_ref().map(|c| format!("taglake_studio={c}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(c) = &cookie {
            headers.push(("Cookie", c.as_str()));
        }
        let r = exchange(self.port, method, path, &headers, body);
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let value = v.split(';').next().unwrap().strip_prefix("taglake_studio=").unwrap();
                self.cookie = (!value.is_empty()).then(|| value.to_string());
            }
        }
        r
    }

    fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, &[], "")
    }

    fn post(&mut self, path: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Response {
        self.send("POST", path, headers, &encode(form))
    }

    /// A session on the builder page: its CSRF token, as htmx sends it.
    fn builder_session(&mut self) -> String {
        self.get("/builder").csrf()
    }

    /// The form posted to `/builder/live?from=FROM` as htmx posts it.
    fn live(&mut self, csrf: &str, from: &str, form: &[(&str, &str)]) -> Response {
        let headers = [("HX-Request", "true"), ("X-CSRF-Token", csrf)];
        self.post(&format!("/builder/live?from={from}"), &headers, form)
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The text between the first `start` and the next `end`.
fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].to_string())
}

/// Every text between `start` and `end`, in order.
fn all_between(text: &str, start: &str, end: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(start) {
        rest = &rest[i + start.len()..];
        let Some(j) = rest.find(end) else { break };
        out.push(rest[..j].to_string());
        rest = &rest[j..];
    }
    out
}

/// HTML text back to plain text (what maud escapes).
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

fn number(text: &str) -> u64 {
    text.trim().replace(',', "").parse().unwrap_or_else(|_| panic!("a number: {text:?}"))
}

const AUDIENCE: &str = "tier_gold AND category_lover_beauty AND NOT dormant_90_plus";

#[test]
fn the_builder_counts_what_the_cli_counts() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    let page = b.get(&format!("/builder?expr={}&by=tier&n=7&seed=5", enc(AUDIENCE)));
    assert_eq!(page.status, 200, "{}", studio.log());
    let want = audience_count(&f.dir, AUDIENCE);
    assert!(want > 0, "the fixture has members in {AUDIENCE}");
    let shown = between(&page.body, "id=\"audience-count\">", "<").unwrap();
    assert_eq!(number(&shown), want);
    // The expression reads back as two blocks; the funnel is the count of each prefix.
    assert!(page.body.contains("name=\"b0.tags\" value=\"tier_gold category_lover_beauty\""), "{}", page.body);
    assert!(page.body.contains("name=\"b1.tags\" value=\"dormant_90_plus\""));
    let prefixes: Vec<String> = all_between(&page.body, "class=\"prefix\">", "<").iter().map(|p| unescape(p)).collect();
    let running: Vec<u64> = all_between(&page.body, "class=\"num running\">", "<").iter().map(|r| number(r)).collect();
    assert_eq!(prefixes, ["tier_gold AND category_lover_beauty", AUDIENCE]);
    for (p, n) in prefixes.iter().zip(&running) {
        assert_eq!(*n, audience_count(&f.dir, p), "funnel step {p}");
    }
    // The breakdown by tier is `audience breakdown`'s.
    let csv = taglake_ok(&["audience", "breakdown", AUDIENCE, "--by", "tier", "--format", "csv"], &f.dir);
    let table = between(&page.body, "id=\"breakdown\">", "</table>").unwrap();
    let shown: Vec<Vec<String>> = all_between(&table, "<tr><td>", "</tr>")
        .iter()
        .map(|row| {
            format!("<td>{row}").split("</td>").filter_map(|c| c.rsplit_once('>').map(|(_, t)| unescape(t))).collect()
        })
        .collect();
    let cli: Vec<(String, u64, u64)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let value = if c[0].is_empty() { "(none)".to_string() } else { c[0].to_string() };
            (value, c[2].parse().unwrap(), c[4].parse().unwrap())
        })
        .filter(|r| r.1 > 0 || r.2 > 0)
        .collect();
    let page_rows: Vec<(String, u64, u64)> =
        shown.iter().map(|r| (r[0].clone(), number(&r[1]), number(&r[3]))).collect();
    assert_eq!(page_rows, cli);
    // The sample is `audience sample`'s, for the same size and seed.
    let csv = taglake_ok(&["audience", "sample", AUDIENCE, "--n", "7", "--seed", "5", "--format", "csv"], &f.dir);
    let want_ids: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    // The page asks for the sample once shown, so a count never waits for the members' rows.
    let url = unescape(&between(&page.body, "id=\"sample-box\" hx-get=\"", "\"").unwrap());
    let drawn = b.get(&url);
    assert_eq!(drawn.status, 200, "{url}");
    let sample = between(&drawn.body, "id=\"sample\">", "</table>").unwrap();
    let ids: Vec<String> = all_between(&sample, "<tr><td>", "</td>");
    assert_eq!(ids, want_ids);
    assert_eq!(csv.lines().next().unwrap().split(',').next(), Some("member_id"));
}

#[test]
fn live_updates_count_each_block_and_follow_the_expression() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    let csrf = b.builder_session();
    let blocks = [
        ("b0.kind", "all"),
        ("b0.tags", "tier_gold category_lover_beauty"),
        ("b1.join", "AND"),
        ("b1.kind", "none"),
        ("b1.tags", "dormant_90_plus"),
        ("n", "0"),
    ];
    let r = b.live(&csrf, "blocks", &blocks);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(number(&between(&r.body, "id=\"audience-count\">", "<").unwrap()), audience_count(&f.dir, AUDIENCE));
    let own: Vec<u64> = all_between(&r.body, "class=\"count\" id=\"b", "<")
        .iter()
        .map(|s| number(s.split_once('>').unwrap().1))
        .collect();
    assert_eq!(
        own,
        [audience_count(&f.dir, "tier_gold AND category_lover_beauty"), audience_count(&f.dir, "NOT dormant_90_plus")]
    );
    // The expression field is swapped in with the blocks' expression.
    let expr = between(&r.body, "hx-swap-oob=\"true\">", "</textarea>").unwrap();
    assert_eq!(unescape(&expr), AUDIENCE);
    // "has any of" and OR.
    let any = [
        ("b0.kind", "any"),
        ("b0.tags", "tier_gold tier_silver"),
        ("b1.join", "OR"),
        ("b1.kind", "all"),
        ("b1.tags", "dormant_90_plus"),
        ("n", "0"),
    ];
    let r = b.live(&csrf, "blocks", &any);
    assert_eq!(
        number(&between(&r.body, "id=\"audience-count\">", "<").unwrap()),
        audience_count(&f.dir, "tier_gold OR tier_silver OR dormant_90_plus")
    );
    // Editing the expression re-renders the blocks.
    let r = b.live(&csrf, "expr", &[("expr", "lifecycle_mature AND NOT (tier_gold OR tier_silver)"), ("n", "0")]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("name=\"b0.tags\" value=\"lifecycle_mature\""), "{}", r.body);
    assert!(r.body.contains("name=\"b1.tags\" value=\"tier_gold tier_silver\""), "{}", r.body);
    assert!(r.body.contains("<option value=\"none\" selected>has none of</option>"), "{}", r.body);
    // Autocomplete over names and descriptions.
    let r = b.send("GET", "/builder/suggest?b0.tags=tier_gold+dorm", &[("HX-Request", "true")], "");
    assert!(r.body.contains("<option value=\"tier_gold dormant_90_plus\">"), "{}", r.body);
}

#[test]
fn attribute_blocks_count_what_the_cli_counts_and_read_back_from_the_expression() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    let csrf = b.builder_session();
    let blocks = [
        ("b0.kind", "all"),
        ("b0.tags", "tier_gold"),
        ("b1.join", "AND"),
        ("b1.kind", "attr"),
        ("b1.column", "points_balance"),
        ("b1.op", ">="),
        ("b1.value", "500"),
        ("b2.join", "AND"),
        ("b2.kind", "attr"),
        ("b2.column", "registered_at"),
        ("b2.op", "<"),
        ("b2.value", "2024-01-01"),
        ("b3.join", "AND"),
        ("b3.kind", "attr"),
        ("b3.column", "gender"),
        ("b3.op", "NOT IN"),
        ("b3.value", "M, it's"),
        ("n", "0"),
    ];
    let want = "tier_gold AND points_balance >= 500 AND registered_at < '2024-01-01' AND gender NOT IN ('M', 'it''s')";
    let r = b.live(&csrf, "blocks", &blocks);
    assert_eq!(r.status, 200, "{}", r.body);
    let expr = between(&r.body, "hx-swap-oob=\"true\">", "</textarea>").unwrap();
    assert_eq!(unescape(&expr), want);
    let total = number(&between(&r.body, "id=\"audience-count\">", "<").unwrap());
    assert_eq!(total, audience_count(&f.dir, want));
    assert!(total > 0 && total < audience_count(&f.dir, "tier_gold"), "{total}");
    let own: Vec<u64> = all_between(&r.body, "class=\"count\" id=\"b", "<")
        .iter()
        .map(|s| number(s.split_once('>').unwrap().1))
        .collect();
    assert_eq!(own[1], audience_count(&f.dir, "points_balance >= 500"));
    // SQL agrees: the same condition as a filter on `members`.
    let sql = taglake_ok(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM members WHERE tier_gold AND points_balance >= 500 \
           AND registered_at < '2024-01-01T00:00:00Z' AND gender NOT IN ('M', 'it''s')",
        ],
        &f.dir,
    );
    assert_eq!(sql.lines().nth(1).unwrap().trim().parse::<u64>().unwrap(), total, "{sql}");
    // The expression reads back into attribute blocks.
    let r = b.live(&csrf, "expr", &[("expr", want), ("n", "0")]);
    assert!(r.body.contains("<option value=\"attr\" selected>whose attribute</option>"), "{}", r.body);
    assert!(r.body.contains("name=\"b1.value\" value=\"500\""), "{}", r.body);
    assert!(r.body.contains("<option value=\"registered_at\" selected>"), "{}", r.body);
    assert!(
        r.body.contains("name=\"b3.value\" value=\"M, &#39;it&#39;&#39;s&#39;\"")
            || r.body.contains("name=\"b3.value\" value=\"M, 'it''s'\""),
        "{}",
        r.body
    );
    // A value the column cannot take: the parser's error next to the block.
    let bad = [("b0.kind", "attr"), ("b0.column", "points_balance"), ("b0.op", ">"), ("b0.value", "lots"), ("n", "0")];
    let r = b.live(&csrf, "blocks", &bad);
    let error = unescape(
        &between(&r.body, "id=\"b0-error\" role=\"alert\">", "</pre>").unwrap_or_else(|| panic!("{}", r.body)),
    );
    let cli = taglake(&["audience", "count", "points_balance > lots"], &f.dir);
    assert!(error.contains("`points_balance` is an integer"), "{error}");
    assert!(String::from_utf8_lossy(&cli.stderr).contains(error.lines().next().unwrap()), "{error}");
}

#[test]
fn a_bad_expression_shows_the_clis_error() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    for bad in ["tier_gold AND NOT dormat_90_plus", "tier_gold AND (", "tier_gold & <b>x</b>"] {
        let out = taglake(&["audience", "count", bad], &f.dir);
        assert!(!out.status.success());
        let cli = String::from_utf8(out.stderr).unwrap();
        let cli = cli.strip_prefix("error: ").unwrap().trim_end();
        let page = b.get(&format!("/builder?expr={}", enc(bad)));
        assert_eq!(page.status, 200);
        let shown = between(&page.body, "<div id=\"expr-error\" role=\"alert\"><pre class=\"error\">", "</pre>")
            .unwrap_or_else(|| panic!("no error for {bad}: {}", page.body));
        assert_eq!(unescape(&shown), cli);
        assert!(!page.body.contains("<b>x</b>"), "escaped");
        // And live, next to the field.
        let csrf = page.csrf();
        let r = b.post("/builder/live?from=expr", &[("X-CSRF-Token", csrf.as_str())], &[("expr", bad), ("n", "0")]);
        assert_eq!(unescape(&between(&r.body, "<pre class=\"error\">", "</pre>").unwrap()), cli);
    }
}

#[test]
fn a_post_without_the_csrf_token_is_refused() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    let page = b.get("/builder");
    let csrf = page.csrf();
    let form = [("b0.kind", "all"), ("b0.tags", "tier_gold"), ("n", "0")];
    let r = b.post("/builder/live?from=blocks", &[], &form);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = b.post("/builder/live?from=blocks", &[("X-CSRF-Token", "forged")], &form);
    assert_eq!(r.status, 403);
    let r = b.post("/builder", &[], &[("csrf", "forged"), ("action", "add")]);
    assert_eq!(r.status, 403);
    let r = b.post("/logout", &[], &[]);
    assert_eq!(r.status, 403);
    // Another browser's token does not work with this cookie.
    let other = studio.browser().get("/builder").csrf();
    assert_eq!(b.post("/builder/live?from=blocks", &[("X-CSRF-Token", other.as_str())], &form).status, 403);
    // The right one does, as a header or as the form field.
    assert_eq!(b.post("/builder/live?from=blocks", &[("X-CSRF-Token", csrf.as_str())], &form).status, 200);
    let mut with_field = form.to_vec();
    with_field.push(("csrf", csrf.as_str()));
    assert_eq!(b.post("/builder", &[], &with_field).status, 200);
    // Security headers on every answer.
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let cookie = page.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"),
        "{cookie}"
    );
    // The vendored script is served from the binary, cached for long.
    let js = b.get("/assets/htmx-2.0.4.min.js");
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").unwrap().contains("immutable"));
    assert!(!page.body.contains("<script>"), "no inline script");
}

#[test]
fn with_users_a_login_is_needed_and_checked() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    let users = users.to_str().unwrap();
    let out = taglake_with_input(&["passwd", "ana", "--users", users], &f.dir, "correct horse\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let studio = Studio::start(&f.dir, &["--users", users]);
    let mut b = studio.browser();
    let page = b.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("action=\"/login\"") && !page.body.contains("id=\"members\""), "{}", page.body);
    assert!(b.get("/tags/tier_gold").body.contains("action=\"/login\""));
    assert_eq!(b.send("GET", "/builder/suggest?q=tier", &[("HX-Request", "true")], "").status, 401);
    let csrf = page.csrf();
    let r = b.post("/builder/live?from=blocks", &[("X-CSRF-Token", csrf.as_str())], &[("b0.tags", "tier_gold")]);
    assert_eq!(r.status, 401, "a fragment without a login");
    // Wrong passwords and unknown names are refused alike.
    for (user, pw) in [("ana", "wrong"), ("ana", "correct horse "), ("mallory", "correct horse")] {
        let r = b.post("/login", &[], &[("csrf", csrf.as_str()), ("user", user), ("password", pw)]);
        assert_eq!(r.status, 401, "{user}");
        assert!(r.body.contains("Wrong user name or password."));
    }
    // The login form needs its CSRF token too.
    assert_eq!(b.post("/login", &[], &[("user", "ana"), ("password", "correct horse")]).status, 403);
    let before = b.cookie.clone().unwrap();
    let r = b.post("/login", &[], &[("csrf", csrf.as_str()), ("user", "ana"), ("password", "correct horse")]);
    assert_eq!(r.status, 303, "{}", r.body);
    let after = b.cookie.clone().unwrap();
    assert_ne!(before, after, "a new session after the login");
    let page = b.get("/");
    assert!(page.body.contains("id=\"members\"") && page.body.contains("Signed in as ana"), "{}", page.body);
    // The session from before the login is worth nothing.
    let mut stale = Browser { port: studio.port, cookie: Some(before) };
    assert!(stale.get("/").body.contains("action=\"/login\""));
    // Logging out ends the session.
    let csrf = page.csrf();
    assert_eq!(b.post("/logout", &[], &[("csrf", csrf.as_str())]).status, 303);
    let mut old = Browser { port: studio.port, cookie: Some(after) };
    assert!(old.get("/").body.contains("action=\"/login\""));
    assert!(studio.log().contains("ana logged in"));
}

#[test]
fn a_public_address_without_users_is_refused() {
    let f = fixture();
    let out = taglake(&["studio", "--listen", "0.0.0.0:0"], &f.dir);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: refusing to listen on 0.0.0.0:0 without logins"), "{err}");
    assert!(err.contains("--users FILE"), "{err}");
    let out = taglake(&["studio", "--tls-cert", "c.pem"], &f.dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert needs --tls-key"));
}

#[test]
fn a_hostile_search_is_shown_as_text() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    let hostile = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
    let page = b.get(&format!("/tags?q={}", enc(hostile)));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>alert(1)"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    // A search finds tags by name and description.
    let page = b.get("/tags?q=gold");
    assert!(page.body.contains("href=\"/tags/tier_gold\""));
    let page = b.get(&format!("/tags/{}", enc("<script>")));
    assert_eq!(page.status, 404);
    assert!(page.body.contains("no tag `&lt;script&gt;`"));
}

/// The CLI's per-tag movement: name → (entered, exited).
fn cli_diff(dir: &Path, from: i64, to: i64) -> BTreeMap<String, (u64, u64)> {
    let csv =
        taglake_ok(&["tags", "diff", "--from", &from.to_string(), "--to", &to.to_string(), "--format", "csv"], dir);
    csv.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), (c[1].parse().unwrap(), c[2].parse().unwrap()))
        })
        .collect()
}

#[test]
fn tag_pages_and_the_overview_show_the_tag_diff() {
    let f = fixture();
    let studio = Studio::start(&f.dir, &[]);
    let mut b = studio.browser();
    let diff = cli_diff(&f.dir, 2, 3);
    let tag = "dormant_90_plus";
    let page = b.get(&format!("/tags/{tag}"));
    assert_eq!(page.status, 200, "{}", studio.log());
    assert_eq!(number(&between(&page.body, "id=\"entered\">", "<").unwrap()), diff[tag].0);
    assert_eq!(number(&between(&page.body, "id=\"exited\">", "<").unwrap()), diff[tag].1);
    for who in ["entered", "exited"] {
        let href = between(&page.body, &format!("id=\"{who}-csv\" href=\""), "\"").unwrap();
        assert_eq!(unescape(&href), format!("/tags/{tag}/{who}.csv?from=2&to=3"));
        let csv = b.get(&unescape(&href));
        assert_eq!(csv.status, 200);
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
        let cli = taglake_ok(&["tags", "diff", "--from", "2", "--to", "3", "--tag", tag, "--who", who], &f.dir);
        assert_eq!(csv.body, cli, "{who}");
        assert!(csv.body.lines().count() > 1, "the fixture has members who {who} {tag}");
    }
    let count = audience_count(&f.dir, tag);
    assert_eq!(number(&between(&page.body, "id=\"count\">", " (").unwrap()), count);
    // The overview: members, and the lifecycle and tier tags' movement.
    let page = b.get("/");
    assert_eq!(number(&between(&page.body, "id=\"members\">", "<").unwrap()), audience_count(&f.dir, "true"));
    assert_eq!(between(&page.body, "id=\"snapshot\">", "<").unwrap(), "#3");
    let rows = all_between(&page.body, "<tr data-tag=\"", "</tr>");
    assert!(rows.len() >= 8, "lifecycle and tier tags: {rows:?}");
    for row in rows {
        let name = row.split('"').next().unwrap();
        let entered = number(&between(&row, "class=\"num entered\">", "<").unwrap());
        let exited = number(&between(&row, "class=\"num exited\">", "<").unwrap());
        assert_eq!((entered, exited), diff[name], "{name}");
        assert_eq!(number(&between(&row, "class=\"num members\">", "<").unwrap()), audience_count(&f.dir, name));
    }
    // Unknown files and snapshots are 404, not a failure.
    assert_eq!(b.get(&format!("/tags/{tag}/all.csv?from=2&to=3")).status, 404);
    assert_eq!(b.get(&format!("/tags/{tag}/entered.csv?from=99&to=3")).status, 404);
}

#[test]
fn saved_audiences_are_saved_in_the_builder_and_used_everywhere() {
    // A copy: saving writes the warehouse's `audiences` table.
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    crate::copy_dir(&f.dir.join("warehouse"), &tmp.path().join("warehouse"));
    let dir = tmp.path();
    let studio = Studio::start(dir, &[]);
    let mut b = studio.browser();
    let csrf = b.get("/builder").csrf();
    let want = audience_count(dir, AUDIENCE);
    let save = |b: &mut Browser, name: &str, expr: &str| {
        let form = [
            ("csrf", csrf.as_str()),
            ("b0.kind", "expr"),
            ("b0.tags", expr),
            ("expr", expr),
            ("save_name", name),
            ("save_description", "gold beauty lovers, still active"),
            ("action", "save"),
        ];
        b.post("/builder", &[], &form)
    };
    // A name that is not one is refused next to the field; nothing is saved.
    let r = save(&mut b, "Gold Beauty", AUDIENCE);
    assert_eq!(r.status, 200);
    let error = between(&r.body, "id=\"save-error\" role=\"alert\">", "</div>").unwrap();
    assert!(unescape(&error).contains("`Gold Beauty` is not a name"), "{error}");
    // So is an expression the CLI refuses, with the CLI's text.
    let r = save(&mut b, "gold_beauty", "tier_gold AND nonsense");
    let error = unescape(&between(&r.body, "id=\"save-error\" role=\"alert\">", "</div>").unwrap());
    assert!(error.contains("unknown tag `nonsense`"), "{error}");
    let r = save(&mut b, "gold_beauty", AUDIENCE);
    assert_eq!((r.status, r.header("location")), (303, Some("/audiences/gold_beauty")), "{}", r.body);
    // The list shows it with the CLI's count.
    let list = b.get("/audiences");
    let row = between(&list.body, "href=\"/audiences/gold_beauty\"", "</tr>").unwrap();
    assert_eq!(number(&between(&row, "class=\"num count\">", "<").unwrap()), want, "{row}");
    assert!(row.contains("gold beauty lovers, still active"));
    // The CLI, SQL and another saved audience use it by name.
    assert_eq!(audience_count(dir, "audience:gold_beauty"), want);
    let sql =
        taglake_ok(&["sql", "SELECT count(*) AS n FROM audience('audience:gold_beauty')", "--format", "csv"], dir);
    assert_eq!(sql.lines().nth(1).unwrap().trim().parse::<u64>().unwrap(), want, "{sql}");
    let r = save(&mut b, "gold_beauty_mature", "audience:gold_beauty AND lifecycle_mature");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        audience_count(dir, "audience:gold_beauty_mature"),
        audience_count(dir, &format!("({AUDIENCE}) AND lifecycle_mature"))
    );
    // The builder compares an audience with every saved audience (a matrix).
    let page = b.get(&format!("/builder?expr={}&n=0", enc("tier_gold")));
    let overlap = between(&page.body, "id=\"overlap\">", "</table>").expect("an overlap matrix");
    let first_row = between(&overlap, "scope=\"row\">this audience</th>", "</tr>").unwrap();
    let cells: Vec<u64> = all_between(&first_row, "<td class=\"num\">", "<br>").iter().map(|c| number(c)).collect();
    assert_eq!(
        cells,
        [
            audience_count(dir, "tier_gold"),
            audience_count(dir, "tier_gold AND audience:gold_beauty"),
            audience_count(dir, "tier_gold AND audience:gold_beauty_mature"),
        ]
    );
    // A cycle is refused: gold_beauty may not refer to what refers to it.
    let r = save(&mut b, "gold_beauty", "audience:gold_beauty_mature");
    let error = unescape(&between(&r.body, "id=\"save-error\" role=\"alert\">", "</div>").unwrap());
    assert!(error.contains("refers to itself: gold_beauty → gold_beauty_mature → gold_beauty"), "{error}");
    // A second definition keeps the first in the history.
    let r = save(&mut b, "gold_beauty", "tier_gold AND category_lover_beauty");
    assert_eq!(r.status, 303);
    let one = b.get("/audiences/gold_beauty");
    let revisions = between(&one.body, "id=\"revisions\">", "</table>").unwrap();
    assert_eq!(all_between(&revisions, "<code>", "</code>").len(), 2, "{revisions}");
    assert!(unescape(&revisions).contains(AUDIENCE));
    assert_eq!(
        number(&between(&one.body, "id=\"count\">", " in snapshot").unwrap()),
        audience_count(dir, "tier_gold AND category_lover_beauty")
    );
    // A new studio process (a reload of everything) finds them.
    drop(studio);
    let studio = Studio::start(dir, &[]);
    let mut b = studio.browser();
    let list = b.get("/audiences");
    assert!(list.body.contains("href=\"/audiences/gold_beauty\"") && list.body.contains("gold_beauty_mature"));
    let saved = taglake_ok(&["audience", "saved", "--format", "json"], dir);
    let v: serde_json::Value = serde_json::from_str(&saved).unwrap();
    let names: Vec<&str> = v["audiences"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gold_beauty", "gold_beauty_mature"]);
    // Removing one: gone from the list and from every expression, with the CLI's error.
    let csrf = b.get("/audiences/gold_beauty_mature").csrf();
    let r = b.post("/audiences/gold_beauty_mature/remove", &[], &[("csrf", csrf.as_str())]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!b.get("/audiences").body.contains("gold_beauty_mature"));
    let out = taglake(&["audience", "count", "audience:gold_beauty_mature"], dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no saved audience `gold_beauty_mature`"));
    let history = taglake_ok(&["audience", "saved", "--history", "gold_beauty_mature"], dir);
    assert!(history.contains("(removed)"), "{history}");
    // Without the CSRF token nothing is removed.
    let r = b.post("/audiences/gold_beauty/remove", &[], &[]);
    assert_eq!(r.status, 403);
    assert!(b.get("/audiences").body.contains("href=\"/audiences/gold_beauty\""));
}

#[test]
fn long_descriptions_are_refused_and_concurrent_saves_all_land() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    crate::copy_dir(&f.dir.join("warehouse"), &tmp.path().join("warehouse"));
    let dir = tmp.path();
    let studio = Studio::start(dir, &[]);
    let save = |name: String, description: String| {
        let mut b = studio.browser();
        let csrf = b.get("/builder").csrf();
        let form = [
            ("csrf", csrf.as_str()),
            ("expr", AUDIENCE),
            ("save_name", name.as_str()),
            ("save_description", description.as_str()),
            ("action", "save"),
        ];
        b.post("/builder", &[], &form)
    };
    let max = taglake_query::saved::MAX_DESCRIPTION;
    let r = save("too_long".into(), "d".repeat(max + 1));
    assert_eq!(r.status, 200);
    let error = unescape(&between(&r.body, "id=\"save-error\" role=\"alert\">", "</div>").unwrap());
    assert!(error.contains(&format!("longer than {max} characters")), "{error}");
    assert_eq!(save("just_right".into(), "d".repeat(max)).status, 303);
    // Eight marketers save at once: every save is kept (appends do not conflict).
    std::thread::scope(|scope| {
        let saves: Vec<_> = (0..8)
            .map(|i| scope.spawn(move || save(format!("together_{i}"), format!("saved by marketer {i}"))))
            .collect();
        for s in saves {
            let r = s.join().unwrap();
            assert_eq!(r.status, 303, "{}", r.body);
        }
    });
    let listed = taglake_ok(&["audience", "saved", "--format", "csv"], dir);
    for name in (0..8).map(|i| format!("together_{i}")).chain(["just_right".to_string()]) {
        assert!(listed.lines().any(|l| l.starts_with(&format!("{name},"))), "{name} missing:\n{listed}");
    }
    assert!(!listed.contains("too_long"));
}

#[test]
fn the_communities_page_is_the_cluster_profile() {
    let t = crate::tagged(2_000, 41);
    let studio = Studio::start(&t.dir, &["--refresh-interval", "100ms"]);
    let mut b = studio.browser();
    let before = b.get("/communities");
    assert_eq!(before.status, 200);
    assert!(before.body.contains("id=\"no-model\""), "{}", before.body);
    taglake_ok(&["cluster", "--k", "4", "--seed", "2"], &t.dir);
    let json = taglake_ok(&["cluster", "profile", "--format", "json"], &t.dir);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // A new fit shows without a restart: the model at once, its snapshot
    // (the community tags) at the next refresh.
    let mut page = b.get("/communities");
    for _ in 0..600 {
        if page.body.contains("href=\"/builder?expr=community_1\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        page = b.get("/communities");
    }
    let table = between(&page.body, "id=\"communities\">", "</table>").unwrap();
    let rows = all_between(&table, "<tr><td>community_", "</tr>");
    assert_eq!(rows.len(), 4, "{table}");
    for (row, c) in rows.iter().zip(v["communities"].as_array().unwrap()) {
        let cells: Vec<String> =
            format!("<td>{row}").split("</td>").map(|c| unescape(c.rsplit('>').next().unwrap())).collect();
        assert_eq!(cells[1], c["name"].as_str().unwrap());
        assert_eq!(number(&cells[2]), c["members"].as_u64().unwrap());
    }
    // One click builds an audience from a community: the builder counts its tag.
    let link = between(&page.body, "href=\"/builder?expr=community_1\"", ">").map(|_| "/builder?expr=community_1");
    let builder = b.get(link.expect("a link to build an audience from community_1"));
    let shown = number(&between(&builder.body, "id=\"audience-count\">", "<").unwrap());
    assert_eq!(shown, audience_count(&t.dir, "community_1"));
    // The heat map and the z-scores are on the page.
    assert!(page.body.contains("<svg") && page.body.contains("id=\"zscores\""));
}

#[test]
fn an_export_from_the_studio_is_the_clis_export() {
    let f = fixture();
    // Two copies in the same state: an export records an experiment.
    let (studio_side, cli_side) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for t in [&studio_side, &cli_side] {
        crate::copy_dir(&f.dir.join("warehouse"), &t.path().join("warehouse"));
    }
    let exports = studio_side.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    // Without --export-dir, exports are off.
    let off = Studio::start(studio_side.path(), &[]);
    assert!(off.browser().get("/export").body.contains("id=\"no-export-dir\""));
    drop(off);
    let studio = Studio::start(studio_side.path(), &["--export-dir", exports.to_str().unwrap()]);
    let mut b = studio.browser();
    let dialog = b.get(&format!("/export?expr={}", enc(AUDIENCE)));
    assert_eq!(dialog.status, 200, "{}", dialog.body);
    assert!(unescape(&dialog.body).contains(AUDIENCE));
    let csrf = dialog.csrf();
    let form = |file: &str, split: &str, audience: &str| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("audience".to_string(), audience.to_string()),
            ("split".to_string(), split.to_string()),
            ("salt".to_string(), "spring-push".to_string()),
            ("holdout".to_string(), "5".to_string()),
            ("holdout_salt".to_string(), "taglake-global-holdout".to_string()),
            ("launch_at".to_string(), "2026-01-05".to_string()),
            ("duration".to_string(), "28d".to_string()),
            ("file".to_string(), file.to_string()),
        ]
    };
    let post = |b: &mut Browser, pairs: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/export", &[], &pairs)
    };
    let field_error = |body: &str, field: &str| {
        unescape(&between(body, &format!("id=\"{field}-error\" role=\"alert\">"), "</div>").unwrap_or_default())
    };
    // Every bad input is refused next to its field, and nothing is written.
    let r = post(&mut b, form("../escape.csv", "treatment=90,control=10", AUDIENCE));
    assert_eq!(r.status, 422);
    assert!(field_error(&r.body, "file").contains("is not a file name"), "{}", r.body);
    let r = post(&mut b, form("a.txt", "treatment=90,control=10", AUDIENCE));
    assert!(field_error(&r.body, "file").contains(".csv or .parquet"));
    let r = post(&mut b, form("a.csv", "treatment=90,control=oops", AUDIENCE));
    assert!(field_error(&r.body, "split").contains("oops"), "{}", r.body);
    let r = post(&mut b, form("a.csv", "treatment=90,control=10", "tier_gold AND nonsense"));
    assert!(field_error(&r.body, "audience").contains("unknown tag `nonsense`"), "{}", r.body);
    assert_eq!(std::fs::read_dir(&exports).unwrap().count(), 0);
    assert!(!studio_side.path().join("escape.csv").exists());
    // The export itself.
    let r = post(&mut b, form("spring.csv", "treatment=90,control=10", AUDIENCE));
    assert_eq!((r.status, r.header("location")), (303, Some("/experiments/1")), "{}", r.body);
    let cli_out = cli_side.path().join("spring.csv");
    cli_export(cli_side.path(), "spring-push", &cli_out);
    let (ours, theirs) = (std::fs::read(exports.join("spring.csv")).unwrap(), std::fs::read(&cli_out).unwrap());
    assert!(ours.len() > 100 && ours == theirs, "the studio's export differs from the CLI's");
    // An existing file is never replaced.
    let r = post(&mut b, form("spring.csv", "treatment=90,control=10", AUDIENCE));
    assert!(field_error(&r.body, "file").contains("already exists"), "{}", r.body);
    // The experiment is listed and reported with the CLI's figures.
    let list = b.get("/experiments");
    assert!(list.body.contains("href=\"/experiments/1\">spring-push</a>"), "{}", list.body);
    let json = taglake_ok(&["experiment", "report", "1", "--format", "json"], studio_side.path());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let report = b.get("/experiments/1");
    assert_eq!(report.status, 200, "{}", report.body);
    let arms = between(&report.body, "id=\"arms\">", "</table>").unwrap();
    for a in v["arms"].as_array().unwrap() {
        let row = between(&arms, &format!("<tr><td>{}</td>", a["arm"].as_str().unwrap()), "</tr>").unwrap();
        let members = number(&between(&row, "<td class=\"num\">", "<").unwrap());
        assert_eq!(members, a["members"].as_u64().unwrap());
    }
    assert!(report.body.contains("<svg") && report.body.contains("id=\"effects\""));
    assert_eq!(b.get("/experiments/99").status, 404);
}

/// The acceptance walk in Debian's Chromium (tests/browser/studio.py): log
/// in, build the audience by clicking and typing and read the CLI's count,
/// edit the expression and see the blocks follow, a bad expression's CLI
/// error, save, reload and find it, the breakdown by tier, a refused POST
/// without the CSRF token, an export compared byte for byte with the
/// CLI's, the login page without a session; every page screenshotted at
/// 1440×900 into `<target>/tmp/studio-screenshots/` and checked by axe-core.
#[test]
fn a_marketer_builds_saves_and_exports_in_chromium() {
    use crate::peers::{Peer, program, require};
    if !require(&[Peer::Browser]) {
        return;
    }
    let f = fixture();
    let (ours, cli) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    crate::copy_dir(&f.dir.join("warehouse"), &ours.path().join("warehouse"));
    taglake_ok(&["cluster", "--k", "5", "--seed", "1"], ours.path());
    crate::copy_dir(&ours.path().join("warehouse"), &cli.path().join("warehouse"));
    let users = ours.path().join("users.toml");
    crate::taglake_with_input(&["passwd", "analyst", "--users", users.to_str().unwrap()], ours.path(), "s3cret pw\n");
    let exports = ours.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let studio =
        Studio::start(ours.path(), &["--users", users.to_str().unwrap(), "--export-dir", exports.to_str().unwrap()]);

    // Every figure the page must show, as the CLI gives it.
    let dir = cli.path();
    let count = audience_count(dir, AUDIENCE);
    let breakdown: Vec<[String; 3]> =
        taglake_ok(&["audience", "breakdown", AUDIENCE, "--by", "tier", "--format", "csv"], dir)
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter(|c| c[2] != "0" || c[4] != "0")
            .map(|c| {
                let value = if c[0].is_empty() { "(none)".to_string() } else { c[0].clone() };
                [
                    value,
                    taglake_studio::html::count(c[2].parse().unwrap()),
                    taglake_studio::html::count(c[4].parse().unwrap()),
                ]
            })
            .collect();
    let with_points = format!("{AUDIENCE} AND points_balance >= 500");
    let points_count = audience_count(dir, &with_points);
    let bad = "tier_gold AND nonsense_tag";
    let refused = taglake(&["audience", "count", bad], dir);
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    let line = stderr.lines().find(|l| l.contains("unknown tag")).expect("the CLI names the unknown tag");
    let bad_error = line.trim_start_matches("error: ").split(" (at position").next().unwrap().to_string();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("studio-screenshots");
    let config = serde_json::json!({
        "base": format!("http://127.0.0.1:{}", studio.port),
        "user": "analyst", "password": "s3cret pw",
        "audience": AUDIENCE, "count": taglake_studio::html::count(count), "breakdown": breakdown,
        "with_points": with_points, "points_count": taglake_studio::html::count(points_count),
        "bad_expression": bad, "bad_error": bad_error,
        "saved_name": "gold_beauty_active",
        "salt": "browser-spring", "launch_at": "2026-01-05", "export_file": "browser.csv",
        "screenshots": shots,
    });
    let config_file = ours.path().join("browser.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/studio.py");
    let out = Command::new(program(Peer::Browser)).arg(&script).arg(&config_file).output().unwrap();
    assert!(
        out.status.success(),
        "the browser walk failed:\n{}\n{}\nstudio log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        studio.log()
    );
    // The file the browser exported is the CLI's, byte for byte.
    let theirs = dir.join("browser.csv");
    cli_export(dir, "browser-spring", &theirs);
    let exported = std::fs::read(exports.join("browser.csv")).unwrap();
    assert!(exported == std::fs::read(&theirs).unwrap(), "the browser's export differs from the CLI's");
    // The saved audience is in the warehouse, usable by the CLI.
    assert_eq!(audience_count(ours.path(), "audience:gold_beauty_active"), count);
    for page in ["login", "builder", "audiences", "export", "experiment", "overview", "tags", "tag", "communities"] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{page}.png is a PNG");
    }
}

/// `taglake export` of [`AUDIENCE`] 90/10 with `salt`, launched 2026-01-05,
/// into `out`: what the studio's export must equal byte for byte.
fn cli_export(dir: &Path, salt: &str, out: &Path) {
    let args = ["export", "--audience", AUDIENCE, "--split", "treatment=90,control=10", "--salt", salt];
    let out = out.to_str().unwrap();
    taglake_ok(&[&args[..], &["--launch-at", "2026-01-05", "--out", out]].concat(), dir);
}
