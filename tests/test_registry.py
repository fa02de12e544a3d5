"""The session registry: every client call, the lifecycle, the Redis indexes and bad input."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from jido_tasks import Client, Settings
from jido_tasks.errors import (
    InvalidArgument,
    InvalidEntry,
    InvalidParams,
    InvalidSessionId,
    InvalidTransition,
    JidoTasksError,
    SessionNotActive,
    SessionNotFound,
)
from jido_tasks.models import (
    SESSION_ID,
    SessionConfig,
    SessionEntry,
    SessionStatus,
    utcnow,
)

ACTIVE, IDLE = SessionStatus.ACTIVE, SessionStatus.IDLE
TERMINATING, TERMINATED = SessionStatus.TERMINATING, SessionStatus.TERMINATED
ALLOWED = {(ACTIVE, IDLE), (IDLE, ACTIVE), (ACTIVE, TERMINATING), (IDLE, TERMINATING),
           (TERMINATING, TERMINATED)}
ALL_PAIRS = [(a, b) for a in SessionStatus for b in SessionStatus]


def ns_keys(raw_redis: redis.Redis, settings: Settings) -> set[str]:
    """Every key of the test's namespace."""
    return set(raw_redis.scan_iter(match=f"{settings.namespace}:*", count=1000))


def all_keys(raw_redis: redis.Redis) -> set[str]:
    return set(raw_redis.scan_iter(count=1000))


def index_membership(client: Client, raw_redis: redis.Redis, sid: str) -> dict[str, bool]:
    k = client.layer.keys
    return {name: raw_redis.zscore(getattr(k.group_for(sid), name), sid) is not None
            for name in ("activity", "active", "expiry", "terminated")}


def expected_membership(status: SessionStatus) -> dict[str, bool]:
    """Where a session of each status must be indexed."""
    return {
        "activity": status in (ACTIVE, TERMINATING),  # an idle one is only in expiry
        "active": status is ACTIVE,
        "expiry": status in (ACTIVE, IDLE),
        "terminated": status is TERMINATED,
    }


def session_in(client: Client, status: SessionStatus) -> str:
    """A new session brought to `status` through allowed transitions."""
    sid = client.create_session().id
    path = {ACTIVE: [], IDLE: [IDLE], TERMINATING: [TERMINATING],
            TERMINATED: [TERMINATING, TERMINATED]}[status]
    for step in path:
        client.sessions.transition(sid, step)
    assert client.get_session(sid).status is status
    return sid


# -- create / get ---------------------------------------------------------------------------

def test_create_session_defaults(client: Client, raw_redis: redis.Redis) -> None:
    """create_session() makes an active session with default config, stored and indexed."""
    before = utcnow()
    entry = client.create_session()
    assert isinstance(entry, SessionEntry)
    assert SESSION_ID.fullmatch(entry.id)
    assert entry.status is ACTIVE
    assert entry.metadata == {} and entry.llm_config == {}
    assert entry.config == SessionConfig()
    assert entry.created_at == entry.updated_at == entry.last_activity
    assert entry.created_at.tzinfo is not None
    assert abs(entry.created_at - before) < timedelta(seconds=5)
    assert entry.terminated_at is None and entry.reason is None and entry.restored_from is None
    assert client.get_session(entry.id) == entry
    assert index_membership(client, raw_redis, entry.id) == expected_membership(ACTIVE)
    k = client.layer.keys
    assert raw_redis.zscore(k.group_for(entry.id).activity, entry.id) == pytest.approx(
        entry.last_activity.timestamp(), abs=1e-3)
    assert raw_redis.zscore(k.group_for(entry.id).expiry, entry.id) == pytest.approx(
        entry.last_activity.timestamp() + 30 * 60, abs=1e-3)


def test_create_session_with_metadata_llm_config_and_config(client: Client) -> None:
    """metadata, llm_config and config (dict or SessionConfig) are stored and read back."""
    meta = {"user": "ana", "nested": {"tags": ["a", "b"], "n": 1.5, "ok": True, "none": None}}
    llm = {"model": "m-1", "temperature": 0.2}
    entry = client.create_session(metadata=meta, llm_config=llm,
                                  config={"max_history": 7, "features": ["x"]})
    assert entry.metadata == meta and entry.llm_config == llm
    assert entry.config == SessionConfig(max_history=7, features=["x"])
    assert client.get_session(entry.id) == entry

    cfg = SessionConfig(max_files=3, persistence_enabled=True)
    other = client.create_session(config=cfg)
    assert client.get_session(other.id).config == cfg


