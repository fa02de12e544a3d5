"""Sweep cost against registry size: it must grow with the work, not with the registry.

Fills a private redis-server with 10k, 100k and 1M (unless --skip-1m) live sessions, written
directly through the key schema in pipelines (HSET of the `SessionEntry` row + the ZADDs of
create.lua; no per-session event stream), then times a sweep that finds the same 1,000 expired
sessions at each size (median of --reps runs after a warm-up, each on 1,000 fresh expired
sessions). Also prints Redis memory per idle session.

    python benchmarks/bench_sweep.py [--skip-1m] [--reps 5] [--expired 1000]

About two minutes in all, most of it writing the 1M registry.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import Redis, settings_for
from jido_tasks.core.sessions import SessionService
from jido_tasks.models import SessionEntry, SessionStatus, from_ts, new_session_id
from jido_tasks.ops.sweep import Sweeper
from jido_tasks.store.connection import RedisLayer
from jido_tasks.worker.app import make_app

CHUNK = 5000


def redis_now(r: redis.Redis) -> float:
    sec, usec = r.time()
    return float(sec) + usec / 1e6


def fill(layer: RedisLayer, n: int, last_activity: float) -> list[str]:
    """Write `n` active sessions last active at `last_activity`, as create.lua would."""
    keys, s = layer.keys, layer.settings
    stamp = from_ts(last_activity)
    assert stamp is not None
    template = SessionEntry(id=new_session_id(), created_at=stamp, updated_at=stamp,
                            last_activity=stamp).to_redis(s.default_timeout)
    deadline = last_activity + float(template["timeout"])
    ids: list[str] = []
    for start in range(0, n, CHUNK):
        chunk = [new_session_id() for _ in range(min(CHUNK, n - start))]
        pipe = layer.redis.pipeline(transaction=False)
        by_group: dict[int, list[str]] = {}
        for sid in chunk:
            pipe.hset(keys.session(sid).entry, mapping={**template, "id": sid})
            by_group.setdefault(keys.group_of(sid), []).append(sid)
        for g, members in by_group.items():
            group = keys.group(g)
            pipe.zadd(group.activity, dict.fromkeys(members, last_activity))
            pipe.zadd(group.active, dict.fromkeys(members, last_activity))
            pipe.zadd(group.expiry, dict.fromkeys(members, deadline))
        pipe.execute()
        ids += chunk
    return ids


def timed_sweep(layer: RedisLayer, sweeper_app: object, expired: int) -> tuple[float, int]:
    """Add `expired` sessions past their timeout, sweep once; seconds and commands it took."""
    now = redis_now(layer.redis)
    fill(layer, expired, now - layer.settings.default_timeout - 60)
    before = int(layer.redis.info("stats")["total_commands_processed"])
    t0 = time.perf_counter()
    report = Sweeper(layer, sweeper_app).run()
    elapsed = time.perf_counter() - t0
    commands = int(layer.redis.info("stats")["total_commands_processed"]) - before - 1
    assert report.expired == expired, report
    assert report.idled == report.recovered == report.purged == 0, report
    return elapsed, commands


def memory_per_session(layer: RedisLayer) -> None:
    """MEMORY USAGE of an idle session's keys, bulk-written and made by create.lua."""
    r = layer.redis
    bulk = fill(layer, 1, redis_now(r))[0]
    r.hset(layer.keys.session(bulk).entry, "status", SessionStatus.IDLE.value)
    row = int(r.memory_usage(layer.keys.session(bulk).entry, samples=0) or 0)
    service = SessionService(layer)
    sid = service.create().id
    service.transition(sid, SessionStatus.IDLE)
    sk = layer.keys.session(sid)
    made_row = int(r.memory_usage(sk.entry, samples=0) or 0)
    stream = int(r.memory_usage(sk.events, samples=0) or 0)
    others = [k for k in sk.owned() if k not in (sk.entry, sk.events) and r.exists(k)]
    print(f"memory per idle session (MEMORY USAGE, no state): registry row {row} B "
          f"(bulk-written), {made_row} B (create.lua) (target < 400 B); plus, for a session "
          f"made by create.lua, its event stream (2 events): {stream} B; other keys: "
          f"{others or 'none'}")


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-1m", action="store_true",
                    help="stop at 100k sessions (writing 1M takes about two minutes)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--expired", type=int, default=1000)
    args = ap.parse_args()
    server = Redis()
    try:
        settings = settings_for(server.url)
        layer = RedisLayer(settings, redis.Redis.from_url(server.url, decode_responses=True))
        app = make_app(settings)
        sizes = [10_000, 100_000] + ([] if args.skip_1m else [1_000_000])
        results: dict[int, float] = {}
        live = 0
        for size in sizes:
            t0 = time.perf_counter()
            before = used_memory(layer.redis)
            fill(layer, size - live, redis_now(layer.redis))
            per = (used_memory(layer.redis) - before) / (size - live)
            live = size
            print(f"{size:>9,} live sessions written in {time.perf_counter() - t0:.1f}s "
                  f"(used_memory grew {per:.0f} B per session: row + 3 index entries)")
            timed_sweep(layer, app, args.expired)  # warm-up: script loading, caches
            runs = [timed_sweep(layer, app, args.expired) for _ in range(args.reps)]
            results[size] = statistics.median(t for t, _ in runs)
            print(f"{size:>9,} sessions: sweep of {args.expired} expired "
                  f"{results[size] * 1000:.1f} ms (median of {args.reps}; runs "
                  f"{', '.join(f'{t * 1000:.0f}' for t, _ in runs)} ms), "
                  f"{statistics.median(c for _, c in runs) / args.expired:.1f} "
                  f"Redis commands per expired session")
        biggest = sizes[-1]
        ratio = results[biggest] / results[sizes[0]]
        print(f"ratio {biggest // 1000}k/10k: {ratio:.2f} (target < 1.5)")
        memory_per_session(layer)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
