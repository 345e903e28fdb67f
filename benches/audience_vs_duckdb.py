"""Audience-count benchmark: taglake vs DuckDB, ClickHouse (chdb) and
pyroaring, on the same tags of the same warehouse, in the same run.

The question: how many members match `tier_gold AND NOT dormant_60_90 AND
(channel_user_app OR …)`? Each side answers it warm, in process, `--runs`
times per expression (after untimed warm-up runs); reported are the median
(p50) and the 99th percentile (p99, nearest rank) of the per-run wall time,
and the ratio peer ÷ taglake of the medians.

* taglake (`audience_side measure`, release build): the newest tag snapshot
  is opened once (`taglake_query::open`) and every tag's roaring bitmap and
  the member universe are read (`TagSet::warm`), as a long-lived server
  does; then (a) the audience API, what `taglake audience count`
  does: parse + evaluate + cardinality, and (b) SQL through DataFusion,
  `SELECT count(*) FROM members WHERE <expr>` (tags are boolean columns of
  `members`, one per tag of the snapshot), parse + plan + run every time.
* DuckDB, the same WHERE clause over a Parquet table with `member_key` and
  one BOOLEAN column per tag used (one row per member, written by
  `audience_side export` from the same bitmaps, row groups of 122,880 rows):
  (a) querying the Parquet file directly, (b) over an in-memory DuckDB table
  loaded from it. `SET threads` = the machine's cores unless `--threads`.
* ClickHouse via chdb: the same bitmaps as `AggregateFunction(groupBitmap,
  UInt32)` columns of a one-row Memory table. Each state is built from the
  exact portable roaring bytes stored in taglake's `tags` table: ClickHouse's
  groupBitmap state is a flag byte (1 = roaring), a varint byte length and
  the CRoaring portable serialization, loaded through the RowBinary format.
  The load is verified before timing: a tiny hand-made example, every tag's
  cardinality, and every bitmap against `groupBitmapStateIf(member_key, tag)`
  computed by ClickHouse from the boolean Parquet table (XOR must be empty).
  The expression becomes bitmapAnd / bitmapOr / bitmapAndnot +
  bitmapCardinality, in the same shape as taglake's evaluator: operands of
  an AND intersected smallest first, `AND NOT x` as bitmapAndnot(acc, x), a
  NOT on its own as bitmapAndnot(universe, x).
* pyroaring (CRoaring from Python): the same bitmaps (the same bytes), the
  same evaluation shape with `&`, `|`, `-` and `len`.

Every peer's count must equal taglake's (API and SQL) for every expression,
or the script stops. Each side runs in its own child process; peak memory is
its max RSS (wait4), for the Python peers the whole Python process (the
interpreter, pyarrow and the engine); taglake also reports its own VmHWM
after the load. Before the runs the script waits (at most `--settle`
seconds) for the 1-minute load average to fall below half the cores, e.g.
after the release build, and prints it. Results go to
`benches/results/audience_vs_duckdb_<members>.json`.

The breakdown: `SELECT tier, count(*) FROM members WHERE <3 tags> GROUP BY
tier` through taglake SQL (answered by intersection counts) and the
breakdown API; DuckDB groups the boolean table by `CASE WHEN tier_gold THEN
'gold' …`; chdb takes `bitmapCardinality(bitmapAnd(audience, tier_x))` per
tier (and `bitmapAndnot` of all tiers for the members without one) in one
query; pyroaring the same with `&` and `-`. Every side's groups must equal
taglake's.

Also reported, not compared: taglake's cold count per expression (a fresh
tag set reads only the bitmaps the expression needs, as one `taglake
audience count` call does), and where the SQL time goes (logical plan,
physical plan, execution).

    python benches/audience_vs_duckdb.py --side PATH [--members N] [--runs 200] [--warehouse W]
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import time

from measure import gib, measured, provenance

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.expanduser("~/.cache/taglake-bench")
UNIVERSE = "__universe__"
WARMUP = 3

# The breakdown: a 3-tag audience by tier (the family's values and tags).
BREAKDOWN = "category_lover_beauty AND NOT dormant_90_plus AND NOT one_time_buyer"
BY = "tier"
TIERS = {"regular": "tier_regular", "silver": "tier_silver", "gold": "tier_gold"}

EXPRESSIONS = [
    "category_lover_beauty",
    "NOT one_time_buyer",
    "(tier_gold OR tier_silver) AND NOT dormant_90_plus",
    "tier_gold AND category_lover_beauty AND NOT dormant_60_90 AND (channel_user_app OR channel_user_mini_program)"
    " AND NOT one_time_buyer",
]


# ───────────────────────── the audience language ─────────────────────────
# The grammar of taglake's `query/src/audience.rs`: NOT binds tighter than
# AND, which binds tighter than OR; keywords are case-insensitive.

def parse(text):
    tokens = re.findall(r"\(|\)|[A-Za-z0-9_]+|\S", text)
    at = 0

    def peek():
        return tokens[at] if at < len(tokens) else None

    def take():
        nonlocal at
        at += 1
        return tokens[at - 1]

    def chain(op, item):
        items = [item()]
        while (peek() or "").upper() == op:
            take()
            items.append(item())
        return items[0] if len(items) == 1 else (op.lower(), items)

    def unary():
        t = take() if peek() else sys.exit(f"`{text}`: unexpected end")
        if t.upper() == "NOT":
            return ("not", unary())
        if t == "(":
            inner = chain("OR", lambda: chain("AND", unary))
            if take() != ")":
                sys.exit(f"`{text}`: expected `)`")
            return inner
        if not re.fullmatch(r"[A-Za-z0-9_]+", t) or t.upper() in ("AND", "OR"):
            sys.exit(f"`{text}`: unexpected `{t}`")
        return ("tag", t)

    node = chain("OR", lambda: chain("AND", unary))
    if peek() is not None:
        sys.exit(f"`{text}`: unexpected `{peek()}`")
    return node


def tag_names(node):
    kind, arg = node
    if kind == "tag":
        return [arg]
    if kind == "not":
        return tag_names(arg)
    return [n for x in arg for n in tag_names(x)]


def shape(node, tag, universe, intersect, union, subtract, size):
    """Evaluates a tree the way taglake's evaluator does, over any bitmap
    algebra: `tag(name)`, `universe()`, the three operations and `size(node)`
    (an estimate used only to order an AND's operands, smallest first)."""
    kind, arg = node
    if kind == "tag":
        return tag(arg)
    if kind == "not":
        return subtract(universe(), shape(arg, tag, universe, intersect, union, subtract, size))
    go = lambda n: shape(n, tag, universe, intersect, union, subtract, size)
    if kind == "or":
        acc = go(arg[0])
        for x in arg[1:]:
            acc = union(acc, go(x))
        return acc
    positive = sorted((x for x in arg if x[0] != "not"), key=size)
    negative = [x[1] for x in arg if x[0] == "not"]
    acc = go(positive[0]) if positive else universe()
    for x in positive[1:]:
        acc = intersect(acc, go(x))
    for x in negative:
        acc = subtract(acc, go(x))
    return acc


def estimate(node, members):
    """Upper bound of a node's cardinality, to order AND operands."""
    kind, arg = node
    if kind == "tag":
        return members[arg]
    if kind == "not":
        return members[UNIVERSE]
    sizes = [estimate(x, members) for x in arg]
    return min(sizes) if kind == "and" else min(sum(sizes), members[UNIVERSE])


# ───────────────────────── timing ─────────────────────────

def timed(runs, f):
    """Untimed warm-up, then `runs` timed calls; (seconds per run, last result)."""
    for _ in range(WARMUP):
        out = f()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        out = f()
        seconds.append(time.perf_counter() - start)
    return seconds, out


def percentile(xs, p):
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def fmt_time(s):
    return f"{s * 1e6:,.0f} µs" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


# ───────────────────────── peers (each in a child process) ─────────────────────────

def read_bitmaps(export):
    import pyarrow.parquet as pq
    t = pq.read_table(os.path.join(export, "bitmaps.parquet")).to_pydict()
    return {n: (m, b) for n, m, b in zip(t["name"], t["members"], t["bitmap"])}


def child_duckdb(cfg, mode):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {cfg['threads']}")
    path = os.path.join(cfg["export"], "tags_bool.parquet").replace("'", "''")
    start = time.perf_counter()
    if mode == "table":
        con.execute(f"CREATE TABLE members AS SELECT * FROM read_parquet('{path}')")
        source = "members"
    else:
        source = f"read_parquet('{path}')"
    load = time.perf_counter() - start
    out = []
    for text in cfg["expressions"]:
        q = f"SELECT count(*) FROM {source} WHERE {text}"
        seconds, count = timed(cfg["runs"], lambda: con.execute(q).fetchone()[0])
        out.append({"expr": text, "count": int(count), "seconds": seconds, "query": q})
    case = " ".join(f"WHEN {tag} THEN '{value}'" for value, tag in TIERS.items())
    q = f"SELECT CASE {case} END AS {BY}, count(*) FROM {source} WHERE {BREAKDOWN} GROUP BY 1"
    groups = lambda: {("null" if v is None else v): n for v, n in con.execute(q).fetchall()}
    seconds, got = timed(cfg["runs"], groups)
    breakdown = {"groups": got, "seconds": seconds, "query": q}
    return {"breakdown": breakdown, "version": duckdb.__version__, "threads": int(con.execute("SELECT current_setting('threads')").fetchone()[0]),
            "load_seconds": load, "expressions": out}


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def groupbitmap_state(portable):
    """ClickHouse's groupBitmap(UInt32) state for a bitmap in the portable
    roaring format: 1 (a roaring bitmap, not the small-set form), the byte
    length as a varint, the bytes."""
    return b"\x01" + varint(len(portable)) + portable


def child_chdb(cfg):
    import chdb
    import pyroaring
    from chdb import session
    sess = session.Session()
    threads = cfg["threads"]

    def scalar(q):
        return sess.query(f"{q} SETTINGS max_threads = {threads}", "CSV").bytes().decode().strip()

    # A tiny example first: hand-made sets, including run containers and a
    # set small enough that ClickHouse itself would use its small-set form.
    for values in ([1, 2, 3, 5, 8], list(range(0, 100_000, 3)), list(range(50_000, 200_000))):
        bm = pyroaring.BitMap(values)
        bm.run_optimize()
        hexed = groupbitmap_state(bm.serialize()).hex()
        got = scalar(f"SELECT bitmapCardinality(CAST(unhex('{hexed}') AS AggregateFunction(groupBitmap, UInt32)))")
        if int(got) != len(values):
            sys.exit(f"chdb reads a hand-made groupBitmap state of {len(values)} values as {got}")

    bitmaps = read_bitmaps(cfg["export"])
    names = list(bitmaps)
    col = lambda n: "`" + n.replace("`", "") + "`"
    structure = ", ".join(f"{col(n)} AggregateFunction(groupBitmap, UInt32)" for n in names)
    rowbinary = os.path.join(cfg["export"], "bitmaps.rowbinary")
    start = time.perf_counter()
    with open(rowbinary, "wb") as f:
        for n in names:
            f.write(groupbitmap_state(bitmaps[n][1]))
    sess.query(f"CREATE TABLE tags ({structure}) ENGINE = Memory")
    sess.query(f"INSERT INTO tags SELECT * FROM file('{rowbinary}', RowBinary, '{structure}')")
    load = time.perf_counter() - start
    bool_path = os.path.join(cfg["export"], "tags_bool.parquet")
    # Every bitmap: its cardinality, and no difference from the bitmap
    # ClickHouse builds itself from the boolean table.
    own = ", ".join(f"groupBitmapState{'' if n == UNIVERSE else 'If'}(toUInt32(member_key)"
                    f"{'' if n == UNIVERSE else ', ' + col(n)}) AS {col(n)}" for n in names)
    checks = ", ".join(f"bitmapCardinality(t.{col(n)}), bitmapCardinality(bitmapXor(t.{col(n)}, b.{col(n)}))"
                       for n in names)
    row = scalar(f"WITH b AS (SELECT {own} FROM file('{bool_path}', Parquet)) SELECT {checks} FROM tags AS t, b")
    values = [int(v) for v in row.split(",")]
    for i, n in enumerate(names):
        card, xor = values[2 * i], values[2 * i + 1]
        if card != bitmaps[n][0] or xor != 0:
            sys.exit(f"chdb: `{n}` has {card} members (taglake {bitmaps[n][0]}) and differs from "
                     f"groupBitmapState over the boolean table in {xor} members")
    os.remove(rowbinary)
    members = {n: m for n, (m, _) in bitmaps.items()}
    out = []
    for text in cfg["expressions"]:
        node = parse(text)
        expr = shape(node, col, lambda: col(UNIVERSE), lambda a, b: f"bitmapAnd({a}, {b})",
                     lambda a, b: f"bitmapOr({a}, {b})", lambda a, b: f"bitmapAndnot({a}, {b})",
                     lambda x: estimate(x, members))
        q = f"SELECT bitmapCardinality({expr}) FROM tags"
        seconds, count = timed(cfg["runs"], lambda: scalar(q))
        out.append({"expr": text, "count": int(count), "seconds": seconds, "query": q})
    node = parse(BREAKDOWN)
    expr = shape(node, col, lambda: col(UNIVERSE), lambda a, b: f"bitmapAnd({a}, {b})",
                 lambda a, b: f"bitmapOr({a}, {b})", lambda a, b: f"bitmapAndnot({a}, {b})",
                 lambda x: estimate(x, members))
    tiers = list(TIERS.items())
    any_tier = col(tiers[0][1])
    for _, tag in tiers[1:]:
        any_tier = f"bitmapOr({any_tier}, {col(tag)})"
    parts = [f"bitmapCardinality(bitmapAnd(a, {col(tag)}))" for _, tag in tiers]
    parts.append(f"bitmapCardinality(bitmapAndnot(a, {any_tier}))")
    q = f"SELECT {', '.join(parts)} FROM (SELECT {expr} AS a, * FROM tags)"

    def groups():
        values = [int(v) for v in scalar(q).split(",")]
        return {k: n for k, n in zip([v for v, _ in tiers] + ["null"], values) if n > 0}
    seconds, got = timed(cfg["runs"], groups)
    breakdown = {"groups": got, "seconds": seconds, "query": q}
    return {"breakdown": breakdown, "version": chdb.__version__, "engine": scalar("SELECT version()"), "threads": threads,
            "bitmaps_from": "portable roaring bytes of the tags table (RowBinary groupBitmap states)",
            "verified": "tiny example, cardinalities, XOR with groupBitmapStateIf over the boolean table",
            "load_seconds": load, "expressions": out}


def child_pyroaring(cfg):
    import pyroaring
    stored = read_bitmaps(cfg["export"])
    start = time.perf_counter()
    bitmaps = {n: pyroaring.BitMap.deserialize(b) for n, (_, b) in stored.items()}
    load = time.perf_counter() - start
    members = {n: len(b) for n, b in bitmaps.items()}
    out = []
    for text in cfg["expressions"]:
        node = parse(text)
        run = lambda: len(shape(node, bitmaps.__getitem__, lambda: bitmaps[UNIVERSE], lambda a, b: a & b,
                                lambda a, b: a | b, lambda a, b: a - b, lambda x: estimate(x, members)))
        seconds, count = timed(cfg["runs"], run)
        out.append({"expr": text, "count": count, "seconds": seconds})
    node = parse(BREAKDOWN)

    def groups():
        a = shape(node, bitmaps.__getitem__, lambda: bitmaps[UNIVERSE], lambda x, y: x & y,
                  lambda x, y: x | y, lambda x, y: x - y, lambda x: estimate(x, members))
        got = {value: len(a & bitmaps[tag]) for value, tag in TIERS.items()}
        rest = a
        for tag in TIERS.values():
            rest = rest - bitmaps[tag]
        got["null"] = len(rest)
        return {k: n for k, n in got.items() if n > 0}
    seconds, got = timed(cfg["runs"], groups)
    breakdown = {"groups": got, "seconds": seconds}
    return {"breakdown": breakdown, "version": pyroaring.__version__, "threads": 1, "load_seconds": load, "expressions": out}


def child(kind, cfg):
    result = {"duckdb-parquet": lambda: child_duckdb(cfg, "parquet"),
              "duckdb-table": lambda: child_duckdb(cfg, "table"),
              "chdb": lambda: child_chdb(cfg),
              "pyroaring": lambda: child_pyroaring(cfg)}[kind]()
    print(json.dumps(result))


# ───────────────────────── the run ─────────────────────────

SIDES = [  # key, label
    ("taglake-api", "taglake audience API"),
    ("taglake-sql", "taglake SQL (DataFusion)"),
    ("duckdb-parquet", "DuckDB, Parquet file"),
    ("duckdb-table", "DuckDB, in-memory table"),
    ("chdb", "ClickHouse (chdb) groupBitmap"),
    ("pyroaring", "pyroaring"),
]


def find_warehouse(members):
    for d in (f"audience-{members}", f"tag-{members}-5"):
        w = os.path.join(CACHE, d, "warehouse")
        if os.path.isdir(os.path.join(w, "tags", "_delta_log")):
            return w
    return None


def prepare(taglake, members):
    """Generates, ingests and tags a warehouse of `members` members (2 years,
    5 order lines per member and year, seed 1) under ~/.cache/taglake-bench."""
    wd = os.path.join(CACHE, f"audience-{members}")
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    measured([taglake, "generate", "--members", str(members), "--seed", "1", "--out", "data",
              "--lines-per-member-year", "5"], cwd=wd)
    for table, files in [("products", "data/products.parquet"), ("members", "data/members.parquet"),
                         ("orders", "data/orders")]:
        measured([taglake, "ingest", table, files, "--warehouse", "warehouse"], cwd=wd)
    measured([taglake, "tag", "--warehouse", "warehouse"], cwd=wd)
    shutil.rmtree(os.path.join(wd, "data"))
    return os.path.join(wd, "warehouse")


def settle(limit):
    """Waits up to `limit` seconds for the 1-minute load average to fall
    below half the cores (at least 1), e.g. after the release build; warns
    when it does not. Returns the load average."""
    target = max(1.0, (os.cpu_count() or 1) / 2)
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= target and time.monotonic() < deadline:
        time.sleep(5)
    load = os.getloadavg()
    if load[0] >= target:
        print(f"WARNING: the machine is busy (load {load[0]:.2f}): timings will be noisy", flush=True)
    return load


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--side", help="the audience_side binary")
    p.add_argument("--taglake", help="the taglake binary (only to build a missing warehouse)")
    p.add_argument("--members", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warehouse", help="default: ~/.cache/taglake-bench/audience-N or tag-N-5")
    p.add_argument("--settle", type=float, default=180,
                   help="seconds to wait at most for the load average to fall before the runs")
    p.add_argument("--expr", action="append", help="an audience expression (repeatable); default: four")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child, json.loads(a.config))
    if not a.side:
        p.error("--side is required")
    exprs = a.expr or EXPRESSIONS
    wh = a.warehouse or find_warehouse(a.members)
    if wh is None:
        if not a.taglake:
            sys.exit(f"no tagged warehouse of {a.members:,} members under {CACHE}; give --taglake to build one")
        print(f"building a warehouse of {a.members:,} members (generate, ingest, tag) …", flush=True)
        wh = prepare(a.taglake, a.members)
    wh = os.path.abspath(wh)
    export = os.path.join(os.path.dirname(wh), "audience-export")
    names = list(dict.fromkeys([n for e in exprs + [BREAKDOWN] for n in tag_names(parse(e))] + list(TIERS.values())))

    secs, _, out = measured([a.side, "export", "--warehouse", wh, "--tags", ",".join(names), "--out", export], None)
    exported = json.loads(out)
    print(f"warehouse {wh}: snapshot {exported['snapshot']}, {exported['rows']:,} members; exported "
          f"{len(names)} tags as booleans and bitmaps in {secs:.1f} s (not timed below)", flush=True)

    load = settle(a.settle)
    print(f"load average before the runs: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} cores); {a.runs} runs per expression and side, {WARMUP} warm-up runs", flush=True)
    side_args = [a.side, "measure", "--warehouse", wh, "--runs", str(a.runs)]
    for e in exprs:
        side_args += ["--expr", e]
    side_args += ["--breakdown", BREAKDOWN, "--by", BY]
    _, peak, out = measured(side_args, None)
    t = json.loads(out)
    t["load_seconds"] = t["open_seconds"] + t["warm_seconds"]
    sides = {"taglake-api": {"peak_bytes": peak, "load_seconds": t["load_seconds"], "threads": t["threads"],
                             "expressions": [{"expr": x["expr"], "count": x["count"], "seconds": x["api_seconds"]}
                                             for x in t["expressions"]]},
             "taglake-sql": {"peak_bytes": peak, "load_seconds": t["load_seconds"],
                             "threads": t["target_partitions"],
                             "expressions": [{"expr": x["expr"], "count": x["count"], "seconds": x["sql_seconds"],
                                              "stage_p50": {k: percentile(v, 50)
                                                            for k, v in x["sql_stage_seconds"].items()},
                                              "stage_seconds": x["sql_stage_seconds"], "plan": x["sql_plan"]}
                                             for x in t["expressions"]]}}
    print(f"  taglake: {t['members']:,} members, {t['tags']:,} tags: open {t['open_seconds']:.2f} s, every bitmap "
          f"read (warm) {t['warm_seconds']:.2f} s, RSS after that {gib(t['rss_after_load'])}, peak {gib(peak)}; "
          f"cold counts (fresh tag set, first count): "
          f"{', '.join(fmt_time(x['cold_seconds']) for x in t['expressions'])}", flush=True)
    cfg = {"export": export, "runs": a.runs, "threads": a.threads, "expressions": exprs}
    for kind in ("duckdb-parquet", "duckdb-table", "chdb", "pyroaring"):
        _, peak, out = measured([sys.executable, os.path.abspath(__file__), "--child", kind,
                                 "--config", json.dumps(cfg)], HERE)
        sides[kind] = {**json.loads(out), "peak_bytes": peak}
        s = sides[kind]
        print(f"  {kind}: {s['version']}, threads {s['threads']}, loaded in {s['load_seconds']:.2f} s, "
              f"peak {gib(peak)}", flush=True)
    load_after = os.getloadavg()

    # Every side must count exactly what taglake counts.
    wrong = []
    rows = []
    for i, text in enumerate(exprs):
        count = sides["taglake-api"]["expressions"][i]["count"]
        base = percentile(sides["taglake-api"]["expressions"][i]["seconds"], 50)
        for key, label in SIDES:
            x = sides[key]["expressions"][i]
            if x["count"] != count:
                wrong.append(f"{label}: `{text}` counts {x['count']:,}, taglake {count:,}")
            p50, p99 = percentile(x["seconds"], 50), percentile(x["seconds"], 99)
            x.update(p50=p50, p99=p99, ratio=p50 / base)
            rows.append((i, text, len(set(tag_names(parse(text)))), count, label, p50, p99, p50 / base))
    b = t["breakdown"]
    breakdown_rows = [("taglake breakdown API", b["groups"], b["api_seconds"]),
                      ("taglake SQL GROUP BY", b["groups"], b["sql_seconds"])]
    for key, label in SIDES[2:]:
        breakdown_rows.append((label, sides[key]["breakdown"]["groups"], sides[key]["breakdown"]["seconds"]))
    for label, groups, _ in breakdown_rows:
        if {k: int(v) for k, v in groups.items()} != {k: int(v) for k, v in b["groups"].items()}:
            wrong.append(f"{label}: the breakdown by {BY} is {groups}, taglake {b['groups']}")
    if wrong:
        sys.exit("COUNTS DIFFER:\n  " + "\n  ".join(wrong))

    print(f"\n{t['members']:,} members, {t['tags']:,} tags in the snapshot; p50 / p99 of {a.runs} warm runs; "
          f"ratio = p50 ÷ taglake audience API p50. All counts agree.")
    print(f"{'members':>10}  {'tags':>4}  {'count':>10}  {'side':<30}  {'p50':>10}  {'p99':>10}  {'ratio':>9}")
    last = None
    for i, text, ntags, count, label, p50, p99, ratio in rows:
        if i != last:
            print(f"  [{ntags} tag{'s' if ntags > 1 else ''}] {text}")
            last = i
        print(f"{t['members']:>10,}  {ntags:>4}  {count:>10,}  {label:<30}  {fmt_time(p50):>10}  {fmt_time(p99):>10}"
              f"  {ratio:>8.1f}×")
    sql_p50 = percentile(b["sql_seconds"], 50)
    print(f"\nbreakdown `{BREAKDOWN}` by {BY}: {b['groups']} (all sides agree); ratio = p50 ÷ taglake SQL p50")
    breakdown_table = []
    for label, _, seconds in breakdown_rows:
        p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
        breakdown_table.append({"side": label, "p50": p50, "p99": p99, "ratio": p50 / sql_p50})
        print(f"  {label:<30}  {fmt_time(p50):>10}  {fmt_time(p99):>10}  {p50 / sql_p50:>8.1f}×")
    print(f"target: SQL GROUP BY {BY} p50 {fmt_time(sql_p50)} ({'≤' if sql_p50 <= 5e-3 else '>'} 5 ms)")
    print("\ntaglake SQL, where the time goes (p50 of separate runs of each stage):")
    for x in sides["taglake-sql"]["expressions"]:
        st = x["stage_p50"]
        print(f"  logical plan {fmt_time(st['logical_plan'])}, physical plan {fmt_time(st['physical_plan'])}, "
              f"execution {fmt_time(st['execute'])}: {x['expr']}")
    print("  physical plan of the last expression:\n    " + x["plan"].strip().replace("\n", "\n    "))
    print("\npeak memory (max RSS of each child process; Python peers: the whole interpreter) and load time:")
    for key, label in SIDES:
        s = sides[key]
        print(f"  {label:<30} {gib(s['peak_bytes']):>10}  load {s['load_seconds']:.2f} s  threads {s['threads']}")
    print(f"load average before: {load[0]:.2f}, after: {load_after[0]:.2f}")

    biggest = max(range(len(exprs)), key=lambda i: len(set(tag_names(parse(exprs[i])))))
    api = sides["taglake-api"]["expressions"][biggest]["p50"]
    for key in ("duckdb-parquet", "duckdb-table"):
        duck = sides[key]["expressions"][biggest]["p50"]
        print(f"target ({len(set(tag_names(parse(exprs[biggest]))))} tags): taglake p50 {fmt_time(api)} "
              f"({'≤' if api <= 5e-3 else '>'} 5 ms), {duck / api:,.0f}× faster than {key} "
              f"({'≥' if duck / api >= 20 else '<'} 20×)")

    results = {**provenance(), "members": t["members"], "tags_in_snapshot": t["tags"], "snapshot": t["snapshot"], "warehouse": wh,
               "runs": a.runs, "warmup": WARMUP, "cores": os.cpu_count(), "threads": a.threads,
               "load_average_before": load, "load_average_after": load_after, "export": exported,
               "taglake_rss_after_load": t["rss_after_load"], "taglake_self_peak_rss": t["peak_rss"],
               "expressions": exprs, "sides": sides,
               "breakdown": {"expr": BREAKDOWN, "by": BY, "groups": b["groups"], "sides": breakdown_table,
                             "taglake_sql_plan": b["sql_plan"]}}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"audience_vs_duckdb_{t['members']}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
