"""Reach: sessions by task name from any Celery client, idempotent sends, fleets that differ,
and every action visible in Flower (real workers, a real Flower with basic auth)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from celery import Celery

from jido_tasks import (
    ActionFailed,
    AsyncClient,
    Client,
    InvalidParams,
    SessionNotActive,
    UnknownAction,
)
from jido_tasks.errors import ActionIdConflict, InvalidActionId
from jido_tasks.models import ActionRequest, ActionStatus, Outcome, ReplyTo
from jido_tasks.settings import Settings
from jido_tasks.store import results, scripts
from jido_tasks.store.connection import RedisLayer
from jido_tasks.worker import drain as runtime
from jido_tasks.worker import reporting
from tests.conftest import (
    ROOT,
    BurstClient,
    RedisServer,
    WorkerGroup,
    burst,
    free_port,
    make_settings,
    wait_for,
    worker_env,
)

Workers = Callable[..., WorkerGroup]


def pure_client(settings: Settings, n: int) -> dict[str, Any]:
    """Run tests/pure_celery_client.py (no jido_tasks import) against the workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "pure_celery_client.py"),
                          settings.broker, settings.queue, str(n)],
                         capture_output=True, text=True, timeout=300, env=env, cwd="/")
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def celery_client(settings: Settings) -> Celery:
    """A plain Celery app (JSON only) as any Python app would build it."""
    app = Celery(broker=settings.broker, backend=settings.backend)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    result_accept_content=["json"])
    return app


def test_pure_celery_client_uses_sessions_by_name(workers: Workers) -> None:
    """create, 100 sends read in order, a duplicate delivery applied once, typed errors."""
    group = workers(1, keep_results=1000)
    out = pure_client(group.settings, 100)
    sid = out["session_id"]
    assert out["entry"]["status"] == "active" and out["entry"]["metadata"] == {"client": "pure"}
    assert out["results"] == list(range(1, 101))
    state = group.client.get_state(sid)
    assert out["state"] == state
    assert state["items"] == [*range(100), "dup"]  # the duplicate applied once
    assert out["dup_result"] == 101
    assert out["got"]["id"] == sid and sid in out["listed"]
    # The message id is the action id: the client's records know them.
    for aid in out["ids"]:
        assert group.client.action(sid, aid).status == "succeeded"
    assert group.client.action(sid, out["dup_id"]).result == 101
    assert out["failed"] == {
        "type": "ValueError", "message": "nope"}
    assert out["unknown"]["type"] == "UnknownAction"
    assert "no.such_action" in out["unknown"]["message"]
    assert out["bad_params"]["type"] == "InvalidParams"
    assert "name" in out["bad_params"]["message"]
    assert out["bad_session"]["type"] == "InvalidSessionId"
    # Nothing of the refused sends was written: 100 + dup + the failed action.
    sk = group.client.layer.keys.session(sid)
    assert group.client.layer.redis.llen(sk.records) == 3 * 102  # (id, ms, record) each
    assert group.client.layer.redis.llen(sk.mailbox) == 0


def test_client_send_with_action_id_is_idempotent(burst_client: Client) -> None:
    c = burst_client
    sid = c.create_session().id
    aid = f"act_{uuid.uuid4().hex}"
    first = c.send(sid, "test.append", {"value": 1}, action_id=aid)
    again = c.send(sid, "test.append", {"value": 1}, action_id=aid)  # a retry after a timeout
    assert first.id == again.id == aid
    sk = c.layer.keys.session(sid)
    assert c.layer.redis.lrange(sk.mailbox, 0, -1) == [aid]
    with pytest.raises(ActionIdConflict) as conflict:
        c.send(sid, "test.append", {"value": 2}, action_id=aid)
    assert (conflict.value.action_id, conflict.value.session_id) == (aid, sid)
    with pytest.raises(ActionIdConflict):
        c.send(sid, "test.noop", {"value": 1}, action_id=aid)
    with pytest.raises(InvalidActionId):
        c.send(sid, "test.append", {"value": 1}, action_id="act_../../x")
    with pytest.raises(InvalidActionId):
        c.send(sid, "test.append", {"value": 1}, action_id=str(uuid.uuid4()).upper())
    assert c.layer.redis.lrange(sk.mailbox, 0, -1) == [aid]
    assert burst(c, sid) == 1
    # After it ran, a retried send is still accepted once, and a retried call returns the result.
    assert c.send(sid, "test.append", {"value": 1}, action_id=aid).get(timeout=5) == 1
    assert Client.call(c, sid, "test.append", {"value": 1}, timeout=5, action_id=aid) == 1
    assert c.get_state(sid) == {"items": [1]}
    # A uuid (a Celery task id) is an action id too; params order does not change the content.
    uid = str(uuid.uuid4())
    c.send(sid, "test.greet", {"name": "a", "times": 1}, action_id=uid)
    c.send(sid, "test.greet", {"times": 1, "name": "a"}, action_id=uid)
    # send_many: items with ids; a retried batch is accepted once, a taken id refuses all.
    ids = [f"act_{uuid.uuid4().hex}" for _ in range(3)]
    items = [("test.append", {"value": v}, i) for v, i in zip((2, 3, 4), ids, strict=True)]
    c.send_many(sid, items)
    c.send_many(sid, items)
    assert c.layer.redis.lrange(sk.mailbox, 0, -1) == [uid, *ids]
    with pytest.raises(ActionIdConflict):
        c.send_many(sid, [("test.append", {"value": 9}), ("test.append", {"value": 5}, ids[0])])
    burst(c, sid)
    assert c.get_state(sid)["items"] == [1, 2, 3, 4]


