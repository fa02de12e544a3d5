"""Hostile input is always a typed error (issue 12, item 3): bounded nesting depth and sizes
of metadata, llm_config, config, params and snapshot documents, no NaN or infinity in a
config, snapshot files read only up to their bound and never through a symlinked directory,
and the command line's `error: ...` with exit 2. Real Redis; property tests by hypothesis."""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jido_tasks import AsyncClient, Client, Settings
from jido_tasks.core.bounds import depth_of, text_depth
from jido_tasks.errors import (
    InvalidArgument,
    InvalidParams,
    JidoTasksError,
    PersistenceError,
    SnapshotCorrupt,
    SnapshotTooLarge,
)
from jido_tasks.models import SessionConfig
from jido_tasks.ops.snapshots.service import SnapshotLimits, decode_snapshot
from tests.conftest import RedisServer, burst, make_settings
from tests.test_cli import run_cli

DEEP = 10_000


def nested(depth: int, leaf: Any = 1) -> Any:
    """`leaf` inside `depth` levels of alternating arrays and objects (built without
    recursion, as a hostile caller would)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_measured_without_recursion() -> None:
    assert depth_of(1, 5) == 0 and depth_of({}, 5) == 1 and depth_of({"a": [[1]]}, 5) == 3
    assert depth_of(nested(DEEP * 10), 64) == 65  # stops past the limit
    loop: list[Any] = []
    loop.append(loop)
    assert depth_of(loop, 64) == 65  # a value that contains itself ends too
    assert text_depth(b'{"a": "[[[[\\"[[", "b": [[1]]}') == 3  # brackets in strings ignored
    assert text_depth(deep_text(DEEP * 10).encode()) == DEEP * 10


@pytest.mark.parametrize("call", ["send", "send_many", "call"])
def test_deep_params_are_invalid_params(client: Client, call: str) -> None:
    """Params nested 10,000 deep (was RecursionError) are refused before anything is encoded;
    nothing is queued."""
    sid = client.create_session().id
    params = {"value": nested(DEEP)}
    with pytest.raises(InvalidParams) as err:
        if call == "send":
            client.send(sid, "test.append", params)
        elif call == "send_many":
            client.send_many(sid, [("test.noop", {}), ("test.append", params)])
        else:
            client.call(sid, "test.append", params, timeout=1)
    assert err.value.session_id == sid and err.value.action == "test.append"
    assert err.value.problem == f"params are nested more than {client.settings.max_json_depth}" \
                                " levels deep"
    assert client.layer.redis.llen(client.layer.keys.session(sid).mailbox) == 0


def test_params_at_the_depth_bound_are_accepted(settings: Settings) -> None:
    """`max_json_depth` counts levels exactly: params at the bound run, one more is refused."""
    with Client(settings.model_copy(update={"max_json_depth": 6})) as client:
        sid = client.create_session().id
        client.send(sid, "test.append", {"value": nested(5)})  # params: 6 levels
        with pytest.raises(InvalidParams, match="nested more than 6 levels deep"):
            client.send(sid, "test.append", {"value": nested(6)})
        assert burst(client, sid) == 1
        assert client.get_state(sid)["items"] == [nested(5)]


@pytest.mark.parametrize("argument", ["metadata", "llm_config", "config"])
def test_deep_session_arguments_are_invalid_argument(client: Client, argument: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        client.create_session(**{argument: {"x": nested(DEEP)}})
    assert (err.value.operation, err.value.argument) == ("create_session", argument)
    assert err.value.problem == f"nested more than {client.settings.max_json_depth} levels deep"
    assert client.list_sessions() == []


@pytest.mark.parametrize("timeout", [math.inf, -math.inf, math.nan, "inf", "NaN", 1e308])
def test_timeout_minutes_must_be_finite(client: Client, timeout: Any) -> None:
    """`timeout_minutes=inf` was accepted, read back as None, and restored as 1800 s."""
    with pytest.raises(InvalidArgument) as err:
        client.create_session(config={"timeout_minutes": timeout})
    assert err.value.argument == "config"
    assert client.list_sessions() == []


def test_wait_timeout_is_never_nan(settings: Settings, client: Client) -> None:
    """`call(timeout=nan)` (was a ValueError from the socket, after the action was sent) and
    `get(timeout=nan)` raise InvalidArgument; the call sends nothing. The same from asyncio."""
    sid = client.create_session().id
    with pytest.raises(InvalidArgument) as err:
        client.call(sid, "test.noop", {}, timeout=math.nan)
    assert (err.value.operation, err.value.argument) == ("call", "timeout")
    assert client.layer.redis.llen(client.layer.keys.session(sid).mailbox) == 0
    handle = client.send(sid, "test.noop", {})
    with pytest.raises(InvalidArgument, match="not nan"):
        handle.get(timeout=math.nan)

    async def from_asyncio() -> None:
        async with AsyncClient(settings) as c:
            with pytest.raises(InvalidArgument):
                await c.call(sid, "test.noop", {}, timeout=math.nan)
            with pytest.raises(InvalidArgument):
                await c.handle(sid, handle.id).get(timeout=math.nan)
    asyncio.run(from_asyncio())
    assert client.layer.redis.llen(client.layer.keys.session(sid).mailbox) == 1


def test_metadata_size_is_bounded(client: Client) -> None:
    """A 20 MB metadata (was accepted: +96 MiB in Redis) or llm_config, or a config with a
    huge list of features, is refused; metadata at the bound is not."""
    limit = client.settings.max_metadata_bytes
    for argument in ("metadata", "llm_config"):
        with pytest.raises(InvalidArgument, match=f"over the limit of {limit}") as err:
            client.create_session(**{argument: {"x": "a" * 20_000_000}})
        assert err.value.argument == argument
    with pytest.raises(InvalidArgument, match=f"over the limit of {limit}") as err:
        client.create_session(config=SessionConfig(features=["f"] * limit))
    assert err.value.argument == "config"
    assert client.list_sessions() == []
    fits = {"x": "a" * (limit - len('{"x":""}'))}
    assert client.get_session(client.create_session(metadata=fits).id).metadata == fits


# -- snapshots --------------------------------------------------------------------------------
def disk_client(settings: Settings, directory: Path, **overrides: Any) -> Client:
    return Client(settings.model_copy(update={"persistence": "disk",
                                              "persistence_dir": directory, **overrides}))


def plant_deep_state(path: Path) -> None:
    """Rewrite a saved snapshot file with a state key nested 100,000 deep."""
    doc = json.loads(path.read_text())
    doc["state"]["deep"] = "HERE"
    path.write_text(json.dumps(doc).replace('"HERE"', deep_text(DEEP * 10)))


def test_deep_snapshot_is_corrupt_and_skipped(settings: Settings, tmp_path: Path) -> None:
    """Restore raises SnapshotCorrupt (was RecursionError); the listing skips it."""
    with disk_client(settings, tmp_path) as client:
        bad, good = client.create_session().id, client.create_session().id
        plant_deep_state(Path(client.save_session(bad).where))
        client.save_session(good)
        with pytest.raises(SnapshotCorrupt) as err:
            client.restore_session(bad)
        assert err.value.problem == \
            f"nested more than {client.settings.max_snapshot_depth} levels deep"
        assert err.value.where == str(tmp_path / f"{bad}.json")
        assert client.list_saved_sessions() == [good]


def test_oversized_snapshot_file_is_refused_unread(settings: Settings, tmp_path: Path) -> None:
    """A file larger than `max_snapshot_bytes` (a sparse 2 GiB one here) is corrupt from its
    size: neither restore nor the listing reads it (was read whole, +1.9 GiB)."""
    with disk_client(settings, tmp_path) as client:
        sid = client.create_session().id
        path = Path(client.save_session(sid).where)
        os.truncate(path, 2 * 1024**3)
        with pytest.raises(SnapshotCorrupt) as err:
            client.restore_session(sid)
        limit = client.settings.max_snapshot_bytes
        assert err.value.problem == (f"{2 * 1024**3} bytes, over the limit of {limit} "
                                     "(JIDO_TASKS_MAX_SNAPSHOT_BYTES)")
        assert client.list_saved_sessions() == []


def test_oversized_snapshot_key_is_refused_unread(client: Client) -> None:
    """The same for the Redis store (STRLEN before GET)."""
    sid = client.create_session().id
    key = client.save_session(sid).where
    with Client(client.settings.model_copy(update={"max_snapshot_bytes": 100})) as small:
        with pytest.raises(SnapshotCorrupt, match="over the limit of 100") as err:
            small.restore_session(sid)
        assert err.value.where == key
        assert small.list_saved_sessions() == []
    assert client.list_saved_sessions() == [sid]


@pytest.mark.parametrize("store", ["redis", "disk"])
def test_snapshot_too_large_to_read_back_is_not_saved(settings: Settings, tmp_path: Path,
                                                      store: str) -> None:
    """Saving what could not be restored raises SnapshotTooLarge and stores nothing."""
    small = settings.model_copy(update={"persistence": store, "persistence_dir": tmp_path,
                                        "max_snapshot_bytes": 2000})
    with Client(small) as client:
        sid = client.create_session(metadata={"x": "a" * 3000}).id
        with pytest.raises(SnapshotTooLarge) as err:
            client.save_session(sid)
        assert err.value.session_id == sid
        assert err.value.setting == "JIDO_TASKS_MAX_SNAPSHOT_BYTES"
        assert client.list_saved_sessions() == []
        assert not list(tmp_path.iterdir())


def test_symlinked_snapshot_directory_is_refused(settings: Settings, tmp_path: Path) -> None:
    """A snapshot directory that is itself a symlink is never followed: save, restore and
    list raise PersistenceError and nothing is written where it points."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "snapshots"
    link.symlink_to(target)
    with disk_client(settings, link) as client:
        sid = client.create_session().id
        for attempt in (lambda: client.save_session(sid), lambda: client.restore_session(sid),
                        client.list_saved_sessions):
            with pytest.raises(PersistenceError) as err:
                attempt()
            assert err.value.where == str(link)
            assert err.value.problem == "is a symbolic link; refusing to follow it"
    assert list(target.iterdir()) == []


