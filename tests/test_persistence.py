"""Session snapshots on both stores: round trips through real workers, consistency while actions
run, and every kind of bad snapshot, id, path and directory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from jido_tasks import Client, SessionStatus, Settings
from jido_tasks.errors import (
    InvalidEntry,
    InvalidSessionId,
    InvalidTransition,
    PersistenceError,
    SessionNotFound,
    SnapshotCorrupt,
    SnapshotNotFound,
)
from jido_tasks.models import new_session_id
from jido_tasks.ops.snapshots.disk import DiskSnapshotStore
from jido_tasks.ops.snapshots.redis import RedisSnapshotStore
from jido_tasks.ops.snapshots.service import SnapshotInfo, snapshot_store
from tests.conftest import ROOT, RedisServer, WorkerGroup, make_settings, worker_env


@pytest.fixture(params=["single", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> str:
    """This module's tests run on a single Redis and on the three-master Redis Cluster."""
    return str(request.param)

STORES = ["redis", "disk"]
BAD_IDS = ["../etc/passwd", f"session_{'0' * 30}/..", f"../session_{'0' * 32}", "",
           f"session_{'A' * 32}", f"session_{'0' * 32}.json", "session_x", None, 42]


def overrides(kind: str, tmp_path: Path) -> dict[str, Any]:
    if kind == "disk":
        return {"persistence": "disk", "persistence_dir": tmp_path / "snaps"}
    return {"persistence": "redis"}


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pclient(redis_server: RedisServer, tmp_path: Path, kind: str,
            backend_settings: dict[str, Any]) -> Iterator[Client]:
    """A client (no workers) whose snapshot store is `kind`."""
    c = Client(make_settings(redis_server.url, **backend_settings, **overrides(kind, tmp_path)))
    yield c
    c.close()


def ns_keys(raw: redis.Redis, settings: Settings) -> set[str]:
    return set(raw.scan_iter(match=f"{settings.namespace}:*", count=1000))


def stored(c: Client, saved_id: str) -> bytes:
    """The stored document, read behind the store's back."""
    store = c.snapshot_store
    if isinstance(store, DiskSnapshotStore):
        return Path(store.where(saved_id)).read_bytes()
    raw: Any = (RedisCluster.from_url(c.settings.redis_dsn) if c.settings.redis_cluster
                else redis.Redis.from_url(c.settings.redis_dsn))
    try:
        data = raw.get(store.where(saved_id))
    finally:
        raw.close()
    assert isinstance(data, bytes)
    return data


def put_raw(c: Client, saved_id: str, data: bytes) -> str:
    """Store `data` as snapshot `saved_id` behind the store's back; returns where it went."""
    store = c.snapshot_store
    where = store.where(saved_id)
    if isinstance(store, DiskSnapshotStore):
        store.directory.mkdir(parents=True, exist_ok=True)
        Path(where).write_bytes(data)
    else:
        c.layer.redis.set(where, data)
        c.layer.redis.zadd(c.layer.keys.group_for(saved_id).snapshots, {saved_id: time.time()})
    return where


def saved_state(c: Client, sid: str, state: dict[str, Any]) -> str:
    """A session created with `state`, saved; returns its id."""
    entry = c.sessions.create({"name": sid[:4]}, {"model": "m"}, state=state)
    c.save_session(entry.id)
    return entry.id


def valid_doc(c: Client) -> bytes:
    sid = saved_state(c, "x", {"items": [1]})
    data = stored(c, sid)
    c.delete_saved_session(sid)
    return data


