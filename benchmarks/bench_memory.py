"""Redis memory per session: `used_memory` deltas on a private redis-server, events included.

Everything a session costs Redis is counted: each figure is the growth of `INFO memory`
`used_memory` divided by the number of sessions, with nothing deleted or left out (the
per-session and global event streams are part of it). A reading is taken once the worker is
done, its queue and kombu's `unacked` hash empty: the least of 7 readings over 3 s, so that
connection buffers, which come and go, are left out. Per round, in a fresh namespace with its
own jido-tasks worker (concurrency 2), on one private redis-server:
- `--sessions` (5,000) new sessions made by `Client.create_session` one after the other, then
  made idle by sweeps (`idle_after` 1 s in this namespace), as the beat's sweep would;
- `--busy-sessions` (20) sessions that each ran `--actions` (3,000) tiny actions (`bench.tiny`:
  `{"key": "k"}` params, an integer result) through the worker, sent with `Client.send_many`
  by 100, default `keep_results` and `record_retention`.
Fewer busy sessions than idle ones: 20 x 3,000 actions already take a while. The global event
streams are shared and capped (`global_event_maxlen`): what they grew by is printed apart, as
is a busy session's own event stream (`MEMORY USAGE`, for the explanation only).

Baseline, interleaved (stock round, jido-tasks round, ...): stock Celery
(`benchmarks/stock_app.py`, its own redis-server and worker) running `--stock-tasks` (3,000)
no-op tasks whose results are stored (kept a day, Celery's default): `used_memory` per task,
and what `--actions` tasks leave against what one busy session leaves.

    python benchmarks/bench_memory.py [--rounds 3] [--sessions 5000] [--busy-sessions 20]
                                      [--actions 3000] [--stock-tasks 3000]
    python benchmarks/bench_memory.py --quick    # small sizes, one round: a check
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import (
    QUICK_NOTE,
    Figures,
    Goal,
    Jido,
    Redis,
    Round,
    Stock,
    interleaved,
    loadavg,
    report,
    start_jido,
    start_stock,
    stock_throughput,
    wait_budget,
)
from jido_tasks import Client

PARAMS = {"key": "k"}
CHUNK = 100  # actions per send_many
IDLE_AFTER = 1.0
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages (both transports)


def used_memory(r: redis.Redis, queue: str) -> int:
    """`used_memory` once the worker is done (its queue and kombu's `unacked` hash empty: acks
    and task events come after a result): the least of 7 readings over 3 s, after 2 s.

    Connection buffers are in `used_memory`: a burst's shrink back a few seconds after it, and
    a polling worker's come and go (about 20 kB per fetch connection, several times a second),
    so a single reading can be off by tens of kB; the least reading is the one without them."""
    deadline = time.monotonic() + 60
    while r.llen(queue) or r.hlen(UNACKED):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not finish (queue {queue})")
        time.sleep(0.05)
    time.sleep(2)
    readings = []
    for _ in range(7):
        readings.append(int(r.info("memory")["used_memory"]))
        time.sleep(0.5)
    return min(readings)


def global_streams(jido: Jido) -> int:
    """`MEMORY USAGE` of the global event streams (one per slot group): for the breakdown."""
    return sum(int(jido.r.memory_usage(g.events, samples=0) or 0)
               for g in jido.client.layer.keys.groups())


def idle_all(c: Client, expected: int) -> None:
    """Sweep until no session is left to idle (each sweep idles up to `sweep_batch`)."""
    time.sleep(IDLE_AFTER + 0.1)
    idled = 0
    while (done := c.sweep(force=True).idled) > 0:
        idled += done
    assert idled >= expected, f"only {idled} of {expected} sessions went idle"


def idle_sessions(jido: Jido, n: int) -> Figures:
    c, r, queue = jido.client, jido.r, jido.settings.queue
    before, streams = used_memory(r, queue), global_streams(jido)
    for _ in range(n):
        c.create_session()
    new = used_memory(r, queue)
    idle_all(c, n)
    after = used_memory(r, queue)
    return {"new_B": (new - before) / n, "idle_B": (after - before) / n,
            "idle_global_B": (global_streams(jido) - streams) / n}


def busy_sessions(jido: Jido, sessions: int, actions: int) -> Figures:
    c, r, queue = jido.client, jido.r, jido.settings.queue
    before, streams = used_memory(r, queue), global_streams(jido)
    sids = [c.create_session().id for _ in range(sessions)]
    last = {}
    for start in range(0, actions, CHUNK):
        for sid in sids:
            last[sid] = c.send_many(sid, [("bench.tiny", PARAMS)]
                                    * min(CHUNK, actions - start))[-1]
    for handle in last.values():
        handle.get(timeout=wait_budget(sessions * actions))
    after = used_memory(r, queue)
    own = c.layer.keys.session(sids[0]).events
    return {"busy_B": (after - before) / sessions,
            "busy_global_B": (global_streams(jido) - streams) / sessions,
            "busy_own_events_B": float(r.memory_usage(own, samples=0) or 0)}


def warm_up(jido: Jido) -> None:
    """Load every script and open every connection before the first reading; the warm-up
    sessions are idle by the end."""
    c = jido.client
    for sid in [c.create_session().id for _ in range(3)]:
        c.send_many(sid, [("bench.tiny", PARAMS)] * 3)[-1].get(timeout=60)
    c.create_session()
    idle_all(c, 1)


def stock_round(stock: Stock, n: int) -> Figures:
    before = used_memory(stock.r, "celery")
    stock_throughput(stock, n)
    return {"task_B": (used_memory(stock.r, "celery") - before) / n}


def jido_round(server: Redis, args: argparse.Namespace) -> Figures:
    jido = start_jido(server, args.concurrency, idle_after=IDLE_AFTER)
    try:
        warm_up(jido)
        return {**idle_sessions(jido, args.sessions),
                **busy_sessions(jido, args.busy_sessions, args.actions)}
    finally:
        jido.close()


def show(_: int, r: Round) -> str:
    s, j = r.stock, r.jido
    return (f"stock {s['task_B']:.0f} B per task | jido-tasks {j['new_B']:.0f} B per new "
            f"session, {j['idle_B']:.0f} B per idle session ({j['idle_global_B']:.0f} B of it "
            f"global event streams), {j['busy_B']:,.0f} B per busy session "
            f"({j['busy_global_B']:,.0f} B global event streams, own event stream "
            f"{j['busy_own_events_B']:,.0f} B)")


def goals(args: argparse.Namespace) -> list[Goal]:
    busy = f"{args.actions:,} tiny actions ({args.busy_sessions} sessions)"
    return [
        Goal(f"used_memory per idle session ({args.sessions:,} sessions)", "",
             lambda r: r.jido["idle_B"], "<=", 500, " B"),
        Goal("  of it, the global event streams (shared, capped)", "",
             lambda r: r.jido["idle_global_B"], unit=" B"),
        Goal("used_memory per new session (the same, before idle)", "",
             lambda r: r.jido["new_B"], unit=" B"),
        Goal(f"used_memory per session after {busy}", "",
             lambda r: r.jido["busy_B"], "<=", 40_000, " B"),
        Goal("  of it, the global event streams (shared, capped)", "",
             lambda r: r.jido["busy_global_B"], unit=" B"),
        Goal("  of it, its own event stream (MEMORY USAGE)", "",
             lambda r: r.jido["busy_own_events_B"], unit=" B"),
        Goal("stock Celery: used_memory per no-op task (result kept)", "",
             lambda r: r.stock["task_B"], unit=" B"),
        Goal(f"a session's {args.actions:,} actions / {args.actions:,} stock tasks",
             "stock Celery", lambda r: r.jido["busy_B"] / (r.stock["task_B"] * args.actions)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=5000, help="idle sessions per round")
    ap.add_argument("--busy-sessions", type=int, default=20)
    ap.add_argument("--actions", type=int, default=3000, help="tiny actions per busy session")
    ap.add_argument("--stock-tasks", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=2, help="pool processes, each worker")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one round (500 idle, 3 x 300 busy, 300 stock tasks)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.sessions, args.busy_sessions = 1, 500, 3
        args.actions, args.stock_tasks = 300, 300

    print(f"memory (Redis used_memory deltas) vs stock Celery: {args.rounds} round(s), "
          f"{args.sessions:,} idle sessions, {args.busy_sessions} x {args.actions:,} actions, "
          f"{args.stock_tasks:,} stock tasks per round ({loadavg()})")
    with ExitStack() as stack:
        stock = start_stock(args.concurrency)
        stack.callback(stock.close)
        print(stock.describe(), flush=True)
        server = Redis()
        stack.callback(server.stop)
        stock_throughput(stock, 100)  # warm up: connections, the result consumer
        rounds = interleaved(args.rounds, lambda: stock_round(stock, args.stock_tasks),
                             lambda: jido_round(server, args), show)
    report(goals(args), rounds)
    print(f"({loadavg()} at the end)")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