def test_send_many_with_a_taken_id_refuses_the_whole_batch_before_queueing(
        settings: Settings) -> None:
    """An item whose id is taken by other content refuses the batch in the one script call,
    before anything is written: no action queued, no record, no event, no counter, and the
    batch's other ids stay free (sent again without the bad item, they are new actions).
    The async client behaves the same."""
    c = BurstClient(settings)
    try:
        sid = c.create_session().id
        r, sk = c.layer.redis, c.layer.keys.session(sid)
        taken = f"act_{uuid.uuid4().hex}"
        c.send(sid, "test.append", {"value": "first"}, action_id=taken)
        fresh = f"act_{uuid.uuid4().hex}"

        def stored() -> tuple[Any, ...]:
            return (r.lrange(sk.mailbox, 0, -1), r.hgetall(sk.pending),
                    r.lrange(sk.records, 0, -1), r.xlen(sk.events), r.hgetall(
                        c.layer.keys.group_for(sid).metrics))
        before = stored()
        batch = [("test.append", {"value": "a"}), ("test.append", {"value": "b"}, fresh),
                 ("test.append", {"value": "other"}, taken)]
        with pytest.raises(ActionIdConflict) as refused:
            c.send_many(sid, batch)
        assert (refused.value.session_id, refused.value.action_id) == (sid, taken)
        assert stored() == before

        async def via_async() -> None:
            async with AsyncClient(settings) as ac:
                with pytest.raises(ActionIdConflict) as again:
                    await ac.send_many(sid, batch)
                assert again.value.action_id == taken
        asyncio.run(via_async())
        assert stored() == before
        # The other ids were never taken: without the bad item the batch is new work.
        handles = c.send_many(sid, batch[:2])
        assert burst(c, sid) == 3
        assert [h.get(timeout=5) for h in handles] == [2, 3]
        assert c.get_state(sid)["items"] == ["first", "a", "b"]
        # A refused batch is checked before the status: a retry of accepted ids is accepted
        # again after the session ended, a batch with a new item is refused as inactive.
        c.terminate_session(sid)
        assert [h.id for h in c.send_many(sid, batch[1:2])] == [fresh]
        with pytest.raises(SessionNotActive):
            c.send_many(sid, batch[:2])
    finally:
        c.close()


BARE_SENDER = """
import json, sys
from jido_tasks import Client
from jido_tasks.core.actions import is_registered
c = Client()
assert not is_registered("test.greet")
sid = sys.argv[1]
hs = [c.send(sid, "test.greet", {"name": "x"}), c.send(sid, "test.greet", {"times": 2}),
      c.send(sid, "nobody.has_this")]
print(json.dumps([h.id for h in hs]))
c.close()
"""