# -- round trip ------------------------------------------------------------------------------
def test_round_trip_with_history_files_index_and_cache(
        workers: Callable[..., WorkerGroup], tmp_path: Path, kind: str) -> None:
    """Everything saved comes back in a new session; the old one is untouched."""
    group = workers(1, **overrides(kind, tmp_path))
    c = group.client
    entry = c.create_session({"user": "ana", "project": "p"}, {"model": "m1", "temp": 0.2},
                             {"max_history": 7, "features": ["a"], "timeout_minutes": 5})
    sid = entry.id
    c.call(sid, "context.add_message", {"role": "user", "content": "hello"})
    c.call(sid, "context.add_message", {"role": "assistant", "content": "hi, ana"})
    c.call(sid, "context.add_file", {"path": "src/a.py"})
    c.call(sid, "context.add_file", {"path": "src/b.py"})
    c.call(sid, "context.update_file_index", {"path": "src/a.py", "metadata": {"lines": 10}})
    c.call(sid, "cache.put_file", {"path": "src/a.py", "content": "print('a')\n" * 50})
    c.call(sid, "cache.put_analysis", {"path": "src/a.py", "analysis": {"issues": [1, 2]}})
    c.call(sid, "coordinator.analysis_complete", {"analysis_type": "lint", "results": [3]})
    state = c.get_state(sid)
    assert {"conversation", "active_files", "file_index", "cache", "coordinator"} <= set(state)
    before = time.time()

    info = c.save_session(sid)
    assert (info.id, info.store, info.where) == (sid, kind, c.snapshot_store.where(sid))
    data = stored(c, sid)
    assert info.size == len(data)
    assert before - 1 <= info.saved_at.timestamp() <= time.time() + 1
    doc = json.loads(data)
    assert set(doc) == {"schema_version", "session_id", "entry", "state", "saved_at"}
    assert (doc["schema_version"], doc["session_id"], doc["state"]) == (1, sid, state)
    assert doc["saved_at"].endswith("Z")  # ISO 8601, UTC
    assert datetime.fromisoformat(doc["saved_at"]) == info.saved_at
    assert c.list_saved_sessions() == [sid]
    assert c.saved_sessions() == [info]

    restored = c.restore_session(sid)
    assert restored.id != sid
    assert (restored.status, restored.restored_from) == (SessionStatus.ACTIVE, sid)
    saved_entry = c.get_session(sid)
    for field in ("metadata", "llm_config", "config"):
        assert getattr(restored, field) == getattr(saved_entry, field), field
    assert c.get_session(restored.id) == restored
    assert c.get_state(restored.id) == state
    assert c.get_state(sid) == state  # the original is untouched
    created = [e for e in c.events() if e.type == "session.created"]
    assert created[-1].session_id == restored.id
    assert created[-1].data["restored_from"] == sid

    # The restored session works, with the restored config (max_history 7).
    for i in range(6):
        c.call(restored.id, "context.add_message", {"role": "user", "content": f"m{i}"})
    history = c.call(restored.id, "context.history")
    assert len(history) == 7
    assert history[0] == state["conversation"][1]


def test_save_is_between_two_actions(workers: Callable[..., WorkerGroup], tmp_path: Path,
                                     kind: str) -> None:
    """Snapshots taken while 200 actions are applied each hold a whole number of actions."""
    group = workers(1, **overrides(kind, tmp_path))
    c = group.client
    sid = c.create_session().id
    seen: list[int] = []

    def snap() -> None:
        c.save_session(sid)
        items = c.snapshot_store.load(sid).state.get("items", [])
        assert items == list(range(len(items)))
        seen.append(len(items))

    handles = []
    for i in range(200):
        handles.append(c.send(sid, "test.append", {"value": i}))
        if i % 25 == 0:
            snap()
    while handles[-1].record().status.finished is False:
        snap()
    assert handles[-1].get(timeout=30) == 200
    snap()
    assert seen == sorted(seen)
    assert seen[-1] == 200
    assert any(0 < k < 200 for k in seen), seen
    restored = c.restore_session(sid)
    assert c.get_state(restored.id)["items"] == list(range(200))


# -- the API, without workers -----------------------------------------------------------------
def test_resave_replaces_and_listing_is_sorted(pclient: Client) -> None:
    c = pclient
    a = c.sessions.create(state={"v": 1}).id
    b = c.sessions.create(state={"v": 2}).id
    first = c.save_session(a)
    c.save_session(b)
    c.layer.redis.set(c.layer.keys.session(a).state, json.dumps({"v": 3}))
    second = c.save_session(a)
    assert second.saved_at >= first.saved_at
    assert c.list_saved_sessions() == sorted([a, b])
    assert [i.id for i in c.saved_sessions()] == sorted([a, b])
    assert c.snapshot_store.load(a).state == {"v": 3}
    assert all(isinstance(i, SnapshotInfo) and i.store == c.settings.persistence
               for i in c.saved_sessions())


def test_restore_of_a_terminated_session(pclient: Client) -> None:
    c = pclient
    sid = c.sessions.create({"k": "v"}, state={"items": [1]}).id
    c.terminate_session(sid)
    info = c.save_session(sid)
    assert c.snapshot_store.load(sid).entry.status is SessionStatus.TERMINATED
    restored = c.restore_session(info.id)
    assert (restored.status, restored.metadata) == (SessionStatus.ACTIVE, {"k": "v"})
    assert c.get_state(restored.id) == {"items": [1]}


