"""The studio's audience builder under a marketer's editing, with DuckDB as
the peer, in one run.

A scripted session of EDITS edits (tags typed into blocks one at a time,
blocks added and removed, "has all/any/none of" switched, AND/OR
switched, conditions on member attributes added (`points_balance >=
500`, `registered_at >= '2024-01-01'`), and one edit in ten typed into
the expression field) is sent
to `taglake studio` exactly as the page sends it with htmx: each edit is a
POST of the whole form to `/builder/live` on one kept-alive connection,
with the breakdown by tier (the page's default). The studio answers with
every block's own count, the running total after each block (the
funnel) and the breakdown; the time measured is from sending the request
to the last byte of the answer, on loopback. The page then asks
`/builder/sample` for a sample of 20 members with their attributes (a
query over `members`): that request is timed apart, as the page makes it.

The peer is DuckDB holding the same tags as boolean columns of an
in-memory table (exported from the same snapshot by `audience_side
export`) joined with the attributes the conditions name (read from the
warehouse's `members` files), counting the audience the studio's answer says it counted (the
expression field it sends back): one `SELECT count(*) … WHERE <expr>` per
edit, which is less work than the studio's answer (one count, no funnel,
no breakdown, no sample). Every count the studio shows is checked against
DuckDB's.

Also measured: each page's time to first byte (GET, a new connection, 10
times each) and the studio's peak memory (VmHWM). Results go to
`benches/results/studio_load_<members>.json` with the commit and the
peers' versions.
"""

import argparse
import html
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

from audience_vs_duckdb import find_warehouse, percentile, prepare, settle
from measure import gib, measured, provenance
from serve_load import vm

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Tags a marketer types, in the order the script uses them.
POOL = [
    "tier_gold", "category_lover_beauty", "dormant_90_plus", "tier_silver", "channel_user_app",
    "one_time_buyer", "dormant_60_90", "channel_user_mini_program", "tier_regular",
]

PAGES = [
    ("overview", "/"),
    ("tag catalog", "/tags"),
    ("tag page", "/tags/tier_gold"),
    ("builder", "/builder?by=tier&expr=" + urllib.parse.quote("tier_gold AND category_lover_beauty AND NOT dormant_90_plus")),
    ("saved audiences", "/audiences"),
    ("communities", "/communities"),
    ("experiments", "/experiments"),
]


def session(edits):
    """The scripted session: per edit, the blocks [(join, kind, text[,
    (column, op, value)])] and whether it is typed into the expression
    field (then the text)."""
    out = []
    blocks = [["AND", "all", ""]]
    k = 0
    for n in range(edits):
        step = n % 20
        tag = POOL[k % len(POOL)]
        k += 1
        if step in (0, 1):  # type two tags into the first block
            blocks[0][2] = (blocks[0][2] + " " + tag).strip()
        elif step == 2:  # a second block: has none of
            blocks.append(["AND", "none", ""])
        elif step in (3, 4):
            blocks[-1][2] = (blocks[-1][2] + " " + tag).strip()
        elif step == 5:
            blocks[0][1] = "any"
        elif step == 6:
            blocks.append(["OR", "all", tag])
        elif step == 7:
            blocks[-1][0] = "AND"
            blocks.append(["AND", "attr", "", ("points_balance", ">=", "500")])
        elif step == 8:
            blocks[-1][2] += " " + tag
        elif step == 9:
            blocks[0][1] = "all"
        elif step in (10, 15):  # typed into the expression field
            text = f"{POOL[k % len(POOL)]} AND NOT ({POOL[(k + 1) % len(POOL)]} OR {POOL[(k + 2) % len(POOL)]})"
            out.append((None, text))
            continue
        elif step == 11:
            blocks = [["AND", "all", tag]]
        elif step == 12:
            blocks.append(["AND", "none", POOL[(k + 3) % len(POOL)]])
        elif step == 13:
            blocks[-1][1] = "any"
        elif step == 14:
            blocks.pop()
        elif step == 16:
            blocks.append(["AND", "all", tag])
        elif step == 17:
            blocks.append(["AND", "attr", "", ("registered_at", ">=", "2024-01-01")])
        elif step == 18:
            blocks[0][2] = ""
        else:  # start over: one empty block
            blocks = [["AND", "all", ""]]
        out.append(([list(b) for b in blocks], None))
    return out


