"""Chaos: worker processes and whole workers SIGKILLed at random while sessions work.

The default run is short; `--soak` runs the long variant. Whatever is killed, every session's
list ends exactly 0..n-1: nothing lost, nothing applied twice, order kept.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import WorkerGroup, wait_for

Workers = Callable[..., WorkerGroup]


class Chaos(threading.Thread):
    """Every `period` seconds SIGKILL a random pool process; now and then a whole worker,
    replaced by a new one; and run a sweep (the beat's job) so abandoned drains resume."""

    def __init__(self, group: WorkerGroup, period: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.group, self.period = group, period
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills = {"process": 0, "worker": 0}
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stop.wait(self.period):
                self.strike()
                self.group.client.sweep(force=True)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def strike(self) -> None:
        alive = [i for i, p in enumerate(self.group.procs) if p.poll() is None]
        if not alive:
            return
        index = self.rng.choice(alive)
        if self.rng.random() < 0.15 and len(alive) > 1:
            self.group.kill(index)
            self.group.start(1, wait=False)
            self.kills["worker"] += 1
            return
        children = self.group.child_pids(self.group.procs[index])
        if children:
            try:
                os.kill(self.rng.choice(children), signal.SIGKILL)
                self.kills["process"] += 1
            except ProcessLookupError:
                pass


def run_chaos(workers: Workers, sessions: int, per_session: int, period: float,
              seed: int) -> None:
    group = workers(3, concurrency=2, lease_ttl=0.5, max_attempts=50)
    c = group.client
    sids = [c.create_session().id for _ in range(sessions)]
    chaos = Chaos(group, period, seed)
    chaos.start()
    last = {}
    # Each session's work lasts at least three chaos periods, so kills land mid-work however
    # fast the machine (0.003 s actions once finished before the first strike).
    seconds = max(0.003, 3 * period / per_session)
    try:
        for i in range(per_session):
            if i == per_session // 2:  # strikes must land while work is still pending
                wait_for(lambda: sum(chaos.kills.values()) >= 2, 30, message="two strikes")
            for sid in sids:
                last[sid] = c.send(sid, "test.slow_append", {"value": i, "seconds": seconds})
        deadline = time.monotonic() + 60 + sessions * per_session * 0.02
        for handle in last.values():
            handle.get(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        chaos.stop.set()
        chaos.join(30)
    assert chaos.errors == []
    assert chaos.kills["process"] + chaos.kills["worker"] > 0
    for sid in sids:
        assert c.get_state(sid)["items"] == list(range(per_session)), sid
        sk = c.layer.keys.session(sid)
        assert c.layer.redis.llen(sk.mailbox) == 0


@pytest.mark.brokers
def test_chaos_short(workers: Workers) -> None:
    """Short chaos: 8 sessions x 40 actions while processes are killed every 0.4 s."""
    run_chaos(workers, sessions=8, per_session=40, period=0.4, seed=1)


@pytest.mark.soak
def test_chaos_soak(workers: Workers) -> None:
    """Long chaos (--soak): 40 sessions x 250 actions, a kill every 0.25 s."""
    run_chaos(workers, sessions=40, per_session=250, period=0.25, seed=2)