def test_session_without_state_saves_an_empty_state(pclient: Client) -> None:
    c = pclient
    sid = c.create_session().id
    c.save_session(sid)
    assert c.snapshot_store.load(sid).state == {}
    assert c.get_state(c.restore_session(sid).id) == {}


def test_delete(pclient: Client, raw_redis: redis.Redis) -> None:
    c = pclient
    sid = saved_state(c, "d", {"x": 1})
    where = c.snapshot_store.where(sid)
    c.delete_saved_session(sid)
    assert c.list_saved_sessions() == []
    with pytest.raises(SnapshotNotFound) as err:
        c.restore_session(sid)
    assert (err.value.session_id, err.value.where) == (sid, where)
    with pytest.raises(SnapshotNotFound):
        c.delete_saved_session(sid)
    if c.settings.persistence == "redis":
        assert not raw_redis.exists(where)
        assert raw_redis.zscore(c.layer.keys.group_for(sid).snapshots, sid) is None
    else:
        assert not Path(where).exists()


def test_missing_session_and_snapshot(pclient: Client) -> None:
    c = pclient
    sid = new_session_id()
    with pytest.raises(SessionNotFound):
        c.save_session(sid)
    with pytest.raises(SnapshotNotFound) as err:
        c.restore_session(sid)
    assert err.value.where == c.snapshot_store.where(sid)
    assert c.list_saved_sessions() == []
    assert c.list_sessions() == []


@pytest.mark.parametrize("raw_state", ["{not json", "[1, 2]", '"text"'])
def test_broken_state_is_never_saved(pclient: Client, raw_state: str) -> None:
    c = pclient
    sid = c.sessions.create(state={"ok": True}).id
    c.save_session(sid)
    state_key = c.layer.keys.session(sid).state
    c.layer.redis.set(state_key, raw_state)
    with pytest.raises(InvalidEntry) as err:
        c.save_session(sid)
    assert (err.value.session_id, err.value.key) == (sid, state_key)
    assert "the state is not a JSON object" in err.value.problem
    assert c.snapshot_store.load(sid).state == {"ok": True}  # the good snapshot is kept


def test_redis_store_keys(settings: Settings, raw_redis: redis.Redis) -> None:
    """The Redis store writes one key per snapshot and the index, nothing else."""
    c = Client(settings)
    sid = c.sessions.create(state={"a": 1}).id
    before = ns_keys(raw_redis, settings)
    info = c.save_session(sid)
    k = c.layer.keys
    # (the save's event makes the session's own stream, which a new session has not had)
    assert ns_keys(raw_redis, settings) - before - {k.session(sid).events} == \
        {k.snapshot(sid), k.group_for(sid).snapshots}
    saved_at = info.saved_at.timestamp()
    assert raw_redis.zscore(k.group_for(sid).snapshots, sid) == pytest.approx(saved_at)
    assert raw_redis.strlen(k.snapshot(sid)) == info.size
    c.close()


def test_store_chosen_by_setting(redis_server: RedisServer, tmp_path: Path) -> None:
    for kind, cls in (("redis", RedisSnapshotStore), ("disk", DiskSnapshotStore)):
        c = Client(make_settings(redis_server.url, **overrides(kind, tmp_path)))
        assert isinstance(snapshot_store(c.layer), cls)
        assert isinstance(c.snapshot_store, cls)
        c.close()


# -- terminate with save ----------------------------------------------------------------------
def test_terminate_with_save(pclient: Client) -> None:
    c = pclient
    sid = c.sessions.create({"m": 1}, state={"items": [1, 2]}).id
    ended = c.terminate_session(sid, "done", save=True)
    assert (ended.status, ended.reason) == (SessionStatus.TERMINATED, "done")
    snap = c.snapshot_store.load(sid)
    assert (snap.entry.status, snap.state) == (SessionStatus.ACTIVE, {"items": [1, 2]})
    assert c.get_state(c.restore_session(sid).id) == {"items": [1, 2]}


