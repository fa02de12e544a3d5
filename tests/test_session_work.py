"""Session work on real Celery workers: order, single writer, exactly-once, isolation."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from jido_tasks import (
    ActionCancelled,
    ActionFailed,
    ActionStatus,
    AsyncClient,
    Client,
    InvalidParams,
    Outcome,
    SessionNotActive,
    SessionNotFound,
    SessionStatus,
    UnknownAction,
)
from jido_tasks.errors import ActionNotFound, InvalidSessionId
from jido_tasks.store import scripts
from tests.conftest import WorkerGroup, wait_for


@pytest.fixture(params=["single", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> str:
    """This module's tests run on a single Redis and on the three-master Redis Cluster."""
    return str(request.param)

Workers = Callable[..., WorkerGroup]


def mailbox_keys(client: Client, sid: str) -> tuple[int, int]:
    sk = client.layer.keys.session(sid)
    return client.layer.redis.llen(sk.mailbox), client.layer.redis.hlen(sk.pending)


def test_send_call_and_record(workers: Workers) -> None:
    """send returns a handle; get returns the result; the record tells status and attempts."""
    c = workers(1).client
    sid = c.create_session().id
    handle = c.send(sid, "test.append", {"value": "a"})
    assert handle.get(timeout=20) == 1
    rec = handle.record()
    assert rec.status is ActionStatus.SUCCEEDED
    assert (rec.action, rec.params, rec.result, rec.attempts) == ("test.append", {"value": "a"},
                                                                 1, 1)
    assert c.call(sid, "test.greet", {"name": "ann", "times": 2}) == "hello ann hello ann"
    assert c.get_state(sid) == {"items": ["a"]}
    assert mailbox_keys(c, sid)[0] == 0


def test_bad_sends_raise_typed_errors_and_enqueue_nothing(client: Client) -> None:
    """Malformed action name, non-object params, oversized params, invalid model, inactive
    session. (A well-formed name this process has not registered is accepted and validated by
    the worker: see tests/test_reach.py.)"""
    sid = client.create_session().id
    with pytest.raises(UnknownAction) as unknown:
        client.send(sid, "No Such/Action")
    assert unknown.value.action == "No Such/Action" and unknown.value.session_id == sid
    with pytest.raises(InvalidParams, match="JSON object"):
        client.send(sid, "test.append", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidParams, match="not JSON"):
        client.send(sid, "test.append", {"value": object()})
    big = "x" * (client.settings.max_params_bytes + 1)
    with pytest.raises(InvalidParams, match="over the limit"):
        client.send(sid, "test.append", {"value": big})
    with pytest.raises(InvalidParams) as invalid:
        client.send(sid, "test.greet", {"times": 2})
    assert invalid.value.action == "test.greet" and "name" in invalid.value.problem
    with pytest.raises(InvalidSessionId):
        client.send("../etc/passwd", "test.append")
    with pytest.raises(SessionNotFound):
        client.send("session_" + "0" * 32, "test.append")
    assert mailbox_keys(client, sid) == (0, 0)
    client.terminate_session(sid)
    with pytest.raises(SessionNotActive) as inactive:
        client.send(sid, "test.append", {"value": 1})
    assert inactive.value.status == "terminated"
    assert mailbox_keys(client, sid) == (0, 0)


def test_get_times_out_without_workers(client: Client) -> None:
    """With no worker running, get(timeout) raises TimeoutError and the action stays pending."""
    sid = client.create_session().id
    handle = client.send(sid, "test.append", {"value": 1})
    with pytest.raises(TimeoutError):
        handle.get(timeout=0.3)
    assert handle.status() is ActionStatus.PENDING
    with pytest.raises(ActionNotFound):
        client.action(sid, "act_" + "0" * 32)


@pytest.mark.brokers
def test_order_many_sessions_three_workers(workers: Workers) -> None:
    """3 workers, 20 sessions x 100 sends: every session's list is exactly 0..99 in order."""
    group = workers(3)
    c = group.client
    sids = [c.create_session().id for _ in range(20)]
    handles = []
    for i in range(100):
        for sid in sids:
            handles.append(c.send(sid, "test.append", {"value": i}))
    for handle in handles[-20:]:
        handle.get(timeout=120)
    for sid in sids:
        wait_for(lambda s=sid: len(c.get_state(s).get("items", [])) == 100, 60)
        assert c.get_state(sid)["items"] == list(range(100))
    assert all(h.status() is ActionStatus.SUCCEEDED for h in handles[::97])


