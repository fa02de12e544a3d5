"""Reach: actions sent by task name vs `Client.send` vs a bare Celery task, in one run.

Same worker (acks_late, prefetch 1, JSON, task events), same private redis-server. Measures
throughput of S sessions x N actions and of one hot session, and the round-trip p50 of one
action (by name: `send_task` + `AsyncResult.get`; `Client.call`; bare `send_task().get`), once
with the per-action Flower events on and once with them off (`action_events`), and prints the
ratios the reach issue sets as goals. Every measure is taken `--rounds` times, one after the
other in each round; the ratios are per round (same load) and their median is what counts.
The CPU the worker and redis-server spend per action (vs per bare task) is printed too: on a
shared machine it moves far less than throughput does.

    python benchmarks/bench_reach.py [--sessions 200] [--per-session 25] [--hot 2000]
                                     [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from celery import Celery
from celery.result import ResultSet

from benchmarks.bench_session_work import bare_latency, bare_throughput, sessions_throughput
from benchmarks.common import Redis, Worker, cpu_seconds, process_tree, settings_for
from jido_tasks import Client


def pure_app(c: Client) -> Celery:
    app = Celery(broker=c.settings.broker, backend=c.settings.backend)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    result_accept_content=["json"])
    return app


def by_name_throughput(c: Client, app: Celery, sessions: int, per: int) -> float:
    sids = [c.create_session().id for _ in range(sessions)]
    t0 = time.perf_counter()
    results = [app.send_task("jido_tasks.send", args=[sid, "bench.append", {"value": i}],
                             queue=c.settings.queue)
               for i in range(per) for sid in sids]
    ResultSet(results).join_native(timeout=600)
    elapsed = time.perf_counter() - t0
    for sid in sids[:3]:
        assert sorted(c.get_state(sid)["items"]) == list(range(per)), "lost or doubled"
    return sessions * per / elapsed


def by_name_latency(c: Client, app: Celery, n: int) -> list[float]:
    sid = c.create_session().id
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        app.send_task("jido_tasks.send", args=[sid, "bench.noop"],
                      queue=c.settings.queue).get(timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def call_latency(c: Client, n: int) -> list[float]:
    sid = c.create_session().id
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.call(sid, "bench.noop", timeout=30)
        out.append(time.perf_counter() - t0)
    return out


class Meter:
    """CPU (ms) the worker (main and pool processes) and redis-server spend per unit of work:
    steadier than throughput on a shared machine, where other processes take the cores."""

    def __init__(self, worker: Worker, server: Redis) -> None:
        self.pids = [*process_tree(worker.proc.pid), server.proc.pid]

    def per_unit(self, work: Callable[[], float], units: int) -> tuple[float, float]:
        """(what `work` returns, CPU ms per unit)."""
        before = cpu_seconds(self.pids)
        value = work()
        return value, (cpu_seconds(self.pids) - before) * 1e3 / units


def one_round(client: Client, app: Celery, r: redis.Redis, meter: Meter,
              args: argparse.Namespace) -> dict[str, float]:
    """Every measure once, one after the other (so a round's ratios share the same load)."""
    many = args.sessions * args.per_session
    out: dict[str, float] = {}
    out["bare"], out["bare_cpu"] = meter.per_unit(
        lambda: bare_throughput(client, r, args.bare)[0], args.bare)
    out["name_many"], out["name_cpu"] = meter.per_unit(
        lambda: by_name_throughput(client, app, args.sessions, args.per_session), many)
    out["send_many"], out["send_cpu"] = meter.per_unit(
        lambda: sessions_throughput(client, r, args.sessions, args.per_session)[0], many)
    out["send_hot"] = sessions_throughput(client, r, 1, args.hot)[0]
    out["bare_p50"] = statistics.median(bare_latency(client, args.latency))
    out["call_p50"] = statistics.median(call_latency(client, args.latency))
    out["name_p50"] = statistics.median(by_name_latency(client, app, args.latency))
    return out


def run(events: bool, args: argparse.Namespace) -> list[dict[str, float]]:
    """`args.rounds` rounds on one Redis and one worker."""
    server = Redis()
    settings = settings_for(server.url, action_events=events)
    worker = Worker(settings, args.concurrency)
    client = Client(settings)
    app = pure_app(client)
    r = redis.Redis.from_url(server.url)
    try:
        bare_throughput(client, r, 200)  # warm up every path
        sessions_throughput(client, r, 10, 10)
        by_name_throughput(client, app, 10, 10)
        meter = Meter(worker, server)
        return [one_round(client, app, r, meter, args) for _ in range(args.rounds)]
    finally:
        app.close()
        client.close()
        worker.stop()
        server.stop()
        r.close()


CHECKS = [  # name, numerator, denominator, goal
    ("by-name throughput / bare", "name_many", "bare", ">=", 0.8),
    ("by-name p50 / bare p50", "name_p50", "bare_p50", "<=", 2.0),
    ("Client.send many sessions / bare", "send_many", "bare", ">=", 2.0),
    ("Client.send hot session / bare", "send_hot", "bare", ">=", 3.0),
    ("call p50 / bare p50", "call_p50", "bare_p50", "<=", 1.5),
    ("by-name CPU per action / bare", "name_cpu", "bare_cpu", "", 0.0),
    ("Client.send CPU per action / bare", "send_cpu", "bare_cpu", "", 0.0),
]


def report(rounds: list[dict[str, float]], args: argparse.Namespace) -> None:
    """Each round's figures, then each ratio: per round and the median (a round's ratios
    share that round's load, so the median of ratios is steadier than a ratio of medians)."""
    for i, m in enumerate(rounds, 1):
        print(f"round {i}: bare {m['bare']:.0f}/s p50 {m['bare_p50'] * 1e3:.2f} ms "
              f"{m['bare_cpu']:.2f} cpu-ms | by name {args.sessions}x{args.per_session} "
              f"{m['name_many']:.0f}/s p50 {m['name_p50'] * 1e3:.2f} ms {m['name_cpu']:.2f} "
              f"cpu-ms | Client.send many {m['send_many']:.0f}/s {m['send_cpu']:.2f} cpu-ms, "
              f"hot {m['send_hot']:.0f}/s, call p50 {m['call_p50'] * 1e3:.2f} ms")
    for name, num, den, op, target in CHECKS:
        ratios = [m[num] / m[den] for m in rounds]
        median = statistics.median(ratios)
        each = " ".join(f"{x:.2f}" for x in ratios)
        if not op:
            print(f"  {name:36} {median:6.2f}x (rounds: {each})")
            continue
        ok = median >= target if op == ">=" else median <= target
        print(f"  {name:36} {median:6.2f}x (rounds: {each}; goal {op} {target}x) "
              f"{'ok' if ok else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bare", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--per-session", type=int, default=25)
    ap.add_argument("--hot", type=int, default=2000)
    ap.add_argument("--latency", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    for events in (True, False):
        print(f"== per-action task events {'ON' if events else 'OFF'} "
              f"(load average {os.getloadavg()[0]:.2f}) ==")
        report(run(events, args), args)
        print()


if __name__ == "__main__":
    main()
