"""Cluster mode (distributed) vs embedded: one warehouse, three ways to run
the same commands. (The k-means communities of `taglake cluster` are
benchmarked by cluster_vs_sklearn.py.)

* embedded: `taglake tag` and `taglake audience count EXPR` in one process;
* 1 executor: a scheduler and one executor with every core as slots, the
  same commands with `--cluster`;
* 2 executors: a scheduler and two executors sharing the cores.

Per mode and run: the wall time of the refresh and of a 6-tag audience
count, the client's peak memory, and at the end each cluster process's peak
(VmHWM). Every mode's counts and every tag's member count must equal the
embedded run's. Results go to
benches/results/distributed_vs_embedded_MEMBERS.json (`--report FILE` prints
a results file again, also an older benches/results/cluster_MEMBERS.json);
the last lines print the medians, the cluster overhead at 1 executor, and an
estimate of the executors needed for 42 M members and 3.5 billion
member-tags in under 10 minutes, with its arithmetic.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import gib, measured, provenance  # noqa: E402
from tag_vs_duckdb import data_args, default_workdir, prepare  # noqa: E402

AUDIENCE = "tier_gold AND NOT dormant_90_plus AND (rfm_r_5 OR rfm_f_5) AND active_365d AND NOT one_time_buyer"
AS_OF = "2026-01-01"


def peak(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class BallistaCluster:
    def __init__(self, tl, executors, cores, work):
        self.procs = []
        sched = subprocess.Popen([tl, "scheduler", "--bind", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                 stderr=open(os.path.join(work, "scheduler.log"), "w"), text=True)
        addr = sched.stdout.readline().strip().removeprefix("listening on ")
        self.procs.append(("scheduler", sched))
        self.url = f"df://{addr}"
        slots = max(1, cores // executors)
        for i in range(executors):
            port = 51051 + 10 * i
            p = subprocess.Popen([tl, "executor", "--scheduler", addr, "--bind", f"127.0.0.1:{port}",
                                  "--slots", str(slots)],
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"executor{i}.log"), "w"))
            self.procs.append((f"executor {i} ({slots} slots)", p))
        time.sleep(2)

    def stop(self):
        peaks = {name: peak(p.pid) for name, p in self.procs}
        for _, p in self.procs:
            p.terminate()
        for _, p in self.procs:
            p.wait()
        return peaks


def tag_counts(tl, wh, work):
    _, _, out = measured([tl, "tags", "list", "--format", "csv", "--warehouse", wh], work)
    return out


def phases(summary):
    """'… features 24.49 s, tags 43.14 s, commit 4.93 s · …' → the three seconds."""
    part = summary.split("order lines · ")[1].split(" · ")[0]
    return {k: float(v.split()[0]) for k, v in (x.split(" ", 1) for x in part.split(", "))}


def report(results):
    m, cores, member_tags = results["modes"], results["cores"], results["member_tags"]
    print()
    print(f"{results['members']:,} members, {results['order_lines']:,} order lines, {member_tags:,} member-tags, "
          f"{cores} cores")
    for mode in m:
        split = phases(min(m[mode]["runs"], key=lambda r: abs(r["tag_seconds"] - m[mode]["tag_median"]))["summary"])
        print(f"{mode:12} tag {m[mode]['tag_median']:.2f} s ({m[mode]['tag_median'] / m['embedded']['tag_median']:.2f}× "
              f"embedded; features {split['features']:.1f} s, tags {split['tags']:.1f} s, commit "
              f"{split['commit']:.1f} s) · 6-tag count {m[mode]['count_median']:.3f} s")
    one = m["1 executor"]
    print(f"cluster overhead at 1 executor: {one['tag_median'] - m['embedded']['tag_median']:+.2f} s on the refresh, "
          f"{one['count_median'] - m['embedded']['count_median']:+.3f} s on a count")
    if not member_tags:
        return
    # The range steps run on the executors and scale out; the commit (OR of
    # the ranges' bitmaps, snapshot write) runs on the coordinator alone.
    split = phases(min(one["runs"], key=lambda r: abs(r["tag_seconds"] - one["tag_median"]))["summary"])
    scale = 3.5e9 / member_tags
    core_seconds = (split["features"] + split["tags"]) * cores
    serial = split["commit"] * scale
    need = core_seconds * scale / (600 - serial)
    print(f"42 M estimate (member-tags ×{scale:.2f}, everything scaled as if it grew with member-tags): range steps "
          f"({split['features']:.1f} + {split['tags']:.1f}) s × {cores} cores = {core_seconds:.0f} core-s → "
          f"{core_seconds * scale:.0f} core-s; coordinator commit {split['commit']:.1f} s → {serial:.0f} s; "
          f"{core_seconds * scale:.0f} / (600 − {serial:.0f}) = {need:.1f} busy cores, "
          f"i.e. {max(1, -(-need * 2 // 8)):.0f} executor(s) of 8 cores at 50 % parallel efficiency")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2]) as f:
            return report(json.load(f))
    ap = argparse.ArgumentParser()
    data_args(ap)
    a = ap.parse_args()
    tl = os.path.abspath(a.taglake)
    lpmy = a.lines_per_member_year
    work = default_workdir(a.members, lpmy)
    ready = prepare(tl, work, a.members, lpmy, a.seed, False)
    wh = os.path.join(work, "warehouse")
    cores = os.cpu_count()
    results = {**provenance(), "members": a.members, "order_lines": ready["order_lines"], "runs": a.runs,
               "cores": cores, "audience": AUDIENCE, "modes": {}}
    reference = None
    for mode, executors in (("embedded", 0), ("1 executor", 1), ("2 executors", 2)):
        cluster = BallistaCluster(tl, executors, cores, work) if executors else None
        flag = ["--cluster", cluster.url] if cluster else []
        runs = []
        try:
            for i in range(a.runs):
                t_tag, rss_tag, out_tag = measured(
                    [tl, "tag", "--as-of", AS_OF, "--keep-features-days", "0", "--warehouse", wh, *flag], work)
                t_count, rss_count, out_count = measured(
                    [tl, "audience", "count", AUDIENCE, "--format", "json", "--warehouse", wh, *flag], work)
                count = json.loads(out_count)["members"]
                tags = tag_counts(tl, wh, work)
                summary = out_tag.strip().splitlines()[0]
                if reference is None:
                    reference = (count, tags, summary.split(" member-tags")[0])
                if count != reference[0]:
                    sys.exit(f"{mode}: the audience has {count} members, embedded {reference[0]}")
                if tags.splitlines()[1:] != reference[1].splitlines()[1:]:
                    sys.exit(f"{mode}: the tags' member counts differ from the embedded run's")
                runs.append({"tag_seconds": t_tag, "tag_client_peak": rss_tag, "count_seconds": t_count,
                             "count_client_peak": rss_count, "members": count, "summary": summary})
                print(f"{mode} run {i + 1}: tag {t_tag:.2f} s (client {gib(rss_tag)}), "
                      f"count {t_count:.3f} s → {count:,} members", flush=True)
        finally:
            peaks = cluster.stop() if cluster else {}
        results["modes"][mode] = {"runs": runs, "process_peaks": peaks,
                                  "tag_median": statistics.median(r["tag_seconds"] for r in runs),
                                  "count_median": statistics.median(r["count_seconds"] for r in runs)}
        for name, b in peaks.items():
            print(f"  {name}: peak {gib(b)}")
    results["member_tags"] = int(reference[2].split(", ")[-1].replace(",", "")) if reference else 0
    report(results)
    os.makedirs("benches/results", exist_ok=True)
    with open(f"benches/results/distributed_vs_embedded_{a.members}.json", "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
