"""Session work vs stock Celery, measured in one run on one machine.

Baseline: stock Celery (`benchmarks/stock_app.py`: its own app on kombu's Redis transport,
task events on, acks_late, prefetch 1, JSON), a no-op task whose result is stored, on a worker
with the jido-tasks worker's concurrency; each side has a private redis-server of its own.
Rounds interleave (stock, jido-tasks, stock, ...); a ratio is taken within each round, and the
median of the rounds is what counts, with no round worse than 80% of its goal.

Per round: stock, S x N no-op tasks (`apply_async`, waited together) and `apply_async().get()`
round trips; jido-tasks, S sessions x N actions (`Client.send`, `bench.append`), one hot
session of H actions, and `Client.call` round trips. Prints throughputs, p50s, Redis CPU
(`INFO commandstats` usec) and commands per action against a stock task's, each with its goal.
With `--our-worker`, a bare no-op task on the jido-tasks worker too, printed apart.

    python benchmarks/bench_session_work.py [--rounds 3] [--sessions 200] [--per-session 15]
                                            [--hot 1500] [--latency 200] [--our-worker]
    python benchmarks/bench_session_work.py --quick    # small sizes, one round: a check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery.result import ResultSet

from benchmarks.common import (
    QUICK_NOTE,
    Cost,
    Figures,
    Goal,
    Jido,
    Round,
    Stock,
    breakdown,
    interleaved,
    loadavg,
    num,
    percentile,
    ratio,
    refresh_pids,
    report,
    stock_and_jido,
    stock_latency,
    stock_throughput,
    wait_budget,
)

BARE = "bench.noop_task"


def sessions_throughput(jido: Jido, sessions: int, per: int,
                        action: str = "bench.append") -> tuple[float, Cost]:
    """`sessions` new sessions x `per` actions sent round-robin, waited on by each session's
    last handle: (actions/s, cost per action); session creation is not measured."""
    c = jido.client
    sids = [c.create_session().id for _ in range(sessions)]
    total = sessions * per

    def work() -> float:
        t0 = time.perf_counter()
        last = {}
        for i in range(per):
            for sid in sids:
                last[sid] = c.send(sid, action, {"value": i})
        for handle in last.values():
            handle.get(timeout=wait_budget(total))
        return total / (time.perf_counter() - t0)

    rate, cost = jido.meter.measure(work, total)
    for sid in sids[:3]:
        assert c.get_state(sid)["items"] == list(range(per)), "order broken"
    return rate, cost


def call_latency(jido: Jido, n: int) -> list[float]:
    sid = jido.client.create_session().id
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        jido.client.call(sid, "bench.noop", timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def bare_throughput(jido: Jido, n: int) -> float:
    """Our worker's baseline: `n` bare no-op tasks on the jido-tasks worker."""
    c = jido.client
    t0 = time.perf_counter()
    ResultSet([c.celery.send_task(BARE, queue=c.settings.queue)
               for _ in range(n)]).join_native(timeout=wait_budget(n))
    return n / (time.perf_counter() - t0)