def test_session_timeout_sets_expiry(client: Client, raw_redis: redis.Redis,
                                     settings: Settings) -> None:
    """The expiry index holds last activity + the session's timeout (or default_timeout)."""
    k = client.layer.keys
    short = client.create_session(config={"timeout_minutes": 2})
    assert raw_redis.zscore(k.group_for(short.id).expiry, short.id) == pytest.approx(
        short.last_activity.timestamp() + 120, abs=1e-3)
    dflt = client.create_session(config={"timeout_minutes": None})
    assert raw_redis.zscore(k.group_for(dflt.id).expiry, dflt.id) == pytest.approx(
        dflt.last_activity.timestamp() + settings.default_timeout, abs=1e-3)


def test_get_state_of_new_session_is_empty(client: Client) -> None:
    """get_state of a fresh session is an empty JSON object."""
    sid = client.create_session().id
    assert client.get_state(sid) == {}


@pytest.mark.parametrize("kwargs", [
    {"metadata": "not a dict"},
    {"metadata": ["a", "b"]},
    {"metadata": []},
    {"metadata": ""},
    {"metadata": 5},
    {"metadata": {1: "int key"}},
    {"metadata": {"obj": object()}},
    {"metadata": {"nan": float("nan")}},
    {"llm_config": "gpt"},
    {"llm_config": {"bytes": b"\x00"}},
    {"config": {"unknown_field": 1}},
    {"config": {"max_history": -1}},
    {"config": {"max_history": 0}},
    {"config": {"timeout_minutes": -5}},
    {"config": "fast"},
], ids=lambda kw: repr(kw)[:40])
def test_create_session_rejects_bad_input(client: Client, raw_redis: redis.Redis,
                                          settings: Settings, kwargs: dict[str, Any]) -> None:
    """Bad metadata, llm_config or config -> InvalidArgument naming it; nothing is stored."""
    before = all_keys(raw_redis)
    with pytest.raises(InvalidArgument) as info:
        client.create_session(**kwargs)
    assert type(info.value) is InvalidArgument
    assert info.value.operation == "create_session"
    assert info.value.argument == next(iter(kwargs))
    assert info.value.problem
    assert info.value.session_id is None
    assert ns_keys(raw_redis, settings) == {client.layer.keys.layout}  # the client's own
    assert all_keys(raw_redis) <= before  # nothing added (other tests' keys may expire)


# -- list -----------------------------------------------------------------------------------

def test_list_sessions_default_and_filters(client: Client) -> None:
    """list_sessions() lists every session not terminated; status= filters by one status."""
    act = session_in(client, ACTIVE)
    idle = session_in(client, IDLE)
    ting = session_in(client, TERMINATING)
    ted = session_in(client, TERMINATED)

    def ids(status: Any = None) -> set[str]:
        return {e.id for e in client.list_sessions(status)}

    assert ids() == {act, idle, ting}
    assert ids("active") == {act}
    assert ids(IDLE) == {idle}
    assert ids("terminating") == {ting}
    assert ids("terminated") == {ted}
    assert all(isinstance(e, SessionEntry) for e in client.list_sessions())


def test_list_sessions_newest_activity_first(client: Client) -> None:
    """list_sessions orders by last activity, newest first; touching moves a session up."""
    a, b, c = (client.create_session().id for _ in range(3))
    assert [e.id for e in client.list_sessions()] == [c, b, a]
    client.touch(a)
    assert [e.id for e in client.list_sessions()] == [a, c, b]


def test_list_sessions_empty_namespace(client: Client) -> None:
    """A namespace with no sessions lists nothing, for every status."""
    assert client.list_sessions() == []
    for status in SessionStatus:
        assert client.list_sessions(status) == []


