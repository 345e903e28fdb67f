"""Tag benchmark: taglake vs DuckDB, same Parquet files, same run.

"Full refresh": from the Parquet files of the warehouse's Delta tables
`members` and `orders`, compute every member's features and all tags of the
built-in catalog (`tagger/catalog/default.toml`), and write the result.

* taglake: `taglake tag --warehouse W` (features → `features` Delta table,
  tags → a snapshot of roaring bitmaps). Timed: the whole process, wall clock.
* DuckDB: one SQL script over exactly the Parquet files the Delta logs list
  (add actions minus remove actions, read by this script, not by the delta
  extension), computing the same features (definitions: the doc comment of
  `FeatureSet::chunk` in `tagger/src/features.rs`) and every tag as a BOOLEAN
  column, the catalog translated into SQL programmatically (see
  `catalog_sql`), then `COPY (SELECT member_key, <features>, <tags>) TO
  'out.parquet'`. Timed: from connecting to the COPY finishing (the process
  also reports its wall clock, Python start-up included). DuckDB threads = 2
  by default (`--duckdb-threads`).

Each run first deletes the `features` and `tags` tables taglake wrote in the
previous run, so every run does the same work from the same state. Peak
memory is the max RSS of each child (wait4). After the runs, a cross-check
compares, tag by tag, DuckDB's count of TRUE with taglake's member count
(`taglake tags list --format csv`).

The generated data and the ingested warehouse are kept in
`--workdir` (default `~/.cache/taglake-bench/tag-<members>-<lines per member
and year>`) and reused by later runs of the same size; `--fresh` rebuilds them.

    python benches/tag_vs_duckdb.py --taglake PATH --members N [--runs 3]
"""

import argparse
import csv
import io
import json
import os
import re
import shutil
import statistics
import sys
import time

from measure import gib, measured, provenance
import urllib.parse
from datetime import date, timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CATALOG = os.path.join(REPO, "tagger", "catalog", "default.toml")
EPOCH = date(1970, 1, 1)
DAY_US = 86_400_000_000
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYPARTS = ["night", "morning", "afternoon", "evening"]


# ───────────────────────── measuring ─────────────────────────

def count_of(text):
    return int(text.replace(",", ""))


# ───────────────────────── the Delta log ─────────────────────────

def delta_files(table_dir, con=None):
    """The Parquet files of a Delta table's current version: the add actions
    of the log (from the last checkpoint on) minus its remove actions."""
    log = os.path.join(table_dir, "_delta_log")
    live = {}
    after = -1
    last_cp = os.path.join(log, "_last_checkpoint")
    if os.path.exists(last_cp):
        with open(last_cp) as f:
            cp = json.load(f)
        v, parts = cp["version"], cp.get("parts")
        names = ([f"{v:020d}.checkpoint.parquet"] if not parts else
                 [f"{v:020d}.checkpoint.{i:010d}.{parts:010d}.parquet" for i in range(1, parts + 1)])
        paths = [os.path.join(log, n) for n in names]
        if con is None:
            import duckdb
            con = duckdb.connect()
        for (p,) in con.execute("SELECT add.path FROM read_parquet(?) WHERE add IS NOT NULL", [paths]).fetchall():
            live[p] = True
        after = v
    for name in sorted(os.listdir(log)):
        if not (name.endswith(".json") and name[:20].isdigit() and int(name[:20]) > after):
            continue
        with open(os.path.join(log, name)) as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    live[action["add"]["path"]] = True
                elif "remove" in action:
                    live.pop(action["remove"]["path"], None)
    out = []
    for p in live:
        u = urllib.parse.urlparse(p)
        if u.scheme == "file":
            out.append(urllib.parse.unquote(u.path))
        elif u.scheme:
            sys.exit(f"{table_dir}: data file {p} is not a local file")
        else:
            out.append(os.path.join(table_dir, urllib.parse.unquote(p)))
    return sorted(out)


# ───────────────────────── the catalog in SQL ─────────────────────────

