"""Session registry service: create, read, list, change status and touch sessions.

Every write is one Lua script (one round trip, atomic); reads go through `SessionEntry`.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jido_tasks import telemetry
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
    SessionStatus,
    from_ts,
    is_index_member,
    new_session_id,
    validate_session_id,
)
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer

log = logging.getLogger(__name__)
_PAGE = 500  # index entries read per round trip when listing


class NewSession(BaseModel):
    """What a caller may give when creating a session (validated at the edge)."""

    model_config = ConfigDict(extra="forbid")

    metadata: JsonObject = Field(default_factory=dict)
    llm_config: JsonObject = Field(default_factory=dict)
    config: SessionConfig = Field(default_factory=SessionConfig)

    @field_validator("metadata", "llm_config")
    @classmethod
    def _check_json(cls, value: JsonObject) -> JsonObject:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not storable as JSON: {exc}") from None
        return value


def _state_json(state: Any) -> str:
    """The initial state as strict JSON (an object; no NaN), or `InvalidArgument`."""
    if not isinstance(state, dict):
        raise InvalidArgument("create_session", "state", "must be a JSON object")
    try:
        return json.dumps(state, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("create_session", "state", f"not JSON: {exc}") from exc


class SessionService:
    """The registry, for one namespace."""

    def __init__(self, layer: RedisLayer) -> None:
        self.layer = layer
        self.settings = layer.settings

    def _entry(self, session_id: str, row: dict[str, str]) -> SessionEntry:
        return SessionEntry.from_redis(session_id, self.layer.keys.session(session_id).entry, row)

    def create(self, metadata: JsonObject | None = None, llm_config: JsonObject | None = None,
               config: SessionConfig | JsonObject | None = None, *,
               state: JsonObject | None = None, restored_from: str | None = None,
               ) -> SessionEntry:
        """Create an active session (optionally with an initial state) in one atomic step."""
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
        row = entry.to_redis(self.settings.default_timeout)
        event: dict[str, Any] = {"session_id": session_id, "metadata": req.metadata}
        if restored_from:
            event["restored_from"] = restored_from
        state_json = "" if state is None else _state_json(state)
        started = time.perf_counter()
        ts = self.layer.call(scripts.create(session_id, row_json=json.dumps(row),
                                            state_json=state_json, event_json=json.dumps(event)))
        stamp = from_ts(ts)
        created = entry.model_copy(update={"created_at": stamp, "updated_at": stamp,
                                           "last_activity": stamp})
        telemetry.dispatch.session_created(created, time.perf_counter() - started)
        return created

    def get(self, session_id: str) -> SessionEntry:
        validate_session_id(session_id)
        row = self.layer.redis.hgetall(self.layer.keys.session(session_id).entry)
        if not row:
            raise SessionNotFound(session_id)
        return self._entry(session_id, row)

    def list(self, status: SessionStatus | str | None = None, *, offset: int = 0,
             limit: int | None = None) -> list[SessionEntry]:
        """Sessions by last activity, newest first; default all not terminated.

        `offset` and `limit` count sessions of the requested status. Reads one index page at a
        time (never scans the keyspace), each page's rows in one pipeline.
        """
        try:
            wanted = SessionStatus(status) if status is not None else None
        except ValueError:
            raise InvalidArgument("list_sessions", "status",
                                  f"unknown status {status!r} (expected one of "
                                  f"{', '.join(s.value for s in SessionStatus)})") from None
        if offset < 0 or (limit is not None and limit < 0):
            raise InvalidArgument("list_sessions", "offset/limit", "must not be negative")
        k = self.layer.keys
        if wanted is SessionStatus.TERMINATED:
            return self._page(k.terminated, offset, limit)
        # Active and terminating sessions are in `activity` (by last activity); an idle one
        # only in `expiry` (by idle deadline, which follows its last activity): listed after
        # the others, which is their order by activity but for the sweep's lag.
        sources = []
        if wanted is not SessionStatus.IDLE:
            sources.append((k.activity, {SessionStatus.ACTIVE, SessionStatus.TERMINATING}
                            if wanted is None else {wanted}))
        if wanted in (None, SessionStatus.IDLE):
            sources.append((k.expiry, {SessionStatus.IDLE}))
        out: builtins.list[SessionEntry] = []
        skip = offset
        page = max(limit or 0, _PAGE)
        for index, statuses in sources:
            start = 0
            while limit is None or len(out) < limit:
                ids = self.layer.redis.zrevrange(index, start, start + page - 1)
                for entry in self._rows(index, ids):
                    if entry.status in statuses:
                        if skip:
                            skip -= 1
                        else:
                            out.append(entry)
                if len(ids) < page:
                    break
                start += page
        return out if limit is None else out[:limit]

    def _page(self, index: str, offset: int, limit: int | None) -> builtins.list[SessionEntry]:
        """Sessions of an index holding only the wanted ones, newest first, paged exactly."""
        out: builtins.list[SessionEntry] = []
        page = limit or _PAGE
        start = offset
        while limit is None or len(out) < limit:
            ids = self.layer.redis.zrevrange(index, start, start + page - 1)
            out += self._rows(index, ids)
            if len(ids) < page:
                break
            start += page
        return out if limit is None else out[:limit]

    def _rows(self, index: str, ids: builtins.list[str]) -> builtins.list[SessionEntry]:
        """The registry rows of `ids` (one pipeline); foreign, vanished or corrupt ones are
        skipped (logged), so one bad row never hides the others."""
        ids = [sid for sid in ids if is_index_member(index, sid)]
        if not ids:
            return []
        pipe = self.layer.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.layer.keys.session(sid).entry)
        out: builtins.list[SessionEntry] = []
        for sid, row in zip(ids, pipe.execute(), strict=True):
            if not row:  # purged between the two reads
                continue
            try:
                out.append(self._entry(sid, row))
            except InvalidEntry as exc:
                log.warning("list_sessions: skipped %s", exc)
        return out

    def transition(self, session_id: str, target: SessionStatus | str,
                   reason: str | None = None) -> SessionEntry:
        """Change status atomically if the lifecycle allows it; else `InvalidTransition`."""
        validate_session_id(session_id)
        try:
            dst = SessionStatus(target)
        except ValueError:
            raise InvalidTransition(session_id, "?", str(target)) from None
        done = self.layer.call(scripts.transition(session_id, target=dst, reason=reason or ""))
        return self._entry(session_id, done.row)

    def touch(self, session_id: str) -> SessionEntry:
        validate_session_id(session_id)
        return self._entry(session_id, self.layer.call(scripts.touch(session_id)))

    def terminate(self, session_id: str, reason: str = "requested",
                  drain: bool = False) -> tuple[SessionEntry, int]:
        """Start termination; returns the entry and how many pending actions were cancelled.

        The session is `terminated` at once when no work is left; otherwise `terminating` until
        the worker finishes the running action (and, with `drain`, the pending ones). Pending
        actions are withdrawn in one step; their records are finished `CANCEL_CHUNK` per
        script call, so a session with a huge backlog never blocks Redis for long.
        """
        validate_session_id(session_id)
        started = time.perf_counter()
        keep = self.settings.keep_results
        done = self.layer.call(scripts.terminate(session_id, reason=reason, drain=drain,
                                                 keep=keep))
        row, left = done.row, done.left
        while left:
            left = self.layer.call(scripts.cancel_pending(session_id, keep=keep))
            if not left:
                row = self.layer.redis.hgetall(self.layer.keys.session(session_id).entry)
        entry = self._entry(session_id, row)
        telemetry.dispatch.session_terminated(entry, done.withdrawn,
                                              time.perf_counter() - started)
        return entry, done.withdrawn

    def get_state(self, session_id: str) -> JsonObject:
        """The session's committed state (between two actions, never half of one)."""
        validate_session_id(session_id)
        sk = self.layer.keys.session(session_id)
        pipe = self.layer.redis.pipeline(transaction=False)
        pipe.exists(sk.entry)
        pipe.get(sk.state)
        exists, raw = pipe.execute()
        if not exists:
            raise SessionNotFound(session_id)
        if not raw:
            return {}
        state: JsonObject = json.loads(raw)
        return state