def test_unregistered_action_is_validated_by_the_worker(client: Client) -> None:
    """A client process without the app's modules sends its actions; the worker validates
    them (UnknownAction / InvalidParams from handle.get(), state unchanged)."""
    sid = client.create_session().id
    env = worker_env(client.settings.model_copy(update={"action_modules": []}))
    res = subprocess.run([sys.executable, "-c", BARE_SENDER, sid], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    ok, bad, gone = json.loads(res.stdout)
    burst(client, sid)
    assert client.handle(sid, ok).get(timeout=5) == "hello x"
    with pytest.raises(ActionFailed) as invalid:
        client.handle(sid, bad).get(timeout=5)
    assert invalid.value.error_type == "InvalidParams"
    with pytest.raises(ActionFailed) as unknown:
        client.handle(sid, gone).get(timeout=5)
    assert unknown.value.error_type == "UnknownAction"
    assert client.get_state(sid) == {}


def test_locally_registered_actions_are_still_checked_at_the_edge(client: Client) -> None:
    sid = client.create_session().id
    with pytest.raises(InvalidParams):
        client.send(sid, "test.greet", {"times": 2})
    with pytest.raises(UnknownAction):
        client.send(sid, "Bad Name!")


def test_fleet_where_one_worker_lacks_the_app_actions(workers: Workers, tmp_path: Any) -> None:
    """Two workers on one queue, only one importing the app's modules: all 100 app actions
    apply; the other hands the session back and says so at WARNING."""
    full = workers(1)
    plain_settings = full.settings.model_copy(update={"action_modules": []})
    (tmp_path / "plain").mkdir()
    plain = WorkerGroup(plain_settings, tmp_path / "plain")
    plain.start(1, wait=False)
    try:
        full.wait_ready(2)
        c = full.client
        wait_for(lambda: len(_fleet(c)) == 2, 20, message="both workers registered")
        sids = [c.create_session().id for _ in range(4)]
        handles = [c.send(sid, "test.greet", {"name": str(i)}) for i in range(25) for sid in sids]
        assert [h.get(timeout=120) for h in handles] == [f"hello {i}" for i in range(25)
                                                          for _ in sids]
        wait_for(lambda: "lacks action 'test.greet'" in plain.logs(), 30,
                 message="the plain worker's warning")
        # Hand-backs are not crashes: no action came closer to poison.
        for h in handles:
            assert c.action(h.session_id, h.id).attempts == 1
    finally:
        plain.stop()


def _fleet(c: Client) -> dict[str, set[str]]:
    from jido_tasks.worker.fleet import live_actions

    return live_actions(c.layer)


def test_unknown_everywhere_fails_once_no_live_worker_has_it(workers: Workers) -> None:
    group = workers(1, action_modules=[])
    c = group.client
    sid = c.create_session().id
    handle = c.send(sid, "test.append", {"value": 1})  # the client has it, the worker not
    with pytest.raises(ActionFailed) as failed:
        handle.get(timeout=30)
    assert failed.value.error_type == "UnknownAction"
    assert "session " + sid in group.logs() or sid in group.logs()


@pytest.mark.brokers
def test_by_name_send_survives_a_sigkilled_worker(workers: Workers, broker: str,
                                                  redis_server: RedisServer,
                                                  figures: Callable[[str], None]) -> None:
    """By-name sends while a worker is SIGKILLed: every action applied once (a redelivered
    message comes back after the others: the broker's order, not the sender's), and every
    result readable through AsyncResult.

    On the Redis broker this holds thanks to the workers' fetch (`store.transport`): with
    kombu's BRPOP a worker killed between taking a message and recording it as unacknowledged
    loses it (kombu #305; seen here in about one run in eight before that fetch).

    On the Redis broker the test uses a database of its own: kombu's unacked-message hash and
    its restore mutex are per database, not per queue, so a worker another test SIGKILLed while
    it held that mutex (expiring after 300 s) would hold back this test's redelivery."""
    own_db = {"broker_url": redis_server.url.rsplit("/", 1)[0] + "/5"} if broker == "redis" else {}
    group = workers(2, visibility_timeout=4.0, **own_db)
    app = celery_client(group.settings)
    c = group.client
    sids = [c.create_session().id for _ in range(3)]
    sent: list[tuple[str, int, Any]] = []
    try:
        for i in range(60):
            for sid in sids:
                r = app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": i}],
                                  queue=group.settings.queue)
                sent.append((sid, i, r))
            if i == 20:
                group.kill(0)
            if i == 40:
                group.start(1, wait=False)
        # On the Redis broker the messages the dead worker had prefetched come back after the
        # visibility timeout (4 s) at the next restore scan (every 10 s; it was 100 s)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(r.ready() for _, _, r in sent):
            c.sweep(force=True)  # the beat's job: resume drains the dead worker held
            time.sleep(0.5)
        for sid in sids:
            items = c.get_state(sid)["items"]
            assert sorted(items) == list(range(60)), (
                f"lost or doubled: {broker_trace(group.settings.broker, sid, sent, items, c)}")
        figures(f"{len(sent)} by-name sends on {broker}, a worker SIGKILLed: none lost, none "
                f"applied twice")
        for sid, _, r in sent:
            pos = r.get(timeout=5)
            assert c.get_state(sid)["items"][pos - 1] is not None
            assert c.action(sid, r.id).status == "succeeded"
    finally:
        app.close()


