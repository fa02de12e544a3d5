"""Typed forms of everything stored in Redis: sessions, action requests and outcomes, events.

`SessionEntry` is the only code that maps a registry row to and from its Redis hash; `Outcome`
is the one form of an action's outcome, written by the runtime and by the Lua scripts (cancel,
terminate) with the same field names, and read back into `ActionRecord`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jido_tasks.errors import InvalidActionId, InvalidEntry, InvalidSessionId

SESSION_ID = re.compile(r"session_[0-9a-f]{32}")
ACTION_ID = re.compile(r"act_[0-9a-f]{32}|"
                       r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An action id: ours (`act_` + 32 hex) or a Celery task id (a lowercase uuid), since the id of a
`jido_tasks.send` message is the action's id."""
JsonObject = dict[str, Any]


def new_session_id() -> str:
    return f"session_{uuid.uuid4().hex}"


def new_action_id() -> str:
    return f"act_{uuid.uuid4().hex}"


def validate_action_id(action_id: object, session_id: str | None = None) -> str:
    """Return `action_id` if well formed (`act_` + 32 lowercase hex, or a lowercase uuid such
    as a Celery task id), else raise `InvalidActionId` (nothing touched)."""
    if not isinstance(action_id, str) or not ACTION_ID.fullmatch(action_id):
        raise InvalidActionId(action_id, session_id)
    return action_id


