"""State stored in parts: lazy loading, copy on access, commits of changed parts only,
snapshots, and sessions stored before parts."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable

import pytest

from jido_tasks import ActionFailed, ActionStatus, Client
from jido_tasks.store import scripts
from tests.conftest import WorkerGroup, burst, wait_for

BIG = {"cache": {"files": {f"f{i}.py": "x" * 2000 for i in range(50)}},
       "file_index": {f"f{i}.py": {"size": 2000} for i in range(50)}}


def state_key(c: Client, sid: str) -> str:
    return c.layer.keys.session(sid).state


def test_state_is_a_hash_of_top_level_parts(client: Client) -> None:
    sid = client.sessions.create(state={"a": [1, 2], "b": {"c": None}, "e": ""}).id
    r = client.layer.redis
    assert r.hgetall(state_key(client, sid)) == {"a": "[1,2]", "b": '{"c":null}', "e": '""'}
    assert client.get_state(sid) == {"a": [1, 2], "b": {"c": None}, "e": ""}


def test_a_small_state_comes_whole_with_the_claim(client: Client) -> None:
    """A state of a few small parts is handed out with the claim: the drain reads no part on
    its own (every part is known before the action asks for one); one part over the size
    bound and the parts are read as asked again."""
    small = client.sessions.create(state={"a": 1, "b": [2], "c": {"d": "e"}}).id
    read = client.send(small, "test.read", {"keys": ["a"]})
    assert burst(client, small) == 1
    assert read.get(timeout=1) == {"values": {"a": 1}, "loaded": ["a", "b", "c"]}
    big = client.sessions.create(state={"a": 1, "b": "x" * scripts.PRELOAD_BYTES}).id
    read = client.send(big, "test.read", {"keys": ["a"]})
    assert burst(client, big) == 1
    assert read.get(timeout=1) == {"values": {"a": 1}, "loaded": ["a"]}


def test_an_action_loads_only_the_parts_it_touches(client: Client) -> None:
    """Appending to `items` never reads the cache or the file index, and writes one field."""
    sid = client.sessions.create(state=BIG).id
    handles = [client.send(sid, "test.append", {"value": i}) for i in range(3)]
    last = client.send(sid, "test.read", {"keys": ["items"]})
    assert burst(client, sid) == 4
    assert [h.get(timeout=1) for h in handles] == [1, 2, 3]
    assert last.get(timeout=1) == {"values": {"items": [0, 1, 2]}, "loaded": ["items"]}
    stored = client.layer.redis.hgetall(state_key(client, sid))
    assert stored["items"] == "[0,1,2]"
    assert json.loads(stored["cache"]) == BIG["cache"]


def test_a_failed_action_that_changed_several_parts_changes_nothing(client: Client) -> None:
    """Rollback is per part and per action: the next action of the same batch sees the
    parts as they were, and Redis holds them unchanged."""
    sid = client.sessions.create(state={"a": 1, "b": [1], "gone": True}).id
    failed = client.send(sid, "test.set_many", {"values": {"a": 2, "b": [2], "new": 1},
                                                "delete": ["gone"], "fail": True})
    after = client.send(sid, "test.read", {"keys": ["a", "b", "new", "gone"], "all": True})
    burst(client, sid)
    with pytest.raises(ActionFailed) as err:
        failed.get(timeout=1)
    assert err.value.error_type == "RuntimeError"
    assert after.get(timeout=1)["values"] == {"a": 1, "b": [1], "new": None, "gone": True}
    assert after.get(timeout=1)["keys"] == ["a", "b", "gone"]
    assert client.get_state(sid) == {"a": 1, "b": [1], "gone": True}


def test_changes_and_deletes_reach_redis_as_fields(client: Client) -> None:
    sid = client.sessions.create(state={"keep": "k", "drop": 1, "old": 0}).id
    client.send(sid, "test.set_many", {"values": {"old": 1, "fresh": {"x": 1}},
                                       "delete": ["drop"]})
    burst(client, sid)
    assert client.layer.redis.hgetall(state_key(client, sid)) == {
        "keep": '"k"', "old": "1", "fresh": '{"x":1}'}
    read = client.send(sid, "test.read", {"keys": [], "all": True})
    burst(client, sid)
    assert read.get(timeout=1)["keys"] == ["fresh", "keep", "old"]
    assert read.get(timeout=1)["len"] == 3


def test_snapshot_and_restore_of_a_part_stored_state(client: Client) -> None:
    sid = client.sessions.create(state=BIG).id
    client.send(sid, "test.append", {"value": "v"})
    burst(client, sid)
    info = client.save_session(sid)
    copy = client.restore_session(info.id)
    expected = {**BIG, "items": ["v"]}
    assert client.get_state(copy.id) == expected == client.get_state(sid)
    assert set(client.layer.redis.hkeys(state_key(client, copy.id))) == set(expected)


def test_a_session_stored_before_parts_is_read_and_migrated(client: Client) -> None:
    """A state written as one JSON string (before parts) reads as it is; its first commit
    turns it into parts, with every key kept."""
    sid = client.create_session().id
    key = state_key(client, sid)
    old = {"items": [0], "cache": {"files": {"a": "x"}}, "empty": [], "obj": {}}
    client.layer.redis.delete(key)
    client.layer.redis.set(key, json.dumps(old))
    assert client.get_state(sid) == old
    assert client.save_session(sid).id == sid
    failed = client.send(sid, "test.set_many", {"values": {"items": None}, "fail": True})
    client.send(sid, "test.append", {"value": 1})
    burst(client, sid)
    assert failed.status() is ActionStatus.FAILED
    assert client.layer.redis.type(key) == "hash"
    assert client.get_state(sid) == {**old, "items": [0, 1]}
    assert client.layer.redis.hget(key, "empty") == "[]"


def test_a_stale_commit_writes_no_part(client: Client) -> None:
    sid = client.sessions.create(state={"a": 1}).id
    handle = client.send(sid, "test.noop")
    layer = client.layer
    claimed = layer.call(scripts.claim(sid, worker="w", lease_ms=60_000, batch_size=5))
    assert isinstance(claimed, scripts.Claimed) and claimed.legacy_state is None
    res = layer.call(scripts.commit(sid, token="999", changes={"a": "2", "b": None},
                                    migrate=False, events="[]", keep=10, last=True,
                                    outcomes=[(handle.id, '{"status":"succeeded"}')]))
    assert res is scripts.Tag.STALE
    assert client.get_state(sid) == {"a": 1}


def test_sigkill_mid_action_never_leaves_parts_half_written(
        workers: Callable[..., WorkerGroup]) -> None:
    """Each action writes two parts with the same value; pool processes are SIGKILLed while
    they work. Every read of the state sees both parts equal (commits are one script), and
    the last value is the last action's."""
    group = workers(1, concurrency=2, lease_ttl=0.5, max_attempts=20)
    c = group.client
    sid = c.sessions.create(state={"a": -1, "b": -1, "pad": "x" * 10_000}).id
    n = 60
    handles = [c.send(sid, "test.set_many", {"values": {"a": i, "b": i}, "seconds": 0.01})
               for i in range(n)]
    stop = threading.Event()
    torn: list[dict[str, object]] = []

    def reader() -> None:
        while not stop.is_set():
            state = c.get_state(sid)
            if state["a"] != state["b"]:
                torn.append(state)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    kills = 0
    try:
        for _ in range(3):
            wait_for(lambda: group.child_pids(group.procs[0]), 20, message="pool processes")
            os.kill(group.child_pids(group.procs[0])[0], signal.SIGKILL)
            kills += 1
            wait_for(lambda: c.get_state(sid)["a"] != -1, 30, message="progress")
        handles[-1].get(timeout=60)
    finally:
        stop.set()
        thread.join(10)
    assert torn == []
    state = c.get_state(sid)
    assert state["a"] == state["b"] == n - 1 and kills == 3