def test_list_sessions_unknown_status(client: Client) -> None:
    """An unknown status filter is a typed error, not a bare ValueError."""
    client.create_session()
    with pytest.raises(InvalidArgument) as info:
        client.list_sessions("sleeping")
    assert (info.value.operation, info.value.argument) == ("list_sessions", "status")
    assert "sleeping" in info.value.problem


# -- terminate ------------------------------------------------------------------------------

@pytest.mark.parametrize("start", [ACTIVE, IDLE])
def test_terminate_session_without_pending_work(client: Client, raw_redis: redis.Redis,
                                                start: SessionStatus) -> None:
    """With no pending work, terminate_session ends at terminated, with time and reason."""
    sid = session_in(client, start)
    created = client.get_session(sid)
    entry = client.terminate_session(sid)
    assert entry.status is TERMINATED
    assert entry.reason == "requested"
    assert entry.terminated_at is not None
    assert entry.terminated_at >= created.created_at
    assert entry.updated_at == entry.terminated_at
    assert client.get_session(sid) == entry
    assert index_membership(client, raw_redis, sid) == expected_membership(TERMINATED)
    assert raw_redis.zscore(client.layer.keys.group_for(sid).terminated, sid) == pytest.approx(
        entry.terminated_at.timestamp(), abs=1e-3)
    assert sid not in {e.id for e in client.list_sessions()}
    assert sid in {e.id for e in client.list_sessions("terminated")}


def test_terminate_session_keeps_the_given_reason(client: Client) -> None:
    """terminate_session(reason=...) records that reason."""
    sid = client.create_session().id
    assert client.terminate_session(sid, reason="user logged out").reason == "user logged out"
    assert client.get_session(sid).reason == "user logged out"


def test_terminate_twice_returns_it_unchanged(client: Client) -> None:
    """Terminating a terminated session is idempotent (like Celery's revoke): the entry comes
    back as it was (its first reason kept) and nothing changes."""
    sid = client.create_session().id
    first = client.terminate_session(sid)
    assert client.terminate_session(sid, reason="again") == first
    assert client.get_session(sid) == first
    assert first.reason == "requested"


# -- touch ----------------------------------------------------------------------------------

def test_touch_active_session_records_activity(client: Client, raw_redis: redis.Redis) -> None:
    """touch on an active session moves last_activity and the activity index forward; the
    active and expiry scores stay lower bounds (the sweep re-checks the row)."""
    entry = client.create_session()
    touched = client.touch(entry.id)
    assert touched.status is ACTIVE
    assert touched.last_activity >= entry.last_activity
    k = client.layer.keys
    last = touched.last_activity.timestamp()
    g = k.group_for(entry.id)
    assert raw_redis.zscore(g.activity, entry.id) == pytest.approx(last, abs=1e-6)
    assert raw_redis.zscore(k.group_for(entry.id).active, entry.id) == pytest.approx(
        entry.last_activity.timestamp(), abs=1e-6)
    assert raw_redis.zscore(k.group_for(entry.id).expiry, entry.id) == pytest.approx(
        entry.last_activity.timestamp() + 1800, abs=1e-6)


def test_touch_idle_session_makes_it_active(client: Client, raw_redis: redis.Redis) -> None:
    """touch on an idle session makes it active again and re-enters the active index."""
    sid = session_in(client, IDLE)
    assert index_membership(client, raw_redis, sid) == expected_membership(IDLE)
    entry = client.touch(sid)
    assert entry.status is ACTIVE
    assert client.get_session(sid) == entry
    assert index_membership(client, raw_redis, sid) == expected_membership(ACTIVE)
    assert raw_redis.zscore(client.layer.keys.group_for(sid).active, sid) == pytest.approx(
        entry.last_activity.timestamp(), abs=1e-3)


@pytest.mark.parametrize("status", [TERMINATING, TERMINATED])
def test_touch_ending_session_is_refused(client: Client, status: SessionStatus) -> None:
    """touch on a terminating/terminated session raises SessionNotActive, changes nothing."""
    sid = session_in(client, status)
    before = client.get_session(sid)
    with pytest.raises(SessionNotActive) as info:
        client.touch(sid)
    assert info.value.session_id == sid
    assert info.value.status == status.value
    assert client.get_session(sid) == before


