"""AsyncClient vs Client: 1,000 concurrent `call`s from one event loop against the sync client
from 16 threads, in the same run, on the same Redis and workers.

Each round sends `--calls` no-op calls spread over `--sessions` sessions (the same layout for
both clients) and measures throughput (calls per second, first send to last result) and each
call's latency (its own send to its result). Also measured: the event loop's worst lag (a
task sleeping 10 ms in a loop) during the async round, and the p50 of one call at a time
for each client (the latency of a call on an idle system). Rounds alternate, the best of each
is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Redis, Worker, percentile, settings_for
from jido_tasks import AsyncClient, Client, Settings

Round = tuple[float, list[float]]  # throughput, latencies


def sync_round(client: Client, sids: list[str], calls: int, threads: int) -> Round:
    work: Queue[str] = Queue()
    for i in range(calls):
        work.put(sids[i % len(sids)])
    latencies: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        while True:
            try:
                sid = work.get_nowait()
            except Empty:
                return
            start = time.perf_counter()
            client.call(sid, "bench.noop", timeout=120)
            with lock:
                latencies.append(time.perf_counter() - start)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return calls / (time.perf_counter() - started), latencies


async def async_round(client: AsyncClient, sids: list[str], calls: int,
                      ) -> tuple[float, list[float], float]:
    lags: list[float] = []
    running = True

    async def probe() -> None:
        while running:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - start - 0.01)

    async def one(sid: str) -> float:
        start = time.perf_counter()
        await client.call(sid, "bench.noop", timeout=120)
        return time.perf_counter() - start

    task = asyncio.create_task(probe())
    started = time.perf_counter()
    latencies = await asyncio.gather(*(one(sids[i % len(sids)]) for i in range(calls)))
    elapsed = time.perf_counter() - started
    running = False
    await task
    return calls / elapsed, list(latencies), max(lags)


async def async_main(settings: Settings, args: argparse.Namespace,
                     sync_client: Client) -> None:
    async with AsyncClient(settings) as aclient:
        sids = [(await aclient.create_session()).id for _ in range(args.sessions)]
        for sid in sids[:20]:  # warm up: scripts, Celery app, connections, worker pool
            await aclient.call(sid, "bench.noop")
            sync_client.call(sid, "bench.noop")
        best_async: tuple[float, list[float], float] = (0.0, [], 0.0)
        best_sync: Round = (0.0, [])
        for _ in range(args.rounds):
            res = await async_round(aclient, sids, args.calls)
            best_async = max(best_async, res, key=lambda r: r[0])
            sres = await asyncio.to_thread(sync_round, sync_client, sids, args.calls,
                                           args.threads)
            best_sync = max(best_sync, sres, key=lambda r: r[0])
        one_async = []
        for i in range(args.single):
            start = time.perf_counter()
            await aclient.call(sids[i % len(sids)], "bench.noop")
            one_async.append(time.perf_counter() - start)
        one_sync = []
        for i in range(args.single):
            start = time.perf_counter()
            sync_client.call(sids[i % len(sids)], "bench.noop")
            one_sync.append(time.perf_counter() - start)
    report(args, best_async, best_sync, one_async, one_sync)


def report(args: argparse.Namespace, best_async: tuple[float, list[float], float],
           best_sync: Round, one_async: list[float], one_sync: list[float]) -> None:
    a_tps, a_lat, lag = best_async
    s_tps, s_lat = best_sync
    ms = 1000.0
    print(f"{args.calls} calls over {args.sessions} sessions, best of {args.rounds} rounds")
    print(f"{'async, ' + str(args.calls) + ' concurrent (1 loop)':36} {a_tps:8.0f}/s  "
          f"p50 {statistics.median(a_lat) * ms:7.1f} ms  p99 {percentile(a_lat, .99) * ms:7.1f}"
          f" ms  loop lag max {lag * ms:5.1f} ms")
    print(f"{'sync, ' + str(args.threads) + ' threads':36} {s_tps:8.0f}/s  "
          f"p50 {statistics.median(s_lat) * ms:7.1f} ms  p99 {percentile(s_lat, .99) * ms:7.1f}"
          " ms")
    print(f"{'one call at a time, async':36} p50 {statistics.median(one_async) * ms:7.2f} ms")
    print(f"{'one call at a time, sync':36} p50 {statistics.median(one_sync) * ms:7.2f} ms")
    print()
    checks = [
        ("throughput async / sync threads", a_tps / s_tps, ">=", 1.0),
        ("p50 per call async / sync threads", statistics.median(a_lat)
         / statistics.median(s_lat), "<=", 1.0),
        ("p50 one call async / sync", statistics.median(one_async)
         / statistics.median(one_sync), "<=", 1.0),
        ("loop lag max (s) during the async round", lag, "<=", 0.05),
    ]
    for name, ratio, op, target in checks:
        ok = ratio >= target if op == ">=" else ratio <= target
        print(f"{name:42} {ratio:7.2f}  (target {op} {target})  {'ok' if ok else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    server = Redis()
    settings = settings_for(server.url)
    workers = [Worker(settings, args.concurrency) for _ in range(args.workers)]
    sync_client = Client(settings)
    try:
        asyncio.run(async_main(settings, args, sync_client))
    finally:
        sync_client.close()
        for worker in workers:
            worker.stop()
        server.stop()


if __name__ == "__main__":
    main()