def slug(value):
    """Same as `features::slug`: lowercase ASCII letters, digits, single `_`."""
    out = []
    for ch in value:
        for c in ch.lower():
            if c.isascii() and c.isalnum():
                out.append(c)
            elif out and out[-1] != "_":
                out.append("_")
    while out and out[-1] == "_":
        out.pop()
    return "".join(out) or "unknown"


def unique_slugs(values):
    seen = {}
    res = []
    for v in values:
        s = slug(v)
        seen[s] = seen.get(s, 0) + 1
        res.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return res


def substitute(template, slug_, raw):
    return template.replace("{value}", slug_).replace("{raw}", raw.replace("'", "''"))


def q(name):
    return '"' + name.replace('"', '""') + '"'


def lit(text):
    return "'" + text.replace("'", "''") + "'"


TOKEN = re.compile(r"'(?:[^']|'')*'|[A-Za-z_][A-Za-z0-9_]*|.", re.S)


def translate(rule, names):
    """A catalog rule as a DuckDB expression: the rule language is SQL-like
    (and/or/not, between, in, is null, coalesce, nullif, arithmetic, Kleene
    logic), so only names change: tags and constants in `names` are replaced
    by their SQL, everything else (features, scores, keywords) stays."""
    out = []
    for tok in TOKEN.findall(rule):
        out.append(names.get(tok, tok) if tok[0].isalpha() or tok[0] == "_" else tok)
    return "".join(out)


def values_of(spec, data, owner):
    """(slug, raw) pairs of a family's `values`."""
    if isinstance(spec, str):
        if spec not in data:
            sys.exit(f"{owner}: unknown values `{spec}`")
        vals = data[spec]
        return list(zip(unique_slugs(vals), vals))
    if all(isinstance(v, str) for v in spec):
        return list(zip(unique_slugs(spec), spec))
    return [(str(v), str(v)) for v in spec]


TEXT_FEATURE_VALUES = {
    "gender": "genders",
    "city": "cities",
    "register_channel": "register_channels",
    "home_store": "stores",
    "main_channel": "channels",
    "main_category": "categories",
}


