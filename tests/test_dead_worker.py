"""Every message a dead worker held comes back in seconds on the Redis broker, not after
`visibility_timeout` (an hour): the app's own running tasks as well as jido-tasks' messages.
A live worker's long task is never given to another worker (real redis-server, real workers,
SIGKILL of a whole worker)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

from tests.conftest import WorkerGroup, wait_for

Workers = Callable[..., WorkerGroup]
RESTORED_WITHIN = 45.0
"""The promise: a dead worker's unacknowledged messages run again within this many seconds."""


def starts(r: redis.Redis, key: str) -> list[tuple[str, float]]:
    """The (hostname, time) of each start `tests.nap` recorded under `key`."""
    return [(host, float(at)) for host, _, at in
            (item.decode().partition("|") for item in r.lrange(key, 0, -1))]


def test_a_killed_workers_running_tasks_and_queued_sends_come_back(
        workers: Workers, figures: Callable[[str], None]) -> None:
    """The probe of the issue: a worker (-c 2) runs two app tasks of 8 s, with 24
    `jido_tasks.send` messages queued behind them, and is SIGKILLed as a whole; a second
    worker starts at once. Every by-name action is applied once, and both running tasks start
    again on the live worker within 45 s of the kill (kombu alone: after an hour)."""
    group = workers(1, concurrency=2)
    settings = group.settings
    r = redis.Redis.from_url(settings.redis_dsn)
    app, client = group.client.celery, group.client
    sid = client.create_session().id
    keys = [f"nap:{uuid.uuid4().hex}" for _ in range(2)]
    naps = [app.send_task("tests.nap", args=[settings.redis_dsn, key, 8.0],
                          queue=settings.queue) for key in keys]
    wait_for(lambda: all(starts(r, key) for key in keys), 30, message="both naps running")
    sends = [app.send_task("jido_tasks.send", args=[sid, "test.append"],
                           kwargs={"params": {"value": i}}, queue=settings.queue)
             for i in range(24)]
    first_host = starts(r, keys[0])[0][0]

    group.kill(0)
    killed_at = time.time()
    group.start(1, concurrency=2, wait=False)
    group.wait_ready(1)  # the dead one does not answer

    def restarted() -> bool:
        return all(len(starts(r, key)) >= 2 for key in keys)
    wait_for(restarted, RESTORED_WITHIN + 5, interval=0.5, message="the naps to start again")
    delays = []
    for key in keys:
        (host1, _), (host2, at2) = starts(r, key)[:2]
        assert host1 == first_host and host2 != first_host, starts(r, key)
        delays.append(at2 - killed_at)
    assert max(delays) <= RESTORED_WITHIN, delays
    figures(f"a SIGKILLed worker's 2 running app tasks started again on the live worker "
            f"{min(delays):.1f} and {max(delays):.1f} s after the kill (goal <= 45 s)")
    for result in naps:
        assert result.get(timeout=30) != first_host
    for result in sends:
        result.get(timeout=60)
    items = client.get_state(sid)["items"]
    assert sorted(items) == list(range(24)), items  # each applied once
    assert all(len(starts(r, key)) == 2 for key in keys)


def test_a_live_workers_long_task_is_not_started_twice(workers: Workers) -> None:
    """A task running 90 s on a live worker (past the liveness TTL and many restore scans of
    another worker) runs once: only a dead holder's messages are given back."""
    group = workers(2, concurrency=1)
    settings = group.settings
    r = redis.Redis.from_url(settings.redis_dsn)
    key = f"nap:{uuid.uuid4().hex}"
    result = group.client.celery.send_task("tests.nap", args=[settings.redis_dsn, key, 90.0],
                                           queue=settings.queue)
    host = result.get(timeout=150)
    assert [h for h, _ in starts(r, key)] == [host]