def test_terminate_with_save_refuses_before_saving(pclient: Client) -> None:
    """A session that cannot be terminated is not saved either."""
    c = pclient
    sid = c.sessions.create().id
    c.terminate_session(sid)
    with pytest.raises(InvalidTransition) as err:
        c.terminate_session(sid, save=True)
    assert (err.value.from_status, err.value.to_status) == ("terminated", "terminating")
    with pytest.raises(SessionNotFound):
        c.terminate_session(new_session_id(), save=True)
    with pytest.raises(InvalidSessionId):
        c.terminate_session("../x", save=True)
    assert c.list_saved_sessions() == []


# -- bad ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_saved_ids_touch_nothing(pclient: Client, raw_redis: redis.Redis,
                                         bad: Any) -> None:
    c = pclient
    before = ns_keys(raw_redis, c.settings)
    for call in (c.save_session, c.restore_session, c.delete_saved_session,
                 c.snapshot_store.load, c.snapshot_store.delete):
        with pytest.raises(InvalidSessionId) as err:
            call(bad)
        assert err.value.invalid_id == bad
    with pytest.raises(InvalidSessionId):
        c.snapshot_store.save(bad, b"{}", datetime.now(UTC))
    with pytest.raises(InvalidSessionId):
        c.terminate_session(bad, save=True)
    assert ns_keys(raw_redis, c.settings) == before
    store = c.snapshot_store
    if isinstance(store, DiskSnapshotStore):
        assert not store.directory.exists()