def delta_files(table):
    """The data files of a Delta table's newest version (its JSON log replayed)."""
    live = set()
    log = os.path.join(table, "_delta_log")
    for name in sorted(n for n in os.listdir(log) if n.endswith(".json")):
        with open(os.path.join(log, name)) as f:
            for line in f:
                action = json.loads(line)
                if "add" in action:
                    live.add(urllib.parse.unquote(action["add"]["path"]))
                elif "remove" in action:
                    live.discard(urllib.parse.unquote(action["remove"]["path"]))
    return sorted(os.path.join(table, p) for p in live)


def form(csrf, blocks, text):
    pairs = [("csrf", csrf), ("by", "tier"), ("n", "20"), ("seed", "1")]
    if text is not None:
        pairs.append(("expr", text))
    else:
        for i, (join, kind, tags, *cond) in enumerate(blocks):
            pairs += [(f"b{i}.join", join), (f"b{i}.kind", kind), (f"b{i}.tags", tags)]
            if cond:
                column, op, value = cond[0]
                pairs += [(f"b{i}.column", column), (f"b{i}.op", op), (f"b{i}.value", value)]
    return urllib.parse.urlencode(pairs)


def between(text, start, end):
    i = text.find(start)
    if i < 0:
        return None
    i += len(start)
    return text[i:text.find(end, i)]


