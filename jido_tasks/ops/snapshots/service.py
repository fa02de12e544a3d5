"""Session snapshots: a versioned JSON document of a session's entry and whole state.

A snapshot is saved under the id of the session it was taken from (saving again replaces it)
and restored as a new session with `restored_from` set to that id. Stores only move bytes; this
module builds and validates the document, so both stores read and write exactly the same JSON.
The stores (Redis, disk) live beside it (`ops.snapshots.redis`, `ops.snapshots.disk`), chosen
by the `persistence` setting.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, field_validator

from jido_tasks.core import bounds
from jido_tasks.core.sessions import create_plan
from jido_tasks.core.state import read_document
from jido_tasks.errors import (
    InvalidEntry,
    InvalidSessionId,
    InvalidTransition,
    SessionNotFound,
    SnapshotCorrupt,
    SnapshotNotFound,
    SnapshotTooLarge,
)
from jido_tasks.models import (
    JsonObject,
    SessionEntry,
    SessionStatus,
    utcnow,
    validate_session_id,
)
from jido_tasks.settings import Settings
from jido_tasks.store import scripts
from jido_tasks.store.connection import Layer, Plan, RedisLayer

log = logging.getLogger(__name__)

SCHEMA_VERSION: Literal[1] = 1
StoreName = Literal["redis", "disk"]


class Snapshot(BaseModel):
    """The saved document (schema version 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    session_id: str
    entry: SessionEntry
    """Metadata, llm_config, config, timestamps and status at save time."""
    state: JsonObject
    """The whole state: conversation, active files, file index, cache and the app's own keys."""
    saved_at: AwareDatetime
    """ISO 8601, UTC."""

    @field_validator("session_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            return validate_session_id(value)
        except InvalidSessionId as exc:  # a ValueError for pydantic, reported as a field error
            raise ValueError(exc.message) from None


class SnapshotInfo(BaseModel):
    """What a listing or a save reports about one snapshot."""

    id: str
    saved_at: datetime
    size: int
    """Bytes of the stored JSON document."""
    store: StoreName
    where: str
    """The Redis key or the file holding it."""


def _summary(exc: ValidationError) -> str:
    errors = exc.errors()
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                      for e in errors[:3])
    return shown + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")


@dataclass(frozen=True)
class SnapshotLimits:
    """Bounds of a snapshot document, saved or read (the `max_snapshot_*` settings)."""

    max_bytes: int
    max_depth: int

    @classmethod
    def of(cls, settings: Settings) -> SnapshotLimits:
        return cls(settings.max_snapshot_bytes, settings.max_snapshot_depth)

    def too_large(self, size: int) -> str | None:
        """Why a document of `size` bytes is refused, or None."""
        if size <= self.max_bytes:
            return None
        return (f"{size} bytes, over the limit of {self.max_bytes} "
                "(JIDO_TASKS_MAX_SNAPSHOT_BYTES)")


def decode_snapshot(raw: str | bytes, saved_id: str, where: str,
                    limits: SnapshotLimits) -> Snapshot:
    """Parse and validate a stored document; `SnapshotCorrupt` naming `where` if it is not one.
    Its size and nesting depth are checked before it is parsed."""
    problem = limits.too_large(len(raw))  # a str's UTF-8 is at least as long
    if problem is not None:
        raise SnapshotCorrupt(saved_id, where, problem)
    try:
        data = bounds.loads(raw, max_depth=limits.max_depth, max_bytes=limits.max_bytes)
    except ValueError as exc:
        raise SnapshotCorrupt(saved_id, where, str(exc)) from None
    if not isinstance(data, dict):
        raise SnapshotCorrupt(saved_id, where, f"not a JSON object but {type(data).__name__}")
    if "schema_version" not in data:
        raise SnapshotCorrupt(saved_id, where, "wrong schema: no schema_version")
    version = data["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise SnapshotCorrupt(saved_id, where, f"unknown schema version {version!r} "
                                               f"(this version reads {SCHEMA_VERSION})")
    try:
        snap = Snapshot.model_validate(data)
    except ValidationError as exc:
        raise SnapshotCorrupt(saved_id, where, f"wrong schema: {_summary(exc)}") from None
    if snap.session_id != saved_id or snap.entry.id != saved_id:
        raise SnapshotCorrupt(saved_id, where, f"wrong schema: the document is of session "
                                               f"{snap.session_id} (entry {snap.entry.id})")
    return snap


class SnapshotStore(ABC):
    """Where snapshots live. Subclasses move bytes; every saved id is validated here first."""

    name: ClassVar[StoreName]

    def __init__(self, limits: SnapshotLimits) -> None:
        self.limits = limits

    @abstractmethod
    def where(self, saved_id: str) -> str:
        """The key or file of a snapshot (named in errors)."""

    @abstractmethod
    def _write(self, saved_id: str, data: bytes, saved_at: datetime) -> None:
        """Store `data` whole or not at all, replacing a previous snapshot of the same id."""

    @abstractmethod
    def _read(self, saved_id: str) -> str | bytes:
        """The stored document; `SnapshotNotFound` if there is none, `SnapshotCorrupt` if it
        is larger than `limits.max_bytes` (found out without reading it whole)."""

    @abstractmethod
    def _remove(self, saved_id: str) -> None:
        """Delete a snapshot; `SnapshotNotFound` if there is none."""

    def remove_stale_temp(self, max_age: float) -> int:
        """Remove leftovers of writers that died mid-save, older than `max_age` seconds;
        returns how many. Nothing to do for stores that write atomically in one step."""
        return 0

    @abstractmethod
    def _ids(self) -> list[str]:
        """Ids of the stored snapshots (valid ids only), sorted."""

    def _read_many(self, ids: list[str]) -> Iterator[tuple[str, str | bytes | Exception]]:
        """Each id with its document or the error reading it (stores may batch this)."""
        for saved_id in ids:
            try:
                yield saved_id, self._read(saved_id)
            except SnapshotNotFound:  # deleted since the ids were listed
                continue
            except SnapshotCorrupt as exc:
                yield saved_id, exc

    def save(self, saved_id: str, data: bytes, saved_at: datetime) -> SnapshotInfo:
        validate_session_id(saved_id)
        self._write(saved_id, data, saved_at)
        return SnapshotInfo(id=saved_id, saved_at=saved_at, size=len(data), store=self.name,
                            where=self.where(saved_id))

    def load(self, saved_id: str) -> Snapshot:
        validate_session_id(saved_id)
        return decode_snapshot(self._read(saved_id), saved_id, self.where(saved_id),
                               self.limits)

    def delete(self, saved_id: str) -> None:
        validate_session_id(saved_id)
        self._remove(saved_id)

    def infos(self) -> list[SnapshotInfo]:
        """Every readable snapshot, by id; a corrupt one is skipped with a warning."""
        out: list[SnapshotInfo] = []
        for saved_id, raw in self._read_many(self._ids()):
            where = self.where(saved_id)
            try:
                if isinstance(raw, Exception):
                    raise raw
                snap = decode_snapshot(raw, saved_id, where, self.limits)
            except SnapshotCorrupt as exc:
                log.warning("skipping snapshot: %s", exc)
                continue
            size = len(raw.encode() if isinstance(raw, str) else raw)
            out.append(SnapshotInfo(id=saved_id, saved_at=snap.saved_at, size=size,
                                    store=self.name, where=where))
        return out


def snapshot_store(layer: RedisLayer) -> SnapshotStore:
    """The store chosen by the `persistence` setting."""
    if layer.settings.persistence == "disk":
        from jido_tasks.ops.snapshots.disk import DiskSnapshotStore

        return DiskSnapshotStore(layer.settings.persistence_dir,
                                 SnapshotLimits.of(layer.settings))
    from jido_tasks.ops.snapshots.redis import RedisSnapshotStore

    return RedisSnapshotStore(layer)


_LIVE = (SessionStatus.ACTIVE, SessionStatus.IDLE)


def read_session(layer: RedisLayer, session_id: str) -> tuple[SessionEntry, Any]:
    """The entry and the whole state read together (MULTI/EXEC): commits are atomic scripts,
    so the state is always the one between two actions, never half of one."""
    validate_session_id(session_id)
    sk = layer.keys.session(session_id)
    try:
        row, state = read_document(layer, session_id)
    except ValueError as exc:  # the workers' own JSON: never expected, never saved broken
        raise InvalidEntry(session_id, sk.state, f"the state is not a JSON object: {exc}") from None
    if not row:
        raise SessionNotFound(session_id)
    return SessionEntry.from_redis(session_id, sk.entry, row), state


def save_snapshot(layer: RedisLayer, store: SnapshotStore, session_id: str, *,
                  live_only: bool = False) -> SnapshotInfo:
    """Save the session's entry and whole state under its id (replacing an older snapshot).

    With `live_only`, a session that is not active or idle raises `InvalidTransition` and
    nothing is saved (used before terminating).
    """
    entry, state = read_session(layer, session_id)
    if live_only and entry.status not in _LIVE:
        raise InvalidTransition(session_id, entry.status.value, SessionStatus.TERMINATING.value)
    try:  # the workers' own JSON, checked so that a broken state is never saved
        snap = Snapshot(session_id=session_id, entry=entry, state=state, saved_at=utcnow())
    except (ValueError, ValidationError) as exc:
        raise InvalidEntry(session_id, layer.keys.session(session_id).state,
                           f"the state is not a JSON object: {exc}") from None
    info = store.save(session_id, encode_snapshot(snap, store.limits), snap.saved_at)
    event = {"session_id": session_id, "saved_id": info.id, "store": info.store,
             "size": info.size, "saved_at": info.saved_at.isoformat()}
    layer.call(scripts.emit(session_id, event_type="session.saved", data_json=json.dumps(event),
                            counter="snapshots:saved"))
    return info


def encode_snapshot(snap: Snapshot, limits: SnapshotLimits) -> bytes:
    """The document's JSON, or `SnapshotTooLarge` if it could not be read back within
    `limits` (nothing is saved then: a snapshot that cannot be restored is no snapshot)."""
    # The document's own levels: root -> entry -> metadata / llm_config, root -> state.
    shape = {"entry": {"metadata": snap.entry.metadata, "llm_config": snap.entry.llm_config},
             "state": snap.state}
    if bounds.depth_of(shape, limits.max_depth) > limits.max_depth:
        raise SnapshotTooLarge(snap.session_id, f"nested more than {limits.max_depth} levels "
                               "deep", "JIDO_TASKS_MAX_SNAPSHOT_DEPTH")
    data = snap.model_dump_json().encode()
    problem = limits.too_large(len(data))
    if problem is not None:
        raise SnapshotTooLarge(snap.session_id, problem, "JIDO_TASKS_MAX_SNAPSHOT_BYTES")
    return data


def restore_snapshot(layer: RedisLayer, store: SnapshotStore, saved_id: str) -> SessionEntry:
    """A new active session with the saved metadata, llm_config, config and whole state."""
    return layer.run(restore_plan(layer, store.load(saved_id), saved_id))


def restore_plan(layer: Layer, snap: Snapshot, saved_id: str) -> Plan[SessionEntry]:
    """The creation of the restored session (shared by the sync and the async client)."""
    return create_plan(layer, snap.entry.metadata, snap.entry.llm_config, snap.entry.config,
                       state=snap.state, restored_from=saved_id)


def list_snapshots(store: SnapshotStore) -> list[SnapshotInfo]:
    """Readable snapshots sorted by id (corrupt ones skipped with a warning)."""
    return store.infos()


def delete_snapshot(layer: RedisLayer, store: SnapshotStore, saved_id: str) -> None:
    """Delete a snapshot (`SnapshotNotFound` if there is none) and count it."""
    store.delete(saved_id)
    layer.call(scripts.emit(saved_id, event_type="", data_json="", counter="snapshots:deleted"))