def test_stale_fencing_token_cannot_commit(client: Client) -> None:
    """A worker whose lease expired cannot write: its commit is refused atomically."""
    layer = client.layer
    sid = client.create_session().id
    client.send(sid, "test.append", {"value": 1})  # no workers: stays pending
    first = layer.call(scripts.claim(sid, worker="worker-a", lease_ms=60_000, batch_size=10))
    assert isinstance(first, scripts.Claimed)
    token_a, aid = first.token, first.batch.actions[0].id
    layer.redis.delete(layer.keys.session(sid).lease)  # worker-a's lease expires
    second = layer.call(scripts.claim(sid, worker="worker-b", lease_ms=60_000, batch_size=10))
    assert isinstance(second, scripts.Claimed) and int(second.token) == int(token_a) + 1
    outcome = Outcome(status=ActionStatus.SUCCEEDED, result=1).to_json()

    def commit(token: str, items: str) -> scripts.Tag:
        return layer.call(scripts.commit(sid, token=token, changes={"items": items},
                                         migrate=False, events="[]", keep=100, last=False,
                                         outcomes=[(aid, outcome)]))

    assert commit(token_a, '["stale"]') is scripts.Tag.STALE
    assert client.get_state(sid) == {}
    assert layer.redis.llen(layer.keys.session(sid).mailbox) == 1
    assert commit(second.token, "[1]") is scripts.Tag.OK
    assert client.get_state(sid) == {"items": [1]}
    # A second lease holder is refused while the first is alive.
    client.send(sid, "test.append", {"value": 2})
    third = layer.call(scripts.claim(sid, worker="worker-c", lease_ms=60_000, batch_size=10))
    assert isinstance(third, scripts.Busy)


def _started(client: Client, key: str, n: int = 1, timeout: float = 30) -> list[int]:
    wait_for(lambda: client.layer.redis.llen(key) >= n, timeout, message=f"{key} started")
    return [int(p) for p in client.layer.redis.lrange(key, 0, -1)]


@pytest.mark.brokers
def test_sigkill_mid_action_applies_exactly_once_and_recovers_fast(workers: Workers) -> None:
    """SIGKILL the process running an action: it is applied once, by another process, and
    the session resumes within a few lease periods, with later actions in order."""
    group = workers(2, lease_ttl=1.0)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    c.send(sid, "test.slow_append", {"value": 0, "seconds": 2.0, "started_key": key})
    handles = [c.send(sid, "test.append", {"value": i}) for i in range(1, 10)]
    pid = _started(c, key)[0]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert handles[-1].get(timeout=60) == 10
    recovered_in = time.monotonic() - killed_at
    assert c.get_state(sid)["items"] == list(range(10))
    pids = _started(c, key, 2)
    assert pids[1] != pid  # the retry ran in another process
    # Recovery is bounded by the lease (1 s) plus the action (2 s), not the broker's
    # visibility timeout (an hour).
    assert recovered_in < 15, recovered_in


def test_failing_action_is_isolated(workers: Workers) -> None:
    """An action that raises fails alone: state unchanged, error recorded, next ones run;
    one past its time limit likewise."""
    c = workers(1).client
    sid = c.create_session().id
    c.call(sid, "test.append", {"value": 1})
    with pytest.raises(ActionFailed) as failed:
        c.call(sid, "test.fail", {"message": "nope"})
    assert (failed.value.error_type, failed.value.error_message) == ("ValueError", "nope")
    with pytest.raises(ActionFailed) as slow:
        c.call(sid, "test.sleep", {"seconds": 5})
    assert slow.value.error_type == "ActionTimeLimitExceeded"
    with pytest.raises(ActionFailed) as not_json:
        c.call(sid, "test.not_json")
    assert not_json.value.error_type == "TypeError"
    assert c.call(sid, "test.append", {"value": 2}) == 2
    assert c.get_state(sid) == {"items": [1, 2]}
    types = [e.type for e in c.events(sid)]
    assert types.count("action.failed") == 3


@pytest.mark.brokers
def test_poison_action_is_failed_after_bounded_retries(workers: Workers) -> None:
    """An action that kills its worker every time is retried max_attempts times, then failed
    as poison; the session goes on and another session is unaffected."""
    group = workers(2, lease_ttl=0.5, max_attempts=2)
    c = group.client
    sid, other = c.create_session().id, c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    poison = c.send(sid, "test.kill_worker", {"started_key": key})
    after = c.send(sid, "test.append", {"value": "after"})
    others = [c.send(other, "test.append", {"value": i}) for i in range(50)]
    with pytest.raises(ActionFailed) as failed:
        poison.get(timeout=90)
    assert failed.value.error_type == "PoisonAction"
    assert after.get(timeout=30) == 1
    assert c.get_state(sid) == {"items": ["after"]}
    assert len(c.layer.redis.lrange(key, 0, -1)) == 2  # ran exactly max_attempts times
    assert others[-1].get(timeout=30) == 50
    assert c.get_state(other)["items"] == list(range(50))


