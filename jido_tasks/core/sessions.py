"""Session registry service: create, read, list, change status and touch sessions.

Every write is one Lua script (one round trip, atomic); reads go through `SessionEntry`.
"""

from __future__ import annotations

import json
import logging
import time
from operator import attrgetter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jido_tasks import telemetry
from jido_tasks.core import bounds
from jido_tasks.core.state import document_plan, encode_parts
from jido_tasks.errors import (
    InvalidArgument,
    InvalidEntry,
    InvalidTransition,
    SessionNotFound,
)
from jido_tasks.models import (
    JsonObject,
    SessionConfig,
    SessionEntry,
    SessionList,
    SessionStatus,
    from_ts,
    is_index_member,
    new_session_id,
    validate_session_id,
)
from jido_tasks.settings import Settings
from jido_tasks.store import scripts
from jido_tasks.store.connection import Layer, Plan, Read, RedisLayer
from jido_tasks.store.groups import NewestFirst, group_slots

log = logging.getLogger(__name__)
_PAGE = 500  # index entries read per round trip when listing


class NewSession(BaseModel):
    """What a caller may give when creating a session (validated at the edge)."""

    model_config = ConfigDict(extra="forbid")

    metadata: JsonObject = Field(default_factory=dict)
    llm_config: JsonObject = Field(default_factory=dict)
    config: SessionConfig = Field(default_factory=SessionConfig)


def _check_bounds(settings: Settings, arguments: dict[str, Any]) -> None:
    """Each JSON argument of `create_session` within the depth and size bounds and strictly
    JSON (no NaN or infinity), checked before anything encodes or validates it deeply; else
    `InvalidArgument` naming it."""
    for name, value in arguments.items():
        if value is None:
            continue
        if isinstance(value, SessionConfig):  # valid, but its size is not bounded yet
            value = value.model_dump(mode="json")
        try:
            bounds.dumps(value, max_depth=settings.max_json_depth,
                         max_bytes=settings.max_metadata_bytes)
        except ValueError as exc:
            raise InvalidArgument("create_session", name, str(exc)) from None


def _state_parts(state: Any) -> dict[str, str]:
    """The initial state as parts (strict JSON; an object), or `InvalidArgument`."""
    if not isinstance(state, dict):
        raise InvalidArgument("create_session", "state", "must be a JSON object")
    try:
        return encode_parts(state)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("create_session", "state", f"not JSON: {exc}") from exc


def _entry(layer: Layer, session_id: str, row: dict[str, str]) -> SessionEntry:
    return SessionEntry.from_redis(session_id, layer.keys.session(session_id).entry, row)


# -- plans: the logic, written once for the sync and the async client (no I/O here) -----------
def create_plan(layer: Layer, metadata: JsonObject | None = None,
                llm_config: JsonObject | None = None,
                config: SessionConfig | JsonObject | None = None, *,
                state: JsonObject | None = None, restored_from: str | None = None,
                ) -> Plan[SessionEntry]:
    """Create an active session (optionally with an initial state) in one atomic step."""
    _check_bounds(layer.settings, {"metadata": metadata, "llm_config": llm_config,
                                   "config": config})
    try:
        req = NewSession(metadata={} if metadata is None else metadata,
                         llm_config={} if llm_config is None else llm_config,
                         config=config if config is not None else SessionConfig())
    except ValidationError as exc:
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise InvalidArgument("create_session", str(first[0]) if first else "arguments",
                              str(exc)) from exc
    session_id = new_session_id()
    placeholder = from_ts(0.0)
    assert placeholder is not None
    entry = SessionEntry(id=session_id, metadata=req.metadata, llm_config=req.llm_config,
                         config=req.config, created_at=placeholder, updated_at=placeholder,
                         last_activity=placeholder, restored_from=restored_from)
    row = entry.to_redis(layer.settings.default_timeout)
    event: dict[str, Any] = {"session_id": session_id, "metadata": req.metadata}
    if restored_from:
        event["restored_from"] = restored_from
    parts = {} if state is None else _state_parts(state)
    started = time.perf_counter()
    ts = yield scripts.create(session_id, row_json=json.dumps(row), parts=parts,
                              event_json=json.dumps(event))
    stamp = from_ts(ts)
    created = entry.model_copy(update={"created_at": stamp, "updated_at": stamp,
                                       "last_activity": stamp})
    telemetry.dispatch.session_created(created, time.perf_counter() - started)
    return created


def get_plan(layer: Layer, session_id: str) -> Plan[SessionEntry]:
    validate_session_id(session_id)
    row = yield Read([("HGETALL", layer.keys.session(session_id).entry)], _first)
    if not row:
        raise SessionNotFound(session_id)
    return _entry(layer, session_id, row)