def catalog_sql(catalog, data, as_of):
    """Expands the catalog over the data's values and translates every tag to
    SQL. Returns (score/rank select items, [(tag, SQL boolean expression)]),
    tags in taglake's snapshot order: scores, lookups, ranks, tags, families,
    partitions."""
    this_month = as_of.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    names = {
        "as_of_year": str(as_of.year),
        "as_of_month": str(as_of.month),
        "as_of_day_of_month": str(as_of.day),
        "this_month_start": f"DATE '{this_month}'",
        "last_month_start": f"DATE '{last_month}'",
    }
    true = lambda e: f"coalesce(({e}), false)"  # a member has a tag where its rule is TRUE
    windows, tags = [], []
    for s in catalog.get("score", []):
        sign = 1 if s["better"] == "higher" else -1
        who = f"{true(translate(s['among'], names))} AND {q(s['feature'])} IS NOT NULL"
        b = s.get("buckets", 5)
        windows.append(
            f"CASE WHEN {who} THEN ntile({b}) OVER (PARTITION BY {who} ORDER BY {sign} * {q(s['feature'])}, member_key) END AS {q(s['name'])}"
        )
        for bucket in range(1, b + 1):
            tags.append((f"{s['name']}_{bucket}", f"{q(s['name'])} = {bucket}"))
    for l in catalog.get("lookup", []):
        labels = []
        for label in (x for row in l["grid"] for x in row):
            if label not in labels:
                labels.append(label)
        for label in labels:
            cells = [f"({q(l['rows'])} = {i + 1} AND {q(l['columns'])} = {j + 1})"
                     for i, row in enumerate(l["grid"]) for j, v in enumerate(row) if v == label]
            tags.append((f"{l.get('prefix', '')}{label}", " OR ".join(cells)))
    for k, r in enumerate(catalog.get("rank", [])):
        sign = -1 if r["better"] == "higher" else 1
        who = f"{true(translate(r['among'], names))} AND {q(r['by'])} IS NOT NULL"
        pos, n = f"__rank_pos_{k}", f"__rank_n_{k}"
        windows.append(f"CASE WHEN {who} THEN row_number() OVER (PARTITION BY {who} ORDER BY {sign} * {q(r['by'])}, member_key) - 1 END AS {pos}")
        windows.append(f"CASE WHEN {who} THEN count(*) OVER (PARTITION BY {who}) END AS {n}")
        prev = 0.0
        for band in r["bands"]:
            pct = float(band["up_to_percent"])
            lo = f"floor({prev!r}::DOUBLE * {n} / 100.0::DOUBLE)"
            hi = f"floor({pct!r}::DOUBLE * {n} / 100.0::DOUBLE)"
            tags.append((band["name"], f"{pos} >= {lo} AND {pos} < {hi}"))
            prev = pct
    rule_tags = []
    for t in catalog.get("tag", []):
        rule_tags.append((t["name"], t["rule"]))
    for f in catalog.get("family", []):
        for s, raw in values_of(f["values"], data, f"[[family]] {f['name']}"):
            rule_tags.append((f["name"].replace("{value}", s), substitute(f["rule"], s, raw)))
    # Rules may read earlier tags: inline them (each as "is TRUE"), in dependency order.
    pending = dict(rule_tags)
    done = {}
    tag_names = set(pending) | {t for t, _ in tags}
    for t, e in tags:
        names[t] = true(e)
    while pending:
        progressed = False
        for t, rule in list(pending.items()):
            deps = {tok for tok in TOKEN.findall(rule) if tok in tag_names and tok != t}
            if any(d in pending for d in deps):
                continue
            done[t] = translate(rule, names)
            names[t] = true(done[t])
            del pending[t]
            progressed = True
        if not progressed:
            sys.exit(f"tags refer to each other in a cycle: {', '.join(pending)}")
    tags += [(t, done[t]) for t, _ in rule_tags]
    for p in catalog.get("partition", []):
        feat = p["feature"]
        if feat in TEXT_FEATURE_VALUES:
            dict_values = data[TEXT_FEATURE_VALUES[feat]]
            wanted = p.get("values")
            if isinstance(wanted, str):
                wanted = data[wanted]
            for s, raw in zip(unique_slugs(dict_values), dict_values):
                if wanted is not None and raw not in wanted:
                    continue
                tags.append((p["name"].replace("{value}", s), f"{q(feat)} = {lit(raw)}"))
        else:
            if "values" not in p:
                sys.exit(f"[[partition]] {p['name']}: feature `{feat}` is not a text feature this script knows; "
                         f"teach TEXT_FEATURE_VALUES about it")
            for v in p["values"]:
                tags.append((p["name"].replace("{value}", str(v)), f"{q(feat)} = {v}"))
    return windows, [(t, true(e)) for t, e in tags]