# -- transitions ----------------------------------------------------------------------------

@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=lambda s: str(s))
def test_transition(client: Client, raw_redis: redis.Redis, src: SessionStatus,
                    dst: SessionStatus) -> None:
    """Allowed transitions change status and indexes; any other raises InvalidTransition."""
    sid = session_in(client, src)
    before = client.get_session(sid)
    if (src, dst) in ALLOWED:
        entry = client.sessions.transition(sid, dst)
        assert entry.status is dst
        assert entry.updated_at >= before.updated_at
        assert client.get_session(sid) == entry
        assert index_membership(client, raw_redis, sid) == expected_membership(dst)
        if dst is TERMINATED:
            assert entry.terminated_at is not None
    else:
        with pytest.raises(InvalidTransition) as info:
            client.sessions.transition(sid, dst)
        err = info.value
        assert type(err) is InvalidTransition
        assert (err.session_id, err.from_status, err.to_status) == (sid, src.value, dst.value)
        assert client.get_session(sid) == before
        assert index_membership(client, raw_redis, sid) == expected_membership(src)


def test_transition_to_unknown_status(client: Client) -> None:
    """A target that is not a status raises InvalidTransition naming it; nothing changes."""
    sid = client.create_session().id
    before = client.get_session(sid)
    with pytest.raises(InvalidTransition) as info:
        client.sessions.transition(sid, "paused")
    assert info.value.to_status == "paused"
    assert info.value.session_id == sid
    assert client.get_session(sid) == before


def test_transition_reason_is_recorded(client: Client) -> None:
    """A reason given with a transition to terminating is kept through terminated."""
    sid = client.create_session().id
    assert client.sessions.transition(sid, TERMINATING, reason="shutdown").reason == "shutdown"
    entry = client.sessions.transition(sid, TERMINATED)
    assert entry.reason == "shutdown"


# -- bad and unknown ids --------------------------------------------------------------------

BAD_IDS: list[Any] = [
    "",
    "../x",
    "session_" + "a" * 10_240,
    "x" * 10_240,
    "session_" + "é" * 32,
    "session_" + "\u0663" * 32,  # ARABIC-INDIC DIGIT THREE: a digit, but not ASCII
    "session_{" + "a" * 30 + "}",
    "session_" + "a" * 31 + ":",
    "session_" + "a" * 31 + "\n",
    "session_" + "A" * 32,
    "session_" + uuid.uuid4().hex.upper(),
    "session_" + str(uuid.uuid4()),
    "act_" + uuid.uuid4().hex + "abcd",
    " session_" + "a" * 31,
    123,
    None,
    b"session_" + b"a" * 32,
    ["session_" + "a" * 32],
]

OPS: dict[str, Callable[[Client, Any], Any]] = {
    "get_session": lambda c, sid: c.get_session(sid),
    "touch": lambda c, sid: c.touch(sid),
    "terminate_session": lambda c, sid: c.terminate_session(sid),
    "get_state": lambda c, sid: c.get_state(sid),
    "transition": lambda c, sid: c.sessions.transition(sid, "idle"),
    "events": lambda c, sid: c.events(session_id=sid),
}

BAD_CASES = [(op, bad) for op in OPS for bad in BAD_IDS
             if not (op == "events" and bad is None)]  # events(None) means the global stream


@pytest.mark.parametrize(("op", "bad"), BAD_CASES,
                         ids=[f"{op}-{i}" for i, (op, _) in enumerate(BAD_CASES)])
def test_bad_session_id_is_rejected_before_redis(client: Client, raw_redis: redis.Redis,
                                                 settings: Settings, op: str, bad: Any) -> None:
    """A malformed session id raises InvalidSessionId at the call, and no key is created."""
    client.create_session()  # something in the namespace, which must stay as it is
    before_ns, before_all = ns_keys(raw_redis, settings), all_keys(raw_redis)
    with pytest.raises(InvalidSessionId) as info:
        OPS[op](client, bad)
    err = info.value
    assert type(err) is InvalidSessionId
    assert err.invalid_id == bad
    assert err.problem
    assert err.session_id is None
    assert len(str(err)) < 300  # a 10 kB id is not echoed back whole
    assert ns_keys(raw_redis, settings) == before_ns
    assert all_keys(raw_redis) <= before_all  # nothing added anywhere


