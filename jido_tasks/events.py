"""Reading the event streams (events are appended atomically by the Lua scripts).

Each session has a stream and all events also go to a global one, both bounded in length.
A subscriber resumes from the last id it saw by passing it as `after`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterator
from typing import Any

import redis

from jido_tasks.errors import InvalidArgument
from jido_tasks.models import Event, validate_session_id
from jido_tasks.store.connection import Layer, Read, RedisLayer, typed_redis_error

_PAGE = 500
_STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


def event_stream(layer: Layer, session_id: str | None, after: str) -> str:
    """The stream to read (a session's or the global one), after checking the arguments:
    a malformed `session_id` or `after` raises here, before anything is read."""
    if not isinstance(after, str) or not _STREAM_ID.fullmatch(after):
        raise InvalidArgument("events", "after",
                              f"{after!r} is not a stream id like '1700000000000-0'",
                              session_id=session_id)
    if session_id is not None:
        validate_session_id(session_id)
        return layer.keys.session(session_id).events
    return layer.keys.events


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


def iter_events(layer: RedisLayer, session_id: str | None = None, after: str = "0",
                block: float | None = None) -> Iterator[Event]:
    """Events after stream id `after`, oldest first.

    With `block=None` the iterator ends once it has caught up; with `block=seconds` it waits for
    new events and ends when none arrives within that many seconds of the last one.
    A malformed `session_id` raises `InvalidSessionId` here, at the call, not at the first read.
    """
    return _read(layer, events_plan(event_stream(layer, session_id, after), after, block))


def _read(layer: RedisLayer, plan: Generator[Read[Entries] | Event, Any, None],
          ) -> Iterator[Event]:
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
            else:
                reply = layer.read(step)
    except redis.RedisError as exc:
        typed = typed_redis_error(exc, layer.settings, None)
        if typed is None:
            raise
        raise typed from exc
