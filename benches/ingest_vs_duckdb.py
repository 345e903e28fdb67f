"""Ingest benchmark: taglake vs DuckDB, same CSV files, same run.

Both tools turn the same generated CSV order lines into Parquet:

* taglake: `taglake ingest orders DIR` into a warehouse whose members are
  already ingested (validation of every value, member keys, dedupe against
  the table, quarantine, one Delta commit).
* DuckDB: `CREATE TABLE orders AS SELECT * FROM read_csv(...)` then
  `COPY orders TO 'orders.parquet'` (type sniffing, no validation).

Each run is a fresh process on a fresh copy of the starting state; wall
time comes from the parent, peak memory (max RSS) from wait4 on that child.
The generator's own throughput (Parquet and CSV) is reported too.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from measure import gib, measured, provenance

DUCKDB_SCRIPT = r"""
import duckdb, sys
src, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE TABLE orders AS SELECT * FROM read_csv('{src}/*.csv', header=true)")
n = con.execute("SELECT count(*) FROM orders").fetchone()[0]
con.execute(f"COPY orders TO '{out}' (FORMAT parquet)")
print(n)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--taglake", required=True)
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    tl = os.path.abspath(a.taglake)
    work = a.workdir or tempfile.mkdtemp(prefix="taglake-bench-")
    os.makedirs(work, exist_ok=True)
    members = max(1, a.lines // 10)  # ~10 lines per member and year, 1 year

    results = {**provenance(), "order_lines_target": a.lines, "members": members, "runs": a.runs}
    # Generator throughput (Parquet, then the CSV the ingest reads).
    t, rss, out = measured([tl, "generate", "--members", str(members), "--years", "1",
                            "--format", "parquet", "--out", "gen-parquet"], work)
    lines = int(out.split(" order lines")[0].rsplit(" ", 1)[1].replace(",", ""))
    results["generate_parquet"] = {"seconds": t, "lines_per_s": lines / t, "peak_rss": rss}
    t, rss, _ = measured([tl, "generate", "--members", str(members), "--years", "1",
                          "--format", "csv", "--out", "data"], work)
    results["generate_csv"] = {"seconds": t, "lines_per_s": lines / t, "peak_rss": rss}
    results["order_lines"] = lines
    csv_bytes = sum(os.path.getsize(os.path.join(work, "data/orders", f))
                    for f in os.listdir(os.path.join(work, "data/orders")))
    results["csv_bytes"] = csv_bytes

    # Starting state for taglake: members ingested (not timed).
    base = os.path.join(work, "base-wh")
    shutil.rmtree(base, ignore_errors=True)
    measured([tl, "ingest", "members", "data/members.csv", "--warehouse", base], work)

    runs = {"taglake": [], "duckdb": []}
    for i in range(a.runs):
        wh = os.path.join(work, "wh")
        shutil.rmtree(wh, ignore_errors=True)
        shutil.copytree(base, wh)
        t, rss, out = measured([tl, "ingest", "orders", "data/orders", "--warehouse", wh], work)
        assert f"{lines:,} inserted" in out, out
        runs["taglake"].append((t, rss))
        target = os.path.join(work, "duck.parquet")
        if os.path.exists(target):
            os.remove(target)
        t, rss, out = measured([sys.executable, "-c", DUCKDB_SCRIPT, "data/orders", target], work)
        assert int(out.strip()) == lines, out
        runs["duckdb"].append((t, rss))
        print(f"run {i + 1}: taglake {runs['taglake'][-1][0]:.2f} s, duckdb {runs['duckdb'][-1][0]:.2f} s", flush=True)

    summary = {}
    for tool, rs in runs.items():
        med = statistics.median(t for t, _ in rs)
        summary[tool] = {"median_s": med, "runs_s": [t for t, _ in rs], "peak_rss": max(m for _, m in rs),
                         "lines_per_s": lines / med}
    results["ingest"] = summary
    ratio = summary["taglake"]["median_s"] / summary["duckdb"]["median_s"]
    results["ratio_taglake_over_duckdb"] = ratio

    print()
    print(f"machine: {os.cpu_count()} cores; {lines:,} order lines, {csv_bytes / 2**20:.0f} MiB of CSV, {a.runs} runs")
    g = results["generate_parquet"]
    print(f"generate → Parquet: {g['seconds']:.2f} s, {g['lines_per_s'] / 1e6:.2f} M lines/s, peak {gib(g['peak_rss'])}")
    g = results["generate_csv"]
    print(f"generate → CSV:     {g['seconds']:.2f} s, {g['lines_per_s'] / 1e6:.2f} M lines/s, peak {gib(g['peak_rss'])}")
    print(f"{'ingest CSV → Parquet':<22}{'median s':>10}{'M lines/s':>11}{'peak memory':>13}")
    for tool in ("taglake", "duckdb"):
        s = summary[tool]
        print(f"{tool:<22}{s['median_s']:>10.2f}{s['lines_per_s'] / 1e6:>11.2f}{gib(s['peak_rss']):>13}")
    print(f"ratio taglake / duckdb (time): {ratio:.2f}")
    os.makedirs("benches/results", exist_ok=True)
    with open("benches/results/ingest_vs_duckdb.json", "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