@pytest.mark.parametrize("op", [op for op in OPS if op != "events"])
def test_unknown_session_id(client: Client, raw_redis: redis.Redis, settings: Settings,
                            op: str) -> None:
    """A well-formed id of no session raises SessionNotFound with .session_id; nothing stored."""
    client.create_session()
    before = ns_keys(raw_redis, settings)
    unknown = f"session_{uuid.uuid4().hex}"
    with pytest.raises(SessionNotFound) as info:
        OPS[op](client, unknown)
    assert type(info.value) is SessionNotFound
    assert info.value.session_id == unknown
    assert unknown in str(info.value)
    assert ns_keys(raw_redis, settings) == before


def test_unknown_session_has_no_events(client: Client) -> None:
    """events() of a well-formed id with no stream yields nothing (and creates nothing)."""
    assert list(client.events(f"session_{uuid.uuid4().hex}")) == []


# -- SessionEntry and the registry row ------------------------------------------------------

def test_session_entry_round_trip() -> None:
    """SessionEntry.to_redis / from_redis round-trip every field."""
    now = utcnow()
    entry = SessionEntry(
        id=f"session_{uuid.uuid4().hex}", status=TERMINATED,
        metadata={"a": [1, 2, {"b": None}], "é": "ünïcode"}, llm_config={"model": "x"},
        config=SessionConfig(max_history=5, timeout_minutes=None, features=["f"]),
        created_at=now - timedelta(hours=1), updated_at=now - timedelta(seconds=1),
        last_activity=now - timedelta(minutes=3), terminated_at=now, reason="done",
        restored_from=f"session_{uuid.uuid4().hex}")
    row = entry.to_redis(default_timeout=99.0)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())
    assert row["timeout"] == repr(99.0)
    assert row["status"] == "terminated"
    back = SessionEntry.from_redis(entry.id, "some:key", row)
    assert back == entry


def test_session_entry_minimal_row_leaves_defaults_out() -> None:
    """Default and empty fields are not written to the hash, and read back as defaults."""
    now = utcnow()
    entry = SessionEntry(id=f"session_{uuid.uuid4().hex}", created_at=now, updated_at=now,
                         last_activity=now)
    row = entry.to_redis(default_timeout=1800.0)
    assert set(row) == {"status", "created_at", "updated_at", "last_activity", "timeout"}
    assert row["timeout"] == repr(30 * 60.0)
    assert SessionEntry.from_redis(entry.id, "k", row) == entry


def test_session_entry_rejects_bad_id() -> None:
    """A SessionEntry cannot be built with a malformed id (a pydantic field error on `id`)."""
    now = utcnow()
    with pytest.raises(ValidationError) as info:
        SessionEntry(id="../etc/passwd", created_at=now, updated_at=now, last_activity=now)
    assert info.value.errors()[0]["loc"] == ("id",)


CORRUPTIONS: list[tuple[str, str | None]] = [
    ("status", "bogus"),
    ("metadata", "{not json"),
    ("metadata", "[1, 2]"),
    ("config", '{"max_history": -4}'),
    ("config", '{"colour": "red"}'),
    ("created_at", "yesterday"),
    ("created_at", None),  # field missing
    ("unexpected_field", "x"),
    ("id", "garbage"),
    ("id", f"session_{uuid.uuid4().hex}"),  # a row that names another session
]


@pytest.mark.parametrize(("field", "value"), CORRUPTIONS,
                         ids=[f"{f}={v!r}"[:40] for f, v in CORRUPTIONS])
def test_corrupt_registry_row(client: Client, raw_redis: redis.Redis, field: str,
                              value: str | None) -> None:
    """A corrupt registry row makes get_session raise InvalidEntry naming the key."""
    sid = client.create_session(metadata={"a": 1}).id
    key = client.layer.keys.session(sid).entry
    if value is None:
        raw_redis.hdel(key, field)
    else:
        raw_redis.hset(key, field, value)
    with pytest.raises(InvalidEntry) as info:
        client.get_session(sid)
    err = info.value
    assert type(err) is InvalidEntry
    assert err.key == key
    assert err.session_id == sid
    assert key in str(err)
    assert err.problem


