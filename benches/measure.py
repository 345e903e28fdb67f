"""Running a benchmarked command: wall time, peak memory of exactly that
child, its output; and what a result was measured with (the commit, the
peers' versions). Shared by the benchmark scripts in this folder."""

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import threading
import time


def measured(cmd, cwd):
    """Runs cmd; returns (wall seconds, peak RSS bytes of exactly this child, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Drain both pipes to the end without reaping the child, then reap it with wait4.
    err = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    drain.start()
    out = proc.stdout.read()
    drain.join()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{out.decode()}\n{err[0].decode()}")
    return seconds, usage.ru_maxrss * 1024, out.decode()


def gib(b):
    return f"{b / 2**30:.2f} GiB"


HERE = os.path.dirname(os.path.abspath(__file__))


def provenance(programs=None):
    """What a result was measured with, for the top of its JSON: the commit
    (`git rev-parse HEAD`, with `-dirty` when tracked files outside
    benches/results differ from it), this Python, the installed version of
    each peer pinned in benches/requirements.txt, and the first line that
    each of `programs` ({name: argv}, e.g. a `--version` call) prints."""
    git = lambda *args: subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
    head = git("rev-parse", "HEAD")
    commit = head.stdout.strip() if head.returncode == 0 else "unknown"
    if head.returncode == 0 and git("diff", "--quiet", "HEAD", "--", ":/", ":/!benches/results").returncode != 0:
        commit += "-dirty"
    peers = {}
    with open(os.path.join(HERE, "requirements.txt")) as f:
        for line in f:
            name = re.match(r"[A-Za-z0-9_.-]+", line.split("#")[0].strip())
            if name:
                try:
                    peers[name.group(0)] = importlib.metadata.version(name.group(0))
                except importlib.metadata.PackageNotFoundError:
                    pass
    for name, argv in (programs or {}).items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip():
            peers[name] = out.stdout.strip().splitlines()[0]
    return {"commit": commit, "python": platform.python_version(), "peers": peers}