# -- by name, on a worker -------------------------------------------------------------------
def test_by_name_tasks_bound_their_arguments(workers: Any) -> None:
    """`jido_tasks.send` and `jido_tasks.create_session` messages get the same bounds."""
    from tests.test_reach import celery_client, error_of

    group = workers(1)
    app = celery_client(group.settings)
    sid = group.client.create_session().id
    too_deep = nested(group.settings.max_json_depth + 5)
    sent = app.send_task("jido_tasks.send", args=[sid, "test.append", {"value": too_deep}],
                         queue=group.settings.queue)
    kind, message = error_of(sent)
    assert kind == "InvalidParams" and "nested more than" in message
    created = app.send_task("jido_tasks.create_session", kwargs={"metadata": too_deep},
                            queue=group.settings.queue)
    kind, message = error_of(created)
    assert kind == "InvalidArgument" and "nested more than" in message
    assert [e.id for e in group.client.list_sessions()] == [sid]


# -- the command line -----------------------------------------------------------------------
def test_cli_answers_every_mistake_with_error_and_exit_2(settings: Settings,
                                                         tmp_path: Path) -> None:
    """Deep JSON, a non-UTF-8 or missing @file, a non-finite timeout: `error: ...`, exit 2,
    no traceback (deep JSON and non-UTF-8 files were tracebacks with exit 1)."""
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"name": "café"}'.encode("latin-1"))
    sid = "session_" + "0" * 32
    cases = [
        (("sessions", "create", "--metadata", deep_text(DEEP)), "nested more than"),
        (("sessions", "create", "--llm-config", f"@{latin1}"), "not UTF-8"),
        (("sessions", "create", "--config", f"@{tmp_path / 'missing.json'}"), "cannot read"),
        (("send", sid, "test.noop", "--params", deep_text(DEEP)), "nested more than"),
        (("send", sid, "test.noop", "--params", f"@{latin1}"), "not UTF-8"),
        (("send", sid, "test.noop", "--wait", "--timeout", "nan"), "not a finite number"),
        (("sessions", "create", "--config", '{"timeout_minutes": Infinity}'), "not JSON"),
        (("sessions", "nosuchcommand",), "No such command"),
    ]
    for args, problem in cases:
        res = run_cli(settings, *args)
        assert (res.returncode, res.stdout) == (2, ""), (args, res.stderr)
        assert res.stderr.startswith("error: ") and problem in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