def bare_latency(jido: Jido, n: int) -> list[float]:
    c = jido.client
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.celery.send_task(BARE, queue=c.settings.queue).get(timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def stock_round(stock: Stock, args: argparse.Namespace, costs: dict[str, Cost]) -> Figures:
    tps, cost = stock_throughput(stock, args.stock)
    costs["stock no-op task"] = cost
    lat = stock_latency(stock, args.latency)
    return {"tps": tps, **cost.figures("task"), "p50": statistics.median(lat),
            "p99": percentile(lat, 0.99)}


def jido_round(jido: Jido, args: argparse.Namespace, costs: dict[str, Cost]) -> Figures:
    many, many_cost = sessions_throughput(jido, args.sessions, args.per_session)
    hot, hot_cost = sessions_throughput(jido, 1, args.hot)
    costs["jido-tasks many sessions, per action"] = many_cost
    costs["jido-tasks hot session, per action"] = hot_cost
    lat = call_latency(jido, args.latency)
    out = {"many": many, **many_cost.figures("many"), "hot": hot, **hot_cost.figures("hot"),
           "p50": statistics.median(lat), "p99": percentile(lat, 0.99)}
    if args.our_worker:
        out["bare"] = bare_throughput(jido, args.stock)
        out["bare_p50"] = statistics.median(bare_latency(jido, args.latency))
    return out


def show(_: int, r: Round) -> str:
    s, j = r.stock, r.jido
    line = (f"stock {s['tps']:.0f} tasks/s, {s['task_commands']:.1f} cmds "
            f"{s['task_redis_us']:.1f} us/task, p50 {s['p50'] * 1e3:.2f} ms | jido-tasks many "
            f"{j['many']:.0f}/s {j['many_commands']:.1f} cmds {j['many_redis_us']:.1f} us, hot "
            f"{j['hot']:.0f}/s {j['hot_commands']:.1f} cmds {j['hot_redis_us']:.1f} us, "
            f"call p50 {j['p50'] * 1e3:.2f} ms")
    if "bare" in j:
        line += f" | our worker bare {j['bare']:.0f}/s p50 {j['bare_p50'] * 1e3:.2f} ms"
    return line


def goals(args: argparse.Namespace) -> list[Goal]:
    many = f"{args.sessions}x{args.per_session}"
    stock = "stock Celery"
    return [
        Goal(f"many sessions {many} Client.send, throughput", stock,
             ratio("many", "tps"), ">=", 3.0),
        Goal(f"one hot session x{args.hot}, throughput", stock, ratio("hot", "tps"), ">=", 6.0),
        Goal("Client.call p50 / apply_async().get() p50", stock, ratio("p50"), "<=", 1.2),
        Goal("Redis CPU per action, many (commandstats usec)", stock,
             ratio("many_redis_us", "task_redis_us"), "<=", 0.5),
        Goal("Redis CPU per action, hot (commandstats usec)", stock,
             ratio("hot_redis_us", "task_redis_us"), "<=", 0.25),
        Goal("Redis commands per action, many", stock, ratio("many_commands", "task_commands")),
        Goal("Redis commands per action, hot", stock, ratio("hot_commands", "task_commands")),
        Goal("Redis main-thread CPU per action, many (INFO cpu)", stock,
             ratio("many_redis_cpu_us", "task_redis_cpu_us")),
        Goal("Redis main-thread CPU per action, hot (INFO cpu)", stock,
             ratio("hot_redis_cpu_us", "task_redis_cpu_us")),
        Goal("worker + Redis process CPU per action, many", stock,
             ratio("many_procs_ms", "task_procs_ms")),
        Goal("worker + Redis process CPU per action, hot", stock,
             ratio("hot_procs_ms", "task_procs_ms")),
    ]


def medians(rounds: list[Round]) -> str:
    def med(side: str, key: str) -> float:
        return float(statistics.median(getattr(r, side)[key] for r in rounds))

    return (f"medians: stock {num(med('stock', 'tps'))} tasks/s, "
            f"{med('stock', 'task_commands'):.1f} cmds and {med('stock', 'task_redis_us'):.1f} "
            f"us per task, p50 {med('stock', 'p50') * 1e3:.2f} ms (p99 "
            f"{med('stock', 'p99') * 1e3:.2f}); jido-tasks many {num(med('jido', 'many'))}/s, "
            f"hot {num(med('jido', 'hot'))}/s, call p50 {med('jido', 'p50') * 1e3:.2f} ms (p99 "
            f"{med('jido', 'p99') * 1e3:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--per-session", type=int, default=15)
    ap.add_argument("--hot", type=int, default=1500)
    ap.add_argument("--stock", type=int, default=0,
                    help="stock tasks per round for throughput (default sessions x per-session)")
    ap.add_argument("--latency", type=int, default=200, help="round trips per round")
    ap.add_argument("--concurrency", type=int, default=2, help="pool processes, each worker")
    ap.add_argument("--our-worker", action="store_true",
                    help="also a bare no-op task on the jido-tasks worker, printed apart")
    ap.add_argument("--breakdown", action="store_true",
                    help="print the commands that took the most Redis time (last round)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one round (20x10, hot 200, 30 round trips)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.sessions, args.per_session, args.hot, args.latency = 1, 20, 10, 200, 30
    args.stock = args.stock or args.sessions * args.per_session

    print(f"session work vs stock Celery: {args.rounds} round(s), concurrency "
          f"{args.concurrency}, stock {args.stock} tasks, many {args.sessions}x"
          f"{args.per_session}, hot {args.hot}, {args.latency} round trips ({loadavg()})")
    with stock_and_jido(args.concurrency) as (stock, jido):
        print(stock.describe(), flush=True)
        # Warm up both sides (connections, script cache, imports in the pool).
        stock_throughput(stock, 100)
        stock_latency(stock, 10)
        sessions_throughput(jido, 10, 10)
        call_latency(jido, 10)
        if args.our_worker:
            bare_throughput(jido, 100)
        refresh_pids(stock, jido)
        costs: dict[str, Cost] = {}
        rounds = interleaved(args.rounds, lambda: stock_round(stock, args, costs),
                             lambda: jido_round(jido, args, costs), show)
    print(medians(rounds))
    if args.breakdown:
        print("Redis time by command, last round (a script's time includes the commands it "
              "calls, which are counted as well):")
        for label, cost in costs.items():
            print(breakdown(label, cost))
    report(goals(args), rounds)
    if args.our_worker:
        print("against our worker (a bare no-op task on the jido-tasks worker), no goals:")
        report([Goal(f"many sessions {args.sessions}x{args.per_session}, throughput",
                     "our worker", lambda r: r.jido["many"] / r.jido["bare"]),
                Goal(f"one hot session x{args.hot}, throughput", "our worker",
                     lambda r: r.jido["hot"] / r.jido["bare"]),
                Goal("Client.call p50 / bare send_task().get() p50", "our worker",
                     lambda r: r.jido["p50"] / r.jido["bare_p50"])], rounds)
    print(f"({loadavg()} at the end)")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
