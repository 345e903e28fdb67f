"""Load on `taglake serve`, with PostgreSQL 15 as the peer, in one run.

CLIENTS concurrent psycopg connections (libpq, one thread each) issue
audience counts for SECONDS against

  * taglake serve over the tagged warehouse: `SELECT count(*) FROM members
    WHERE <expr>` as a prepared statement (the extended protocol BI tools
    use), and the same through `audience('<expr>')`;
  * PostgreSQL 15 (the server a BI tool would otherwise point at) holding
    the same tags as boolean columns of a `members` table, loaded from the
    same bitmaps (benches/audience_vs_duckdb.sh writes tags_bool.parquet),
    with parallel query on, after VACUUM ANALYZE; the same prepared counts.

Every answer is checked against the count taglake gives over one
connection (and PostgreSQL's own first answer must equal it), so an error
or a wrong count is reported, not hidden. Reports throughput, p50/p99/max
latency, errors, and each server's peak memory (VmHWM of the server
process; for PostgreSQL the sum of VmHWM over the processes alive at the
end, which counts shared buffers once per process).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

from audience_vs_duckdb import EXPRESSIONS, percentile
from measure import provenance

CACHE = os.path.expanduser("~/.cache/taglake-bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def load(connect, queries, expected, seconds, clients):
    """Each client loops over the queries (offset by its number) until the deadline."""
    lat, errors, lock = [], [], threading.Lock()
    per_query = {q: [] for q in queries}
    ready = threading.Barrier(clients + 1)

    def client(i):
        conn = connect()
        cur = conn.cursor()
        for q in queries:  # prepare each statement once, untimed
            cur.execute(q, prepare=True).fetchone()
        ready.wait()
        mine, my_errors, k = [], [], i
        while time.perf_counter() < deadline:
            q = queries[k % len(queries)]
            k += 1
            t0 = time.perf_counter()
            try:
                n = cur.execute(q, prepare=True).fetchone()[0]
                dt = time.perf_counter() - t0
                if n != expected[q]:
                    my_errors.append(f"wrong count {n} != {expected[q]}: {q}")
                mine.append((q, dt))
            except psycopg.Error as e:
                my_errors.append(f"{e.sqlstate}: {e}")
        conn.close()
        with lock:
            for q, dt in mine:
                lat.append(dt)
                per_query[q].append(dt)
            errors.extend(my_errors)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.perf_counter() + 3600
    ready.wait()
    start = time.perf_counter()
    deadline = start + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "queries": len(lat), "wall": wall, "qps": len(lat) / wall, "errors": len(errors),
        "error_samples": errors[:5],
        "p50": percentile(lat, 50) if lat else None, "p99": percentile(lat, 99) if lat else None,
        "max": max(lat) if lat else None,
        "per_query_p50": {q: percentile(v, 50) for q, v in per_query.items() if v},
    }


def start_taglake(binary, warehouse):
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "--warehouse", warehouse, "--listen", "127.0.0.1:0",
                             "--max-connections", "128"],
                            stdout=subprocess.PIPE, stderr=open(os.path.join(tempfile.gettempdir(), "taglake-serve-bench.log"), "w"), text=True)
    first = proc.stdout.readline()
    if not first.startswith("listening on "):
        sys.exit(f"taglake serve did not start: {first}")
    return proc, int(first.rsplit(":", 1)[1]), time.perf_counter() - t0


def start_postgres(export, port):
    """initdb + start as an unprivileged user (PostgreSQL refuses root), then load."""
    user = "taglake_bench"
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
    data = tempfile.mkdtemp(prefix="taglake-pg-")
    shutil.chown(data, user)
    run = lambda *cmd: subprocess.run(["runuser", "-u", user, "--", *cmd], check=True, capture_output=True)
    run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
    opts = (f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=2GB "
            "-c max_parallel_workers_per_gather=2 -c fsync=off -c synchronous_commit=off -c jit=off")
    run("pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(data, "log"), "-w", "start")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    table = pq.read_table(os.path.join(export, "tags_bool.parquet"))
    cols = ", ".join(f"{n} {'bigint' if n == 'member_key' else 'boolean'} NOT NULL" for n in table.column_names)
    t0 = time.perf_counter()
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f"CREATE TABLE members ({cols})")
        with c.cursor().copy("COPY members FROM STDIN (FORMAT csv)") as cp:
            for batch in table.to_batches(max_chunksize=500_000):
                import io
                buf = io.BytesIO()
                pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                cp.write(buf.getvalue())
        c.execute("VACUUM ANALYZE members")
    return data, user, time.perf_counter() - t0


def postgres_memory(data):
    pid = int(open(os.path.join(data, "postmaster.pid")).readline())
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return sum(vm(p, "VmHWM") for p in pids), len(pids)


def fmt(s):
    return "-" if s is None else f"{s * 1e3:,.2f} ms"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--taglake", required=True)
    p.add_argument("--members", type=int, default=10_000_000)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--no-postgres", action="store_true")
    a = p.parse_args()
    base = os.path.join(CACHE, f"audience-{a.members}")
    if not os.path.isdir(base):
        base = os.path.join(CACHE, f"tag-{a.members}-5")
    warehouse, export = os.path.join(base, "warehouse"), os.path.join(base, "audience-export")
    if not os.path.isfile(os.path.join(export, "tags_bool.parquet")):
        sys.exit(f"no tagged warehouse with an audience export under {base}: run benches/audience_vs_duckdb.sh {a.members} first")

    members_sql = [f"SELECT count(*) FROM members WHERE {e}" for e in EXPRESSIONS]
    function_sql = [f"SELECT count(*) FROM audience('{e}')" for e in EXPRESSIONS]
    programs = {} if a.no_postgres else {"postgres": ["postgres", "--version"]}
    results = {**provenance(programs), "members": a.members, "clients": a.clients, "seconds": a.seconds,
               "cores": os.cpu_count()}

    proc, port, startup = start_taglake(a.taglake, warehouse)
    connect = lambda: psycopg.connect(host="127.0.0.1", port=port, user="bench", dbname="taglake", autocommit=True)
    with connect() as c:
        expected = {q: c.execute(q).fetchone()[0] for q in members_sql + function_sql}
    for m, f in zip(members_sql, function_sql):
        assert expected[m] == expected[f], (m, expected[m], expected[f])
    rss_idle = vm(proc.pid, "VmRSS")
    results["taglake"] = {"startup_s": startup, "rss_idle": rss_idle,
                          "members": load(connect, members_sql, expected, a.seconds, a.clients)}
    results["taglake"]["audience_fn"] = load(connect, function_sql, expected, a.seconds, a.clients)
    results["taglake"]["peak_memory"] = vm(proc.pid, "VmHWM")
    proc.terminate()
    proc.wait()

    if not a.no_postgres:
        pg_port = free_port()
        data, user, load_s = start_postgres(export, pg_port)
        try:
            pconnect = lambda: psycopg.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres", autocommit=True)
            with pconnect() as c:
                version = c.execute("SHOW server_version").fetchone()[0]
                for q in members_sql:
                    got = c.execute(q).fetchone()[0]
                    assert got == expected[q], f"PostgreSQL counts {got}, taglake {expected[q]}: {q}"
            r = load(pconnect, members_sql, expected, a.seconds, a.clients)
            mem, procs = postgres_memory(data)
            results["postgres"] = {"version": version, "load_s": load_s, "members": r, "peak_memory_sum": mem, "processes": procs}
        finally:
            subprocess.run(["runuser", "-u", user, "--", "pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)
            shutil.rmtree(data, ignore_errors=True)

    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"serve_load_{a.members}.json"), "w") as f:
        json.dump(results, f, indent=2)

    print(f"\n{a.clients} clients × {a.seconds:.0f} s, {a.members:,} members, {os.cpu_count()} cores; counts checked on every answer")
    print(f"{'server / statement':44} {'queries':>8} {'q/s':>8} {'p50':>10} {'p99':>10} {'max':>10} {'errors':>7}")
    rows = [("taglake serve · members WHERE <tags>", results["taglake"]["members"]),
            ("taglake serve · audience('<expr>')", results["taglake"]["audience_fn"])]
    if "postgres" in results:
        rows.append((f"PostgreSQL {results['postgres']['version'].split()[0]} · members WHERE <tags>", results["postgres"]["members"]))
    for name, r in rows:
        print(f"{name:44} {r['queries']:>8,} {r['qps']:>8,.1f} {fmt(r['p50']):>10} {fmt(r['p99']):>10} {fmt(r['max']):>10} {r['errors']:>7}")
        for e in r["error_samples"]:
            print(f"    {e}")
    t = results["taglake"]
    print(f"\ntaglake serve: ready in {t['startup_s']:.1f} s (all tags warm), {t['rss_idle'] / 2**30:.2f} GiB idle, "
          f"peak {t['peak_memory'] / 2**30:.2f} GiB")
    if "postgres" in results:
        pg = results["postgres"]
        print(f"PostgreSQL: loaded in {pg['load_s']:.1f} s (8 tag columns only), peak {pg['peak_memory_sum'] / 2**30:.2f} GiB "
              f"(VmHWM summed over {pg['processes']} processes)")
        ratio = t["members"]["qps"] / pg["members"]["qps"]
        print(f"throughput ratio taglake/PostgreSQL: {ratio:.1f}×; p50 ratio: {pg['members']['p50'] / t['members']['p50']:.1f}×")
    print("\nper-expression p50 (members WHERE …):")
    for q in members_sql:
        pgv = results.get("postgres", {}).get("members", {}).get("per_query_p50", {}).get(q)
        print(f"  taglake {fmt(t['members']['per_query_p50'].get(q)):>10}  PostgreSQL {fmt(pgv):>10}  {q.split(' WHERE ', 1)[1]}")


if __name__ == "__main__":
    main()