def broker_trace(url: str, sid: str, sent: list[tuple[str, int, Any]], items: list[Any],
                 c: Client) -> str:
    """What became of each missing action of `sid` (a failure's context): its Celery state, its
    session record, and where its message is (the Redis broker's queue or unacked hash)."""
    out = []
    r = redis.Redis.from_url(url) if url.startswith("redis") else None
    for s, value, result in sent:
        if s != sid or value in items:
            continue
        where = "?"
        if r is not None:
            unacked = [tag for tag, raw in r.hgetall("unacked").items()
                       if result.id.encode() in raw]
            queued = [k for k in r.scan_iter(count=1000) if r.type(k) == b"list"
                      and any(result.id.encode() in m for m in r.lrange(k, 0, -1))]
            mutex = r.pttl("unacked_mutex")
            where = f"unacked {unacked} queued {queued} mutex pttl {mutex}"
        try:
            record: Any = c.action(sid, result.id)
        except Exception as exc:
            record = repr(exc)
        out.append(f"value {value} id {result.id}: state {result.state}; record {record}; "
                   f"{where}")
    return "; ".join(out)


def error_of(result: Any) -> tuple[str, str]:
    """The type name and message a Celery client sees for a failed result."""
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    return type(info.value).__name__, str(info.value)


def test_cancelled_by_name_actions_fail_in_celery(workers: Workers) -> None:
    """By-name actions withdrawn before they ran (the sweep storing what a cancel left, a
    Client.cancel, a termination) raise ActionCancelled in any Celery client."""
    group = workers(1, concurrency=2, lease_ttl=1.0)
    app = celery_client(group.settings)
    c = group.client
    r = c.layer.redis
    sid = c.create_session().id
    sk = c.layer.keys.session(sid)
    started = f"{group.settings.namespace}:test:started:{uuid.uuid4().hex}"

    def by_name(action: str, params: dict[str, Any]) -> Any:
        return app.send_task("jido_tasks.send", args=[sid, action, params],
                             queue=group.settings.queue)
    try:
        head = by_name("test.slow_append", {"seconds": 8, "value": "head",
                                            "started_key": started})
        wait_for(lambda: r.llen(started), 30, message="the head action to start")
        pending = [by_name("test.append", {"value": i}) for i in range(4)]
        wait_for(lambda: r.llen(sk.mailbox) == 5, 30, message="the sends to be accepted")

        # A cancel whose caller stored no Celery result (a client that died right after it):
        # queued in `replies`, stored by the sweep.
        tag = c.layer.call(scripts.cancel(sid, action_id=pending[0].id, reason="gone",
                                          keep=group.settings.keep_results))
        assert tag is scripts.Tag.CANCELLED
        assert pending[0].state == "PENDING"
        assert r.lrange(sk.replies, 0, -1) == [pending[0].id]
        assert r.zscore(c.layer.keys.group_for(sid).undelivered, sid) is not None
        wait_for(lambda: c.sweep(force=True).delivered == 1, 30, interval=0.3,
                 message="the sweep to store the cancelled result")
        assert error_of(pending[0]) == ("ActionCancelled", "gone")

        assert c.mailbox.cancel(sid, pending[1].id, "changed my mind")
        assert error_of(pending[1]) == ("ActionCancelled", "changed my mind")

        c.terminate_session(sid, "done")
        for res in pending[2:]:
            assert error_of(res) == ("ActionCancelled", "session terminating: done")
        assert head.get(timeout=30) == 1  # the running head still finishes
        # Acknowledged right after the write: nothing left to deliver.
        wait_for(lambda: r.llen(sk.replies) == 0, 10, message="the replies to be acknowledged")
        assert r.zscore(c.layer.keys.group_for(sid).undelivered, sid) is None
    finally:
        app.close()