# -- corrupt snapshots ------------------------------------------------------------------------
def _truncated(doc: bytes) -> bytes:
    return doc[: len(doc) // 2]


def _version(doc: bytes, version: Any) -> bytes:
    data = json.loads(doc)
    data["schema_version"] = version
    return json.dumps(data).encode()


def _drop(doc: bytes, field: str) -> bytes:
    data = json.loads(doc)
    del data[field]
    return json.dumps(data).encode()


def _entry_status(doc: bytes) -> bytes:
    data = json.loads(doc)
    data["entry"]["status"] = "sleeping"
    return json.dumps(data).encode()


def _naive_saved_at(doc: bytes) -> bytes:
    data = json.loads(doc)
    data["saved_at"] = "2024-01-01T00:00:00"
    return json.dumps(data).encode()


def _nan_state(doc: bytes) -> bytes:
    return doc.replace(b'"state":{', b'"state":{"x":NaN,', 1)


CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "not_json": (lambda d: b"{this is not json", "not JSON"),
    "truncated": (_truncated, "not JSON"),
    "empty": (lambda d: b"", "not JSON"),
    "binary": (lambda d: b"\xff\xfe\x00garbage", "not JSON"),
    "nan": (_nan_state, "not JSON: NaN is not JSON"),
    "array": (lambda d: b"[1, 2]", "not a JSON object but list"),
    "no_version": (lambda d: _drop(d, "schema_version"), "wrong schema: no schema_version"),
    "version_2": (lambda d: _version(d, 2), "unknown schema version 2 (this version reads 1)"),
    "version_str": (lambda d: _version(d, "1"), "unknown schema version '1'"),
    "version_bool": (lambda d: _version(d, True), "unknown schema version True"),
    "no_state": (lambda d: _drop(d, "state"), "wrong schema: state: Field required"),
    "bad_status": (_entry_status, "wrong schema: entry.status"),
    "naive_time": (_naive_saved_at, "wrong schema: saved_at"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_snapshot(pclient: Client, caplog: pytest.LogCaptureFixture,
                          name: str) -> None:
    """Restore raises `SnapshotCorrupt` naming the key or file; listing skips it with a
    warning and still lists the good ones."""
    c = pclient
    corrupt, problem = CORRUPTIONS[name]
    good = sorted(saved_state(c, "g", {"n": n}) for n in range(2))
    bad = new_session_id()
    where = put_raw(c, bad, corrupt(valid_doc(c)))
    sessions_before = c.list_sessions()
    with pytest.raises(SnapshotCorrupt) as err:
        c.restore_session(bad)
    assert (err.value.session_id, err.value.where) == (bad, where)
    assert problem in err.value.problem
    assert where in str(err.value)
    assert c.list_sessions() == sessions_before  # nothing was created
    with caplog.at_level(logging.WARNING, logger="jido_tasks.ops.snapshots.service"):
        assert c.list_saved_sessions() == good
        assert [i.id for i in c.saved_sessions()] == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(where in w and problem in w for w in warnings)
    c.delete_saved_session(bad)  # a corrupt snapshot can still be deleted
    assert c.list_saved_sessions() == good


def test_document_of_another_session(pclient: Client) -> None:
    """A valid document stored under another id is refused (no mix-up of sessions)."""
    c = pclient
    a = saved_state(c, "a", {"a": 1})
    other = new_session_id()
    where = put_raw(c, other, stored(c, a))
    with pytest.raises(SnapshotCorrupt) as err:
        c.restore_session(other)
    assert err.value.where == where
    assert f"the document is of session {a}" in err.value.problem


def test_redis_key_holding_garbage(settings: Settings, raw_redis: redis.Redis,
                                   caplog: pytest.LogCaptureFixture) -> None:
    c = Client(settings)
    k = c.layer.keys
    good = saved_state(c, "g", {"n": 1})
    garbage, wrong_type, gone = new_session_id(), new_session_id(), new_session_id()
    raw_redis.set(k.snapshot(garbage), b"\x00\xffnot a snapshot")
    raw_redis.hset(k.snapshot(wrong_type), "a", "b")
    for i, member in enumerate((garbage, wrong_type, gone)):
        raw_redis.zadd(k.group_for(member).snapshots, {member: i + 1})
    raw_redis.zadd(k.group(0).snapshots, {"../../etc": 4, "foreign": 5})
    with pytest.raises(SnapshotCorrupt) as err:
        c.restore_session(garbage)
    assert (err.value.where, err.value.session_id) == (k.snapshot(garbage), garbage)
    assert "not JSON" in err.value.problem
    assert k.snapshot(garbage) in str(err.value)
    with pytest.raises(SnapshotCorrupt) as err:
        c.restore_session(wrong_type)
    assert err.value.where == k.snapshot(wrong_type)
    assert "not a string key" in err.value.problem
    with caplog.at_level(logging.WARNING):
        assert c.list_saved_sessions() == [good]
    text = caplog.text
    for expected in (k.snapshot(garbage), k.snapshot(wrong_type), "'../../etc'", "'foreign'"):
        assert expected in text
    assert k.snapshot(gone) not in text  # indexed but deleted: silently absent
    c.close()


# -- the disk store: paths, symlinks, directories ---------------------------------------------
@pytest.fixture
def dclient(redis_server: RedisServer, tmp_path: Path) -> Iterator[Client]:
    c = Client(make_settings(redis_server.url, **overrides("disk", tmp_path)))
    yield c
    c.close()


def disk(c: Client) -> DiskSnapshotStore:
    store = c.snapshot_store
    assert isinstance(store, DiskSnapshotStore)
    return store


def test_symlink_named_like_a_snapshot_is_never_read(dclient: Client, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    c = dclient
    store = disk(c)
    good = saved_state(c, "g", {"n": 1})
    # A perfectly valid document outside the directory, linked in under its own id.
    outside = tmp_path / "outside.json"
    linked = saved_state(c, "l", {"secret": True})
    outside.write_bytes(stored(c, linked))
    Path(store.where(linked)).unlink()
    Path(store.where(linked)).symlink_to(outside)
    with pytest.raises(SnapshotCorrupt) as err:
        c.restore_session(linked)
    assert err.value.where == store.where(linked)
    assert "symbolic link; refusing to follow it" in err.value.problem
    with caplog.at_level(logging.WARNING):
        assert c.list_saved_sessions() == [good]
    assert "symbolic link" in caplog.text


def test_symlink_is_never_written_through(dclient: Client, tmp_path: Path) -> None:
    c = dclient
    store = disk(c)
    store.directory.mkdir(parents=True)
    sid = c.sessions.create(state={"x": 1}).id
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    link = Path(store.where(sid))
    link.symlink_to(target)
    with pytest.raises(PersistenceError) as err:
        c.save_session(sid)
    assert err.value.where == str(link)
    assert "symbolic link" in err.value.problem
    assert target.read_text() == "precious"
    assert link.is_symlink()
    # A dangling symlink (target absent) is refused too, and no file is created through it.
    dangling = tmp_path / "created-through-link.json"
    link.unlink()
    link.symlink_to(dangling)
    with pytest.raises(PersistenceError):
        c.save_session(sid)
    assert not dangling.exists()
    # Delete removes the link itself; what it pointed to is never touched.
    link.unlink()
    link.symlink_to(target)
    c.delete_saved_session(sid)
    assert not link.is_symlink()
    assert target.read_text() == "precious"


def test_directory_symlink_escape_is_not_followed(dclient: Client, tmp_path: Path) -> None:
    """A symlinked *directory* named like a snapshot file is not a snapshot either."""
    c = dclient
    store = disk(c)
    store.directory.mkdir(parents=True)
    sid = new_session_id()
    (tmp_path / "elsewhere").mkdir()
    Path(store.where(sid)).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SnapshotCorrupt, match="symbolic link"):
        c.restore_session(sid)


@pytest.mark.parametrize("make", ["directory", "fifo"])
def test_non_regular_file_named_like_a_snapshot(dclient: Client, make: str) -> None:
    c = dclient
    store = disk(c)
    store.directory.mkdir(parents=True)
    sid = new_session_id()
    path = Path(store.where(sid))
    if make == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(SnapshotCorrupt) as err:
        c.restore_session(sid)  # a FIFO would block a plain open(); this returns at once
    assert "is not a regular file" in err.value.problem
    assert c.list_saved_sessions() == []


def test_missing_directory_is_created_on_first_save(redis_server: RedisServer,
                                                    tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "snaps"
    c = Client(make_settings(redis_server.url, persistence="disk", persistence_dir=directory))
    assert c.list_saved_sessions() == []  # listing does not create it
    with pytest.raises(SnapshotNotFound):
        c.restore_session(new_session_id())
    with pytest.raises(SnapshotNotFound):
        c.delete_saved_session(new_session_id())
    assert not directory.exists()
    sid = saved_state(c, "s", {"x": 1})
    assert directory.is_dir()
    assert directory.stat().st_mode & 0o777 == 0o700
    path = directory / f"{sid}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [path.name]  # no temporary left
    c.close()


def test_relative_directory_is_under_the_working_directory(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = Client(make_settings(redis_server.url, persistence="disk",
                             persistence_dir=Path("rel/snaps")))
    sid = saved_state(c, "r", {})
    assert (tmp_path / "rel" / "snaps" / f"{sid}.json").is_file()
    c.close()


@pytest.mark.parametrize("layout", ["parent_is_file", "dir_is_file"])
def test_unusable_directory(redis_server: RedisServer, tmp_path: Path, layout: str) -> None:
    """Tests run as root, so "not writable" is made with a regular file in the way."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    directory = blocker / "snaps" if layout == "parent_is_file" else blocker
    c = Client(make_settings(redis_server.url, persistence="disk", persistence_dir=directory))
    sid = c.sessions.create(state={"x": 1}).id
    with pytest.raises(PersistenceError) as err:
        c.save_session(sid)
    assert err.value.where == str(directory)
    assert str(directory) in str(err.value)
    expected = ("cannot create the directory: Not a directory" if layout == "parent_is_file"
                else "exists and is not a directory")
    assert expected in err.value.problem
    for call in (c.list_saved_sessions, lambda: c.restore_session(sid)):
        with pytest.raises(PersistenceError) as err:
            call()
        assert err.value.where == str(directory)
        assert "cannot open the directory" in err.value.problem
    assert blocker.read_text() == "a regular file"
    c.close()


def test_failed_write_keeps_the_old_snapshot(dclient: Client,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half way (here: fsync) leaves the previous snapshot whole and no
    temporary file behind."""
    c = dclient
    store = disk(c)
    sid = c.sessions.create(state={"v": "old"}).id
    c.save_session(sid)
    old = Path(store.where(sid)).read_bytes()
    c.layer.redis.set(c.layer.keys.session(sid).state, json.dumps({"v": "new" * 1000}))

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(PersistenceError) as err:
        c.save_session(sid)
    assert "Input/output error" in err.value.problem
    monkeypatch.undo()
    assert Path(store.where(sid)).read_bytes() == old
    assert sorted(p.name for p in store.directory.iterdir()) == [f"{sid}.json"]
    assert c.snapshot_store.load(sid).state == {"v": "old"}


_SAVER = """
import sys
from jido_tasks import Client, Settings
c = Client(Settings(redis_url=sys.argv[1], namespace=sys.argv[2], persistence="disk",
                    persistence_dir=sys.argv[3]))
sid = sys.argv[4]
print("ready", flush=True)
while True:
    c.save_session(sid)
"""


def test_killed_writer_never_leaves_half_a_snapshot(dclient: Client) -> None:
    """SIGKILL a process saving a 4 MB snapshot in a loop: the file is always whole."""
    c = dclient
    store = disk(c)
    sid = c.sessions.create(state={"blob": "x" * (4 << 20)}).id
    c.save_session(sid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
    env.update(PYTHONPATH=str(ROOT), JIDO_TASKS_CONFIG="/nonexistent")
    for delay in (0.05, 0.13, 0.29):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, c.settings.redis_dsn, c.settings.namespace,
             str(store.directory), sid], env=env, stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert c.snapshot_store.load(sid).state["blob"] == "x" * (4 << 20)
        assert c.list_saved_sessions() == [sid]  # leftover temporaries are not listed


# -- the CLI ----------------------------------------------------------------------------------
CLI = [sys.executable, "-m", "jido_tasks.cli"]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=worker_env(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def cli_ok(settings: Settings, *args: str) -> Any:
    res = run_cli(settings, *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_cli_snapshot_commands(pclient: Client) -> None:
    c = pclient
    s = c.settings
    sid = c.sessions.create({"who": "cli"}, state={"items": [1, 2, 3]}).id
    saved = cli_ok(s, "snapshot", "save", sid)
    assert (saved["id"], saved["store"]) == (sid, s.persistence)
    assert saved["size"] == len(stored(c, sid))
    assert cli_ok(s, "snapshot", "list") == [sid]
    long = cli_ok(s, "snapshot", "list", "--long")
    assert [SnapshotInfo.model_validate(i) for i in long] == c.saved_sessions()
    restored = cli_ok(s, "snapshot", "restore", sid)
    assert (restored["restored_from"], restored["metadata"]) == (sid, {"who": "cli"})
    assert c.get_state(restored["id"]) == {"items": [1, 2, 3]}
    assert cli_ok(s, "snapshot", "delete", sid) == {"deleted": sid}
    assert cli_ok(s, "snapshot", "list") == []

    ended = cli_ok(s, "sessions", "terminate", restored["id"], "--save")
    assert ended["status"] == "terminated"
    assert cli_ok(s, "snapshot", "list") == [restored["id"]]


def test_cli_snapshot_errors(pclient: Client) -> None:
    c = pclient
    s = c.settings
    res = run_cli(s, "snapshot", "restore", "../../etc/passwd")
    assert res.returncode == 2
    assert "invalid session id '../../etc/passwd'" in res.stderr
    missing = new_session_id()
    res = run_cli(s, "snapshot", "delete", missing)
    assert res.returncode == 2
    assert f"snapshot {missing} not found" in res.stderr
    good = saved_state(c, "g", {})
    bad = new_session_id()
    where = put_raw(c, bad, b"{truncated")
    res = run_cli(s, "snapshot", "restore", bad)
    assert res.returncode == 2
    assert f"snapshot {where} is corrupt: not JSON" in res.stderr
    res = run_cli(s, "snapshot", "list")
    assert res.returncode == 0
    assert json.loads(res.stdout) == [good]
    assert "skipping snapshot" in res.stderr and where in res.stderr


def test_snapshot_times_are_utc(pclient: Client) -> None:
    c = pclient
    sid = saved_state(c, "t", {})
    info = c.saved_sessions()[0]
    assert info.id == sid
    assert info.saved_at.utcoffset() == timedelta(0)


def test_save_appends_a_session_saved_event(client: Client) -> None:
    """A save is announced on the session's and the global stream with where it went."""
    sid = client.create_session().id
    info = client.save_session(sid)
    saved = [e for e in client.events(sid) if e.type == "session.saved"]
    assert len(saved) == 1
    assert saved[0].data == {"session_id": sid, "saved_id": info.id, "store": info.store,
                             "size": info.size, "saved_at": info.saved_at.isoformat()}
    assert any(e.type == "session.saved" and e.session_id == sid for e in client.events())


def test_sweep_removes_stale_temporary_files(redis_server: RedisServer, tmp_path: Path) -> None:
    """Temporary files of a writer that died mid-save are removed by the sweep after an hour;
    fresh ones (a save in progress) and other files are left alone."""
    c = Client(make_settings(redis_server.url, **overrides("disk", tmp_path)))
    info = c.save_session(c.create_session().id)
    snaps = tmp_path / "snaps"
    stale = snaps / f".{info.id}.{'a' * 32}.tmp"
    fresh = snaps / f".{info.id}.{'b' * 32}.tmp"
    other = snaps / "notes.tmp"
    for path in (stale, fresh, other):
        path.write_text("{")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert c.sweep(force=True).temp_removed == 1
    assert not stale.exists() and fresh.exists() and other.exists()
    assert c.list_saved_sessions() == [info.id]
    c.close()
