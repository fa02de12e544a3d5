"""Fair turns: a cold session's calls while two hot sessions stream, on one worker with two
pool processes (the setup of issue 12, item 7), with the default `drain_time_slice` and with a
slice so long a drain never yields (the behaviour before time slices), in the same run.

Prints the cold calls' p50/max (a timeout counts as its timeout) and the hot sessions'
throughput alone, and the ratio of the latter (goal >= 0.9).

    python benchmarks/bench_fairness.py [--cold 10] [--window 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Redis, Worker, settings_for
from jido_tasks import ActionTimeout, Client
from jido_tasks.settings import Settings

COLD_TIMEOUT = 10.0


class Hot(threading.Thread):
    """Keeps one session's mailbox topped up with quick actions (2 ms each)."""

    def __init__(self, settings: Settings, sid: str) -> None:
        super().__init__(daemon=True)
        self.c, self.sid = Client(settings), sid
        self.sent = 0
        self.stop = threading.Event()
        self.mailbox = self.c.layer.keys.session(sid).mailbox

    def run(self) -> None:
        while not self.stop.is_set():
            if self.c.layer.redis.llen(self.mailbox) < 500:
                self.c.send_many(self.sid, [("bench.slow", {"seconds": 0.002})] * 100)
                self.sent += 100
            else:
                time.sleep(0.005)

    def applied(self) -> int:
        return self.sent - int(self.c.layer.redis.llen(self.mailbox))


def measure(url: str, slice_: float, cold: int, window: float) -> tuple[list[float], float]:
    settings = settings_for(url, drain_time_slice=slice_)
    worker = Worker(settings, concurrency=2)
    c = Client(settings)
    hot = [Hot(settings, c.create_session().id) for _ in range(2)]
    try:
        for h in hot:
            h.start()
        time.sleep(1.0)  # both hot sessions claimed and streaming
        a0, t0 = sum(h.applied() for h in hot), time.monotonic()
        time.sleep(window)
        throughput = (sum(h.applied() for h in hot) - a0) / (time.monotonic() - t0)
        sid = c.create_session().id
        times = []
        for i in range(cold):
            started = time.monotonic()
            try:
                c.call(sid, "bench.append", {"value": i}, timeout=COLD_TIMEOUT)
                times.append(time.monotonic() - started)
            except ActionTimeout:
                times.append(COLD_TIMEOUT)
        return times, throughput
    finally:
        for h in hot:
            h.stop.set()
            h.join(10)
            h.c.close()
        c.close()
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args()
    server = Redis()
    try:
        default = Settings.model_fields["drain_time_slice"].default
        results = {}
        for label, slice_ in (("no slice (before)", 1e9), (f"slice {default:g} s", default)):
            times, tput = measure(server.url, slice_, args.cold, args.window)
            results[label] = tput
            print(f"{label:>18}: cold call p50 {statistics.median(times):.3f} s, "
                  f"max {max(times):.3f} s (timeouts count {COLD_TIMEOUT:g} s); "
                  f"hot throughput alone {tput:,.0f} actions/s", flush=True)
        before, after = results.values()
        print(f"hot throughput ratio (slice / before): {after / before:.2f}  (goal >= 0.9)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