def test_result_survives_a_worker_killed_between_commit_and_result_write(
        workers: Workers) -> None:
    """A real SIGKILL of the whole worker right after a by-name action's commit, before its
    Celery result was stored: the result is queued durably and stored by the next drain."""
    group = workers(1, telemetry_hooks=["tests.actions:DieAfterCommit"])
    app = celery_client(group.settings)
    c = group.client
    r = c.layer.redis
    sid = c.create_session().id
    sk = c.layer.keys.session(sid)
    try:
        doomed = app.send_task("jido_tasks.send", args=[sid, "test.die_after_commit"],
                               queue=group.settings.queue)
        group.procs[0].wait(60)  # the hook killed the worker (its send stays unacked)
        assert c.action(sid, doomed.id).result == "committed"
        assert doomed.state == "PENDING"
        assert r.lrange(sk.replies, 0, -1) == [doomed.id]
        group.start(1, wait=False)
        group.wait_ready(1)  # the new one: the first is dead
        after = app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": 1}],
                              queue=group.settings.queue)
        assert after.get(timeout=60) == 1
        assert doomed.get(timeout=5) == "committed"  # stored with the next commit's results
        wait_for(lambda: r.llen(sk.replies) == 0, 10, message="the replies to be acknowledged")
        assert r.zscore(c.layer.keys.group_for(sid).undelivered, sid) is None
    finally:
        app.close()


def test_reused_task_id_with_other_content_keeps_the_first_result(workers: Workers) -> None:
    group = workers(1)
    app = celery_client(group.settings)
    c = group.client
    sid = c.create_session().id
    tid = str(uuid.uuid4())
    try:
        first = app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": "a"}],
                              queue=group.settings.queue, task_id=tid)
        assert first.get(timeout=30) == 1
        app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": "b"}],
                      queue=group.settings.queue, task_id=tid)
        wait_for(lambda: "id is taken by another action" in group.logs(), 30,
                 message="the worker to refuse the reused id")
        assert app.AsyncResult(tid).get(timeout=5) == 1
        assert c.get_state(sid)["items"] == ["a"]
    finally:
        app.close()


def test_send_claims_a_free_lease_for_the_drain_it_asks_for(client: Client) -> None:
    """A worker accepting a by-name send claims the session's free lease in the same script
    call (fenced like a claim), and drains from that claim; a send to a session whose drain
    is already scheduled claims nothing."""
    c = client
    sid = c.create_session().id
    sk = c.layer.keys.session(sid)
    fence = int(c.layer.redis.hget(sk.entry, "fence") or 0)
    first = c.mailbox.accept(sid, "test.append", {"value": 1}, claim_for=runtime.claim_for(
        c.layer, sid, "w1"))[1]
    assert first.claimed is not None and not first.publish
    assert int(first.claimed.token) == fence + 1
    assert [a.id for a in first.claimed.batch.actions] == c.layer.redis.lrange(sk.mailbox, 0, -1)
    assert c.layer.redis.get(sk.lease) == f"{first.claimed.token}|w1"
    assert c.layer.redis.get(c.layer.keys.alive("w1", sid)) == "1"
    second = c.mailbox.accept(sid, "test.append", {"value": 2},
                              claim_for=runtime.claim_for(c.layer, sid, "w2"))[1]
    assert second == scripts.Sent(False, False)  # scheduled and leased: w1's drain takes it
    report = runtime.drain(c.layer, sid, worker="w1", claimed=first.claimed)
    assert (report.outcome, report.applied) == ("done", 2)
    assert c.get_state(sid)["items"] == [1, 2]
    assert not c.layer.redis.exists(sk.lease) and not c.layer.redis.hexists(sk.entry, "scheduled")
    # Its stale claim is fenced off once another worker has claimed the session since.
    again = c.mailbox.accept(sid, "test.append", {"value": 3},
                             claim_for=runtime.claim_for(c.layer, sid, "w3"))[1]
    assert again.claimed is not None
    c.layer.redis.delete(sk.lease)  # as if w3's lease expired; w4 claims the session
    assert runtime.drain(c.layer, sid, worker="w4").applied == 1
    assert runtime.drain(c.layer, sid, worker="w3", claimed=again.claimed).outcome == "stale"
    assert c.get_state(sid)["items"] == [1, 2, 3]


