"""Reach: actions sent by task name vs `Client.send` vs a bare Celery task, in one run.

Same worker (acks_late, prefetch 1, JSON, task events), same private redis-server. Measures
throughput of S sessions x N actions and of one hot session, and the round-trip p50 of one
action (by name: `send_task` + `AsyncResult.get`; `Client.call`; bare `send_task().get`), once
with the per-action Flower events on and once with them off (`action_events`), and prints the
ratios the reach issue sets as goals.

    python benchmarks/bench_reach.py [--sessions 200] [--per-session 25] [--hot 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from celery import Celery
from celery.result import ResultSet

from benchmarks.bench_session_work import bare_latency, bare_throughput, sessions_throughput
from benchmarks.common import Redis, Worker, settings_for
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


def run(events: bool, args: argparse.Namespace) -> dict[str, float]:
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
        out = {
            "bare": bare_throughput(client, r, args.bare)[0],
            "send_many": sessions_throughput(client, r, args.sessions, args.per_session)[0],
            "send_hot": sessions_throughput(client, r, 1, args.hot)[0],
            "name_many": by_name_throughput(client, app, args.sessions, args.per_session),
            "bare_p50": statistics.median(bare_latency(client, args.latency)),
            "call_p50": statistics.median(call_latency(client, args.latency)),
            "name_p50": statistics.median(by_name_latency(client, app, args.latency)),
        }
    finally:
        app.close()
        client.close()
        worker.stop()
        server.stop()
        r.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bare", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--per-session", type=int, default=25)
    ap.add_argument("--hot", type=int, default=3000)
    ap.add_argument("--latency", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    for events in (True, False):
        m = run(events, args)
        print(f"== per-action task events {'ON' if events else 'OFF'} ==")
        print(f"{'bare celery no-op':36} {m['bare']:8.0f}/s   p50 {m['bare_p50'] * 1e3:6.2f} ms")
        print(f"{'by name ' + str(args.sessions) + 'x' + str(args.per_session):36} "
              f"{m['name_many']:8.0f}/s   p50 {m['name_p50'] * 1e3:6.2f} ms")
        print(f"{'Client.send many sessions':36} {m['send_many']:8.0f}/s   "
              f"call p50 {m['call_p50'] * 1e3:6.2f} ms")
        print(f"{'Client.send one hot session':36} {m['send_hot']:8.0f}/s")
        checks = [
            ("by-name throughput / bare", m["name_many"] / m["bare"], ">=", 0.8),
            ("by-name p50 / bare p50", m["name_p50"] / m["bare_p50"], "<=", 2.0),
            ("Client.send many sessions / bare", m["send_many"] / m["bare"], ">=", 2.0),
            ("Client.send hot session / bare", m["send_hot"] / m["bare"], ">=", 3.0),
            ("call p50 / bare p50", m["call_p50"] / m["bare_p50"], "<=", 1.5),
        ]
        for name, ratio, op, target in checks:
            ok = ratio >= target if op == ">=" else ratio <= target
            print(f"  {name:36} {ratio:6.2f}x (goal {op} {target}x) {'ok' if ok else 'MISSED'}")
        print()


if __name__ == "__main__":
    main()
