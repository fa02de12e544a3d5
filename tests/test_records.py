"""Action records: one compact record per finished action, bounded by count and by age;
waiters never lose what they wait for; records of an older version stay readable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from jido_tasks import ActionExpired, ActionNotFound, ActionStatus, Client
from jido_tasks.store import scripts
from jido_tasks.worker.drain import drain
from tests.conftest import RedisServer, burst, make_settings, wait_for


@pytest.fixture
def clients(redis_server: RedisServer) -> Iterator[Callable[..., Client]]:
    """Factory: a `Client` on a fresh namespace with settings overrides."""
    made: list[Client] = []

    def make(**overrides: Any) -> Client:
        made.append(Client(make_settings(redis_server.url, **overrides)))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_one_record_per_finished_action(clients: Callable[..., Client],
                                        raw_redis: redis.Redis) -> None:
    """A finished action leaves one record (id, finish ms, request and outcome JSON) and
    nothing in the pending hash; the record reads back whole."""
    c = clients()
    sid = c.create_session().id
    handle = c.send(sid, "test.greet", {"name": "ann"})
    sk = c.layer.keys.session(sid)
    assert raw_redis.hkeys(sk.pending) == [handle.id]
    assert handle.status() is ActionStatus.PENDING
    burst(c, sid)
    assert not raw_redis.exists(sk.pending)
    aid, ms, record = raw_redis.lrange(sk.records, 0, -1)
    assert aid == handle.id
    assert record.startswith('{"a":"test.greet","p":{"name":"ann"},"c":')
    rec = handle.record()
    assert (rec.status, rec.result, rec.attempts) == (ActionStatus.SUCCEEDED, "hello ann", 1)
    assert rec.params == {"name": "ann"} and rec.finished_at == int(ms) / 1000
    assert rec.created_at <= rec.finished_at
    assert 0 < raw_redis.pttl(sk.records) <= c.settings.record_retention * 1000
    assert raw_redis.object("encoding", sk.records) == "quicklist"


def test_keep_results_bounds_the_records(clients: Callable[..., Client],
                                         raw_redis: redis.Redis) -> None:
    c = clients(keep_results=3)
    sid = c.create_session().id
    handles = c.send_many(sid, [("test.append", {"value": i}) for i in range(5)])
    burst(c, sid)
    sk = c.layer.keys.session(sid)
    assert raw_redis.lrange(sk.records, 0, -1)[::3] == [h.id for h in handles[2:]]
    assert [h.get(timeout=1) for h in handles[2:]] == [3, 4, 5]
    for h in handles[:2]:
        with pytest.raises(ActionExpired) as err:
            h.get(timeout=1)  # a clear error at once, not a hang
        assert (err.value.session_id, err.value.action_id, err.value.keep) == (sid, h.id, 3)
        assert isinstance(err.value, ActionNotFound)
    with pytest.raises(ActionNotFound) as nf:  # by id only: never sent, or gone
        c.action(sid, handles[0].id)
    assert type(nf.value) is ActionNotFound


def test_records_expire_after_the_retention(clients: Callable[..., Client],
                                            raw_redis: redis.Redis) -> None:
    """A session with no finish for `record_retention` holds no records at all; waiters and
    status() of an expired record get ActionExpired at once."""
    c = clients(record_retention=0.5)
    sid = c.create_session().id
    handle = c.send(sid, "test.noop")
    burst(c, sid)
    assert handle.status() is ActionStatus.SUCCEEDED
    records = c.layer.keys.session(sid).records
    wait_for(lambda: not raw_redis.exists(records), timeout=5, message="records to expire")
    started = time.monotonic()
    with pytest.raises(ActionExpired) as err:
        handle.get(timeout=10)
    assert time.monotonic() - started < 2
    assert (err.value.action_id, err.value.retention) == (handle.id, 0.5)
    with pytest.raises(ActionExpired):
        handle.status()


def test_old_records_are_trimmed_by_the_next_finish(clients: Callable[..., Client],
                                                    raw_redis: redis.Redis) -> None:
    """A busy session never waits for the key's TTL: each finish drops the records older
    than the retention."""
    c = clients(record_retention=0.5)
    sid = c.create_session().id
    old = c.send_many(sid, ["test.noop"] * 4)
    burst(c, sid)
    records = c.layer.keys.session(sid).records
    raw_redis.persist(records)  # as if finishes had kept the key alive
    time.sleep(0.6)
    new = c.send(sid, "test.noop")
    burst(c, sid)
    assert raw_redis.lrange(records, 0, -1)[::3] == [new.id]
    with pytest.raises(ActionExpired):
        old[0].status()


def test_pending_actions_never_expire(clients: Callable[..., Client],
                                      raw_redis: redis.Redis) -> None:
    c = clients(record_retention=0.3, keep_results=1)
    sid = c.create_session().id
    handles = c.send_many(sid, [("test.append", {"value": i}) for i in range(3)])
    time.sleep(0.5)
    assert [h.status() for h in handles] == [ActionStatus.PENDING] * 3
    assert raw_redis.ttl(c.layer.keys.session(sid).pending) == -1
    burst(c, sid)
    assert handles[-1].get(timeout=1) == 3


def test_a_waiter_gets_its_outcome_though_the_record_is_trimmed(
        clients: Callable[..., Client], raw_redis: redis.Redis) -> None:
    """keep_results=1: the record of the first action is dropped by the commit that adds
    the second, in the same script; a waiter subscribed before gets its outcome from the
    finish message all the same."""
    c = clients(keep_results=1)
    sid = c.create_session().id
    first, second = c.send_many(sid, [("test.greet", {"name": "a"}),
                                      ("test.greet", {"name": "b"})])
    got: dict[str, Any] = {}

    def wait() -> None:
        try:
            got["result"] = first.get(timeout=10)
        except Exception as exc:  # reported below
            got["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    channel = c.layer.keys.session(sid).done_channel
    wait_for(lambda: raw_redis.pubsub_numsub(channel)[0][1] == 1, message="waiter subscribed")
    burst(c, sid)
    waiter.join(10)
    assert got == {"result": "hello a"}
    assert second.get(timeout=1) == "hello b"
    with pytest.raises(ActionExpired):
        first.status()


def test_session_events_are_trimmed_by_age(clients: Callable[..., Client],
                                           raw_redis: redis.Redis) -> None:
    """The session's own stream is trimmed to `record_retention` (XTRIM MINID ~: whole
    stream nodes of 100 entries) besides its length bound."""
    c = clients(record_retention=0.5)
    sid = c.create_session().id
    c.send_many(sid, [("test.emit", {"n": i}) for i in range(250)])
    burst(c, sid)
    events = c.layer.keys.session(sid).events
    before = raw_redis.xlen(events)
    assert before > 250
    time.sleep(0.6)
    c.send(sid, "test.emit", {"n": "last"})
    burst(c, sid)
    after = raw_redis.xlen(events)
    assert after <= 101, after  # only the newest node (up to 100 entries) may be left
    last = [f for _, f in raw_redis.xrevrange(events, count=5) if f["type"] == "test.emitted"]
    assert '"n":"last"' in last[0]["data"]


def test_records_of_an_older_version_stay_readable(clients: Callable[..., Client],
                                                   raw_redis: redis.Redis) -> None:
    """Sessions written before the records list (actions/results hashes, finished list):
    finished records read back, a pending action runs and its record moves to the new list,
    and the legacy keys go when the session becomes idle."""
    c = clients()
    sid = c.create_session().id
    sk = c.layer.keys.session(sid)
    done_id, pending_id = "act_" + "1" * 32, "act_" + "2" * 32
    raw_redis.hset(sk.legacy_actions, mapping={
        done_id: '{"action":"test.noop","params":{},"created_at":1700000000.5}',
        pending_id: '{"action":"test.append","params":{"value":7},"created_at":1700000001.0}'})
    raw_redis.hset(sk.legacy_results, done_id,
                   '{"status":"succeeded","result":42,"attempts":1,"finished_at":1700000000.75}')
    raw_redis.rpush(sk.legacy_finished, done_id)
    raw_redis.rpush(sk.mailbox, pending_id)
    raw_redis.hset(sk.entry, "scheduled", "1")

    old = c.action(sid, done_id)
    assert (old.status, old.result, old.action, old.finished_at) == (
        ActionStatus.SUCCEEDED, 42, "test.noop", 1700000000.75)
    assert c.action(sid, pending_id).status is ActionStatus.PENDING
    assert drain(c.layer, sid, worker="t").applied == 1
    moved = c.action(sid, pending_id)
    assert (moved.status, moved.result, moved.params) == (ActionStatus.SUCCEEDED, 1,
                                                          {"value": 7})
    assert raw_redis.lrange(sk.records, 0, -1)[::3] == [pending_id]
    assert not raw_redis.hexists(sk.legacy_actions, pending_id)
    assert c.layer.call(scripts.cancel(sid, action_id=done_id, reason="x",
                                       keep=5)) is scripts.Tag.FINISHED
    c.sessions.transition(sid, "idle")
    assert not any(raw_redis.exists(k) for k in (sk.legacy_actions, sk.legacy_results,
                                                 sk.legacy_finished))
