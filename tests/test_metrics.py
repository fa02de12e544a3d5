"""Counters kept by the scripts (the `metrics` hash), the action.succeeded event, attempts of a
running action, and idempotent termination."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from jido_tasks import AsyncClient, Client, SessionStatus, Settings
from jido_tasks.core.counters import DURATION_BUCKETS
from jido_tasks.errors import ActionFailed
from jido_tasks.models import ActionStatus
from jido_tasks.ops.monitoring import read_counters
from jido_tasks.store import scripts
from tests.conftest import BurstClient, WorkerGroup, burst, wait_for
from tests.test_web import web_server

TINY = {"timeout_minutes": 0.01}  # 0.6 s


def redis_now(c: Client) -> float:
    sec, usec = c.layer.redis.time()
    return float(sec) + float(usec) / 1e6


def settle(c: Client, handles: list[Any]) -> None:
    """Wait for every handle; failures are expected for some."""
    for handle in handles:
        with contextlib.suppress(ActionFailed):
            handle.get(timeout=90)


def test_counters_are_exact_across_two_workers(workers: Callable[..., WorkerGroup]) -> None:
    """A known workload on 2 workers x 2 processes (with a poison action killing pool
    processes, cancellations, a termination, a recovery, an expiry, purges and a snapshot
    saved, restored and deleted): /metrics, scraped over HTTP with basic auth, counts exactly
    what happened."""
    group = workers(2, concurrency=2, lease_ttl=0.5, max_attempts=2, retention=0.5)
    c = group.client
    expired = c.create_session(config=TINY).id
    work = [c.create_session().id for _ in range(4)]
    handles = [c.send(sid, "test.fail" if i % 4 == 3 else "test.append", {"value": i})
               for i in range(13) for sid in work]  # per session: 10 appends, 3 failures
    poisoned = c.create_session().id
    started = f"{c.settings.namespace}:test:started"
    poison = c.send(poisoned, "test.kill_worker", {"started_key": started})
    handles.append(c.send(poisoned, "test.append", {"value": "after"}))

    # A termination withdraws 5 pending no-ops while a slow action runs.
    terminated = c.create_session().id
    slow_key = f"{c.settings.namespace}:test:slow"
    slow = c.send(terminated, "test.slow_append", {"value": 1, "seconds": 1.5,
                                                    "started_key": slow_key})
    for _ in range(5):
        c.send(terminated, "test.noop")
    # One pending action cancelled by itself, behind another slow one.
    cancelled = c.create_session().id
    slow2 = c.send(cancelled, "test.slow_append", {"value": 1, "seconds": 1.5,
                                                    "started_key": slow_key})
    withdrawn = c.send(cancelled, "test.append", {"value": 2})
    handles.append(c.send(cancelled, "test.append", {"value": 3}))
    wait_for(lambda: c.layer.redis.llen(slow_key) == 2, 30, 0.05, "both slow actions to start")
    assert withdrawn.cancel()
    c.terminate_session(terminated)

    with pytest.raises(ActionFailed) as failed:
        poison.get(timeout=90)
    assert failed.value.error_type == "PoisonAction"
    settle(c, [*handles, slow, slow2])
    wait_for(lambda: c.get_session(terminated).status is SessionStatus.TERMINATED, 10, 0.05,
             "the termination to end")
    # Again: idempotent, neither an error nor a second count.
    assert c.terminate_session(terminated).status is SessionStatus.TERMINATED

    # A lost drain message (the send script alone, no publish) is recovered by a sweep.
    recovered = c.create_session().id
    aid = "act_" + uuid.uuid4().hex
    request = json.dumps({"action": "test.append", "params": {"value": 1}, "created_at": 0})
    assert c.layer.call(scripts.send(recovered, action_id=aid, action="test.append",
                                     request=request, digest="",
                                     stale_after=c.settings.stale_after)).publish
    flag = float(c.layer.redis.zscore(c.layer.keys.group_for(recovered).scheduled, recovered) or 0)
    wait_for(lambda: redis_now(c) > flag + c.settings.stale_after + 0.05, 10, 0.05,
             "the drain flag to go stale")
    deadline = c.get_session(expired).last_activity.timestamp() + 0.6
    wait_for(lambda: redis_now(c) > deadline, 10, 0.05, "the short session's timeout")
    report = c.sweep()
    assert (report.recovered, report.expired) == (1, 1)
    purged = report.purged  # `terminated`, if past its retention already
    assert c.handle(recovered, aid).get(timeout=30) == 1

    saved = c.save_session(work[0]).id
    restored = c.restore_session(saved).id
    c.delete_saved_session(saved)

    everyone = [*work, poisoned, cancelled, recovered, restored]
    for sid in everyone:
        c.terminate_session(sid)
    wait_for(lambda: all(c.get_session(sid).status is SessionStatus.TERMINATED
                         for sid in everyone), 30, 0.1, "every session to be terminated")
    everyone += [terminated]

    def all_purged() -> bool:
        nonlocal purged
        purged += c.sweep().purged
        return purged == len(everyone) + 1
    wait_for(all_purged, 15, 0.2, "every session to be purged")

    with web_server(c.settings) as web:
        m = web.metrics()

    def actions(action: str, outcome: str) -> float:
        return m.get(f"jido_tasks_actions_total{{action={action},outcome={outcome}}}", 0.0)

    appends = 4 * 10 + 1 + 1 + 1  # work sessions, after the poison, behind slow2, recovered
    assert actions("test.append", "succeeded") == appends
    assert actions("test.fail", "failed") == 4 * 3
    assert actions("test.kill_worker", "poison") == 1
    assert actions("test.kill_worker", "failed") == 0
    assert actions("test.slow_append", "succeeded") == 2
    assert actions("test.noop", "cancelled") == 5
    assert actions("test.append", "cancelled") == 1
    counted = {k for k, v in m.items() if k.startswith("jido_tasks_actions_total") and v}
    assert len(counted) == 6, counted

    sessions = len(everyone) + 1  # and the expired one
    assert {e: m[f"jido_tasks_sessions_total{{event={e}}}"] for e in
            ("created", "terminated", "expired", "purged", "recovered", "restored")} == {
        "created": sessions, "terminated": sessions, "expired": 1, "purged": sessions,
        "recovered": 1, "restored": 1}
    assert {op: m[f"jido_tasks_snapshots_total{{op={op}}}"] for op in
            ("saved", "restored", "deleted")} == {"saved": 1, "restored": 1, "deleted": 1}

    def hist(action: str, suffix: str, le: str | None = None) -> float:
        labels = f"action={action}" + (f",le={le}" if le else "")
        return m.get(f"jido_tasks_action_duration_seconds_{suffix}{{{labels}}}", -1.0)

    for action, runs in (("test.append", appends), ("test.fail", 12),
                         ("test.slow_append", 2)):
        assert hist(action, "count") == runs
        assert hist(action, "bucket", "+Inf") == runs
        buckets = [hist(action, "bucket", le) for le in DURATION_BUCKETS]
        assert buckets == sorted(buckets) and buckets[0] >= 0
    assert hist("test.slow_append", "bucket", "1") == 0  # 1.5 s each
    assert hist("test.slow_append", "bucket", "2.5") == 2
    assert 3.0 <= hist("test.slow_append", "sum") < 5.0
    assert 0 < hist("test.append", "sum") < appends * 0.5
    assert hist("test.kill_worker", "count") == -1  # poison never ran to its end: no sample
    assert hist("test.noop", "count") == -1

    # The event stream tells the same story: one action.succeeded per succeeded action.
    succeeded = [e.data for e in c.events() if e.type == "action.succeeded"]
    assert len(succeeded) == appends + 2
    assert sum(1 for e in succeeded if e["action"] == "test.append") == appends


def test_counters_off_write_nothing(settings: Settings, raw_redis: redis.Redis) -> None:
    """With `metrics_counters` off no script touches the metrics hash."""
    c = BurstClient(settings.model_copy(update={"metrics_counters": False}))
    try:
        sid = c.create_session().id
        assert c.call(sid, "test.append", {"value": 1}) == 1
        c.terminate_session(sid)
        assert not any(raw_redis.exists(g.metrics) for g in c.layer.keys.groups())
    finally:
        c.close()


def test_commit_counts_each_action_and_its_bucket(burst_client: BurstClient) -> None:
    """One drain of a group: the fields written are exactly the documented ones."""
    c = burst_client
    sid = c.create_session().id
    for i in range(3):
        c.send(sid, "test.append", {"value": i})
    c.send(sid, "test.fail")
    assert burst(c, sid) == 4
    raw = c.layer.redis.hgetall(c.layer.keys.group_for(sid).metrics)
    buckets = {k: v for k, v in raw.items() if k.startswith("duration_bucket:")}
    assert sum(int(v) for v in buckets.values()) == 4
    assert {k.rsplit(":", 1)[1] for k in buckets} == {"test.append", "test.fail"}
    assert (raw["actions:succeeded:test.append"], raw["actions:failed:test.fail"]) == ("3", "1")
    assert (raw["duration_count:test.append"], raw["duration_count:test.fail"]) == ("3", "1")
    assert float(raw["duration_sum:test.append"]) > 0
    assert raw["sessions:created"] == "1"
    counters = read_counters(c.layer)
    assert counters.durations["test.append"].cumulative()[-1] == ("+Inf", 3.0)


def test_action_succeeded_event_and_running_attempts(workers: Callable[..., WorkerGroup],
                                                     ) -> None:
    """A running first attempt shows attempts 1; its success is an event with id and name."""
    group = workers(1)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    handle = c.send(sid, "test.slow_append", {"value": 1, "seconds": 1.0, "started_key": key})
    wait_for(lambda: c.layer.redis.llen(key) == 1, 30, 0.02, "the action to start")
    record = handle.record()
    assert (record.status, record.attempts) == (ActionStatus.RUNNING, 1)
    assert handle.get(timeout=30) == 1
    assert handle.record().attempts == 1
    ev = [e for e in c.events(sid) if e.type == "action.succeeded"]
    assert len(ev) == 1
    assert ev[0].data["action_id"] == handle.id
    assert ev[0].data["action"] == "test.slow_append"
    assert ev[0].data["attempts"] == 1
    assert 1.0 <= ev[0].data["duration"] < 5.0
    types = [e.type for e in c.events(sid)]
    assert types.index("action.succeeded") > types.index("session.created")


def _lease(c: Client, sid: str) -> None:
    """Hold the session's lease as a worker would while running its head action."""
    claimed = c.layer.call(scripts.claim(sid, worker="test", lease_ms=60_000, batch_size=1))
    assert isinstance(claimed, scripts.Claimed)


