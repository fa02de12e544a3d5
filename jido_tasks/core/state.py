"""A session's state stored in parts: one field of the `state` hash per top-level key, holding
that key's value as JSON.

An action's cost follows what it reads and changes, not the size of the whole state:
- `Parts` is a drain's view of the committed parts. A part is read from Redis the first time
  an action of the drain asks for it (one HGET), then kept, decoded JSON text, for the rest of
  the drain (a small state, see `scripts.PRELOAD_PARTS`, comes whole with the claim): while
  the drain holds the lease no one else can write the state (commits are fenced), so the
  cache stays true.
- `ActionState` is what an action sees as `ctx.state`: a mapping whose parts are decoded on
  first access, each into the action's own copy (copy on access), so a failed action changes
  nothing. When the action returns, only the parts it touched are encoded again and compared;
  the ones that differ (and the keys it deleted) are its changes, committed as HSET / HDEL of
  those fields only.

Sessions written by jido-tasks before parts (one JSON string under the same key) are read as
they are and turned into parts by their first commit (`Parts.migrate`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import redis

from jido_tasks.models import JsonObject, dumps
from jido_tasks.store.connection import Layer, Plan, Read, RedisLayer

Changes = dict[str, str | None]
"""Part name -> new JSON text, or None for a deleted part."""


def encode_parts(state: JsonObject) -> dict[str, str]:
    """A whole state document as parts (strict JSON; raises ValueError/TypeError if not)."""
    out: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"state keys must be strings, not {type(key).__name__}")
        out[key] = dumps(value)
    return out


def decode_parts(parts: dict[str, str]) -> JsonObject:
    """The state document from its parts."""
    return {key: json.loads(raw) for key, raw in parts.items()}


class Parts:
    """One drain's view of a session's committed parts (loaded lazily, kept for the drain)."""

    def __init__(self, layer: RedisLayer, session_id: str, legacy: str | None = None,
                 whole: dict[str, str] | None = None) -> None:
        self._redis = layer.redis
        self._key = layer.keys.session(session_id).state
        self._raw: dict[str, str | None] = {}
        """Loaded parts (None: known to be absent)."""
        self._names: set[str] | None = None
        self.migrate = legacy is not None
        """The state is still one JSON string: the next commit writes every part."""
        if legacy is not None:
            whole = encode_parts(json.loads(legacy) if legacy else {})
        if whole is not None:  # every part is known: none is read from Redis
            self._raw = dict(whole)
            self._names = set(self._raw)

    def get(self, name: str) -> str | None:
        """The committed JSON of part `name`, or None if there is no such part."""
        if name not in self._raw:
            if self._names is not None and name not in self._names:
                return None
            self._raw[name] = self._redis.hget(self._key, name)
        return self._raw[name]

    def names(self) -> set[str]:
        """Every part name (read once per drain, when an action iterates the state)."""
        if self._names is None:
            self._names = set(self._redis.hkeys(self._key))
        return self._names

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    @property
    def loaded(self) -> set[str]:
        """Names of the parts read from Redis (or known absent) so far by this drain."""
        return set(self._raw)

    def apply(self, changes: Changes) -> Changes:
        """Apply an action's changes to the view; returns what they replaced (to undo)."""
        undo: Changes = {}
        for name, raw in changes.items():
            undo[name] = self.get(name)
            self._set(name, raw)
        return undo

    def undo(self, undo: Changes) -> None:
        for name, raw in undo.items():
            self._set(name, raw)

    def _set(self, name: str, raw: str | None) -> None:
        self._raw[name] = raw
        if self._names is not None:
            if raw is None:
                self._names.discard(name)
            else:
                self._names.add(name)

    def all_parts(self) -> dict[str, str]:
        """Every part with its JSON (a migration writes them all)."""
        return {name: raw for name in sorted(self.names())
                if (raw := self.get(name)) is not None}


_MISSING = object()


class ActionState(MutableMapping[str, Any]):
    """`ctx.state`: the session's state for one action, decoded part by part on first access
    into the action's own copy. Use it like a dict (`ctx.state["k"]`, `.get`, `.setdefault`,
    `.pop`, `in`, iteration); `to_dict()` gives a plain dict of the whole state (reading every
    part: cost grows with the state)."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._values: dict[str, Any] = {}
        self._loaded: set[str] = set()
        """Keys whose value came from a committed part (compared at the end)."""
        self._deleted: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self._values.get(key, _MISSING)
        if value is not _MISSING:
            return value
        if key in self._deleted or not isinstance(key, str):
            raise KeyError(key)
        raw = self._parts.get(key)
        if raw is None:
            raise KeyError(key)
        value = json.loads(raw)
        self._values[key] = value
        self._loaded.add(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"state keys must be strings, not {type(key).__name__}")
        self._values[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._values.pop(key, None)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or key in self._deleted:
            return False
        return key in self._values or self._parts.has(key)

    def __iter__(self) -> Iterator[str]:
        names = (self._parts.names() | set(self._values)) - self._deleted
        return iter(sorted(names))

    def __len__(self) -> int:
        return len((self._parts.names() | set(self._values)) - self._deleted)

    def __repr__(self) -> str:
        return f"ActionState(touched={sorted(self._values)}, deleted={sorted(self._deleted)})"

    def to_dict(self) -> JsonObject:
        """The whole state as a plain dict (this action's view of it)."""
        return {key: self[key] for key in self}

    @property
    def loaded_parts(self) -> set[str]:
        """Parts the drain has read so far (for this action and the ones before it)."""
        return self._parts.loaded

    @property
    def touched(self) -> set[str]:
        """Parts this action read or wrote so far."""
        return set(self._values) | self._deleted

    def changes(self) -> Changes:
        """The parts that differ from the committed ones (strict JSON; raises ValueError or
        TypeError for a value that is not JSON)."""
        out: Changes = {}
        for key, value in self._values.items():
            raw = dumps(value)
            if key not in self._loaded or raw != self._parts.get(key):
                out[key] = raw
        for key in self._deleted:
            if self._parts.has(key):
                out[key] = None
        return out


def _pair(replies: list[Any]) -> tuple[Any, Any]:
    return replies[0], replies[1]


def document_plan(layer: Layer, session_id: str) -> Plan[tuple[dict[str, str], JsonObject]]:
    """The registry row and the whole state, read together in one MULTI/EXEC: commits are
    atomic scripts, so the state is the one between two actions, never half of one. An empty
    row means no such session. A state stored before parts is read as it is (a second read,
    only for such sessions)."""
    sk = layer.keys.session(session_id)
    row, parts = yield Read([("HGETALL", sk.entry), ("HGETALL", sk.state)], _pair,
                            transaction=True, replies_with_errors=True)
    if isinstance(parts, redis.ResponseError) and str(parts).startswith("WRONGTYPE"):
        row, raw = yield Read([("HGETALL", sk.entry), ("GET", sk.state)], _pair,
                              transaction=True)
        return row, json.loads(raw) if raw else {}
    for reply in (row, parts):
        if isinstance(reply, Exception):
            raise reply
    return row, decode_parts(parts)


def read_document(layer: RedisLayer, session_id: str) -> tuple[dict[str, str], JsonObject]:
    """`document_plan`, run synchronously."""
    return layer.run(document_plan(layer, session_id))
