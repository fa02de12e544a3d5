"""Reading the event streams (events are appended atomically by the Lua scripts).

Every event goes to its slot group's stream and (but for `session.created` and idle sessions'
status changes) to its session's own stream, both bounded in length; the global stream is the
merge of the groups' (`merged_plan`). A session's own stream is made with its first event after
creation (see `CREATED_ID`). A subscriber resumes
from the last id it saw by passing it as `after`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from jido_tasks.errors import InvalidArgument
from jido_tasks.models import Event, validate_session_id
from jido_tasks.store.connection import Layer, Read, RedisLayer, typed_redis_error

_PAGE = 500
_STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
_GLOBAL_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20})(?:-(\d{1,10}))?)?")
MERGE_POLL = 0.1
"""Seconds between reads of the groups' streams while a global subscriber waits."""
CLOCK_MARGIN_MS = 10
"""How far the masters' clocks may disagree (a cluster's nodes run NTP): the global merge
reads the groups' streams this long after it read the time up to which it delivers."""


@dataclass(frozen=True, slots=True)
class Pause:
    """A step of a reading plan: wait this many seconds, then send None."""

    seconds: float


Step = Read[Any] | Event | Pause


def reader_plan(layer: Layer, session_id: str | None, after: str, block: float | None,
                ) -> Generator[Step, Any, None]:
    """The plan reading a session's events (or all, merged over the slot groups) after
    `after`; bad arguments raise here, before anything is read."""
    if session_id is not None:
        stream = event_stream(layer, session_id, after)
        return _session_plan(layer, session_id, stream, after, block)
    if not isinstance(after, str) or not (found := _GLOBAL_ID.fullmatch(after)):
        raise InvalidArgument("events", "after",
                              f"{after!r} is not an event id of the global stream (a "
                              "stream id like '1700000000000-0', or '1700000000000-0-17')")
    ms, seq, group = found.groups()
    cursor = (int(ms), int(seq or 0), int(group) if group is not None else _LAST)
    return merged_plan(layer, None if after == "0" else cursor, block)


_LAST = 1 << 40
"""The group of a cursor without one (a stream id): after that id in every group."""


def event_stream(layer: Layer, session_id: str, after: str) -> str:
    """A session's stream, after checking the arguments: a malformed `session_id` or `after`
    raises here, before anything is read."""
    if not isinstance(after, str) or not _STREAM_ID.fullmatch(after):
        raise InvalidArgument("events", "after",
                              f"{after!r} is not a stream id like '1700000000000-0'",
                              session_id=session_id)
    validate_session_id(session_id)
    return layer.keys.session(session_id).events


CREATED_ID = "0-1"
"""The id of `session.created` in a session's own stream (before any real id): a session's
stream is made with its first event after creation, beginning with that `session.created`
(`seed_own_stream` in store/lua/_lib.lua); until then a reader is given it from the row."""


def _session_plan(layer: Layer, session_id: str, stream: str, after: str,
                  block: float | None) -> Generator[Step, Any, None]:
    """A session's events after `after`. Read from the start, an active session that has no
    stream yet (nothing happened since its creation) first yields its `session.created`,
    rebuilt from the registry row with id `CREATED_ID`, as its stream will hold it; sessions
    stored before streams were made lazily begin with their own `session.created`."""
    if after in ("0", "0-0"):
        created = yield Read([("EXISTS", stream),
                              ("HMGET", layer.keys.session(session_id).entry, "status",
                               "created_at", "metadata", "restored_from")],
                             lambda replies: _created(session_id, replies))
        if created is not None:
            yield created
            after = CREATED_ID
    yield from events_plan(stream, after, block)


def _created(session_id: str, replies: list[Any]) -> Event | None:
    """The `session.created` of an active session without a stream of its own, or None."""
    exists, (status, created_at, metadata, restored_from) = replies
    if int(exists) or status != "active" or created_at is None:
        return None
    data: dict[str, Any] = {"session_id": session_id,
                            "metadata": json.loads(metadata) if metadata else {}}
    if restored_from:
        data["restored_from"] = restored_from
    return Event.from_stream(CREATED_ID, {"type": "session.created", "sid": session_id,
                                          "ts": created_at, "data": json.dumps(data)})


def events_plan(stream: str, after: str, block: float | None,
                ) -> Generator[Read[Entries] | Event, Any, None]:
    """The reading logic, for the sync and the async iterator alike: yields a `Read` (send it
    the reply) or an `Event` (hand it to the caller, send None)."""
    last = after
    while True:
        if block is None:
            entries = yield Read([("XRANGE", stream, f"({last}" if last != "0" else "-", "+",
                                   "COUNT", _PAGE)], _xrange)
        else:
            deadline = time.monotonic() + block
            entries = yield Read([("XREAD", "COUNT", _PAGE, "BLOCK", max(1, int(block * 1000)),
                                   "STREAMS", stream, last)], _xread)
            if not entries and time.monotonic() >= deadline - 0.001:
                return
        if not entries:
            if block is None:
                return
            continue
        for stream_id, fields in entries:
            last = stream_id
            yield Event.from_stream(stream_id, fields)