def _first(replies: list[Any]) -> Any:
    return replies[0]


def list_plan(layer: Layer, status: SessionStatus | str | None = None, *, offset: int = 0,
              limit: int | None = None) -> Plan[SessionList]:
    """Sessions by last activity, newest first; default all not terminated.

    `offset` and `limit` count sessions of the requested status. Reads one index page at a
    time (never scans the keyspace), each page's rows in one pipeline. Active and terminating
    sessions are in `activity` (by last activity); an idle one only in `expiry` (by idle
    deadline, which follows its last activity): idle ones are listed after the others.
    On a Redis Cluster with a node down, the live nodes' sessions are listed and the slots of
    the others are in `SessionList.missing_slots` (logged).
    """
    wanted = _wanted(status, offset, limit)
    if wanted is SessionStatus.TERMINATED:  # the index holds only them: paged exactly
        return (yield from _page_plan(layer, "terminated", offset, limit))
    out: list[SessionEntry] = []
    missing: set[int] = set()
    skip = offset
    page = max(limit or 0, _PAGE)
    for index, statuses in _sources(wanted):
        merged = NewestFirst(layer, attrgetter(index), offset + page)
        while limit is None or len(out) < limit:
            ids = yield from merged.take(page)
            rows, lost = yield _rows_read(layer, index, ids)
            missing |= lost
            for entry in rows:
                if entry.status in statuses:
                    if skip:
                        skip -= 1
                    else:
                        out.append(entry)
            if len(ids) < page:
                break
        missing |= merged.missing
    return _listed(layer, out if limit is None else out[:limit], missing)


def _listed(layer: Layer, entries: list[SessionEntry], missing: set[int]) -> SessionList:
    """The listing, with the slots of the groups that could not be read (logged)."""
    listed = SessionList(entries, group_slots(layer, missing))
    if missing:
        log.warning("list_sessions: %d of %d slot groups unreachable (a Redis Cluster node "
                    "down); listed only the others' sessions; missing slots: %s",
                    len(missing), layer.keys.shards,
                    ", ".join(map(str, listed.missing_slots)))
    return listed


def _wanted(status: SessionStatus | str | None, offset: int, limit: int | None,
            ) -> SessionStatus | None:
    """The status to list (None: all not terminated), after checking the arguments."""
    try:
        wanted = SessionStatus(status) if status is not None else None
    except ValueError:
        raise InvalidArgument("list_sessions", "status",
                              f"unknown status {status!r} (expected one of "
                              f"{', '.join(s.value for s in SessionStatus)})") from None
    if offset < 0 or (limit is not None and limit < 0):
        raise InvalidArgument("list_sessions", "offset/limit", "must not be negative")
    return wanted


def _sources(wanted: SessionStatus | None) -> list[tuple[str, set[SessionStatus]]]:
    """The indexes to read, in order, each with the statuses listed from it."""
    sources: list[tuple[str, set[SessionStatus]]] = []
    if wanted is not SessionStatus.IDLE:
        sources.append(("activity", {SessionStatus.ACTIVE, SessionStatus.TERMINATING}
                        if wanted is None else {wanted}))
    if wanted in (None, SessionStatus.IDLE):
        sources.append(("expiry", {SessionStatus.IDLE}))
    return sources


def _page_plan(layer: Layer, index: str, offset: int, limit: int | None,
               ) -> Plan[SessionList]:
    """Sessions of an index holding only the wanted ones, newest first, paged exactly."""
    out: list[SessionEntry] = []
    missing: set[int] = set()
    page = limit or _PAGE
    merged = NewestFirst(layer, attrgetter(index), offset + page)
    skip = offset
    while skip:  # ids only: their rows are not read
        skipped = yield from merged.take(min(skip, _PAGE))
        if not skipped:
            return _listed(layer, out, merged.missing)
        skip -= len(skipped)
    while limit is None or len(out) < limit:
        ids = yield from merged.take(page)
        rows, lost = yield _rows_read(layer, index, ids)
        out += rows
        missing |= lost
        if len(ids) < page:
            break
    return _listed(layer, out if limit is None else out[:limit], missing | merged.missing)


def _rows_read(layer: Layer, index: str, ids: list[str],
               ) -> Read[tuple[list[SessionEntry], set[int]]]:
    """The registry rows of `ids` (one pipeline), and the groups of those that could not be
    read (a cluster node down); foreign, vanished or corrupt ones are skipped (logged), so one
    bad row never hides the others."""
    ids = [sid for sid in ids if is_index_member(index, sid)]

    def decode(replies: list[Any]) -> tuple[list[SessionEntry], set[int]]:
        out: list[SessionEntry] = []
        lost: set[int] = set()
        for sid, row in zip(ids, replies, strict=True):
            if isinstance(row, Exception):
                lost.add(layer.keys.group_of(sid))
            elif not row:  # purged between the two reads
                continue
            else:
                try:
                    out.append(_entry(layer, sid, row))
                except InvalidEntry as exc:
                    log.warning("list_sessions: skipped %s", exc)
        return out, lost
    return Read([("HGETALL", layer.keys.session(sid).entry) for sid in ids], decode,
                partial=True)


