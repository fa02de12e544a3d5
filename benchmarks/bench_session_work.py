"""Session work vs bare Celery, measured in one run on one machine.

Baseline: a bare Celery no-op task on the same worker (same settings: acks_late, prefetch 1,
JSON, task events) against the same private redis-server. Prints throughputs, latencies, Redis
commands per unit of work, and the ratios the session-work issue sets as targets.

    python benchmarks/bench_session_work.py [--hot 5000] [--sessions 200] [--per-session 25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from celery.result import ResultSet

from benchmarks.common import Redis, Worker, command_calls, percentile, settings_for
from jido_tasks import Client

BARE = "bench.noop_task"


def bare_throughput(c: Client, r: redis.Redis, n: int) -> tuple[float, float]:
    r.config_resetstat()
    t0 = time.perf_counter()
    results = [c.celery.send_task(BARE, queue=c.settings.queue) for _ in range(n)]
    ResultSet(results).join_native(timeout=300)
    elapsed = time.perf_counter() - t0
    return n / elapsed, command_calls(r) / n


def bare_latency(c: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.celery.send_task(BARE, queue=c.settings.queue).get(timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def sessions_throughput(c: Client, r: redis.Redis, sessions: int, per: int,
                        action: str = "bench.append") -> tuple[float, float]:
    sids = [c.create_session().id for _ in range(sessions)]
    r.config_resetstat()
    t0 = time.perf_counter()
    last: dict[str, Any] = {}
    for i in range(per):
        for sid in sids:
            last[sid] = c.send(sid, action, {"value": i})
    for handle in last.values():
        handle.get(timeout=600)
    elapsed = time.perf_counter() - t0
    total = sessions * per
    for sid in sids[:3]:
        assert c.get_state(sid)["items"] == list(range(per)), "order broken"
    return total / elapsed, command_calls(r) / total


def call_latency(c: Client, n: int) -> list[float]:
    sid = c.create_session().id
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.call(sid, "bench.noop", timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bare", type=int, default=5000, help="bare tasks for throughput")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--per-session", type=int, default=25)
    ap.add_argument("--hot", type=int, default=5000)
    ap.add_argument("--latency", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    server = Redis()
    settings = settings_for(server.url)
    worker = Worker(settings, args.concurrency)
    client = Client(settings)
    r = redis.Redis.from_url(server.url)
    try:
        # Warm up both paths (connections, script cache, imports in the pool).
        bare_throughput(client, r, 200)
        sessions_throughput(client, r, 10, 10)
        bare_tps, bare_cmds = bare_throughput(client, r, args.bare)
        many_tps, many_cmds = sessions_throughput(client, r, args.sessions, args.per_session)
        hot_tps, hot_cmds = sessions_throughput(client, r, 1, args.hot)
        bare_lat = bare_latency(client, args.latency)
        call_lat = call_latency(client, args.latency)
    finally:
        client.close()
        worker.stop()
        server.stop()

    bare_p50, call_p50 = statistics.median(bare_lat), statistics.median(call_lat)
    rows = [
        ("bare celery no-op", f"{bare_tps:8.0f}/s", f"{bare_cmds:5.1f} cmds/task"),
        (f"many sessions {args.sessions}x{args.per_session}", f"{many_tps:8.0f}/s",
         f"{many_cmds:5.1f} cmds/action"),
        (f"one hot session x{args.hot}", f"{hot_tps:8.0f}/s", f"{hot_cmds:5.1f} cmds/action"),
        ("bare apply_async().get()", f"p50 {bare_p50 * 1000:6.2f} ms",
         f"p99 {percentile(bare_lat, 0.99) * 1000:6.2f} ms"),
        ("client.call()", f"p50 {call_p50 * 1000:6.2f} ms",
         f"p99 {percentile(call_lat, 0.99) * 1000:6.2f} ms"),
    ]
    for row in rows:
        print(f"{row[0]:34} {row[1]:>16} {row[2]:>20}")
    print()
    checks = [
        ("many sessions throughput / bare", many_tps / bare_tps, ">=", 0.8),
        ("hot session throughput / bare", hot_tps / bare_tps, ">=", 3.0),
        ("call p50 / bare get p50", call_p50 / bare_p50, "<=", 1.5),
        ("redis cmds per action (many) / bare", many_cmds / bare_cmds, "<=", 1.5),
        ("redis cmds per action (hot) / bare", hot_cmds / bare_cmds, "<=", 1.5),
    ]
    for name, ratio, op, target in checks:
        ok = ratio >= target if op == ">=" else ratio <= target
        print(f"{name:40} {ratio:6.2f}x  (target {op} {target}x)  {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