def features_sql(member_files, order_files, data, as_of, growth_per_unit):
    """The features of `FeatureSet::chunk`, for the members of the base
    (registered before D), as one SELECT; returns (column names, SQL)."""
    D = (as_of - EPOCH).days
    cats = data["categories"]
    chans = data["channels"]
    cat_slugs = unique_slugs(cats)
    chan_slugs = unique_slugs(chans)
    flist = lambda files: "[" + ", ".join(lit(f) for f in files) + "]"
    money = "::DOUBLE / 10000.0::DOUBLE"
    cat_aggs = ",\n      ".join(
        f"sum(units) FILTER (WHERE category = {lit(c)}) AS cu_{i}, max(day) FILTER (WHERE category = {lit(c)}) AS cl_{i}"
        for i, c in enumerate(cats)
    ) or "NULL AS no_category"
    chan_aggs = ",\n      ".join(
        f"count(*) FILTER (WHERE channel = {lit(c)}) AS ch_{i}" for i, c in enumerate(chans)
    ) or "NULL AS no_channel"
    month_aggs = ", ".join(f"count(*) FILTER (WHERE mon = {m}) AS mo_{m}" for m in range(1, 13))
    wd_aggs = ", ".join(f"count(*) FILTER (WHERE wd = {w}) AS wd_{w}" for w in range(7))
    dp_aggs = ", ".join(f"count(*) FILTER (WHERE daypart = {p}) AS dp_{p}" for p in range(4))
    has = "coalesce(of.orders_total, 0) > 0"
    ch = lambda i: f"coalesce(of.ch_{i}, 0)"
    best = f"greatest({', '.join(ch(i) for i in range(len(chans)))})" if chans else "0"
    main_channel = (
        f"CASE WHEN {has} THEN CASE " + " ".join(f"WHEN {ch(i)} = {best} THEN {lit(c)}" for i, c in enumerate(chans)) + " END END"
        if chans else "NULL::VARCHAR"
    )
    cu = lambda i: f"coalesce(lf.cu_{i}, 0)"
    top = f"greatest({', '.join(cu(i) for i in range(len(cats)))})" if cats else "0"
    main_category = (
        f"CASE WHEN {top} > 0 THEN CASE " + " ".join(f"WHEN {cu(i)} = {top} THEN {lit(c)}" for i, c in enumerate(cats)) + " END END"
        if cats else "NULL::VARCHAR"
    )
    distinct_cats = " + ".join(f"(lf.cl_{i} IS NOT NULL)::INTEGER" for i in range(len(cats))) or "0"
    distinct_chans = " + ".join(f"({ch(i)} > 0)::INTEGER" for i in range(len(chans))) or "0"
    cols = [
        "m.member_key AS member_key",
        f"DATE '{as_of}' AS as_of",
        "DATE '1970-01-01' + m.reg_day AS registered_date",
        f"{D} - m.reg_day AS tenure_days",
        "DATE '1970-01-01' + of.first_day AS first_order_date",
        "DATE '1970-01-01' + of.last_day AS last_order_date",
        f"{D} - of.last_day AS recency_days",
        f"{D} - of.first_day AS first_order_days_ago",
    ]
    for w in ["30d", "90d", "365d", "total"]:
        cols.append(f"coalesce(of.orders_{w}, 0)::INTEGER AS orders_{w}")
    for w in ["30d", "90d", "365d", "total"]:
        cols.append(f"coalesce(lf.u_{w}, 0){money} AS spend_{w}")
    cols += [
        f"CASE WHEN {has} THEN (lf.u_total{money}) / of.orders_total::DOUBLE END AS avg_order_value",
        "coalesce(lf.items, 0)::BIGINT AS items_total",
        f"CASE WHEN {has} THEN lf.items::DOUBLE / of.orders_total::DOUBLE END AS items_per_order",
        "coalesce(lf.lines, 0)::BIGINT AS lines_total",
        f"({distinct_cats})::INTEGER AS distinct_categories",
        f"({distinct_chans})::INTEGER AS distinct_channels",
        f"CASE WHEN {has} THEN of.weekend_orders::DOUBLE / of.orders_total::DOUBLE END AS weekend_share",
        "CASE WHEN coalesce(lf.lines, 0) > 0 THEN lf.promo_lines::DOUBLE / lf.lines::DOUBLE END AS promotion_share",
        f"{float(growth_per_unit)!r}::DOUBLE * (coalesce(lf.u_365d, 0){money}) AS growth_value",
        f"CASE WHEN m.birthday IS NULL OR m.birthday >= DATE '{as_of}' THEN NULL ELSE "
        f"({as_of.year} - year(m.birthday) - CASE WHEN {as_of.month} < month(m.birthday) OR "
        f"({as_of.month} = month(m.birthday) AND {as_of.day} < day(m.birthday)) THEN 1 ELSE 0 END)::INTEGER END AS age",
        "month(m.birthday)::INTEGER AS birthday_month",
        "m.gender AS gender",
        "m.city AS city",
        "m.register_channel AS register_channel",
        "coalesce(st.top_store, m.home_store_id) AS home_store",
        f"{main_channel} AS main_channel",
        f"{main_category} AS main_category",
        "m.points_balance AS points_balance",
    ]
    for i, s in enumerate(cat_slugs):
        cols.append(f"CASE WHEN coalesce(lf.u_total, 0) > 0 THEN coalesce(lf.cu_{i}, 0)::DOUBLE / lf.u_total::DOUBLE END AS {q('spend_share_' + s)}")
    for i, s in enumerate(cat_slugs):
        cols.append(f"{D} - lf.cl_{i} AS {q('category_recency_days_' + s)}")
    for i, s in enumerate(chan_slugs):
        cols.append(f"CASE WHEN {has} THEN {ch(i)}::DOUBLE / of.orders_total::DOUBLE END AS {q('order_share_' + s)}")
    for mth in range(1, 13):
        cols.append(f"coalesce(of.mo_{mth}, 0)::INTEGER AS month_orders_{mth}")
    for w, name in enumerate(WEEKDAYS):
        cols.append(f"coalesce(of.wd_{w}, 0)::INTEGER AS weekday_orders_{name}")
    for p, name in enumerate(DAYPARTS):
        cols.append(f"coalesce(of.dp_{p}, 0)::INTEGER AS daypart_orders_{name}")
    select = ",\n    ".join(cols)
    names = [re.search(r' AS ("?)([^"]+)\1$', c).group(2) for c in cols]
    return names, f"""
WITH
m AS (
  SELECT member_key, (epoch_us(registered_at) // {DAY_US})::INTEGER AS reg_day, birthday, gender, city,
         register_channel, home_store_id, points_balance
  FROM read_parquet({flist(member_files)})
),
l AS (
  SELECT member_key, order_id, channel, store_id, category, quantity,
         round(amount * 10000.0::DOUBLE)::BIGINT AS units,
         (coalesce(discount, 0) > 0 OR coalesce(coupon_used, false)) AS promo,
         (epoch_us(ordered_at) // {DAY_US})::INTEGER AS day,
         ((epoch_us(ordered_at) % {DAY_US}) // 3600000000 // 6)::INTEGER AS daypart
  FROM read_parquet({flist(order_files)})
  WHERE epoch_us(ordered_at) < {D * DAY_US}
),
lf AS (
  SELECT member_key,
      sum(units) AS u_total,
      sum(units) FILTER (WHERE {D} - day <= 365) AS u_365d,
      sum(units) FILTER (WHERE {D} - day <= 90) AS u_90d,
      sum(units) FILTER (WHERE {D} - day <= 30) AS u_30d,
      sum(quantity) AS items, count(*) AS lines, count(*) FILTER (WHERE promo) AS promo_lines,
      {cat_aggs}
  FROM l GROUP BY member_key
),
o AS (
  SELECT member_key, day, daypart, channel, store_id, (day + 3) % 7 AS wd, month(DATE '1970-01-01' + day) AS mon
  FROM (
    SELECT member_key, order_id, min(day) AS day, min(daypart) AS daypart, min(channel) AS channel, min(store_id) AS store_id
    FROM l GROUP BY member_key, order_id
  )
),
of AS (
  SELECT member_key,
      count(*) AS orders_total,
      count(*) FILTER (WHERE {D} - day <= 365) AS orders_365d,
      count(*) FILTER (WHERE {D} - day <= 90) AS orders_90d,
      count(*) FILTER (WHERE {D} - day <= 30) AS orders_30d,
      min(day) AS first_day, max(day) AS last_day,
      count(*) FILTER (WHERE wd >= 5) AS weekend_orders,
      {chan_aggs},
      {month_aggs},
      {wd_aggs},
      {dp_aggs}
  FROM o GROUP BY member_key
),
st AS (
  SELECT member_key, store_id AS top_store
  FROM (SELECT member_key, store_id, count(*) AS n FROM o WHERE store_id IS NOT NULL GROUP BY member_key, store_id)
  QUALIFY row_number() OVER (PARTITION BY member_key ORDER BY n DESC, store_id) = 1
)
SELECT
    {select}
FROM m
LEFT JOIN lf USING (member_key)
LEFT JOIN of USING (member_key)
LEFT JOIN st USING (member_key)
WHERE m.reg_day < {D}
"""