def test_results_and_their_acknowledgement_go_in_one_transaction(client: Client) -> None:
    """With the result backend on the session's Redis, `deliver` writes the Celery results and
    acknowledges them together; it still works when Redis lost its scripts (NOSCRIPT in the
    transaction: the results are stored, then the acknowledgement runs on its own)."""
    c = client
    sid = c.create_session().id
    sk = c.layer.keys.session(sid)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for i, aid in enumerate(ids):
        c.mailbox.accept(sid, "test.append", {"value": i}, aid, ReplyTo.CELERY)
    assert runtime.drain(c.layer, sid, worker="w").applied == 3  # no listener: nothing stored
    assert c.layer.redis.lrange(sk.replies, 0, -1) == ids
    assert results.same_redis(c.layer, c.celery.backend)
    c.layer.redis.execute_command("SCRIPT", "FLUSH")
    assert results.deliver(c.layer, c.celery.backend, sid, []) == 3
    assert [c.celery.AsyncResult(aid).get(timeout=5) for aid in ids] == [1, 2, 3]
    assert c.layer.redis.llen(sk.replies) == 0
    assert c.layer.redis.zscore(c.layer.keys.group_for(sid).undelivered, sid) is None


def test_by_name_results_when_the_message_asks_celery_to_store_results(
        workers: Workers) -> None:
    """A client that sends with `ignore_result=False` (Celery would store the send task's own
    return) still gets the action's result or error: drained in place, failed, and left to
    the drain of a busy session."""
    group = workers(1, concurrency=2)
    app = celery_client(group.settings)
    c = group.client
    r = c.layer.redis
    sid = c.create_session().id
    started = f"{group.settings.namespace}:test:started:{uuid.uuid4().hex}"

    def by_name(action: str, params: dict[str, Any]) -> Any:
        return app.send_task("jido_tasks.send", args=[sid, action, params],
                             queue=group.settings.queue, ignore_result=False)
    try:
        assert by_name("test.append", {"value": "a"}).get(timeout=30) == 1
        assert error_of(by_name("test.fail", {"message": "nope"})) == ("ValueError", "nope")
        head = c.send(sid, "test.slow_append", {"seconds": 2, "value": "b",
                                                "started_key": started})
        wait_for(lambda: r.llen(started), 30, message="the head action to start")
        queued = by_name("test.append", {"value": "c"})  # accepted while the head runs
        assert queued.get(timeout=30) == 3
        assert head.get(timeout=30) == 2
        assert c.get_state(sid)["items"] == ["a", "b", "c"]
    finally:
        app.close()


# -- Flower ----------------------------------------------------------------------------------
AUTH = "ops:s3cret"


def _get(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


@contextmanager
def flower(settings: Settings) -> Iterator[str]:
    port = free_port()
    env = worker_env(settings)
    env["JIDO_TASKS_FLOWER_BASIC_AUTH"] = AUTH
    proc = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", "flower", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            _get(f"{base}/api/workers")
        except (OSError, urllib.error.HTTPError):
            return False
        return True

    try:
        wait_for(up, 60, interval=0.3, message="flower to answer")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_flower_shows_every_action_as_a_task(workers: Workers) -> None:
    group = workers(1)
    c = group.client
    with flower(group.settings) as base:
        # Flower sees events only once its receiver is connected: wait for a ping to show.
        def ping_seen() -> bool:
            r = c.celery.send_task("jido_tasks.ping", queue=group.settings.queue)
            r.get(timeout=10)
            try:
                return _get(f"{base}/api/task/info/{r.id}").get("state") == "SUCCESS"
            except urllib.error.HTTPError:
                return False
        wait_for(ping_seen, 30, interval=1.0, message="flower to see task events")
        sid = c.create_session().id
        by_client = [c.send(sid, "test.append", {"value": i}) for i in range(5)]
        many = c.send_many(sid, [("test.greet", {"name": "m"})])
        failing = c.send(sid, "test.fail", {"message": "broken"})
        app = celery_client(group.settings)
        by_name = app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": 9}],
                                queue=group.settings.queue)
        assert by_name.get(timeout=30) == 6
        refused = app.send_task("jido_tasks.send", args=["session_" + "0" * 32, "test.append"],
                                queue=group.settings.queue)
        assert error_of(refused)[0] == "SessionNotFound"
        app.close()
        # Flower's HTTP API is a Celery client too: the answered task id is the action id.
        posted = _get(f"{base}/api/task/async-apply/jido_tasks.send",
                      {"args": [sid, "test.append", {"value": 10}],
                       "options": {"queue": group.settings.queue}})
        via_http = posted["task-id"]
        assert c.celery.AsyncResult(via_http).get(timeout=30) == 7
        for h in [*by_client, *many]:
            h.get(timeout=30)
        with pytest.raises(ActionFailed):
            failing.get(timeout=30)

        def info(aid: str) -> dict[str, Any]:
            try:
                found: dict[str, Any] = _get(f"{base}/api/task/info/{aid}")
            except urllib.error.HTTPError:
                return {}
            return found

        def final(aid: str, state: str) -> dict[str, Any]:
            return wait_for(lambda: (i := info(aid)).get("state") == state and i, 30,
                            message=f"flower to show {aid} as {state}")

        row = final(by_client[0].id, "SUCCESS")
        assert row["name"] == "jido_tasks.action.test.append"
        assert sid in row["args"] and "'value': 0" in row["kwargs"]
        assert row["result"] == "1" and row["runtime"] is not None
        assert row["received"] and row["started"] and row["succeeded"]
        assert final(many[0].id, "SUCCESS")["name"] == "jido_tasks.action.test.greet"
        named = final(by_name.id, "SUCCESS")
        assert named["name"] == "jido_tasks.action.test.append" and named["result"] == "6"
        bad = final(failing.id, "FAILURE")
        assert bad["exception"] == "ValueError('broken')"
        tasks = _get(f"{base}/api/tasks?limit=1000")
        for h in [*by_client, *many, failing]:
            assert h.id in tasks
        assert final(via_http, "SUCCESS")["result"] == "7"
        assert _get(f"{base}/api/task/result/{via_http}")["result"] == 7
        # A by-name send refused for its input shows as a failed jido_tasks.send.
        shown = final(refused.id, "FAILURE")
        assert shown["name"] == "jido_tasks.send" and "SessionNotFound" in shown["exception"]
        failed = _get(f"{base}/api/tasks?state=FAILURE&limit=1000")
        assert sorted(failed) == sorted([failing.id, refused.id])
        drains = _get(f"{base}/api/tasks?taskname=jido_tasks.drain&limit=1000")
        assert drains, "drains stay visible"
        metrics = _get(f"{base}/metrics")
        # Per-action-name series: events by type (outcomes) and runtimes.
        assert 'type="task-failed"' in metrics and 'task="jido_tasks.action.test.fail"' in metrics
        assert any(line.startswith("flower_task_runtime_seconds_count")
                   and 'task="jido_tasks.action.test.append"' in line
                   for line in metrics.splitlines())


