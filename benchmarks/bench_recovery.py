"""Recovery times with the default settings (lease 10 s, liveness 1 s, sweep 30 s).

A pool process SIGKILLed mid-action, and a whole worker SIGKILLed mid-action (Redis broker:
its message stays unacked until the visibility timeout): the time from the kill until the
action starts again elsewhere, median of several kills.

    python benchmarks/bench_recovery.py [--kills 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Redis, Worker, settings_for
from jido_tasks import Client


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def started(c: Client, key: str, n: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while c.layer.redis.llen(key) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no start #{n} within {timeout}s")
        time.sleep(0.01)
    return [int(p) for p in c.layer.redis.lrange(key, 0, -1)]


def one_kill(c: Client, kill: str, workers: list[Worker]) -> float:
    """Send a slow action, kill what runs it, return seconds until it starts again."""
    sid = c.create_session().id
    key = f"{c.settings.namespace}:bench:started:{sid}"
    h = c.send(sid, "bench.slow", {"value": 1, "seconds": 2.0, "started_key": key})
    pid = started(c, key, 1)[0]
    if kill == "process":
        os.kill(pid, signal.SIGKILL)
    else:
        victim = next(w for w in workers if pid in children(w.proc.pid))
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        workers.remove(victim)
    t0 = time.monotonic()
    started(c, key, 2)
    took = time.monotonic() - t0
    h.get(timeout=60)
    if kill == "worker":
        workers.append(Worker(c.settings, concurrency=1))
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    server = Redis()
    try:
        for kill in ("process", "worker"):
            settings = settings_for(server.url)  # defaults: lease 10 s, liveness 1 s
            n_workers, conc = (1, 2) if kill == "process" else (2, 1)
            workers = [Worker(settings, concurrency=conc) for _ in range(n_workers)]
            c = Client(settings)
            try:
                times = [one_kill(c, kill, workers) for _ in range(args.kills)]
            finally:
                c.close()
                for w in workers:
                    w.stop()
            print(f"{kill:>8} killed: resumed after median {statistics.median(times):.2f} s "
                  f"(min {min(times):.2f}, max {max(times):.2f}; {len(times)} kills; "
                  f"lease_ttl {settings.lease_ttl:g} s, liveness_ttl {settings.liveness_ttl:g} s)",
                  flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
