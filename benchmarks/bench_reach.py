"""Reach: actions sent by task name (`send_task("jido_tasks.send", ...)`, result stored) vs
stock Celery, in one run.

Baseline: stock Celery (`benchmarks/stock_app.py`: its own app on kombu's Redis transport,
task events on, acks_late, prefetch 1, JSON), a no-op task whose result is stored, on a worker
with the jido-tasks worker's concurrency; each side has a private redis-server of its own. The
by-name actions are sent the way an app without jido-tasks sends them: from a stock Celery app
(kombu's transport, "sent" events on) pointed at the jido-tasks broker, and waited on with
`AsyncResult`s, as the stock tasks are. Rounds interleave (stock, jido-tasks, stock, ...); a
ratio is taken within each round, and the median of the rounds is what counts, with no round
worse than 80% of its goal.

Per round: stock, S x N no-op tasks (waited together) and `apply_async().get()` round trips;
jido-tasks, S sessions x N by-name `bench.append` actions (waited together) and by-name
`bench.noop` round trips. Prints throughput and p50, and Redis CPU (`INFO commandstats` usec),
commands and process CPU per by-name action against a stock task's. `--action-events off`
turns the per-action task events of jido-tasks off (stock Celery's stay on); `--our-worker`
adds a bare no-op task on the jido-tasks worker, printed apart.

    python benchmarks/bench_reach.py [--rounds 3] [--sessions 200] [--per-session 15]
                                     [--latency 100] [--action-events on|off] [--our-worker]
    python benchmarks/bench_reach.py --quick    # small sizes, one round: a check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery import Celery
from celery.result import ResultSet

from benchmarks import stock_app
from benchmarks.bench_session_work import bare_latency, bare_throughput
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
    ratio,
    refresh_pids,
    report,
    stock_and_jido,
    stock_latency,
    stock_throughput,
    wait_budget,
)

SEND_TASK = "jido_tasks.send"


def by_name_throughput(jido: Jido, app: Celery, sessions: int, per: int) -> tuple[float, Cost]:
    """`sessions` new sessions x `per` actions sent by name, waited on together:
    (actions/s, cost per action); session creation is not measured."""
    c = jido.client
    sids = [c.create_session().id for _ in range(sessions)]
    total = sessions * per

    def work() -> float:
        t0 = time.perf_counter()
        results = [app.send_task(SEND_TASK, args=[sid, "bench.append", {"value": i}],
                                 queue=c.settings.queue)
                   for i in range(per) for sid in sids]
        ResultSet(results).join_native(timeout=wait_budget(total))
        return total / (time.perf_counter() - t0)

    rate, cost = jido.meter.measure(work, total)
    for sid in sids[:3]:
        assert sorted(c.get_state(sid)["items"]) == list(range(per)), "lost or doubled"
    return rate, cost


def by_name_latency(jido: Jido, app: Celery, n: int) -> list[float]:
    sid = jido.client.create_session().id
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        app.send_task(SEND_TASK, args=[sid, "bench.noop"],
                      queue=jido.settings.queue).get(timeout=30)
        out.append(time.perf_counter() - t0)
    return out


def stock_round(stock: Stock, args: argparse.Namespace, costs: dict[str, Cost]) -> Figures:
    tps, cost = stock_throughput(stock, args.sessions * args.per_session)
    costs["stock no-op task"] = cost
    return {"tps": tps, **cost.figures("task"),
            "p50": statistics.median(stock_latency(stock, args.latency))}


def jido_round(jido: Jido, app: Celery, args: argparse.Namespace,
               costs: dict[str, Cost]) -> Figures:
    rate, cost = by_name_throughput(jido, app, args.sessions, args.per_session)
    costs["jido-tasks by-name action"] = cost
    out = {"name": rate, **cost.figures("name"),
           "p50": statistics.median(by_name_latency(jido, app, args.latency))}
    if args.our_worker:
        out["bare"] = bare_throughput(jido, args.sessions * args.per_session)
        out["bare_p50"] = statistics.median(bare_latency(jido, args.latency))
    return out


def show(_: int, r: Round) -> str:
    s, j = r.stock, r.jido
    line = (f"stock {s['tps']:.0f} tasks/s, {s['task_commands']:.1f} cmds "
            f"{s['task_redis_us']:.1f} us/task, p50 {s['p50'] * 1e3:.2f} ms | jido-tasks by "
            f"name {j['name']:.0f}/s, {j['name_commands']:.1f} cmds {j['name_redis_us']:.1f} "
            f"us/action, p50 {j['p50'] * 1e3:.2f} ms")
    if "bare" in j:
        line += f" | our worker bare {j['bare']:.0f}/s p50 {j['bare_p50'] * 1e3:.2f} ms"
    return line


def goals(args: argparse.Namespace) -> list[Goal]:
    stock = "stock Celery"
    many = f"{args.sessions}x{args.per_session}"
    return [
        Goal(f"by-name send {many} (result stored), throughput", stock,
             ratio("name", "tps"), ">=", 0.8),
        Goal("by-name send().get() p50 / apply_async().get() p50", stock, ratio("p50")),
        Goal("Redis CPU per by-name action (commandstats usec)", stock,
             ratio("name_redis_us", "task_redis_us")),
        Goal("Redis commands per by-name action", stock,
             ratio("name_commands", "task_commands")),
        Goal("Redis main-thread CPU per by-name action (INFO cpu)", stock,
             ratio("name_redis_cpu_us", "task_redis_cpu_us")),
        Goal("worker + Redis process CPU per by-name action", stock,
             ratio("name_procs_ms", "task_procs_ms")),
    ]


def medians(rounds: list[Round]) -> str:
    def med(side: str, key: str) -> float:
        return float(statistics.median(getattr(r, side)[key] for r in rounds))

    return (f"medians: stock {num(med('stock', 'tps'))} tasks/s, p50 "
            f"{med('stock', 'p50') * 1e3:.2f} ms; jido-tasks by name {num(med('jido', 'name'))}"
            f" actions/s, p50 {med('jido', 'p50') * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--per-session", type=int, default=15)
    ap.add_argument("--latency", type=int, default=100, help="round trips per round")
    ap.add_argument("--concurrency", type=int, default=2, help="pool processes, each worker")
    ap.add_argument("--action-events", choices=["on", "off"], default="on",
                    help="jido-tasks' per-action task events (stock Celery's stay on)")
    ap.add_argument("--our-worker", action="store_true",
                    help="also a bare no-op task on the jido-tasks worker, printed apart")
    ap.add_argument("--breakdown", action="store_true",
                    help="print the commands that took the most Redis time (last round)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one round (20x10, 30 round trips)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.sessions, args.per_session, args.latency = 1, 20, 10, 30

    print(f"reach (by-name send) vs stock Celery: {args.rounds} round(s), concurrency "
          f"{args.concurrency}, {args.sessions}x{args.per_session}, {args.latency} round trips, "
          f"jido-tasks action events {args.action_events} ({loadavg()})")
    with stock_and_jido(args.concurrency, action_events=args.action_events == "on") \
            as (stock, jido):
        print(stock.describe(), flush=True)
        app = stock_app.make_app(jido.settings.broker)
        try:
            stock_throughput(stock, 100)  # warm up every path
            stock_latency(stock, 10)
            by_name_throughput(jido, app, 10, 10)
            by_name_latency(jido, app, 10)
            if args.our_worker:
                bare_throughput(jido, 100)
            refresh_pids(stock, jido)
            costs: dict[str, Cost] = {}
            rounds = interleaved(args.rounds, lambda: stock_round(stock, args, costs),
                                 lambda: jido_round(jido, app, args, costs), show)
        finally:
            app.close()
    print(medians(rounds))
    if args.breakdown:
        print("Redis time by command, last round (a script's time includes the commands it "
              "calls, which are counted as well):")
        for label, cost in costs.items():
            print(breakdown(label, cost))
    report(goals(args), rounds)
    if args.our_worker:
        print("against our worker (a bare no-op task on the jido-tasks worker), no goals:")
        report([Goal("by-name send, throughput", "our worker",
                     lambda r: r.jido["name"] / r.jido["bare"]),
                Goal("by-name send().get() p50 / bare send_task().get() p50", "our worker",
                     lambda r: r.jido["p50"] / r.jido["bare_p50"])], rounds)
    print(f"({loadavg()} at the end)")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