def test_action_events_of_many_commits_go_out_together(workers: Workers) -> None:
    """By-name sends commit one action each (their drains run in place), yet their Flower
    events are published together: far fewer event messages than actions, and every action's
    received, started and succeeded events among them, in that order."""
    group = workers(1)
    sid = group.client.create_session().id
    broker = redis.Redis.from_url(group.settings.broker)
    pubsub = broker.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*celeryev*")
    wait_for(lambda: broker.execute_command("PUBSUB", "NUMPAT") >= 1, 10,
             message="the subscription")
    app = celery_client(group.settings)
    sent = [app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": i}],
                          queue=group.settings.queue) for i in range(60)]
    for result in sent:
        result.get(timeout=60)
    app.close()
    ids = {result.id for result in sent}
    seen: dict[str, list[str]] = {}
    messages = 0
    deadline = time.monotonic() + 30
    while any(len(seen.get(i, [])) < 3 for i in ids) and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is None:
            continue
        envelope = json.loads(message["data"])
        batch = json.loads(base64.b64decode(envelope["body"]))
        ours = [e for e in (batch if isinstance(batch, list) else [batch])
                if e.get("uuid") in ids]
        messages += bool(ours)
        for event in ours:
            seen.setdefault(event["uuid"], []).append(event["type"])
    pubsub.close()
    broker.close()
    assert {i: seen.get(i) for i in ids} == {
        i: ["task-received", "task-started", "task-succeeded"] for i in ids}
    assert messages <= len(sent) // 3, messages