# -- concurrency ----------------------------------------------------------------------------

def test_concurrent_creates(client: Client) -> None:
    """50 threads creating sessions at once get 50 distinct ids, all listed."""
    n = 50
    barrier = threading.Barrier(n)
    results: list[SessionEntry | BaseException] = [RuntimeError("not run")] * n

    def create(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = client.create_session(metadata={"i": i})
        except BaseException as exc:  # reported by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert time.monotonic() - started < 30
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    entries = [r for r in results if isinstance(r, SessionEntry)]
    ids = {e.id for e in entries}
    assert len(ids) == n
    assert sorted(e.metadata["i"] for e in entries) == list(range(n))
    listed = client.list_sessions()
    assert {e.id for e in listed} == ids
    assert len(listed) == n
    assert {e.id for e in client.list_sessions("active")} == ids


def test_errors_are_jido_tasks_errors() -> None:
    """Every error the registry raises is a JidoTasksError (one except clause catches all)."""
    for cls in (InvalidArgument, InvalidEntry, InvalidParams, InvalidSessionId, InvalidTransition,
                SessionNotActive, SessionNotFound):
        assert issubclass(cls, JidoTasksError)


def test_listing_skips_a_corrupt_row_and_foreign_members(client: Client,
                                                          raw_redis: redis.Redis,
                                                          caplog: pytest.LogCaptureFixture,
                                                          ) -> None:
    """One corrupt row or a malformed index member is logged and skipped; the rest list."""
    good = client.create_session().id
    bad = client.create_session().id
    raw_redis.hset(client.layer.keys.session(bad).entry, "status", "bogus")
    raw_redis.zadd(client.layer.keys.group(0).activity, {"../../etc": 1.0})
    with caplog.at_level("WARNING"):
        listed = [e.id for e in client.list_sessions()]
    assert listed == [good]
    assert bad in caplog.text and "../../etc" in caplog.text


def test_initial_state_must_be_strict_json(client: Client) -> None:
    """A state with NaN or a non-JSON value is refused at create and nothing is stored."""
    before = client.list_sessions()
    for state in ({"x": float("nan")}, {"x": object()}, [1, 2]):
        with pytest.raises(InvalidArgument):
            client.sessions.create(state=state)  # type: ignore[arg-type]
    assert client.list_sessions() == before


@pytest.mark.parametrize("after", ["garbage", "1-2-3-4", "", "$", "-1"])
def test_events_refuse_a_malformed_after_id(client: Client, after: str) -> None:
    """events(after=...) that is not a stream id is a typed error, not a Redis error."""
    with pytest.raises(InvalidArgument) as err:
        client.events(after=after)
    assert "stream id" in err.value.problem


def test_list_sessions_pages_newest_first(client: Client) -> None:
    """offset/limit page the listing, newest activity first; the client closes as a context
    manager."""
    sids = [client.create_session().id for _ in range(5)]
    newest_first = list(reversed(sids))
    assert [e.id for e in client.list_sessions(limit=2)] == newest_first[:2]
    assert [e.id for e in client.list_sessions(offset=2, limit=2)] == newest_first[2:4]
    assert [e.id for e in client.list_sessions(offset=4)] == newest_first[4:]
    with Client(client.settings) as other:
        assert len(other.list_sessions()) == 5


def test_list_sessions_pages_within_a_status(client: Client) -> None:
    """With a status filter, offset/limit count sessions of that status."""
    sids = [client.create_session().id for _ in range(6)]
    for sid in sids[::2]:
        client.sessions.transition(sid, IDLE)
    idle_newest_first = [e.id for e in client.list_sessions("idle")]
    assert sorted(idle_newest_first) == sorted(sids[::2])
    assert [e.id for e in client.list_sessions("idle", limit=2)] == idle_newest_first[:2]
    paged = [e.id for e in client.list_sessions("idle", offset=1, limit=5)]
    assert paged == idle_newest_first[1:]
    assert len(client.list_sessions("active", offset=2)) == 1
    with pytest.raises(InvalidArgument):
        client.list_sessions(offset=-1)