def ttfb(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    s.recv(1)
    first = time.perf_counter() - t0
    while s.recv(65536):
        pass
    s.close()
    return first


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--taglake", required=True)
    p.add_argument("--side", required=True, help="the audience_side binary (exports the tags for DuckDB)")
    p.add_argument("--members", type=int, default=10_000_000)
    p.add_argument("--edits", type=int, default=200)
    p.add_argument("--settle", type=float, default=180)
    a = p.parse_args()
    wh = find_warehouse(a.members)
    if wh is None:
        print(f"building a warehouse of {a.members:,} members (generate, ingest, tag) …", flush=True)
        wh = prepare(a.taglake, a.members)
    wh = os.path.abspath(wh)
    export = os.path.join(os.path.dirname(wh), "studio-export")
    _, _, out = measured([a.side, "export", "--warehouse", wh, "--tags", ",".join(POOL), "--out", export], None)
    print(f"exported {len(POOL)} tags for DuckDB: {json.loads(out)['rows']:,} members", flush=True)

    import duckdb
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    path = os.path.join(export, "tags_bool.parquet").replace("'", "''")
    attributes = ", ".join("'" + f.replace("'", "''") + "'" for f in delta_files(os.path.join(wh, "members")))
    con.execute(f"CREATE TABLE members AS SELECT t.*, m.points_balance, m.registered_at FROM read_parquet('{path}') t "
                f"JOIN read_parquet([{attributes}]) m USING (member_key)")

    studio = subprocess.Popen([a.taglake, "studio", "--listen", "127.0.0.1:0", "--warehouse", wh],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = studio.stdout.readline().strip()
        if not first.startswith("listening on "):
            sys.exit(f"taglake studio did not start: {first}")
        port = int(first.rsplit(":", 1)[1])
        started = vm(studio.pid, "VmHWM")
        load = settle(a.settle)
        print(f"load average before the runs: {load[0]:.2f}; studio on port {port}", flush=True)

        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/builder")
        r = conn.getresponse()
        page = r.read().decode()
        cookie = r.getheader("Set-Cookie").split(";")[0]
        csrf = between(page, 'name="csrf" value="', '"')
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie,
                   "HX-Request": "true", "X-CSRF-Token": csrf}
        studio_s, duck_s, sample_s, edits, wrong = [], [], [], [], []
        for blocks, text in session(a.edits):
            body = form(csrf, blocks, text)
            which = "expr" if text is not None else "blocks"
            t0 = time.perf_counter()
            conn.request("POST", f"/builder/live?from={which}", body=body, headers=headers)
            r = conn.getresponse()
            answer = r.read().decode()
            dt = time.perf_counter() - t0
            if r.status != 200:
                sys.exit(f"edit answered {r.status}: {answer[:500]}")
            studio_s.append(dt)
            shown = between(answer, 'id="audience-count">', "<")
            expr = text if text is not None else html.unescape(between(answer, 'hx-swap-oob="true">', "</textarea>") or "")
            edit = {"from": which, "seconds": dt, "expression": expr, "count": None}
            box = between(answer, 'id="sample-box" hx-get="', '"')
            if box is not None:
                t0 = time.perf_counter()
                conn.request("GET", html.unescape(box), headers={"Cookie": cookie})
                r = conn.getresponse()
                drawn = r.read().decode()
                sample_s.append(time.perf_counter() - t0)
                if r.status != 200 or 'id="sample"' not in drawn:
                    sys.exit(f"sample answered {r.status}: {drawn[:500]}")
            if shown is not None and expr:
                n = int(shown.replace(",", ""))
                t0 = time.perf_counter()
                want = con.execute(f"SELECT count(*) FROM members WHERE {expr}").fetchone()[0]
                duck_s.append(time.perf_counter() - t0)
                edit["count"] = n
                if n != want:
                    wrong.append(f"{expr}: studio {n:,} != DuckDB {want:,}")
            edits.append(edit)
        conn.close()
        pages = {}
        for name, path in PAGES:
            times = [ttfb(port, path) for _ in range(10)]
            pages[name] = {"path": path, "p50_seconds": percentile(times, 50), "max_seconds": max(times)}
        peak = vm(studio.pid, "VmHWM")
    finally:
        studio.kill()
        studio.wait()

    summary = {
        "studio_p50_seconds": percentile(studio_s, 50), "studio_p99_seconds": percentile(studio_s, 99),
        "studio_max_seconds": max(studio_s),
        "duckdb_p50_seconds": percentile(duck_s, 50) if duck_s else None,
        "duckdb_p99_seconds": percentile(duck_s, 99) if duck_s else None,
        "counted_edits": len(duck_s), "wrong_counts": wrong,
        "sample_p50_seconds": percentile(sample_s, 50) if sample_s else None,
        "sample_p99_seconds": percentile(sample_s, 99) if sample_s else None, "samples": len(sample_s),
    }
    print(f"\n{len(studio_s)} edits at {a.members:,} members:")
    print(f"  studio (whole answer: block counts, funnel, breakdown)        p50 {summary['studio_p50_seconds'] * 1e3:.1f} ms"
          f"  p99 {summary['studio_p99_seconds'] * 1e3:.1f} ms  max {summary['studio_max_seconds'] * 1e3:.1f} ms")
    if duck_s:
        print(f"  DuckDB (one count over boolean columns)                       p50 {summary['duckdb_p50_seconds'] * 1e3:.1f} ms"
              f"  p99 {summary['duckdb_p99_seconds'] * 1e3:.1f} ms")
    if sample_s:
        print(f"  studio sample of 20 (asked for after each answer, {len(sample_s)} times)  p50 {summary['sample_p50_seconds'] * 1e3:.1f} ms"
              f"  p99 {summary['sample_p99_seconds'] * 1e3:.1f} ms")
    print("  time to first byte (p50 of 10):")
    for name, t in pages.items():
        print(f"    {name:<16} {t['p50_seconds'] * 1e3:8.1f} ms")
    print(f"  studio peak memory {gib(peak)} (after start {gib(started)})")
    for w in wrong:
        print(f"  WRONG: {w}")
    os.makedirs(RESULTS, exist_ok=True)
    result = {**provenance({"duckdb": [sys.executable, "-c", "import duckdb; print(duckdb.__version__)"]}),
              "members": a.members, "warehouse": wh, "edits": edits, "summary": summary, "pages": pages,
              "studio_peak_bytes": peak, "studio_start_bytes": started}
    with open(os.path.join(RESULTS, f"studio_load_{a.members}.json"), "w") as f:
        json.dump(result, f, indent=1)
    if wrong:
        sys.exit(1)


if __name__ == "__main__":
    main()
