"""Redis memory per session and per action record, measured on a private redis-server.

Prints, in one run:
- bytes per idle session with no state: `used_memory` growth per session over --sessions
  (default 100,000) sessions made by the real scripts (create, then idle), all index entries
  included, and by structure (`MEMORY USAGE` of the registry row, index growth per session);
- a session that ran --actions (default 3,000) tiny actions (`{"key": "k"}` params, integer
  result) with the default `keep_results`: `MEMORY USAGE` of each of its keys, the
  bookkeeping total (row, state, records; its event stream apart) and bytes per kept record
  beyond its params and result JSON, before and after `record_retention` (a second session
  with a 1 s retention, so the run does not wait an hour);
- bytes per event of a session's stream, per snapshot index entry, of the state string.

The global event stream (bounded by `global_event_maxlen`, shared by all sessions) and the
Celery queue are deleted before each `used_memory` reading: they are not per-session costs.

    python benchmarks/bench_memory.py [--sessions 100000] [--actions 3000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import Redis, settings_for
from jido_tasks import Client
from jido_tasks.models import SessionStatus, dumps
from jido_tasks.store import scripts
from jido_tasks.worker.drain import drain

PARAMS = {"key": "k"}
RESULT_JSON = "1"


def usage(r: redis.Redis, key: str) -> int:
    return int(r.memory_usage(key, samples=0) or 0)


def used_memory(c: Client) -> int:
    """`used_memory` without the shared structures that are not per-session costs."""
    r = c.layer.redis
    r.delete(*(group.events for group in c.layer.keys.groups()), c.settings.queue)
    return int(r.info("memory")["used_memory"])


def idle_sessions(c: Client, n: int) -> None:
    """`n` idle sessions with no state, made by create.lua then transition.lua (pipelined)."""
    k, r = c.layer.keys, c.layer.redis
    before = used_memory(c)
    def index_usage(name: str) -> int:  # the index over every slot group
        return sum(usage(r, getattr(group, name)) for group in k.groups())

    idx_before = {name: index_usage(name) for name in ("activity", "active", "expiry")}
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        ids = [c.create_session().id for _ in range(min(1000, n - start))]
        c.layer.call_many([scripts.transition(sid, target=SessionStatus.IDLE, reason="")
                           for sid in ids])
    grew = used_memory(c) - before
    sample = ids[-1]
    sk = k.session(sample)
    left = [key for key in sk.owned() if key != sk.entry and r.exists(key)]
    print(f"{n:,} idle sessions (no state) made in {time.perf_counter() - t0:.0f}s: "
          f"used_memory grew {grew:,} B = {grew / n:.0f} B per idle session (target <= 500 B)")
    print(f"  registry row (MEMORY USAGE, one session): {usage(r, sk.entry)} B, "
          f"{r.object('encoding', sk.entry)}; other keys of an idle session: {left or 'none'}")
    for name, was in idx_before.items():
        print(f"  index {name:8}: {(index_usage(name) - was) / n:6.1f} B per session "
              f"(MEMORY USAGE growth)")
    print(f"Redis bytes for {n:,} idle sessions: {grew:,} B ({grew / 2**20:.1f} MiB)")


def busy_session(c: Client, n: int, label: str) -> str:
    """A session that ran `n` tiny actions (drained in this process: same scripts)."""
    sid = c.create_session().id
    for start in range(0, n, 100):
        c.send_many(sid, [("bench.tiny", PARAMS)] * min(100, n - start))
        while drain(c.layer, sid, worker="bench").applied:
            pass
    report(c, sid, f"{label}, after {n:,} tiny actions")
    return sid


def report(c: Client, sid: str, label: str) -> None:
    r, sk = c.layer.redis, c.layer.keys.session(sid)
    sizes = {name: usage(r, getattr(sk, name)) for name in
             ("entry", "state", "mailbox", "pending", "records", "events")}
    kept = r.llen(sk.records) // 3
    book = sizes["entry"] + sizes["state"] + sizes["records"] + sizes["pending"]
    print(f"{label}: bookkeeping {book:,} B (row {sizes['entry']}, state {sizes['state']}, "
          f"records {sizes['records']:,} for {kept} kept, pending {sizes['pending']}) "
          f"(target <= 40,000 B); its event stream apart: {sizes['events']:,} B")
    if kept:
        extra = len(dumps(PARAMS)) + len(RESULT_JSON)
        per = sizes["records"] / kept
        encoding = r.object("encoding", sk.records)
        print(f"  per kept record: {per:.0f} B, {per - extra:.0f} B beyond its params and "
              f"result JSON ({extra} B) (target <= 120 B); records list encoding {encoding}")


def events_and_snapshots(c: Client) -> None:
    r = c.layer.redis
    sid = c.create_session().id
    c.send_many(sid, [("bench.event", PARAMS)] * 500)
    while drain(c.layer, sid, worker="bench").applied:
        pass
    sk = c.layer.keys.session(sid)
    n = r.xlen(sk.events)
    print(f"session event stream: {usage(r, sk.events):,} B for {n} events = "
          f"{usage(r, sk.events) / n:.0f} B per event (each {{action_id, key}} data); "
          f"an idle session has none")
    state_sid = c.sessions.create(state={"history": [{"role": "user", "content": "hello"}]}).id
    state_key = c.layer.keys.session(state_sid).state
    parts = r.hgetall(state_key)  # the state is stored in parts (one field per top-level key)
    print(f"state hash of a one-message history ({sum(map(len, parts.values()))} B JSON in "
          f"{len(parts)} part): {usage(r, state_key)} B")
    def snapshot_index() -> int:  # over every slot group
        return sum(usage(r, group.snapshots) for group in c.layer.keys.groups())

    before = snapshot_index()
    saved = [c.create_session().id for _ in range(200)]
    for s in saved:
        c.save_session(s)
    per = (snapshot_index() - before) / len(saved)
    one = usage(r, c.layer.keys.snapshot(saved[0]))
    print(f"snapshot index: {per:.0f} B per entry; one snapshot of an empty session {one} B")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--actions", type=int, default=3000)
    args = ap.parse_args()
    server = Redis()
    try:
        settings = settings_for(server.url)
        c = Client(settings)
        print(f"settings: keep_results={settings.keep_results}, record_retention="
              f"{settings.record_retention:g}s, event_maxlen={settings.event_maxlen}")
        busy_session(c, args.actions, "session")
        short = Client(settings.model_copy(update={"record_retention": 1.0}))
        sid = busy_session(short, args.actions, "session with record_retention=1s")
        time.sleep(1.2)
        report(short, sid, "  same session 1.2s later, idle past the retention")
        short.send(sid, "bench.tiny", PARAMS)
        while drain(short.layer, sid, worker="bench").applied:
            pass
        report(short, sid, "  then one more action (older records trimmed by age)")
        events_and_snapshots(c)
        idle_sessions(c, args.sessions)
        short.close()
        c.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
