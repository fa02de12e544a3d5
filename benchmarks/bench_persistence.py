"""Snapshot save and restore times for states of 1 kB, 100 kB and 10 MB, on both stores.

The baseline, measured in the same run on the same Redis, is the bare cost of the work any
snapshot must do at least once: `json.dumps` of the state plus one Redis `SET` of those bytes.
A save also reads the entry and state (MULTI/EXEC), parses the state, builds and dumps the
versioned document and writes it (Redis: SET + ZADD in MULTI/EXEC; disk: temporary file, fsync,
rename, fsync of the directory). A restore reads, parses and validates the document and creates
the session with its state (one Lua call). No workers are needed.

    python benchmarks/bench_persistence.py [--reps-scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Redis, settings_for
from jido_tasks.core.sessions import SessionService
from jido_tasks.models import SessionEntry
from jido_tasks.ops.snapshots.service import restore_snapshot, save_snapshot, snapshot_store
from jido_tasks.store.connection import RedisLayer

SIZES = [("1 kB", 1_000, 300), ("100 kB", 100_000, 60), ("10 MB", 10_000_000, 6)]


def make_state(target: int) -> dict[str, Any]:
    """A state shaped like a real one (history, files, index, cache) of about `target` bytes."""
    state: dict[str, Any] = {
        "conversation": [], "active_files": [{"path": f"src/m{i}.py", "added_at": 1.0 + i}
                                             for i in range(5)],
        "file_index": {f"src/m{i}.py": {"lines": 100 + i, "last_accessed": 2.0}
                       for i in range(5)},
        "cache": {"files": {}, "analyses": {}},
    }
    i = 0
    while len(json.dumps(state)) < target:
        line = f"message {i}: " + "lorem ipsum dolor sit amet " * 3
        if i % 2:
            state["conversation"].append({"role": "user", "content": line, "timestamp": 3.0})
        else:
            chunk = "def f():\n    return 42\n" * max(1, target // 2000)
            state["cache"]["files"][f"src/f{i}.py"] = {"content": chunk, "cached_at": 4.0}
        i += 1
    return state


def timed(fn: Callable[[], Any], reps: int,
          cleanup: Callable[[Any], None] | None = None) -> float:
    """Median seconds of `reps` calls (after one warm-up call); `cleanup(result)` untimed."""
    times = []
    for i in range(reps + 1):
        start = time.perf_counter()
        result = fn()
        if i:
            times.append(time.perf_counter() - start)
        if cleanup is not None:
            cleanup(result)
    return statistics.median(times)


def baseline(layer: RedisLayer, state: dict[str, Any], reps: int) -> float:
    """The bare cost: `json.dumps` of the state and one `SET` of the bytes."""
    key = f"{layer.settings.namespace}:bench:bare"
    base = timed(lambda: layer.redis.set(key, json.dumps(state)), reps)
    layer.redis.delete(key)
    return base


def bench(layer: RedisLayer, label: str, state: dict[str, Any], reps: int,
          base: float) -> None:
    store = snapshot_store(layer)
    sid = SessionService(layer).create({"bench": label}, state=state).id

    def drop(entry: SessionEntry) -> None:  # keep Redis memory flat between restores
        layer.redis.delete(*layer.keys.session(entry.id).owned())

    size = save_snapshot(layer, store, sid).size
    save = timed(lambda: save_snapshot(layer, store, sid), reps)
    rest = timed(lambda: restore_snapshot(layer, store, sid), reps, drop)
    print(f"{store.name:5} {label:>7} {size / 1e3:10.1f} kB  baseline {base * 1e3:8.2f} ms  "
          f"save {save * 1e3:8.2f} ms ({save / base:4.1f}x)  "
          f"restore {rest * 1e3:8.2f} ms ({rest / base:4.1f}x)")
    store.delete(sid)
    layer.redis.delete(*layer.keys.session(sid).owned())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps-scale", type=float, default=1.0,
                        help="multiply the repetitions (300, 60, 6) by this")
    args = parser.parse_args()
    server = Redis()
    directory = Path(tempfile.mkdtemp(prefix="jido-bench-snaps-"))
    try:
        print("store   state    document   baseline = json.dumps + SET; median of reps; "
              "ratio = time / baseline")
        for label, target, reps in SIZES:
            state = make_state(target)
            reps = max(3, int(reps * args.reps_scale))
            layers = [RedisLayer(settings_for(server.url, persistence=kind,
                                              persistence_dir=directory))
                      for kind in ("redis", "disk")]
            base = baseline(layers[0], state, reps * 2)
            for layer in layers:
                bench(layer, label, state, reps, base)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