# -- properties -------------------------------------------------------------------------------
LIMIT = 6
"""`max_json_depth` of the property tests: hypothesis often crosses it."""
_text = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates too
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text
_keys = _text | st.integers(-3, 3) | st.none()
jsonish = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner,
                                                                           max_size=3),
    max_leaves=12)


@st.composite
def hostile(draw: st.DrawFn) -> Any:
    """A JSON-ish object: any of the above, sometimes nested deeper than the bound (or 10,000
    deep), sometimes holding sets or bytes, which JSON has not."""
    value = draw(jsonish | st.sets(st.integers(), max_size=2) | st.binary(max_size=4))
    value = nested(draw(st.sampled_from([0, 0, 1, LIMIT - 2, LIMIT, DEEP])), value)
    return {"value": value}


PROPERTY = hsettings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@pytest.fixture
def bounded(redis_server: RedisServer) -> Any:
    with Client(make_settings(redis_server.url, max_json_depth=LIMIT)) as client:
        yield client


@PROPERTY
@given(metadata=hostile(), llm_config=hostile())
def test_create_session_round_trips_or_raises_typed(bounded: Client, metadata: Any,
                                                    llm_config: Any) -> None:
    try:
        entry = bounded.create_session(metadata=metadata, llm_config=llm_config)
    except JidoTasksError:
        return
    stored = bounded.get_session(entry.id)
    assert (stored.metadata, stored.llm_config) == (metadata, llm_config)
    assert (entry.metadata, entry.llm_config) == (metadata, llm_config)


