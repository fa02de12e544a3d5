"""Reading the event streams (events are appended atomically by the Lua scripts).

Each session has a stream and all events also go to a global one, both bounded in length.
A subscriber resumes from the last id it saw by passing it as `after`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import redis

from jido_tasks.errors import InvalidArgument
from jido_tasks.models import Event, validate_session_id
from jido_tasks.store.connection import RedisLayer, typed_redis_error

_PAGE = 500
_STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


def iter_events(layer: RedisLayer, session_id: str | None = None, after: str = "0",
                block: float | None = None) -> Iterator[Event]:
    """Events after stream id `after`, oldest first.

    With `block=None` the iterator ends once it has caught up; with `block=seconds` it waits for
    new events and ends when none arrives within that many seconds of the last one.
    A malformed `session_id` raises `InvalidSessionId` here, at the call, not at the first read.
    """
    if not isinstance(after, str) or not _STREAM_ID.fullmatch(after):
        raise InvalidArgument("events", "after",
                              f"{after!r} is not a stream id like '1700000000000-0'",
                              session_id=session_id)
    if session_id is not None:
        validate_session_id(session_id)
        stream = layer.keys.session(session_id).events
    else:
        stream = layer.keys.events
    return _read(layer, stream, after, block)


def _read(layer: RedisLayer, stream: str, after: str, block: float | None) -> Iterator[Event]:
    try:
        yield from _read_stream(layer, stream, after, block)
    except redis.RedisError as exc:
        typed = typed_redis_error(exc, layer.settings, None)
        if typed is None:
            raise
        raise typed from exc


def _read_stream(layer: RedisLayer, stream: str, after: str, block: float | None,
                 ) -> Iterator[Event]:
    last = after
    while True:
        if block is None:
            batch = layer.redis.xrange(stream, min=f"({last}" if last != "0" else "-",
                                       count=_PAGE)
            entries = batch
        else:
            deadline = time.monotonic() + block
            res = layer.redis.xread({stream: last}, count=_PAGE,
                                    block=max(1, int(block * 1000)))
            entries = res[0][1] if res else []
            if not entries and time.monotonic() >= deadline - 0.001:
                return
        if not entries:
            if block is None:
                return
            continue
        for stream_id, fields in entries:
            last = stream_id
            yield Event.from_stream(stream_id, fields)