def transition_plan(layer: Layer, session_id: str, target: SessionStatus | str,
                    reason: str | None = None) -> Plan[SessionEntry]:
    """Change status atomically if the lifecycle allows it; else `InvalidTransition`."""
    validate_session_id(session_id)
    try:
        dst = SessionStatus(target)
    except ValueError:
        raise InvalidTransition(session_id, "?", str(target)) from None
    done = yield scripts.transition(session_id, target=dst, reason=reason or "")
    return _entry(layer, session_id, done.row)


def touch_plan(layer: Layer, session_id: str) -> Plan[SessionEntry]:
    validate_session_id(session_id)
    row = yield scripts.touch(session_id)
    return _entry(layer, session_id, row)


def terminate_plan(layer: Layer, session_id: str, reason: str = "requested",
                   drain: bool = False) -> Plan[tuple[SessionEntry, int]]:
    """Start termination; returns the entry and how many pending actions were cancelled.

    The session is `terminated` at once when no work is left; otherwise `terminating` until
    the worker finishes the running action (and, with `drain`, the pending ones). Pending
    actions are withdrawn in one step; their records are finished `CANCEL_CHUNK` per
    script call, so a session with a huge backlog never blocks Redis for long.
    Idempotent: a session already terminating or terminated is returned as it is (0
    cancelled; withdrawn actions whose records a previous caller left unfinished are finished).
    """
    validate_session_id(session_id)
    started = time.perf_counter()
    keep = layer.settings.keep_results
    done = yield scripts.terminate(session_id, reason=reason, drain=drain, keep=keep)
    row, left = done.row, done.left
    while left:
        left = yield scripts.cancel_pending(session_id, keep=keep)
        if not left:
            row = yield Read([("HGETALL", layer.keys.session(session_id).entry)], _first)
    entry = _entry(layer, session_id, row)
    if done.changed:
        telemetry.dispatch.session_terminated(entry, done.withdrawn,
                                              time.perf_counter() - started)
    return entry, done.withdrawn


def state_plan(layer: Layer, session_id: str) -> Plan[JsonObject]:
    """The session's committed state (between two actions, never half of one)."""
    validate_session_id(session_id)
    row, state = yield from document_plan(layer, session_id)
    if not row:
        raise SessionNotFound(session_id)
    found: JsonObject = state
    return found


class SessionService:
    """The registry, for one namespace (the sync I/O over the plans above)."""

    def __init__(self, layer: RedisLayer) -> None:
        self.layer = layer
        self.settings = layer.settings

    def _entry(self, session_id: str, row: dict[str, str]) -> SessionEntry:
        return _entry(self.layer, session_id, row)

    def create(self, metadata: JsonObject | None = None, llm_config: JsonObject | None = None,
               config: SessionConfig | JsonObject | None = None, *,
               state: JsonObject | None = None, restored_from: str | None = None,
               ) -> SessionEntry:
        """Create an active session (optionally with an initial state) in one atomic step."""
        return self.layer.run(create_plan(self.layer, metadata, llm_config, config,
                                          state=state, restored_from=restored_from))

    def get(self, session_id: str) -> SessionEntry:
        return self.layer.run(get_plan(self.layer, session_id))

    def list(self, status: SessionStatus | str | None = None, *, offset: int = 0,
             limit: int | None = None) -> SessionList:
        """Sessions by last activity, newest first; see `list_plan`."""
        return self.layer.run(list_plan(self.layer, status, offset=offset, limit=limit))

    def transition(self, session_id: str, target: SessionStatus | str,
                   reason: str | None = None) -> SessionEntry:
        """Change status atomically if the lifecycle allows it; else `InvalidTransition`."""
        return self.layer.run(transition_plan(self.layer, session_id, target, reason))

    def touch(self, session_id: str) -> SessionEntry:
        return self.layer.run(touch_plan(self.layer, session_id))

    def terminate(self, session_id: str, reason: str = "requested",
                  drain: bool = False) -> tuple[SessionEntry, int]:
        """Start termination; see `terminate_plan`."""
        return self.layer.run(terminate_plan(self.layer, session_id, reason, drain))

    def get_state(self, session_id: str) -> JsonObject:
        """The session's committed state (between two actions, never half of one)."""
        return self.layer.run(state_plan(self.layer, session_id))