@PROPERTY
@given(params=hostile())
def test_send_round_trips_or_raises_typed(bounded: Client, params: Any) -> None:
    """Accepted params reach the action (a burst drain in this process) and the state intact."""
    sid = bounded.create_session().id
    try:
        handle = bounded.send(sid, "test.append", params)
    except JidoTasksError:
        return
    assert bounded.action(sid, handle.id).params == params
    assert burst(bounded, sid) == 1
    assert handle.get(timeout=5) == 1
    assert bounded.get_state(sid)["items"] == [params["value"]]


_tricky_text = st.text(st.sampled_from('"\\[]{}aé\n'), max_size=8)
tricky = st.recursive(_tricky_text | st.integers(), lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(_tricky_text, inner, max_size=3), max_leaves=12)


@PROPERTY
@given(value=jsonish | tricky, ascii_only=st.booleans())
def test_text_depth_is_the_depth_of_the_value(value: Any, ascii_only: bool) -> None:
    """The scan of JSON text (brackets outside strings, quotes and backslashes in strings
    included) counts what the walk of the value counts."""
    text = json.dumps({"v": value, "s": '\\"[{'}, ensure_ascii=ascii_only)
    assert text_depth(text.encode("utf-8", "surrogatepass")) == depth_of(json.loads(text), 999)


@PROPERTY
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | st.builds(lambda n, tail: b"[" * n + tail, st.integers(0, DEEP), st.binary(max_size=9)))
def test_any_bytes_decode_to_a_snapshot_or_snapshot_corrupt(raw: bytes) -> None:
    sid = "session_" + "1" * 32
    try:
        snap = decode_snapshot(raw, sid, "test", SnapshotLimits(DEEP * 2, 8))
    except SnapshotCorrupt as exc:
        assert exc.where == "test"
        return
    assert snap.session_id == sid


@PROPERTY
@given(state=hostile(), metadata=hostile(), cut=st.integers(0, 10_000))
def test_any_snapshot_file_restores_or_raises_typed(settings: Settings, tmp_path_factory: Any,
                                                    state: Any, metadata: Any,
                                                    cut: int) -> None:
    """A snapshot document holding any JSON-ish state and metadata, whole or cut short, read
    from a file: restored intact, or a typed error (never a RecursionError or ValueError)."""
    directory = tmp_path_factory.mktemp("snaps")
    with disk_client(settings, directory, max_snapshot_depth=12) as client:
        sid = client.create_session().id
        path = Path(client.save_session(sid).where)
        doc = json.loads(path.read_text())
        doc["state"], doc["entry"]["metadata"] = state, metadata
        try:
            text = json.dumps(doc)
        except (TypeError, ValueError, RecursionError):  # sets, bytes, NaN, too deep to write
            return
        whole = cut >= len(text) // 2
        path.write_text(text if whole else text[:cut], errors="surrogatepass")
        try:
            copy = client.restore_session(sid)
        except JidoTasksError:
            return
        assert whole
        written = json.loads(text)  # as JSON has it: keys are strings
        assert client.get_state(copy.id) == written["state"]
        assert copy.metadata == written["entry"]["metadata"]


@pytest.mark.parametrize("garbage", [b"\xff" + deep_text(DEEP).encode(),
                                     deep_text(DEEP).encode()])
def test_redis_snapshot_of_foreign_bytes_is_skipped(client: Client, raw_redis: redis.Redis,
                                                    garbage: bytes) -> None:
    """Garbage under a snapshot key: SnapshotCorrupt on restore, skipped by listing."""
    sid = client.create_session().id
    key = client.save_session(sid).where
    raw_redis.set(key, garbage)
    with pytest.raises(SnapshotCorrupt):
        client.restore_session(sid)
    assert client.list_saved_sessions() == []
