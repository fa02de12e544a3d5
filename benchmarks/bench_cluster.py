"""Session work on one Redis and on a three-master Redis Cluster, measured in one run.

The same 200 sessions x 25 actions (sent round-robin, drained by one worker of 2 processes)
on a private single redis-server and on a private three-master cluster (`tests/cluster.py`);
the Celery broker and result backend are a third redis-server in both runs, so the Redis CPU
counted is the session data's only. Prints each throughput, the share of commands each master
served, and Redis CPU (user + sys, from INFO cpu) per action; then the sweep's time for 1,000
expired sessions among 10k and among 1M (--large) sessions on the cluster.

    python benchmarks/bench_cluster.py [--sessions 200] [--per-session 25] [--large 1000000]

On a 2-core machine the cluster cannot be faster than one Redis (its three masters share the
cores with the workers); the figures that matter are the spread and the per-action cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.bench_sweep import fill, redis_now
from benchmarks.common import Redis, Worker, settings_for
from jido_tasks import Client, Settings
from jido_tasks.ops.sweep import Sweeper
from jido_tasks.store.connection import RedisLayer
from jido_tasks.worker.app import make_app
from tests.cluster import RedisClusterServers


def node_stats(ports: list[int]) -> dict[int, tuple[int, float]]:
    """Per node: commands executed since the last CONFIG RESETSTAT, and CPU seconds used."""
    out = {}
    for port in ports:
        node = redis.Redis(port=port)
        calls = sum(int(v["calls"]) for v in node.info("commandstats").values())
        cpu = node.info("cpu")
        out[port] = (calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))
    return out


def run_work(settings: Settings, ports: list[int], sessions: int, per: int,
             ) -> dict[str, Any]:
    """Throughput, commands per node and CPU per action of `sessions` x `per` actions sent
    round-robin (the sessions are created before the count starts)."""
    worker = Worker(settings, concurrency=2)
    client = Client(settings)
    try:
        work(client, 10, 10)  # warm-up: connections, scripts, imports in the pool
        sids = [client.create_session().id for _ in range(sessions)]
        for port in ports:
            redis.Redis(port=port).config_resetstat()
        before = node_stats(ports)
        t0 = time.perf_counter()
        work(client, sessions, per, sids)
        elapsed = time.perf_counter() - t0
        after = node_stats(ports)
    finally:
        client.close()
        worker.stop()
    total = sessions * per
    commands = {p: after[p][0] for p in ports}
    cpu = sum(after[p][1] - before[p][1] for p in ports)
    return {"tps": total / elapsed, "commands": commands, "cpu_us": cpu / total * 1e6,
            "cmds_per_action": sum(commands.values()) / total}


def work(c: Client, sessions: int, per: int, sids: list[str] | None = None) -> None:
    """Send `per` actions to each session round-robin and wait for the last of each."""
    sids = sids or [c.create_session().id for _ in range(sessions)]
    last: dict[str, Any] = {}
    for i in range(per):
        for sid in sids:
            last[sid] = c.send(sid, "bench.append", {"value": i})
    for handle in last.values():
        handle.get(timeout=600)
    for sid in sids[:3]:
        assert c.get_state(sid)["items"] == list(range(per)), "order broken"


def timed_sweep(layer: RedisLayer, app: Any, expired: int) -> float:
    """Add `expired` sessions past their timeout and sweep once; seconds it took."""
    now = redis_now(layer.redis)  # type: ignore[arg-type]
    fill(layer, expired, now - layer.settings.default_timeout - 60)
    t0 = time.perf_counter()
    report = Sweeper(layer, app).run()
    elapsed = time.perf_counter() - t0
    assert report.expired == expired, report
    return elapsed


def sweep_scaling(settings: Settings, sizes: list[int], expired: int, reps: int,
                  ) -> dict[int, float]:
    """Median sweep time at each registry size, on the cluster."""
    layer = RedisLayer(settings)
    app = make_app(settings)
    out: dict[int, float] = {}
    live = 0
    for size in sizes:
        t0 = time.perf_counter()
        fill(layer, size - live, redis_now(layer.redis))  # type: ignore[arg-type]
        live = size
        print(f"  {size:>9,} live sessions written in {time.perf_counter() - t0:.1f}s",
              flush=True)
        timed_sweep(layer, app, expired)  # warm-up
        runs = [timed_sweep(layer, app, expired) for _ in range(reps)]
        out[size] = statistics.median(runs)
        print(f"  {size:>9,} sessions: sweep of {expired} expired {out[size] * 1000:.1f} ms "
              f"(median of {reps}: {', '.join(f'{t * 1000:.0f}' for t in runs)} ms)",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--per-session", type=int, default=25)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--expired", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    broker, single = Redis(), Redis()
    cluster = RedisClusterServers(Path(tempfile.mkdtemp(prefix="jido-bench-cluster-")))
    cluster.start()
    try:
        common = {"broker_url": broker.url, "result_backend": broker.url}
        one = run_work(settings_for(single.url, **common), [single.port], args.sessions,
                       args.per_session)
        many = run_work(settings_for(cluster.url, redis_cluster=True, **common), cluster.ports,
                        args.sessions, args.per_session)
        n = args.sessions * args.per_session
        print(f"{args.sessions} sessions x {args.per_session} actions ({n:,} actions)")
        for name, res in (("single Redis", one), ("3-master cluster", many)):
            print(f"  {name:17} {res['tps']:7.0f} actions/s  {res['cmds_per_action']:5.1f} "
                  f"commands/action  Redis CPU {res['cpu_us']:6.1f} us/action (all nodes)")
        total = sum(many["commands"].values())
        shares = {p: c / total for p, c in many["commands"].items()}
        worst = max(abs(s - 1 / 3) / (1 / 3) for s in shares.values())
        print("  commands served per master: " + ", ".join(
            f"{p}: {s:.1%}" for p, s in shares.items())
            + f"  (largest gap from a third: {worst:.0%}, goal <= 20%)")
        print(f"  cluster / single: throughput {many['tps'] / one['tps']:.2f}x, Redis CPU per "
              f"action {many['cpu_us'] / one['cpu_us']:.2f}x")
        print("sweep on the cluster:")
        sizes = [10_000, args.large]
        times = sweep_scaling(settings_for(cluster.url, redis_cluster=True, **common), sizes,
                              args.expired, args.reps)
        print(f"  ratio {args.large:,}/10k: {times[args.large] / times[10_000]:.2f} "
              f"(goal < 1.5)")
    finally:
        cluster.stop()
        single.stop()
        broker.stop()


if __name__ == "__main__":
    main()
