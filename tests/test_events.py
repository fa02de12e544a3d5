"""Event streams: lifecycle events in order, resumable ids, blocking reads and bounded length."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from jido_tasks import Client
from jido_tasks.core.events import CREATED_ID
from jido_tasks.models import Event, SessionStatus
from tests.conftest import RedisServer, burst, make_settings


@pytest.fixture(params=["single", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> str:
    """This module's tests run on a single Redis and on the three-master Redis Cluster."""
    return str(request.param)


def stream_id(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def lifecycle(client: Client, metadata: dict[str, Any] | None = None, idle: bool = True) -> str:
    """create, idle, touch (active again), terminate: six events (four without idle)."""
    sid = client.create_session(metadata=metadata).id
    if idle:
        client.sessions.transition(sid, SessionStatus.IDLE)
    client.touch(sid)
    client.terminate_session(sid)
    return sid


def cancelled(client: Client, sid: str, n: int) -> None:
    """Append n `action.cancelled` events to the session's stream (send, then cancel)."""
    for _ in range(n):
        assert client.send(sid, "test.noop").cancel()


EXPECTED_LIFECYCLE = [
    ("session.created", None, None),
    ("session.status", "idle", "active"),
    ("session.status", "active", "idle"),
    ("session.status", "terminating", "active"),
    ("session.status", "terminated", "terminating"),
    ("session.terminated", None, None),
]


def summary(events: list[Event]) -> list[tuple[str, Any, Any]]:
    return [(e.type, e.data.get("status"), e.data.get("previous_status")) for e in events]


@pytest.fixture
def bounded_client(redis_server: RedisServer, backend_settings: dict[str, Any],
                   ) -> Iterator[Client]:
    """A client whose session and global streams are bounded to about 10 entries."""
    c = Client(make_settings(redis_server.url, **backend_settings, event_maxlen=10,
                             global_event_maxlen=10))
    yield c
    c.close()


def test_lifecycle_events_on_session_stream(client: Client) -> None:
    """create + active + terminate emit created, status x2, terminated, in order."""
    sid = client.create_session(metadata={"user": "ana"}).id
    client.touch(sid)
    client.terminate_session(sid)
    events = list(client.events(sid))
    assert summary(events) == [EXPECTED_LIFECYCLE[0], *EXPECTED_LIFECYCLE[3:]]
    assert all(isinstance(e, Event) and e.session_id == sid for e in events)
    ids = [stream_id(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stamps = [e.ts for e in events]
    assert stamps == sorted(stamps)
    assert all(t.tzinfo is not None for t in stamps)
    created, terminated = events[0], events[-1]
    assert created.data == {"session_id": sid, "metadata": {"user": "ana"}}
    assert terminated.data == {"session_id": sid, "reason": "requested"}
    entry = client.get_session(sid)
    assert entry.terminated_at is not None
    assert abs(terminated.ts.timestamp() - entry.terminated_at.timestamp()) < 1e-3


def test_idle_session_drops_its_own_stream(client: Client) -> None:
    """Going idle drops the session's stream (the idle event is on the global stream only);
    activity starts a new one whose ids follow the old ones, so resuming still works."""
    sid = client.create_session().id
    created = list(client.events(sid))
    assert summary(created) == [EXPECTED_LIFECYCLE[0]]
    client.sessions.transition(sid, SessionStatus.IDLE)
    assert not client.layer.redis.exists(client.layer.keys.session(sid).events)
    assert list(client.events(sid)) == []
    client.touch(sid)
    resumed = list(client.events(sid, after=created[-1].id))
    assert summary(resumed) == [EXPECTED_LIFECYCLE[2]]
    assert stream_id(resumed[0].id) > stream_id(created[-1].id)
    in_global = [e for e in client.events() if e.session_id == sid]
    assert summary(in_global) == EXPECTED_LIFECYCLE[:3]


def test_lifecycle_events_on_global_stream(client: Client) -> None:
    """The global stream carries the same events, in the same order."""
    sid = lifecycle(client)
    session_events = list(client.events(sid))
    global_events = list(client.events())
    assert summary(global_events) == EXPECTED_LIFECYCLE
    assert all(e.session_id == sid for e in global_events)
    # The session's own stream was dropped when it went idle and restarted when active,
    # beginning again with its session.created (rebuilt from the row, id CREATED_ID).
    assert session_events[0].id == CREATED_ID and session_events[0].type == "session.created"
    assert [e.data for e in global_events[:1] + global_events[2:]] == \
        [e.data for e in session_events]
    assert [e.ts for e in global_events[:1] + global_events[2:]] == \
        [e.ts for e in session_events]


def test_a_new_session_keeps_no_stream_until_its_first_event(client: Client,
                                                             raw_redis: redis.Redis) -> None:
    """A new session's session.created goes to the global stream only; its own stream is made
    with its first event, beginning with that session.created at id CREATED_ID (as readers
    were given it before): read from the start, from CREATED_ID, or by a blocking reader
    that began before the stream existed, it comes exactly once."""
    sid = client.create_session(metadata={"user": "ana"}).id
    own = client.layer.keys.session(sid).events
    assert not raw_redis.exists(own)
    entry = client.get_session(sid)
    (before,) = list(client.events(sid))
    assert (before.id, before.type, before.session_id) == (CREATED_ID, "session.created", sid)
    assert before.data == {"session_id": sid, "metadata": {"user": "ana"}}
    assert before.ts == entry.created_at
    (in_global,) = [e for e in client.events() if e.session_id == sid]
    assert in_global.data == before.data and in_global.ts == before.ts

    seen: list[Event] = []
    reader = threading.Thread(target=lambda: seen.extend(client.events(sid, block=1.5)))
    reader.start()
    time.sleep(0.3)  # the reader got the rebuilt session.created and blocks on the stream
    client.send(sid, "test.append", {"value": 1})
    assert burst(client, sid) == 1
    reader.join(10)
    first = raw_redis.xrange(own, count=1)[0]
    assert first[0] == CREATED_ID and first[1]["type"] == "session.created"
    after = list(client.events(sid))
    assert [e.model_dump() for e in after[:1]] == [before.model_dump()]
    assert [e.type for e in after] == ["session.created", "action.succeeded"]
    assert [e.id for e in seen] == [e.id for e in after]
    assert [e.id for e in client.events(sid, after=CREATED_ID)] == [after[1].id]


def test_a_stream_stored_before_lazy_streams_is_read_as_it_is(client: Client,
                                                             raw_redis: redis.Redis) -> None:
    """Lazy migration: a session whose own stream was made at creation (as before), with
    session.created at a real id, keeps it; no second session.created is added or given."""
    sid = client.create_session().id
    own = client.layer.keys.session(sid).events
    old_id = raw_redis.xadd(own, {"type": "session.created", "sid": sid, "ts": "1700000000.5",
                                  "data": json.dumps({"session_id": sid, "metadata": {}})})
    client.send(sid, "test.append", {"value": 1})
    assert burst(client, sid) == 1
    got = list(client.events(sid))
    assert [(e.id, e.type) for e in got[:1]] == [(old_id, "session.created")]
    assert [e.type for e in got] == ["session.created", "action.succeeded"]


def test_rebuilt_session_created_of_a_restored_session(client: Client) -> None:
    """A restored session's rebuilt session.created names the snapshot it came from."""
    sid = client.create_session(metadata={"k": 1}).id
    client.save_session(sid)
    restored = client.restore_session(sid)
    (created,) = list(client.events(restored.id))
    assert created.data == {"session_id": restored.id, "metadata": {"k": 1},
                            "restored_from": sid}
    in_global = [e for e in client.events() if e.session_id == restored.id
                 and e.type == "session.created"]
    assert [e.data for e in in_global] == [created.data]


def test_global_stream_interleaves_sessions(client: Client) -> None:
    """Events of several sessions appear on the global stream in the order they happened, to
    the millisecond: the merged groups' stream ids are Redis times in ms, so two sessions'
    events within one millisecond may come in either order (each 2 ms apart here)."""
    def step() -> None:
        time.sleep(0.002)

    a = client.create_session().id
    step()
    b = client.create_session().id
    step()
    client.sessions.transition(a, SessionStatus.IDLE)
    step()
    client.sessions.transition(b, SessionStatus.IDLE)
    step()
    client.touch(a)
    got = [(e.session_id, e.type, e.data.get("status")) for e in client.events()]
    assert got == [(a, "session.created", None), (b, "session.created", None),
                   (a, "session.status", "idle"), (b, "session.status", "idle"),
                   (a, "session.status", "active")]
    assert [e.session_id for e in client.events(b)] == []  # idle: its stream was dropped


@pytest.mark.parametrize("per_session", [True, False], ids=["session", "global"])
def test_resume_after_an_event_id(client: Client, per_session: bool) -> None:
    """events(after=<id of the 2nd event>) resumes with the 3rd; after the last, nothing."""
    sid = lifecycle(client, idle=not per_session)
    target = sid if per_session else None
    events = list(client.events(target))
    assert len(events) == (4 if per_session else 6)
    resumed = list(client.events(target, after=events[1].id))
    assert resumed == events[2:]
    assert list(client.events(target, after=events[-1].id)) == []
    # a new event after the subscriber's last id is the only one it sees on resuming
    client.create_session()
    if per_session:
        assert list(client.events(sid, after=events[-1].id)) == []
    else:
        more = list(client.events(after=events[-1].id))
        assert [e.type for e in more] == ["session.created"]


def test_reading_pages_through_a_long_stream(client: Client) -> None:
    """More events than one read page (500) are all returned, once each, in order."""
    sid = client.create_session().id
    cancelled(client, sid, 600)
    events = list(client.events(sid))
    assert len(events) == 601
    assert len({e.id for e in events}) == 601
    assert [stream_id(e.id) for e in events] == sorted(stream_id(e.id) for e in events)
    assert [e.type for e in events[1:]] == ["action.cancelled"] * 600
    assert list(client.events(sid, after=events[499].id)) == events[500:]


def test_blocking_read_sees_a_later_event(client: Client) -> None:
    """events(sid, block=0.5) in a thread receives an event appended after it started."""
    sid = client.create_session().id
    last = list(client.events(sid))[-1].id
    got: list[Event] = []
    failures: list[BaseException] = []
    ready = threading.Event()

    def reader() -> None:
        try:
            stream = client.events(sid, after=last, block=0.5)
            ready.set()
            got.extend(stream)
        except BaseException as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    assert ready.wait(5)
    cancelled(client, sid, 2)
    thread.join(10)
    assert not thread.is_alive()
    assert failures == []
    assert [e.type for e in got] == ["action.cancelled"] * 2


def test_blocking_read_on_global_stream(client: Client) -> None:
    """A blocking reader of the global stream sees a session created after it started."""
    got: list[Event] = []
    ready = threading.Event()

    def reader() -> None:
        stream = client.events(block=0.5)
        ready.set()
        got.extend(stream)

    thread = threading.Thread(target=reader)
    thread.start()
    assert ready.wait(5)
    sid = client.create_session().id
    thread.join(10)
    assert not thread.is_alive()
    assert [(e.type, e.session_id) for e in got] == [("session.created", sid)]


def test_blocking_read_ends_when_quiet(client: Client) -> None:
    """A blocking read with no new event ends after about `block` seconds, empty."""
    sid = client.create_session().id
    last = list(client.events(sid))[-1].id
    started = time.monotonic()
    assert list(client.events(sid, after=last, block=0.3)) == []
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3


def test_blocking_read_returns_backlog_first(client: Client) -> None:
    """A blocking read from the start returns the events already there, then ends."""
    sid = lifecycle(client, idle=False)
    expected = [EXPECTED_LIFECYCLE[0], *EXPECTED_LIFECYCLE[3:]]
    assert summary(list(client.events(sid, block=0.2))) == expected


def test_stream_length_is_bounded(bounded_client: Client, raw_redis: redis.Redis) -> None:
    """With event_maxlen=10 (and global_event_maxlen=10, shared by the slot groups' streams),
    500 events leave the streams far shorter, newest kept."""
    c = bounded_client
    sid = c.create_session().id
    cancelled(c, sid, 500)
    session_stream = c.layer.keys.session(sid).events
    global_stream = c.layer.keys.group_for(sid).events
    # XADD MAXLEN ~ trims whole stream nodes (100 entries by default): approximately bounded
    assert 10 <= raw_redis.xlen(session_stream) < 200
    assert 1 <= raw_redis.xlen(global_stream) < 200  # the group's share: 10 / index_shards
    assert 1 <= len(list(c.events())) < 200
    kept = list(c.events(sid))
    assert len(kept) == raw_redis.xlen(session_stream)
    assert all(e.type == "action.cancelled" for e in kept)  # session.created was trimmed


def test_event_from_stream_tolerates_missing_fields() -> None:
    """Event.from_stream reads a bare stream entry (no sid, no data) with defaults."""
    ev = Event.from_stream("1-0", {"type": "x", "ts": "1700000000.5"})
    assert ev.id == "1-0" and ev.type == "x"
    assert ev.session_id is None and ev.data == {}
    assert ev.ts.timestamp() == 1700000000.5


def test_terminated_session_stream_expires(client: Client, raw_redis: redis.Redis) -> None:
    """A terminated session's own stream gets a TTL of terminated_events_ttl; the registry
    row itself stays (for the retention period)."""
    sid = client.create_session().id
    client.terminate_session(sid)
    keys = client.layer.keys.session(sid)
    ttl_ms = raw_redis.pttl(keys.events)
    assert 0 < ttl_ms <= client.settings.terminated_events_ttl * 1000
    assert raw_redis.pttl(keys.entry) == -1
    assert [e.type for e in client.events(sid)][-1] == "session.terminated"


def merged_key(event_id: str) -> tuple[int, int, int]:
    ms, seq, group = event_id.split("-")
    return int(ms), int(seq), int(group)


def test_global_stream_resumes_exactly_across_groups(client: Client) -> None:
    """While a writer creates sessions (their events go to many slot groups, several in the
    same millisecond), a subscriber reads a few events at a time and resumes from the last id
    it saw: it gets every event once, in the order of the merged stream."""
    start = [e.id for e in client.events()]
    seen: list[str] = []
    done = threading.Event()

    def write() -> None:
        for _ in range(150):
            client.create_session()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    after = start[-1] if start else "0"
    while not done.is_set() or seen[-1:] != [e.id for e in client.events(after=after)][-1:]:
        for i, event in enumerate(client.events(after=after, block=0.2)):
            seen.append(event.id)
            after = event.id
            if i == 6:  # stop mid-stream; resume from the cursor
                break
        if done.is_set() and not list(client.events(after=after)):
            break
    writer.join()
    full = [e.id for e in client.events()]
    assert seen == full[len(start):]
    assert len(seen) == len(set(seen)) == 150
    assert [merged_key(i) for i in full] == sorted(merged_key(i) for i in full)
    assert len({merged_key(i)[2] for i in seen}) > 50  # spread over many groups


def test_global_cursor_tells_equal_stream_ids_of_two_groups_apart(client: Client,
                                                                   raw_redis: redis.Redis,
                                                                   ) -> None:
    """Three groups hold the same stream ids (as they do when they are written in the same
    millisecond): the merge orders them by group, and every cursor resumes exactly."""
    groups = [client.layer.keys.group(g) for g in (7, 3, 200)]
    for group in groups:
        for stream_id in ("5-0", "5-1", "6-0"):
            raw_redis.xadd(group.events, {"type": f"t{group.group}", "ts": "1.0"}, id=stream_id)
    ids = [e.id for e in client.events()]
    assert ids == [f"{sid}-{g}" for sid in ("5-0", "5-1", "6-0") for g in (3, 7, 200)]
    for i, cursor in enumerate(ids):
        assert [e.id for e in client.events(after=cursor)] == ids[i + 1:]


def test_old_style_cursor_of_the_global_stream(client: Client) -> None:
    """A stream id (`ms-seq`, what the global stream's ids were before slot groups) resumes
    after that id in every group."""
    first = client.create_session().id
    events = list(client.events())
    ms, seq, _ = merged_key(events[-1].id)
    second = client.create_session().id
    assert [e.session_id for e in client.events(after=f"{ms}-{seq}")] == [second]
    assert first != second
