"""An action's cost against the size of the session's state, measured in one run.

One worker process (the drain runs in this process, as a pool process runs it: real Redis,
real Lua, the real `runtime.drain`), one hot session whose state holds a session cache of
the given size; each action appends one number to a list and leaves the rest alone (the
`bench.append` action). Prints actions/s per state size, the ratio to the 1 kB rate, and the
state bytes written per commit (what the actions changed, not the whole state).

    python benchmarks/bench_state_size.py [--actions 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Redis, settings_for
from jido_tasks import Client
from jido_tasks.worker import drain as runtime

SIZES = [("1 kB", 1_000), ("100 kB", 100_000), ("1 MB", 1_000_000), ("4 MB", 4_000_000)]
GOALS = {"1 MB": 0.5, "4 MB": 0.3}
FILE = 20_000  # bytes of one cached file


def big_state(size: int) -> dict[str, object]:
    """A session cache of `size` bytes of file contents (20 kB files), and a file index."""
    files, left, i = {}, size, 0
    while left > 0:
        n = min(FILE, left)
        files[f"src/module_{i}.py"] = "x" * n
        left -= n
        i += 1
    return {"cache": {"files": files, "analyses": {}},
            "file_index": {path: {"size": len(text)} for path, text in files.items()}}


def measure(c: Client, size: int, actions: int) -> tuple[float, float]:
    entry = c.sessions.create(state=big_state(size))
    sid = entry.id
    for start in range(0, actions, 500):
        c.send_many(sid, [("bench.append", {"value": i})
                          for i in range(start, min(actions, start + 500))])
    commits = written = applied = 0
    t0 = time.perf_counter()
    while applied < actions:
        report = runtime.drain(c.layer, sid, worker="bench")
        applied += report.applied
        commits += report.commits
        written += report.state_bytes
    elapsed = time.perf_counter() - t0
    assert c.get_state(sid)["items"] == list(range(actions))
    return actions / elapsed, written / max(commits, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--actions", type=int, default=2000)
    args = parser.parse_args()
    server = Redis()
    try:
        c = Client(settings_for(server.url, batch_size=1000))
        rates: dict[str, float] = {}
        print(f"{'state':>8} {'actions/s':>10} {'ms/action':>10} {'vs 1 kB':>8} "
              f"{'state bytes/commit':>19}")
        for label, size in SIZES:
            rate, per_commit = measure(c, size, args.actions)
            rates[label] = rate
            ratio = rate / rates["1 kB"]
            goal = GOALS.get(label)
            verdict = "" if goal is None else \
                f"  (goal >= {goal}x: {'ok' if ratio >= goal else 'MISSED'})"
            print(f"{label:>8} {rate:>10.0f} {1000 / rate:>10.3f} {ratio:>7.2f}x "
                  f"{per_commit:>19.0f}{verdict}")
        c.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