def request_digest(action: str, params: JsonObject) -> str:
    """What makes two sends of one action id the same send: the name and the params (canonical
    JSON, keys sorted), hashed. A retried send carries the same digest; a reused id with other
    content does not."""
    canonical = json.dumps([action, params], sort_keys=True, separators=(",", ":"),
                           allow_nan=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def validate_session_id(session_id: object) -> str:
    """Return `session_id` if it is well formed, else raise `InvalidSessionId` (nothing touched)."""
    if not isinstance(session_id, str):
        raise InvalidSessionId(session_id, f"must be a string, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidSessionId(session_id, "is empty")
    if len(session_id) != 40:
        raise InvalidSessionId(session_id, f"has length {len(session_id)}, not 40")
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidSessionId(session_id, "has characters outside the allowed form")
    return session_id


def is_index_member(index: str, session_id: str) -> bool:
    """True for a valid session id; a foreign member of an index is logged and skipped (its
    name never reaches a key)."""
    try:
        validate_session_id(session_id)
    except InvalidSessionId:
        logging.getLogger("jido_tasks").warning(
            "index %s holds a malformed member %r; skipped", index, session_id)
        return False
    return True


def to_ts(value: datetime | None) -> str | None:
    return None if value is None else repr(value.timestamp())


def from_ts(value: str | bytes | float | None) -> datetime | None:
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return datetime.fromtimestamp(float(value), tz=UTC)


def utcnow() -> datetime:
    return datetime.now(tz=UTC)


class SessionStatus(StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


ALLOWED_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.ACTIVE: frozenset({SessionStatus.IDLE, SessionStatus.TERMINATING}),
    SessionStatus.IDLE: frozenset({SessionStatus.ACTIVE, SessionStatus.TERMINATING}),
    SessionStatus.TERMINATING: frozenset({SessionStatus.TERMINATED}),
    SessionStatus.TERMINATED: frozenset(),
}


ACCEPTS_WORK: frozenset[SessionStatus] = frozenset({SessionStatus.ACTIVE, SessionStatus.IDLE})
"""Statuses in which a session accepts new actions (and touches)."""


MAX_TIMEOUT_MINUTES = 10_000_000
"""Upper bound of a session's `timeout_minutes` (about 19 years): its seconds stay a finite
number in the registry row and in the `expiry` index's scores."""


class SessionConfig(BaseModel):
    """Per-session limits and options (enforced by the features that use them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_history: int = Field(100, ge=1)
    max_files: int = Field(50, ge=1)
    timeout_minutes: float | None = Field(30, gt=0, le=MAX_TIMEOUT_MINUTES)
    """Idle timeout (finite, at most about 19 years); None means the `default_timeout`
    setting."""
    persistence_enabled: bool = False
    features: list[str] = Field(default_factory=list)

    def timeout_seconds(self, default: float) -> float:
        return default if self.timeout_minutes is None else self.timeout_minutes * 60.0


_DEFAULT_CONFIG_JSON = SessionConfig().model_dump_json()

# Fields of the registry hash that are runtime bookkeeping, not part of SessionEntry.
INTERNAL_FIELDS = frozenset({"fence", "scheduled", "timeout", "persist", "head",
                             "head_attempts", "republished"})


class SessionEntry(BaseModel):
    """One session's registry row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    status: SessionStatus = SessionStatus.ACTIVE
    metadata: JsonObject = Field(default_factory=dict)
    llm_config: JsonObject = Field(default_factory=dict)
    config: SessionConfig = Field(default_factory=SessionConfig)
    created_at: datetime
    updated_at: datetime
    last_activity: datetime
    terminated_at: datetime | None = None
    reason: str | None = None
    restored_from: str | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            return validate_session_id(value)
        except InvalidSessionId as exc:  # a ValueError, so pydantic reports it as a field error
            raise ValueError(exc.message) from None

    def timeout_seconds(self, default: float) -> float:
        return self.config.timeout_seconds(default)

    def to_redis(self, default_timeout: float) -> dict[str, str]:
        """The hash fields for this entry; empty and default values are left out to save memory."""
        # No `id` field: the key names the session (42 bytes less per session).
        row: dict[str, str] = {
            "status": self.status.value,
            "created_at": repr(self.created_at.timestamp()),
            "updated_at": repr(self.updated_at.timestamp()),
            "last_activity": repr(self.last_activity.timestamp()),
            "timeout": repr(self.timeout_seconds(default_timeout)),
        }
        if self.metadata:
            row["metadata"] = json.dumps(self.metadata, separators=(",", ":"))
        if self.llm_config:
            row["llm_config"] = json.dumps(self.llm_config, separators=(",", ":"))
        config_json = self.config.model_dump_json()
        if config_json != _DEFAULT_CONFIG_JSON:
            row["config"] = config_json
        if self.config.persistence_enabled:  # read by expire.lua (no JSON decoding in Lua)
            row["persist"] = "1"
        for name in ("terminated_at",):
            stamp = to_ts(getattr(self, name))
            if stamp is not None:
                row[name] = stamp
        for name in ("reason", "restored_from"):
            value = getattr(self, name)
            if value is not None:
                row[name] = value
        return row

    @classmethod
    def from_redis(cls, session_id: str, key: str, row: dict[str, str]) -> SessionEntry:
        """Read a registry hash; raise `InvalidEntry` (naming the key) if it is not a valid row."""
        try:
            data: dict[str, Any] = {k: v for k, v in row.items() if k not in INTERNAL_FIELDS}
            data.setdefault("id", session_id)  # older rows also hold their id
            for name in ("metadata", "llm_config", "config"):
                if name in data:
                    data[name] = json.loads(data[name])
            for name in ("created_at", "updated_at", "last_activity", "terminated_at"):
                if name in data:
                    data[name] = from_ts(data[name])
            entry = cls.model_validate(data)
        except (ValidationError, ValueError, TypeError) as exc:
            raise InvalidEntry(session_id, key, str(exc)) from exc
        if entry.id != session_id:
            raise InvalidEntry(session_id, key, f"row names another session, {entry.id}")
        return entry


class SessionList(list[SessionEntry]):
    """What `list_sessions` returns: the sessions (a plain list of `SessionEntry`), plus the
    Redis Cluster hash slots whose sessions could not be read because the node serving them
    is down (`missing_slots`, empty when the listing is `complete`)."""

    missing_slots: tuple[int, ...]

    def __init__(self, entries: Iterable[SessionEntry] = (),
                 missing_slots: Iterable[int] = ()) -> None:
        super().__init__(entries)
        self.missing_slots = tuple(sorted(set(missing_slots)))

    @property
    def complete(self) -> bool:
        """True when every slot group was read (always, on a single Redis)."""
        return not self.missing_slots


class ActionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED)


class ActionError(BaseModel):
    type: str
    message: str


class Progress(BaseModel):
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = ""


def dumps(value: Any) -> str:
    """Compact, strict JSON (NaN, infinity and non-JSON types raise)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class ReplyTo(StrEnum):
    """Where a worker also delivers an action's outcome, besides its record."""

    CELERY = "celery"
    """The Celery result backend, under the action id (the id of its `jido_tasks.send`)."""


STORED = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)
"""Stored documents use one-letter aliases (they are kept per action, so their names cost
memory per record); both the aliases and the long names are accepted when reading (records
written before the compact form, and the Python names, stay readable)."""


def _short(stored: str, name: str) -> Any:
    """Field options of a stored document's field: written as `stored`, read as either."""
    return {"serialization_alias": stored, "validation_alias": AliasChoices(stored, name)}


class ActionRequest(BaseModel):
    """What a sender stored for a pending action (the `pending` hash); immutable once sent.
    Stored as `{"a": action, "p": params, "c": created_at}`, plus `"d": digest` and
    `"y": reply_to` when set."""

    model_config = STORED

    action: str = Field(**_short("a", "action"))
    params: JsonObject = Field(default_factory=dict, **_short("p", "params"))
    created_at: float = Field(0.0, **_short("c", "created_at"))
    digest: str | None = Field(None, **_short("d", "digest"))
    """`request_digest(action, params)`: a resend of the same id must carry the same."""
    reply_to: ReplyTo | None = Field(None, **_short("y", "reply_to"))
    """Set when the action came as a `jido_tasks.send` message (see `ReplyTo`)."""

    def to_json(self) -> str:
        """Compact JSON; `created_at` rounded to the millisecond."""
        return dumps(self.model_copy(update={"created_at": round(self.created_at, 3)})
                     .model_dump(mode="json", by_alias=True, exclude_none=True))


