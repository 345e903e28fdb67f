"""The nightly pipeline at seed scale: every step's time and peak memory.

What is run, each step a fresh process (wall time from the parent, peak
memory as the max RSS of exactly that child, from wait4):

1. `taglake generate --members N --years 2 --lines-per-member-year 5
   --format parquet` (kept and reused by later runs of the same size);
2. the backfill: `ingest products`, `ingest members`, `ingest orders`
   (`--memory 2GiB`, the default), `tag`, `cluster`;
3. NIGHTS nights, each with its own day files made from the generated
   data (written before the night, not timed):
   - `orders.csv`: ~0.3 % of the history's lines as new orders (new order
     ids, dated the night's day), plus a tenth of the previous night's
     lines again (exports overlap; they must be recognised, not added);
   - `members.csv`: ~0.1 % of the members with a changed points balance
     and city (full rows, as a CRM export sends them);
   then `taglake nightly --orders … --members … --format json`, whose
   summary gives each step's time and peak memory, and the warehouse's
   size on disk per table after the night.
4. DuckDB on the same files, where the comparison means something: the
   history loaded once into a DuckDB database (the backfill), then per
   night the same dedup-append of the day's order lines (anti-join on
   order_id, line_no) and the same member upsert (delete + insert by
   member_id), with `memory_limit` set to taglake's `--memory`. DuckDB has
   no key index: its cost is a scan of the history every night.

Results: benches/results/seed_scale-<members>.json, with the commit.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys

from measure import gib, measured, provenance

DUCKDB_LOAD = r"""
import duckdb, sys
db, data, mem = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect(db)
con.execute(f"SET memory_limit = '{mem}'")
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet('{data}/orders/*.parquet')")
con.execute(f"CREATE TABLE members AS SELECT * FROM read_parquet('{data}/members.parquet')")
print(con.execute("SELECT count(*) FROM orders").fetchone()[0])
"""

DUCKDB_NIGHT = r"""
import duckdb, sys
db, day, mem = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect(db)
con.execute(f"SET memory_limit = '{mem}'")
con.execute("SET enable_progress_bar = false")
con.execute("BEGIN")
con.execute(f"CREATE TEMP TABLE day AS SELECT * FROM read_csv('{day}/orders.csv', header=true)")
inserted = con.execute(
    "INSERT INTO orders SELECT DISTINCT ON (order_id, line_no) * FROM day d WHERE NOT EXISTS "
    "(SELECT 1 FROM orders o WHERE o.order_id = d.order_id AND o.line_no = d.line_no)").fetchone()[0]
con.execute(f"CREATE TEMP TABLE changed AS SELECT * FROM read_csv('{day}/members.csv', header=true)")
con.execute("DELETE FROM members WHERE member_id IN (SELECT member_id FROM changed)")
replaced = con.execute("INSERT INTO members SELECT * FROM changed").fetchone()[0]
con.execute("COMMIT")
print(inserted, replaced)
"""

# Day files from the generated history (DuckDB is only a file tool here).
MAKE_DAY = r"""
import duckdb, sys
data, out, night, day, prev = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET TimeZone = 'UTC'")
con.execute(f'''CREATE TABLE new AS
  SELECT 'N{night}-' || order_id AS order_id, line_no, member_id,
         strftime(CAST('{day}' AS DATE) + (CAST(ordered_at AS TIMESTAMP) - date_trunc('day', CAST(ordered_at AS TIMESTAMP))),
                  '%Y-%m-%dT%H:%M:%SZ') AS ordered_at,
         channel, store_id, sku, category, quantity, amount, discount, coupon_used
  FROM read_parquet('{data}/orders/*.parquet') USING SAMPLE 0.3 PERCENT (bernoulli, {night})''')
if prev != "-":
    con.execute(f"INSERT INTO new SELECT * FROM read_csv('{prev}/orders.csv', header=true) USING SAMPLE 10 PERCENT (bernoulli, {night})")