def test_terminate_is_idempotent(burst_client: BurstClient) -> None:
    """A terminated session is returned unchanged, a terminating one as it is: no error, no
    event, no second count."""
    c = burst_client
    done = c.create_session().id
    first = c.terminate_session(done)
    assert first.status is SessionStatus.TERMINATED
    stream = c.layer.keys.group_for(done).events
    events = c.layer.redis.xlen(stream)
    again = c.terminate_session(done, reason="twice")
    assert again == first
    assert c.layer.redis.xlen(stream) == events

    busy = c.create_session().id
    c.send(busy, "test.append", {"value": 1})
    c.send(busy, "test.append", {"value": 2})
    _lease(c, busy)
    going = c.terminate_session(busy)
    assert going.status is SessionStatus.TERMINATING
    assert c.terminate_session(busy, drain=True) == going
    assert c.layer.redis.llen(c.layer.keys.session(busy).mailbox) == 1  # the running head
    counters = read_counters(c.layer)
    assert counters.sessions["terminated"] == 1
    assert counters.actions[("test.append", "cancelled")] == 1


def test_async_terminate_is_idempotent(settings: Settings) -> None:
    """AsyncClient.terminate_session goes through the same plan."""
    async def main() -> None:
        async with AsyncClient(settings) as c:
            sid = (await c.create_session()).id
            first = await c.terminate_session(sid)
            assert first.status is SessionStatus.TERMINATED
            assert await c.terminate_session(sid) == first

            busy = (await c.create_session()).id
            await c.send(busy, "test.append", {"value": 1})
            sync = Client(settings)
            try:
                _lease(sync, busy)
            finally:
                sync.close()
            going = await c.terminate_session(busy)
            assert going.status is SessionStatus.TERMINATING
            assert await c.terminate_session(busy) == going
    asyncio.run(main())


def test_cancel_counts_requests_not_written_by_python(settings: Settings,
                                                     raw_redis: redis.Redis) -> None:
    """A request whose JSON does not start with the action name (another writer) is still
    counted under its name."""
    c = Client(settings)
    try:
        sid = c.create_session().id
        odd = "act_" + uuid.uuid4().hex
        request = json.dumps({"params": {}, "created_at": 0, "action": "other.lang"})
        c.layer.call(scripts.send(sid, action_id=odd, action="other.lang", request=request,
                                  digest="", stale_after=60))
        c.send(sid, "test.append", {"value": 1})
        c.terminate_session(sid)
        raw = raw_redis.hgetall(c.layer.keys.group_for(sid).metrics)
        assert raw["actions:cancelled:other.lang"] == "1"
        assert raw["actions:cancelled:test.append"] == "1"
    finally:
        c.close()