_RAN = ("succeeded", "failed")
"""Statuses of an action that ran (its stored attempt count defaults to 1)."""


class Outcome(BaseModel):
    """What became of an action: merged into its record when it finishes, published to
    waiters, and (status running, with progress) kept beside a running action's request.

    Written by the runtime (running with progress, succeeded, failed) and by the Lua scripts
    `cancel` and `terminate` (cancelled, with an `ActionCancelled` error), field for field,
    with the one-letter names below (generated into the Lua prelude as F_*). `finished_at` is
    not in the stored JSON: the scripts set it from Redis TIME (the `records` list in keys.py).
    """

    model_config = STORED

    status: ActionStatus = Field(**_short("s", "status"))
    result: Any = Field(None, **_short("r", "result"))
    error: ActionError | None = Field(None, **_short("e", "error"))
    attempts: int = Field(0, **_short("n", "attempts"))
    progress: Progress | None = Field(None, **_short("g", "progress"))
    finished_at: float | None = Field(None, **_short("f", "finished_at"))

    @model_validator(mode="before")
    @classmethod
    def _commonest(cls, data: Any) -> Any:
        """What `to_json` leaves out: no status stored means succeeded, and an action that ran
        with no attempt count stored ran once."""
        if not isinstance(data, dict):
            return data
        if "s" not in data and "status" not in data:
            data = {**data, "s": ActionStatus.SUCCEEDED.value}
        if ("n" not in data and "attempts" not in data
                and data.get("s", data.get("status")) in _RAN):
            data = {**data, "n": 1}
        return data

    def to_json(self) -> str:
        """Strict JSON, without empty fields (a result that is not JSON raises ValueError).
        The commonest values are left out, status succeeded and one attempt of an action that
        ran: a record is kept per action, so those 22 bytes count (`_commonest` reads them
        back)."""
        data = self.model_dump(mode="python", exclude_none=True, by_alias=True)
        if self.attempts == 1 and self.status in _RAN:
            data.pop("n", None)
        if self.status is ActionStatus.SUCCEEDED:
            data.pop("s", None)
        return dumps(data)


class ActionRecord(BaseModel):
    """What is known of one sent action: its request and its outcome together."""

    id: str
    session_id: str
    action: str
    params: JsonObject = Field(default_factory=dict)
    status: ActionStatus = ActionStatus.PENDING
    attempts: int = 0
    result: Any = None
    error: ActionError | None = None
    progress: Progress | None = None
    created_at: float
    finished_at: float | None = None

    @classmethod
    def from_stored(cls, session_id: str, action_id: str, request: str | None,
                    outcome: str | None, running: bool, head_attempts: int = 0,
                    ) -> ActionRecord:
        """The record from the stored request and Outcome JSON (see `build`)."""
        return cls.build(session_id, action_id,
                         ActionRequest.model_validate_json(request) if request else None,
                         Outcome.model_validate_json(outcome) if outcome else None, running,
                         head_attempts)

    @classmethod
    def build(cls, session_id: str, action_id: str, request: ActionRequest | None,
              outcome: Outcome | None, running: bool, head_attempts: int = 0,
              ) -> ActionRecord:
        """The record from the stored request and outcome. With no outcome yet the action is
        running if it heads the mailbox under a lease (`running`), else pending. A running
        action shows the registry's `head_attempts` (the attempt under way, 1 for the first)."""
        req = request or ActionRequest(action="?")
        if outcome is None:
            status = ActionStatus.RUNNING if running else ActionStatus.PENDING
            outcome = Outcome(status=status)
        if running and outcome.status is ActionStatus.RUNNING:
            outcome = outcome.model_copy(update={"attempts": max(outcome.attempts,
                                                                 head_attempts)})
        return cls(id=action_id, session_id=session_id, action=req.action, params=req.params,
                   created_at=req.created_at, **outcome.model_dump(exclude={"status"},
                                                                 by_alias=False),
                   status=outcome.status)


class Event(BaseModel):
    """One entry of an event stream; `id` is the stream id to resume after."""

    id: str
    type: str
    session_id: str | None
    ts: datetime
    data: JsonObject = Field(default_factory=dict)

    @classmethod
    def from_stream(cls, stream_id: str, fields: dict[str, str]) -> Event:
        return cls(
            id=stream_id,
            type=fields.get("type", ""),
            session_id=fields.get("sid") or None,
            ts=from_ts(fields.get("ts")) or utcnow(),
            data=json.loads(fields.get("data") or "{}"),
        )