def duckdb_side(argv):
    """The DuckDB half, run in its own process: prints one JSON line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--catalog", default=CATALOG)
    ap.add_argument("--sql-out", default=None, help="also write the generated SQL here")
    a = ap.parse_args(argv)
    import tomllib

    import duckdb

    with open(a.catalog, "rb") as f:
        catalog = tomllib.load(f)
    growth = (catalog.get("settings") or {}).get("growth_per_unit", 10)

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    con.execute("SET enable_progress_bar = false")
    # Rule semantics: division by zero is null, as in taglake's rule language.
    for setting in ("SET ieee_floating_point_ops = false", "SET error_on_division_by_zero = false"):
        try:
            con.execute(setting)
        except duckdb.Error:
            pass
    member_files = delta_files(os.path.join(a.warehouse, "members"), con)
    order_files = delta_files(os.path.join(a.warehouse, "orders"), con)
    t_log = time.perf_counter()
    # The as-of date and the values families and partitions expand over.
    newest, cats, chans, stores = con.execute(
        "SELECT epoch_us(max(ordered_at)), list(DISTINCT category), list(DISTINCT channel), list(DISTINCT store_id) "
        "FROM read_parquet(?)", [order_files]).fetchone()
    genders, cities, reg_channels, home_stores = con.execute(
        "SELECT list(DISTINCT gender), list(DISTINCT city), list(DISTINCT register_channel), list(DISTINCT home_store_id) "
        "FROM read_parquet(?)", [member_files]).fetchone()
    clean = lambda *lists: sorted({v for lst in lists for v in (lst or []) if v is not None})
    data = {
        "categories": clean(cats),
        "channels": clean(chans),
        "stores": clean(stores, home_stores),
        "genders": clean(genders),
        "cities": clean(cities),
        "register_channels": clean(reg_channels),
    }
    as_of = EPOCH + timedelta(days=newest // DAY_US + 1)
    t_values = time.perf_counter()
    windows, tags = catalog_sql(catalog, data, as_of)
    feature_names, feats = features_sql(member_files, order_files, data, as_of, growth)
    tag_cols = ",\n  ".join(f"{e} AS {q(t)}" for t, e in tags)
    sql = f"""