def test_terminate_cancels_pending_and_lets_running_finish(workers: Workers) -> None:
    """drain=False: terminating refuses sends, the running action finishes, pending ones are
    cancelled, then the session is terminated."""
    c = workers(1).client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    running = c.send(sid, "test.slow_append", {"value": 0, "seconds": 1.0, "started_key": key})
    pending = [c.send(sid, "test.append", {"value": i}) for i in range(1, 6)]
    _started(c, key)
    entry = c.terminate_session(sid, reason="user left")
    assert entry.status is SessionStatus.TERMINATING and entry.reason == "user left"
    with pytest.raises(SessionNotActive):
        c.send(sid, "test.append", {"value": 99})
    assert running.get(timeout=20) == 1
    for handle in pending:
        with pytest.raises(ActionCancelled):
            handle.get(timeout=5)
    wait_for(lambda: c.get_session(sid).status is SessionStatus.TERMINATED, 20)
    assert c.get_state(sid) == {"items": [0]}
    assert c.get_session(sid).reason == "user left"
    types = [e.type for e in c.events(sid)]
    assert types.count("action.cancelled") == 5 and types[-1] == "session.terminated"


def test_terminate_with_drain_finishes_pending_first(workers: Workers) -> None:
    """drain=True: pending actions run to the end, then the session is terminated."""
    c = workers(1).client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    c.send(sid, "test.slow_append", {"value": 0, "seconds": 0.5, "started_key": key})
    pending = [c.send(sid, "test.append", {"value": i}) for i in range(1, 6)]
    _started(c, key)
    assert c.terminate_session(sid, drain=True).status is SessionStatus.TERMINATING
    assert pending[-1].get(timeout=20) == 6
    wait_for(lambda: c.get_session(sid).status is SessionStatus.TERMINATED, 20)
    assert c.get_state(sid)["items"] == list(range(6))


def test_terminate_without_pending_work_is_immediate(client: Client) -> None:
    """No lease and nothing pending: terminated at once; pending work without a worker is
    cancelled at once."""
    sid = client.create_session().id
    handle = client.send(sid, "test.append", {"value": 1})
    entry = client.terminate_session(sid)
    assert entry.status is SessionStatus.TERMINATED
    with pytest.raises(ActionCancelled):
        handle.get(timeout=1)
    assert client.layer.redis.zscore(client.layer.keys.group_for(sid).scheduled, sid) is None


def test_send_and_apply_touch_activity(workers: Workers) -> None:
    """Every accepted send and every applied action moves last_activity forward; an idle
    session becomes active again."""
    c = workers(1).client
    sid = c.create_session().id
    c.sessions.transition(sid, "idle")
    before = c.get_session(sid).last_activity
    handle = c.send(sid, "test.slow_append", {"value": 1, "seconds": 0.2})
    sent = c.get_session(sid)
    assert sent.status is SessionStatus.ACTIVE and sent.last_activity > before
    handle.get(timeout=20)
    applied = c.get_session(sid).last_activity
    assert applied > sent.last_activity
    score = c.layer.redis.zscore(c.layer.keys.group_for(sid).activity, sid)
    assert score == pytest.approx(applied.timestamp(), abs=1e-3)


def test_progress_and_cancel(workers: Workers, tmp_path: Path) -> None:
    """Progress shows in status() and as an event; a pending action can be cancelled, a
    running one cannot."""
    c = workers(1).client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    gate = tmp_path / "gate"
    running = c.send(sid, "test.progress", {"started_key": key, "gate_file": str(gate)})
    queued = c.send(sid, "test.append", {"value": 1})
    _started(c, key)
    wait_for(lambda: running.progress() is not None, 10)
    assert running.status() is ActionStatus.RUNNING
    assert running.progress() == {"fraction": 0.5, "message": "half way"}
    assert running.cancel() is False
    assert queued.cancel() is True
    assert queued.status() is ActionStatus.CANCELLED
    gate.touch()
    assert running.get(timeout=20) == "done"
    with pytest.raises(ActionCancelled):
        queued.get(timeout=1)
    assert queued.cancel() is False
    assert "items" not in c.get_state(sid)
    types = [e.type for e in c.events(sid)]
    assert "action.progress" in types and "action.cancelled" in types