def test_action_events_kept_while_the_broker_is_down_up_to_a_bound(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events whose publish fails stay buffered for the next flush (delivered once the broker
    is back), but never more than EVENT_BUFFER_KEEP of them: a broker that stays unreachable
    costs a bounded buffer, never a leak."""
    monkeypatch.setattr(reporting, "EVENT_BUFFER_LIMIT", 1_000_000)  # only explicit flushes
    server = RedisServer(tmp_path)
    server.start()
    app = Celery(broker=server.url)
    reporter = reporting.CeleryReporter(app, "probe@test", True,
                                        RedisLayer(make_settings(server.url)),
                                        flush_interval=3600)

    def commit(n: int) -> list[str]:
        now = time.time()
        items = [runtime.Finished(f"act_{uuid.uuid4().hex}", "test.append", {"value": i},
                                  Outcome(status=ActionStatus.SUCCEEDED, result=i,
                                          finished_at=now), now, now, 0.001)
                 for i in range(n)]
        reporter.committed("session_" + "a" * 32, items)
        return [item.action_id for item in items]

    def published(ids: list[str]) -> set[str]:
        """Flush, and the ids among `ids` whose events were published."""
        client = redis.Redis(port=server.port)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("*celeryev*")
        wait_for(lambda: client.execute_command("PUBSUB", "NUMPAT") >= 1, 10,
                 message="the subscription")
        reporter.flush()
        seen: set[str] = set()
        deadline = time.monotonic() + 2
        while len(seen) < len(ids) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)  # None: nothing, or the subscription
            if message is not None:
                batch = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
                seen.update(e["uuid"] for e in batch if e.get("uuid") in ids)
        pubsub.close()
        client.close()
        return seen

    try:
        first = commit(2)
        assert published(first) == set(first)
        server.shutdown()
        kept = commit(10)
        reporter.flush()  # fails: logged, the 30 events kept
        server.start()
        assert wait_for(lambda: published(kept) == set(kept), 30,
                        message="the kept events after the restart")
        server.shutdown()
        lost = commit(reporting.EVENT_BUFFER_KEEP // 3 + 10)
        reporter.flush()  # fails with more than EVENT_BUFFER_KEEP buffered: dropped
        server.start()
        after = commit(1)
        seen: set[str] = set()

        def after_seen() -> bool:
            seen.update(published(after + lost))  # the flush that works publishes all
            return set(after) <= seen

        wait_for(after_seen, 30, message="events after the drop")
        assert not seen & set(lost)
    finally:
        app.close()
        server.shutdown()


def test_action_events_can_be_turned_off(workers: Workers) -> None:
    """With `action_events` off the drain sends no per-action task event (nothing for Flower);
    by-name results still arrive."""
    group = workers(1, action_events=False)
    app = celery_client(group.settings)
    c = group.client
    sid = c.create_session().id
    seen: list[dict[str, Any]] = []
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": seen.append})
        listener = threading.Thread(target=recv.capture, kwargs={"wakeup": False}, daemon=True)
        listener.start()
        # The receiver is live once it sees a task's events.
        def live() -> bool:
            app.send_task("jido_tasks.ping", queue=group.settings.queue).get(timeout=10)
            return any(e["type"] == "task-succeeded" for e in seen)
        wait_for(live, 30, interval=0.5, message="the event receiver")
        h = c.send(sid, "test.append", {"value": 1})
        r = app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": 2}],
                          queue=group.settings.queue)
        assert h.get(timeout=30) == 1 and r.get(timeout=30) == 2
        ping = app.send_task("jido_tasks.ping", queue=group.settings.queue)
        ping.get(timeout=10)
        wait_for(lambda: any(e.get("uuid") == ping.id and e["type"] == "task-succeeded"
                             for e in seen), 10, message="the last ping's events")
        recv.should_stop = True
    app.close()
    assert not [e for e in seen if e.get("uuid") == h.id]
    assert not [e for e in seen if str(e.get("name", "")).startswith("jido_tasks.action.")]
    # Nor does the by-name send itself: its id is the action's, whose row only the per-action
    # events write (the worker's own events for the send are off).
    assert not [e for e in seen if e.get("uuid") == r.id]


def test_request_marks_by_name_sends() -> None:
    req = ActionRequest(action="a.b", params={"x": 1}, reply_to=ReplyTo.CELERY, digest="d")
    assert ActionRequest.model_validate_json(req.to_json()) == req
    assert "reply_to" not in ActionRequest(action="a.b").to_json()


def test_event_reprs_are_plain_when_small_and_cut_when_large() -> None:
    """Flower's kwargs and result columns: `repr` of small flat values, Celery's `saferepr`
    cut at 1 KiB otherwise (a large params dict never makes a large event)."""
    assert reporting.brief({"value": 1, "name": "x"}) == "{'value': 1, 'name': 'x'}"
    assert reporting.brief([1, None, True]) == "[1, None, True]"
    assert reporting.brief(None) == "None" and reporting.brief("é") == "'é'"
    nested = {"k": {"n": [1, 2]}}
    assert reporting.brief(nested) == repr(nested)
    for large in ({"blob": "x" * 100_000}, ["y" * 200] * 1_000, {str(i): i for i in range(5_000)}):
        shown = reporting.brief(large)
        assert len(shown) <= reporting.REPR_MAXSIZE + 16, len(shown)