COPY (
WITH f AS ({feats}),
s AS (SELECT *, {', '.join(windows) or 'NULL AS no_scores'} FROM f)
SELECT {', '.join(q(c) for c in feature_names)},
  {tag_cols}
FROM s
) TO {lit(a.out)} (FORMAT parquet)
"""
    if a.sql_out:
        with open(a.sql_out, "w") as f:
            f.write(sql)
    con.execute(sql)
    t_end = time.perf_counter()
    con.close()
    print(json.dumps({
        "seconds": t_end - t0,
        "delta_log_seconds": t_log - t0,
        "values_seconds": t_values - t_log,
        "query_seconds": t_end - t_values,
        "as_of": str(as_of),
        "tags": [t for t, _ in tags],
        "features": feature_names,
        "member_files": len(member_files),
        "order_files": len(order_files),
    }))


# ───────────────────────── the benchmark ─────────────────────────

def prepare(tl, work, members, lpmy, seed, fresh):
    """Generated data and an ingested warehouse, reused when already there."""
    os.makedirs(work, exist_ok=True)
    marker = os.path.join(work, "ready.json")
    params = {"members": members, "years": 2, "lines_per_member_year": lpmy, "seed": seed}
    if not fresh and os.path.exists(marker):
        with open(marker) as f:
            ready = json.load(f)
        if ready.get("params") == params:
            print(f"reusing the generated data and warehouse in {work}", flush=True)
            return ready
    for d in ("data", "warehouse"):
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    if os.path.exists(marker):
        os.remove(marker)
    print(f"generating {members:,} members into {work}/data …", flush=True)
    t, rss, out = measured([tl, "generate", "--members", str(members), "--years", "2", "--seed", str(seed),
                            "--lines-per-member-year", str(lpmy), "--format", "parquet", "--out", "data"], work)
    lines = count_of(re.search(r"([\d,]+) order lines", out).group(1))
    ready = {"params": params, "order_lines": lines, "generate": {"seconds": t, "peak_rss": rss, "output": out.strip()}}
    for table, src in (("products", "data/products.parquet"), ("members", "data/members.parquet"), ("orders", "data/orders")):
        print(f"ingesting {table} …", flush=True)
        t, rss, out = measured([tl, "ingest", table, src, "--warehouse", "warehouse"], work)
        ready[f"ingest_{table}"] = {"seconds": t, "peak_rss": rss, "output": out.strip()}
    with open(marker, "w") as f:
        json.dump(ready, f, indent=2)
    return ready


def data_args(ap):
    """The options of every benchmark over the shared generated warehouse."""
    ap.add_argument("--taglake", required=True)
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lines-per-member-year", type=float, default=5)
    ap.add_argument("--seed", type=int, default=1)


def default_workdir(members, lpmy):
    """Where the generated data and warehouse of that size are kept."""
    return os.path.join(os.environ.get("TAGLAKE_BENCH_DIR", os.path.expanduser("~/.cache/taglake-bench")),
                        f"tag-{members}-{lpmy:g}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "duckdb-side":
        return duckdb_side(sys.argv[2:])
    ap = argparse.ArgumentParser()
    data_args(ap)
    ap.add_argument("--duckdb-threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--fresh", action="store_true", help="regenerate and re-ingest even if the workdir has the data")
    a = ap.parse_args()
    tl = os.path.abspath(a.taglake)
    lpmy = a.lines_per_member_year
    work = os.path.abspath(a.workdir or default_workdir(a.members, lpmy))
    ready = prepare(tl, work, a.members, lpmy, a.seed, a.fresh)
    wh = os.path.join(work, "warehouse")
    duck_out = os.path.join(work, "duckdb-out.parquet")
    sql_out = os.path.join(work, "duckdb-tag.sql")

    results = {**provenance(), "members": a.members, "order_lines": ready["order_lines"], "runs": a.runs,
               "cores": os.cpu_count(), "duckdb_threads": a.duckdb_threads, "lines_per_member_year": lpmy, "prepare": ready}
    runs = {"taglake": [], "duckdb": []}
    tl_info = duck_info = None
    for i in range(a.runs):
        # Same starting state every run: no features table, no tag snapshot yet.
        for t in ("features", "tags"):
            shutil.rmtree(os.path.join(wh, t), ignore_errors=True)
        t, rss, out = measured([tl, "tag", "--warehouse", wh], work)
        mt = re.search(r"([\d,]+) tags over ([\d,]+) members, ([\d,]+) member-tags.*?from ([\d,]+) order lines"
                       r".*?features ([\d.]+) s, tags ([\d.]+) s, commit ([\d.]+) s", out)
        if not mt:
            sys.exit(f"cannot read the summary line of `taglake tag`:\n{out}")
        tl_info = {"tags": count_of(mt.group(1)), "base_members": count_of(mt.group(2)),
                   "member_tags": count_of(mt.group(3)), "order_lines": count_of(mt.group(4)),
                   "phases_s": {"features": float(mt.group(5)), "tags": float(mt.group(6)), "commit": float(mt.group(7))},
                   "summary": out.strip().splitlines()[-1]}
        runs["taglake"].append({"seconds": t, "peak_rss": rss, "phases_s": tl_info["phases_s"]})
        if os.path.exists(duck_out):
            os.remove(duck_out)
        wall, rss, out = measured([sys.executable, os.path.abspath(__file__), "duckdb-side", "--warehouse", wh,
                                    "--out", duck_out, "--threads", str(a.duckdb_threads), "--sql-out", sql_out], work)
        duck_info = json.loads(out.strip().splitlines()[-1])
        runs["duckdb"].append({"seconds": duck_info["seconds"], "process_wall_s": wall, "peak_rss": rss,
                               "phases_s": {k: duck_info[k] for k in ("delta_log_seconds", "values_seconds", "query_seconds")}})
        print(f"run {i + 1}: taglake {runs['taglake'][-1]['seconds']:.2f} s, duckdb {duck_info['seconds']:.2f} s "
              f"(process {wall:.2f} s)", flush=True)

    # Cross-check, on the last run's outputs.
    import duckdb

    con = duckdb.connect()
    tag_names = duck_info["tags"]
    row = con.execute(
        "SELECT count(*), " + ", ".join(f"count_if({q(t)})" for t in tag_names) + " FROM read_parquet(?)", [duck_out]
    ).fetchone()
    duck_rows, duck_counts = row[0], dict(zip(tag_names, row[1:]))
    duck_member_tags = sum(duck_counts.values())
    _, _, listing = measured([tl, "tags", "list", "--format", "csv", "--warehouse", wh], work)
    tl_counts = {r["name"]: int(r["members"]) for r in csv.DictReader(io.StringIO(listing))}
    agree = [t for t in tl_counts if t in duck_counts and tl_counts[t] == duck_counts[t]]
    differ = [(t, tl_counts[t], duck_counts[t]) for t in tl_counts if t in duck_counts and tl_counts[t] != duck_counts[t]]
    only_tl = [t for t in tl_counts if t not in duck_counts]
    only_duck = [t for t in duck_counts if t not in tl_counts]

    summary = {}
    for tool, rs in runs.items():
        med = statistics.median(r["seconds"] for r in rs)
        mtags = tl_info["member_tags"] if tool == "taglake" else duck_member_tags
        summary[tool] = {"median_s": med, "runs_s": [r["seconds"] for r in rs], "peak_rss": max(r["peak_rss"] for r in rs),
                         "member_tags": mtags, "member_tags_per_s": mtags / med, "runs": rs}
    ratio = summary["duckdb"]["median_s"] / summary["taglake"]["median_s"]
    results.update({
        "as_of": duck_info["as_of"],
        "taglake": {**summary["taglake"], "tags": tl_info["tags"], "base_members": tl_info["base_members"],
                    "order_lines_before_as_of": tl_info["order_lines"], "last_summary": tl_info["summary"]},
        "duckdb": {**summary["duckdb"], "tags": len(tag_names), "rows": duck_rows,
                   "feature_columns": len(duck_info["features"])},
        "ratio_duckdb_over_taglake": ratio,
        "claim_taglake_3x_faster": ratio >= 3.0,
        "cross_check": {"tags_compared": len(agree) + len(differ), "agree": len(agree),
                        "differ": [{"tag": t, "taglake": x, "duckdb": y} for t, x, y in differ],
                        "only_taglake": only_tl, "only_duckdb": only_duck,
                        "base_members": {"taglake": tl_info["base_members"], "duckdb": duck_rows}},
    })

    print()
    print(f"machine: {os.cpu_count()} cores; {a.members:,} members ({tl_info['base_members']:,} in the base), "
          f"{ready['order_lines']:,} order lines, {tl_info['tags']} tags, as of {duck_info['as_of']}; "
          f"{a.runs} runs; DuckDB threads {a.duckdb_threads}")
    print(f"{'full refresh':<14}{'median s':>10}{'M member-tags/s':>17}{'member-tags':>14}{'peak memory':>13}")
    for tool in ("taglake", "duckdb"):
        s = summary[tool]
        print(f"{tool:<14}{s['median_s']:>10.2f}{s['member_tags_per_s'] / 1e6:>17.2f}{s['member_tags']:>14,}{gib(s['peak_rss']):>13}")
    ph = tl_info["phases_s"]
    print(f"taglake phases (last run): features {ph['features']:.2f} s, tags {ph['tags']:.2f} s, commit {ph['commit']:.2f} s")
    dp = runs["duckdb"][-1]["phases_s"]
    print(f"duckdb phases (last run): delta log {dp['delta_log_seconds']:.2f} s, values {dp['values_seconds']:.2f} s, "
          f"features+tags+COPY {dp['query_seconds']:.2f} s; process wall {runs['duckdb'][-1]['process_wall_s']:.2f} s")
    print(f"ratio duckdb / taglake (time): {ratio:.2f}  (claim: taglake ≥ 3× faster → {'holds' if ratio >= 3 else 'does not hold'})")
    print(f"cross-check: {len(agree)} of {len(agree) + len(differ)} tags agree")
    if tl_info["base_members"] != duck_rows:
        print(f"  base members differ: taglake {tl_info['base_members']:,}, duckdb {duck_rows:,}")
    for t, x, y in differ:
        print(f"  differs: {t}: taglake {x:,}, duckdb {y:,}")
    if only_tl:
        print(f"  only in taglake: {', '.join(only_tl)}")
    if only_duck:
        print(f"  only in duckdb: {', '.join(only_duck)}")
    os.makedirs(os.path.join(REPO, "benches", "results"), exist_ok=True)
    with open(os.path.join(REPO, "benches", "results", "tag_vs_duckdb.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