def test_many_waiters_on_one_action(workers: Workers) -> None:
    """Several threads waiting on the same action all get its result."""
    c = workers(1).client
    sid = c.create_session().id
    handle = c.send(sid, "test.slow_append", {"value": 1, "seconds": 0.5})
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(handle.get(timeout=20)))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 5


def test_poison_inside_a_commit_group_spares_the_actions_around_it(workers: Workers) -> None:
    """Actions queued before a worker starts are applied in commit groups; a poison action in
    the middle of a group kills the worker before the group commits. After the reclaim the
    actions are committed one by one: the ones before it are applied once, it is failed as
    poison, the ones after it follow in order."""
    group = workers(1, wait=False, lease_ttl=0.5, max_attempts=2)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    before = [c.send(sid, "test.append", {"value": i}) for i in range(5)]
    poison = c.send(sid, "test.kill_worker", {"started_key": key})
    after = [c.send(sid, "test.append", {"value": i}) for i in range(5, 10)]
    group.wait_ready(1)
    assert after[-1].get(timeout=90) == 10
    with pytest.raises(ActionFailed) as failed:
        poison.get(timeout=5)
    assert failed.value.error_type == "PoisonAction"
    assert c.get_state(sid)["items"] == list(range(10))
    assert all(h.record().attempts >= 1 for h in before)
    # Its first run may have been inside a group (not counted): max_attempts or one more.
    assert 2 <= c.layer.redis.llen(key) <= 3


def test_heartbeat_keeps_the_lease_of_a_long_action(workers: Workers) -> None:
    """An action running four lease periods keeps its lease: a sweep finds nothing to recover,
    no other worker claims the session, and the action runs once."""
    group = workers(2, lease_ttl=0.5)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    handle = c.send(sid, "test.slow_append", {"value": 1, "seconds": 2.0, "started_key": key})
    _started(c, key)
    fence = c.layer.redis.hget(c.layer.keys.session(sid).entry, "fence")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # several lease periods, sweeping as beat would
        assert c.sweep(force=True).recovered == 0
        assert c.layer.redis.exists(c.layer.keys.session(sid).lease)
        time.sleep(0.25)
    assert handle.get(timeout=10) == 1
    assert c.layer.redis.llen(key) == 1
    assert handle.record().attempts == 1
    assert c.layer.redis.hget(c.layer.keys.session(sid).entry, "fence") == fence


def test_send_many_is_ordered_and_all_or_nothing(workers: Workers) -> None:
    """send_many queues every action in order in one step, or none of them."""
    c = workers(1).client
    sid = c.create_session().id
    handles = c.send_many(sid, [("test.append", {"value": i}) for i in range(50)]
                          + ["test.noop"])
    assert [h.action for h in handles][-2:] == ["test.append", "test.noop"]
    assert handles[-2].get(timeout=30) == 50
    assert c.get_state(sid)["items"] == list(range(50))
    mailbox = c.layer.keys.session(sid).mailbox
    handles[-1].get(timeout=10)
    with pytest.raises(InvalidParams):
        c.send_many(sid, [("test.append", {"value": 1}), ("test.append", [1])])
    with pytest.raises(UnknownAction):
        c.send_many(sid, [("test.append", {"value": 1}), "No.such"])
    assert c.layer.redis.llen(mailbox) == 0
    c.terminate_session(sid)
    with pytest.raises(SessionNotActive):
        c.send_many(sid, ["test.noop", "test.noop"])
    assert c.layer.redis.llen(mailbox) == 0
    assert c.send_many(sid, []) == []


def test_publishing_a_drain_subscribes_to_no_result(client: Client, settings: Any) -> None:
    """A send that publishes its session's drain does not subscribe the client to the drain's
    Celery result (nobody reads it, and the drain stores none): no SUBSCRIBE (nor the
    UNSUBSCRIBE after it) per publish. Sync and async alike."""
    backend = redis.Redis.from_url(settings.backend, decode_responses=True)

    def subscribes() -> int:
        stats = backend.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                   for name in ("subscribe", "unsubscribe"))
    before = subscribes()
    for _ in range(3):
        client.send(client.create_session().id, "test.append", {"value": 1})

    async def async_sends() -> None:
        ac = AsyncClient(settings)
        try:
            for _ in range(3):
                await ac.send((await ac.create_session()).id, "test.append", {"value": 1})
        finally:
            await ac.close()
    asyncio.run(async_sends())
    assert subscribes() == before
    backend.close()