Entries = list[tuple[str, dict[str, str]]]


def _xrange(replies: list[Any]) -> Entries:
    return list(replies[0])


def _xread(replies: list[Any]) -> Entries:
    return list(replies[0][0][1]) if replies[0] else []


Key = tuple[int, int, int]
"""An event's place in the merged stream: (ms, seq, group)."""


def _key(stream_id: str, group: int) -> Key:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0), group


def merged_plan(layer: Layer, after: Key | None, block: float | None,
                ) -> Generator[Step, Any, None]:
    """The events of every group after `after`, in (ms, seq, group) order; each `Event.id`
    is `ms-seq-group`, a cursor from which `after` resumes exactly.

    A round reads Redis TIME, waits `CLOCK_MARGIN_MS`, then reads each group's next page (one
    pipeline) and delivers the events up to that time only (and, of a group whose page was
    full, only up to its page's end): any later write gets a later id, so no event is ever
    passed over, and a resumed reader misses none."""
    streams = [group.events for group in layer.keys.groups()]
    starts = _starts(len(streams), after)
    quiet_since = time.monotonic()
    while True:
        now = yield Read([("TIME",)], _first)
        upto: Key = (int(now[0]) * 1000 + int(now[1]) // 1000, _LAST, _LAST)
        yield Pause(CLOCK_MARGIN_MS / 1000)
        pages = yield Read([("XRANGE", stream, start, "+", "COUNT", _PAGE)
                            for stream, start in zip(streams, starts, strict=True)], _all)
        found, upto, full = _merge(pages, upto)
        delivered = 0
        for key, sid, fields in found:
            if key > upto:
                break
            starts[key[2]] = f"({sid}"
            delivered += 1
            yield Event.from_stream(f"{sid}-{key[2]}", fields)
        if delivered:
            quiet_since = time.monotonic()
        elif not full:
            if block is None or time.monotonic() - quiet_since >= block:
                return
            yield Pause(MERGE_POLL)


def _starts(groups: int, after: Key | None) -> list[str]:
    """Where each group's stream is read from: after `after` (in a group up to the cursor's
    own, after its id; in a later group, from its id on), or from the start."""
    if after is None:
        return ["-"] * groups
    ms, seq, last_group = after
    return [f"({ms}-{seq}" if g <= last_group else f"{ms}-{seq}" for g in range(groups)]


def _merge(pages: list[Entries], upto: Key,
           ) -> tuple[list[tuple[Key, str, dict[str, str]]], Key, bool]:
    """The groups' pages (one per group, in group order) as one list in merged order; the
    key up to which they may be delivered (`upto`, or the end of a full page if that comes
    first); and whether any page was full."""
    found: list[tuple[Key, str, dict[str, str]]] = []
    full = False
    for g, page in enumerate(pages):
        if len(page) == _PAGE:
            full = True
            upto = min(upto, _key(page[-1][0], g))
        found += [(_key(sid, g), sid, fields) for sid, fields in page]
    found.sort(key=lambda item: item[0])
    return found, upto, full


def _first(replies: list[Any]) -> Any:
    return replies[0]


def _all(replies: list[Any]) -> list[Any]:
    return replies


def iter_events(layer: RedisLayer, session_id: str | None = None, after: str = "0",
                block: float | None = None) -> Iterator[Event]:
    """Events after `after` (a stream id of the session's stream, or an event id of the
    global one), oldest first.

    With `block=None` the iterator ends once it has caught up; with `block=seconds` it waits for
    new events and ends when none arrives within that many seconds of the last one.
    A malformed `session_id` raises `InvalidSessionId` here, at the call, not at the first read.
    """
    return _read(layer, reader_plan(layer, session_id, after, block))


def _read(layer: RedisLayer, plan: Generator[Step, Any, None]) -> Iterator[Event]:
    reply: Any = None
    try:
        while True:
            try:
                step = plan.send(reply)
            except StopIteration:
                return
            if isinstance(step, Event):
                reply = None
                yield step
            elif isinstance(step, Pause):
                reply = None
                time.sleep(step.seconds)
            else:
                reply = layer.read(step)
    except redis.RedisError as exc:
        typed = typed_redis_error(exc, layer.settings, None)
        if typed is None:
            raise
        raise typed from exc
