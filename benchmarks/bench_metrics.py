"""What the metrics counters cost: the hot path with `metrics_counters` on and off, same run.

Two workers on one private redis-server, one per setting (each its own namespace and queue),
measured in alternating rounds so both see the same machine load: throughput of one hot
session and of many sessions, and Redis server time of the scripts (EVALSHA usec per action,
from INFO commandstats). Also a termination withdrawing many pending actions (cancel_chunk
reads each one's action name) with counters on and off, in this process.

    python benchmarks/bench_metrics.py [--rounds 3] [--hot 3000] [--sessions 100]
        [--per-session 20] [--pending 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import Redis, Worker, command_calls, settings_for
from jido_tasks import Client


def evalsha_usec(r: redis.Redis) -> float:
    stats = r.info("commandstats")
    return sum(float(v["usec"]) for k, v in stats.items() if k.startswith("cmdstat_eval"))


def throughput(c: Client, r: redis.Redis, sessions: int, per: int,
               ) -> tuple[float, float, float]:
    """Actions/s, script server time (usec) per action, Redis commands per action (those the
    scripts run included)."""
    sids = [c.create_session().id for _ in range(sessions)]
    r.config_resetstat()
    t0 = time.perf_counter()
    last = {}
    for i in range(per):
        for sid in sids:
            last[sid] = c.send(sid, "bench.append", {"value": i})
    for handle in last.values():
        handle.get(timeout=600)
    elapsed = time.perf_counter() - t0
    total = sessions * per
    usec = evalsha_usec(r) / total
    cmds = command_calls(r) / total
    for sid in sids:
        c.terminate_session(sid)
    return total / elapsed, usec, cmds


def terminate_time(c: Client, pending: int) -> float:
    """Seconds to terminate a session with `pending` actions (all cancelled)."""
    sid = c.create_session().id
    c.send_many(sid, [("bench.noop", {}) for _ in range(pending)])
    t0 = time.perf_counter()
    _, withdrawn = c.sessions.terminate(sid)
    elapsed = time.perf_counter() - t0
    assert withdrawn == pending, withdrawn
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hot", type=int, default=3000)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--per-session", type=int, default=20)
    ap.add_argument("--pending", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    server = Redis()
    r = redis.Redis.from_url(server.url)
    modes = {"on": settings_for(server.url, metrics_counters=True),
             "off": settings_for(server.url, metrics_counters=False)}
    workers = {name: Worker(s, args.concurrency) for name, s in modes.items()}
    clients = {name: Client(s) for name, s in modes.items()}
    # Terminations on namespaces no worker consumes, so that every action is still pending.
    idle = {name: Client(settings_for(server.url, metrics_counters=s.metrics_counters))
            for name, s in modes.items()}
    results: dict[str, dict[str, list[float]]] = {
        name: {"hot": [], "hot_usec": [], "hot_cmds": [], "many": [], "many_usec": [],
               "many_cmds": [], "terminate": []}
        for name in modes}
    try:
        for c in clients.values():  # warm up: connections, script cache, pool imports
            throughput(c, r, 10, 10)
        for rnd in range(args.rounds):
            order = ("on", "off") if rnd % 2 == 0 else ("off", "on")
            for name in order:
                c, res = clients[name], results[name]
                for key, sessions, per in (("hot", 1, args.hot),
                                           ("many", args.sessions, args.per_session)):
                    tps, usec, cmds = throughput(c, r, sessions, per)
                    res[key].append(tps)
                    res[f"{key}_usec"].append(usec)
                    res[f"{key}_cmds"].append(cmds)
                res["terminate"].append(terminate_time(idle[name], args.pending))
            print(f"round {rnd + 1}: " + ", ".join(
                f"{name} hot {results[name]['hot'][-1]:.0f}/s many "
                f"{results[name]['many'][-1]:.0f}/s" for name in order), flush=True)
        fields = len({f for g in clients["on"].layer.keys.groups() for f in r.hkeys(g.metrics)})
        assert not any(r.exists(g.metrics) for g in clients["off"].layer.keys.groups()), \
            "counters off wrote counters"
    finally:
        for c in [*clients.values(), *idle.values()]:
            c.close()
        for w in workers.values():
            w.stop()
        server.stop()

    med = {name: {k: statistics.median(v) for k, v in res.items()}
           for name, res in results.items()}
    on, off = med["on"], med["off"]
    print()
    print(f"{'measure (median of ' + str(args.rounds) + ' rounds)':44} {'counters on':>14} "
          f"{'counters off':>14} {'on/off':>8}")
    rows = [
        (f"one hot session x{args.hot}, actions/s", "hot", "{:.0f}"),
        (f"many sessions {args.sessions}x{args.per_session}, actions/s", "many", "{:.0f}"),
        ("script server time per action, hot (us)", "hot_usec", "{:.1f}"),
        ("script server time per action, many (us)", "many_usec", "{:.1f}"),
        ("Redis commands per action, hot", "hot_cmds", "{:.2f}"),
        ("Redis commands per action, many", "many_cmds", "{:.2f}"),
        (f"terminate with {args.pending} pending (ms)", "terminate", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        scale = 1000.0 if key == "terminate" else 1.0
        a, b = on[key] * scale, off[key] * scale
        print(f"{label:44} {fmt.format(a):>14} {fmt.format(b):>14} {a / b:7.3f}x")
    print()
    for key, label in (("hot", "hot session"), ("many", "many sessions")):
        cost = 1 - on[key] / off[key]
        print(f"throughput cost of the counters, {label:14} {cost * 100:6.1f}%  "
              f"(target < 5%)  {'ok' if cost < 0.05 else 'MISSED'}")
    print(f"metrics hash fields after the run: {fields}")


if __name__ == "__main__":
    main()