con.execute(f"COPY new TO '{out}/orders.csv' (HEADER)")
con.execute(f'''COPY (
  SELECT * REPLACE (coalesce(points_balance, 0) + 100 * {night} AS points_balance, 'Night City {night}' AS city,
                    strftime(CAST(registered_at AS TIMESTAMP), '%Y-%m-%dT%H:%M:%SZ') AS registered_at)
  FROM read_parquet('{data}/members.parquet') USING SAMPLE 0.1 PERCENT (bernoulli, {night})) TO '{out}/members.csv' (HEADER)''')
print(con.execute("SELECT count(*) FROM new").fetchone()[0],
      con.execute(f"SELECT count(*) FROM read_csv('{out}/members.csv', header=true)").fetchone()[0],
      con.execute("SELECT max(ordered_at) FROM new").fetchone()[0])
"""


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def sizes(wh):
    return {name: du(os.path.join(wh, name)) for name in sorted(os.listdir(wh))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--taglake", required=True)
    ap.add_argument("--members", type=int, default=10_000_000)
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--memory", default="2GiB")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB side (it needs the history's size again on disk)")
    ap.add_argument("--keep-features-days", type=int, default=None,
                    help="passed to `tag` and `nightly` (taglake's default keeps 7 days of `features` versions, "
                         "~4.7 GB each at 42 M members)")
    ap.add_argument("--keep-pruned-days", type=int, default=None,
                    help="passed to `nightly` (its default keeps replaced files 7 days)")
    a = ap.parse_args()
    tl = os.path.abspath(a.taglake)
    base = os.environ.get("TAGLAKE_BENCH_DIR", os.path.expanduser("~/.cache/taglake-bench"))
    work = a.workdir or os.path.join(base, f"seed-{a.members}")
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    duck_mem = a.memory.replace("iB", "B")
    res = {**provenance(), "members": a.members, "cores": os.cpu_count(),
           "memory_budget": a.memory, "steps": [], "nights": []}

    def step(name, cmd, cwd=work):
        t, rss, out = measured(cmd, cwd)
        res["steps"].append({"step": name, "seconds": t, "peak_rss": rss})
        print(f"{name:<28}{t:>9.1f} s  {gib(rss):>10}", flush=True)
        return out

    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "generated.txt")):
        shutil.rmtree(data, ignore_errors=True)
        out = step("generate", [tl, "generate", "--members", str(a.members), "--years", "2",
                                "--lines-per-member-year", "5", "--format", "parquet", "--out", "data"])
        with open(os.path.join(data, "generated.txt"), "w") as f:
            f.write(out)
    with open(os.path.join(data, "generated.txt")) as f:
        gen = f.read()
    lines = int(gen.split(" order lines")[0].rsplit(" ", 1)[1].replace(",", ""))
    res["order_lines"] = lines

    wh = os.path.join(work, "warehouse")
    shutil.rmtree(wh, ignore_errors=True)
    mem = ["--memory", a.memory]
    step("ingest products", [tl, "ingest", "products", "data/products.parquet", "--warehouse", wh] + mem)
    step("ingest members", [tl, "ingest", "members", "data/members.parquet", "--warehouse", wh] + mem)
    out = step("ingest orders", [tl, "ingest", "orders", "data/orders", "--warehouse", wh] + mem)
    assert f"{lines:,} inserted" in out, out
    res["backfill_lines_per_s"] = lines / res["steps"][-1]["seconds"]
    keep = [] if a.keep_features_days is None else ["--keep-features-days", str(a.keep_features_days)]
    res["keep_features_days"] = a.keep_features_days
    res["keep_pruned_days"] = a.keep_pruned_days
    step("tag", [tl, "tag", "--warehouse", wh] + keep)
    step("cluster", [tl, "cluster", "--warehouse", wh])
    res["sizes_after_backfill"] = sizes(wh)

    duck = os.path.join(work, "duck.db")
    for p in (duck, duck + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    if not a.no_duckdb:
        t, rss, out = measured([py, "-c", DUCKDB_LOAD, duck, data, duck_mem], work)
        res["duckdb_load"] = {"seconds": t, "peak_rss": rss}
        print(f"{'duckdb: load history':<28}{t:>9.1f} s  {gib(rss):>10}", flush=True)

    # The history ends the day before the generator's end date; night n is
    # that date + n - 1.
    import duckdb  # in-process only for the date: the measured runs are children

    end = duckdb.connect().execute(
        f"SELECT CAST(max(ordered_at) AS DATE) + 1 FROM read_parquet('{data}/orders/*.parquet')").fetchone()[0]
    prev = "-"
    for n in range(1, a.nights + 1):
        day_dir = os.path.join(work, f"night{n}")
        shutil.rmtree(day_dir, ignore_errors=True)
        os.makedirs(day_dir)
        day = (end + datetime.timedelta(days=n - 1)).isoformat()
        made = subprocess.run([py, "-c", MAKE_DAY, data, day_dir, str(n), day, prev],
                              capture_output=True, text=True, check=True).stdout.split()
        day_lines, day_members = int(made[0]), int(made[1])
        pruned = [] if a.keep_pruned_days is None else ["--keep-pruned-days", str(a.keep_pruned_days)]
        t, rss, out = measured([tl, "nightly", "--orders", f"{day_dir}/orders.csv", "--members",
                                f"{day_dir}/members.csv", "--warehouse", wh, "--format", "json"] + mem + keep + pruned,
                               work)
        summary = json.loads(out)
        assert summary["status"] == "ok", summary
        # The nightly restarts its high-water mark per step (so each step
        # reports its own), which wait4's max RSS then only sees the last of.
        rss = max([rss] + [s["peak_memory_bytes"] or 0 for s in summary["steps"]])
        orders = next(s for s in summary["steps"] if s["step"] == "ingest orders")["counts"]
        size = sizes(wh)
        dt, drss, d_inserted, d_replaced = 0.0, 0, 0, 0
        if not a.no_duckdb:
            dt, drss, dout = measured([py, "-c", DUCKDB_NIGHT, duck, day_dir, duck_mem], work)
            d_inserted, d_replaced = map(int, dout.split())
            assert d_inserted == orders["inserted"], (d_inserted, orders)
        night = {"night": n, "day": day, "order_lines": day_lines, "member_rows": day_members,
                 "seconds": t, "peak_rss": rss, "summary": summary, "sizes": size,
                 "duckdb": {"seconds": dt, "peak_rss": drss, "inserted": d_inserted, "replaced": d_replaced}}
        res["nights"].append(night)
        print(f"night {n} ({day}): {day_lines:,} lines ({orders['inserted']:,} new), {day_members:,} members · "
              f"nightly {t:.1f} s, peak {gib(rss)} · duckdb append+upsert {dt:.1f} s, peak {gib(drss)}", flush=True)
        for s in summary["steps"]:
            if s["status"] == "done":
                print(f"    {s['step']:<24}{s['seconds']:>9.2f} s  {gib(s['peak_memory_bytes'] or 0):>10}")
        print(f"    warehouse {gib(sum(size.values()))}: " +
              ", ".join(f"{k} {gib(v)}" for k, v in size.items()), flush=True)
        prev = day_dir

    os.makedirs("benches/results", exist_ok=True)
    path = f"benches/results/seed_scale-{a.members}.json"
    with open(path, "w") as f:
        json.dump(res, f, indent=2, default=str)
    print(f"\ncommit {res['commit']}, {os.cpu_count()} cores → {path}")
    print("| step | time | peak memory |\n|---|---|---|")
    for s in res["steps"]:
        print(f"| {s['step']} | {s['seconds']:.1f} s | {gib(s['peak_rss'])} |")
    for nt in res["nights"]:
        print(f"| night {nt['night']}: nightly ({nt['order_lines']:,} lines, {nt['member_rows']:,} members) "
              f"| {nt['seconds']:.1f} s | {gib(nt['peak_rss'])} |")
        for s in nt["summary"]["steps"]:
            if s["status"] == "done":
                print(f"| &nbsp;&nbsp;{s['step']} | {s['seconds']:.1f} s | {gib(s['peak_memory_bytes'] or 0)} |")
        d = nt["duckdb"]
        if not a.no_duckdb:
                print(f"| &nbsp;&nbsp;DuckDB append + upsert, same files | {d['seconds']:.1f} s | {gib(d['peak_rss'])} |")


if __name__ == "__main__":
    main()
