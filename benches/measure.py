"""Running a benchmarked command: wall time, peak memory of exactly that
child, its output. Shared by the benchmark scripts in this folder."""

import os
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
