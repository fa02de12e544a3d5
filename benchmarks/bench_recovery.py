"""Recovery times with the default settings (lease 10 s, liveness 1 s, sweep 30 s).

Against our own worker's defaults (no other baseline: stock Celery on Redis gives a dead
worker's messages back after `visibility_timeout`, 3,600 s):
- a pool process SIGKILLed mid-action, and a whole worker SIGKILLed mid-action: the time from
  the kill until the action starts again elsewhere, median of several kills;
- an ordinary app task (not a session action) running on a worker SIGKILLed as a whole: the
  time until it starts again on the live worker (its unacknowledged message is given back once
  the dead channel's liveness key, 20 s, has expired);
- a 60 s app task on a live worker next to another worker: how many times it started (1).

    python benchmarks/bench_recovery.py [--kills 5] [--app-kills 3]
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


APP_TASKS = ["benchmarks.bench_actions", "benchmarks.recovery_tasks"]


def nap_starts(c: Client, key: str) -> list[tuple[float, int]]:
    """(unix time, pool process pid) of each start of `bench.nap` under `key`."""
    return [(float(at), int(pid)) for at, _, pid in
            (str(item).partition("|") for item in c.layer.redis.lrange(key, 0, -1))]


def wait_starts(c: Client, key: str, n: int, timeout: float = 120) -> list[tuple[float, int]]:
    deadline = time.monotonic() + timeout
    while len(found := nap_starts(c, key)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no start #{n} of {key} within {timeout}s")
        time.sleep(0.05)
    return found


def app_task_kill(c: Client, workers: list[Worker]) -> float:
    """An app task of 30 s; kill its worker as a whole; seconds until it starts again."""
    key = f"{c.settings.namespace}:bench:nap:{time.monotonic_ns()}"
    c.celery.send_task("bench.nap", args=[c.settings.redis_dsn, key, 30.0],
                       queue=c.settings.queue)
    pid = wait_starts(c, key, 1)[0][1]
    victim = next(w for w in workers if pid in children(w.proc.pid))
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    killed = time.time()
    workers.remove(victim)
    workers.append(Worker(c.settings, concurrency=1))
    return wait_starts(c, key, 2)[1][0] - killed


def long_task_starts(c: Client, seconds: float) -> int:
    key = f"{c.settings.namespace}:bench:long:{time.monotonic_ns()}"
    result = c.celery.send_task("bench.nap", args=[c.settings.redis_dsn, key, seconds],
                                queue=c.settings.queue)
    result.get(timeout=seconds + 60)
    return len(nap_starts(c, key))


def app_tasks(url: str, kills: int) -> None:
    settings = settings_for(url, action_modules=APP_TASKS)
    workers = [Worker(settings, concurrency=1) for _ in range(2)]
    c = Client(settings)
    try:
        times = [app_task_kill(c, workers) for _ in range(kills)]
        print(f"app task, worker killed: started again after median "
              f"{statistics.median(times):.1f} s (min {min(times):.1f}, max {max(times):.1f}; "
              f"{len(times)} kills; goal <= 45 s; stock Celery on Redis: visibility_timeout, "
              f"3600 s)", flush=True)
        print(f"app task of 60 s on a live worker: started {long_task_starts(c, 60.0)} time(s) "
              "(goal: 1)", flush=True)
    finally:
        c.close()
        for w in workers:
            w.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--app-kills", type=int, default=3)
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
        app_tasks(server.url, args.app_kills)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
