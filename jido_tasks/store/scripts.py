"""The Python side of every Lua script: one typed function per script (as RQ's `scripts.py`).

Each function takes its script's arguments by name and returns an `Op`, a prepared call that
`RedisLayer.call` runs in one round trip (or `call_many` in one pipeline) and whose reply is
turned into a typed result here, and only here: no other code indexes a script's reply. Replies
that mean "no" for the caller (a missing session, a status that refuses the call) become the
project's typed errors in one place, `_refuse`.

A script's source is a prelude generated from the Python definitions (the order of KEYS, the
common ARGV, the lifecycle tables, the bounds), then `lua/_lib.lua`, then the script's own ARGV
as named locals, then its `lua/<name>.lua` body. So the key order, the ARGV order and the
lifecycle rules are each written down once, in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from jido_tasks.errors import (
    ActionIdConflict,
    ActionNotFound,
    InvalidTransition,
    JidoTasksError,
    ProtocolError,
    SessionNotActive,
    SessionNotFound,
)
from jido_tasks.models import (
    ACCEPTS_WORK,
    ALLOWED_TRANSITIONS,
    ActionRequest,
    Outcome,
    SessionStatus,
)
from jido_tasks.store.keys import INDEX_KEYS, OWNED_KEYS, SCRIPT_KEYS

if TYPE_CHECKING:
    from jido_tasks.settings import Settings
    from jido_tasks.store.connection import Layer, RedisLayer

T = TypeVar("T")

COMMON_ARGV: tuple[str, ...] = ("SID", "EVENT_MAXLEN", "GLOBAL_EVENT_MAXLEN", "DONE_CHANNEL",
                                "TERMINATED_EVENTS_MS", "RECORD_MS", "METRICS")
"""The first ARGV of every session script (Lua names), built by `_common_args`."""
CANCEL_CHUNK = 200
"""Most withdrawn actions one call finishes (terminate, cancel_pending, recover)."""
UNPACK_CHUNK = 1000
"""Most values one Lua `unpack` takes (its hard limit is about 8,000)."""
TRIM_CHUNK = 200
"""Most records one script drops by age (the rest go in later calls, or with the key TTL)."""
PRELOAD_PARTS = 16
PRELOAD_BYTES = 8192
"""A state of at most this many parts and bytes comes whole with a claim (no part read by the
drain); a bigger one is read part by part, as its actions ask."""
REPUBLISH_MAX = 600.0
"""Seconds: the longest wait between two drains recovery publishes for a session that no
drain claimed meanwhile (the backoff doubles from `stale_after` up to this)."""
PROGRESS_SUFFIX = "#p"
"""`<action id>#p` in the `pending` hash: a running action's Outcome with its progress."""


class Tag(StrEnum):
    """The control-flow words the scripts answer with."""

    OK = "ok"
    MISSING = "missing"
    INACTIVE = "inactive"
    INVALID = "invalid"
    EXISTS = "exists"
    BUSY = "busy"
    EMPTY = "empty"
    STALE = "stale"
    MOVED = "moved"
    RELEASED = "released"
    MORE = "more"
    CANCELLED = "cancelled"
    RUNNING = "running"
    FINISHED = "finished"
    UNKNOWN = "unknown"
    IDLED = "idled"
    FRESH = "fresh"
    GONE = "gone"
    EXPIRED = "expired"
    SNAPSHOT = "snapshot"
    CHANGED = "changed"
    RECOVER = "recover"
    UNSCHEDULED = "unscheduled"
    LEASED = "leased"
    CANCELLING = "cancelling"
    PURGED = "purged"
    YOUNG = "young"
    LIVE = "live"
    HANDED = "handed"
    YIELDED = "yielded"
    UNCHANGED = "unchanged"
    CLAIMED = "claimed"


# -- typed replies -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PendingAction:
    """One handed-out action: its id and stored request JSON ('' if the request is gone)."""

    id: str
    request: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Pending actions handed to the lease holder; `attempts` counts hand-outs of the first."""

    attempts: int
    actions: list[PendingAction]


@dataclass(frozen=True, slots=True)
class Sent:
    """What `send` did: `publish` (the caller must publish a drain), or found the same send
    already accepted (`duplicate`, with its `outcome` if it has finished). `claimed`: the send
    claimed the session's lease for the drain it asked for (see `ClaimFor`); the caller runs
    that drain (`publish` is then False)."""

    publish: bool
    duplicate: bool
    outcome: Outcome | None = None
    claimed: Claimed | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """The lease is ours: fencing `token`, registry `row`, a batch; `legacy_state` is the whole
    state JSON of a session stored before parts (None once it is stored in parts)."""

    token: str
    legacy_state: str | None
    row: dict[str, str]
    batch: Batch
    parts: dict[str, str] | None = None
    """The whole state (part name -> JSON) when it is small (see PRELOAD_PARTS), else None."""


@dataclass(frozen=True, slots=True)
class Busy:
    """Another worker holds the lease for `retry_after` more seconds (less when its liveness
    key will expire sooner: then it may be dead); `lease` is the lease value "token|worker"."""

    retry_after: float
    lease: str = ""

    @property
    def holder(self) -> str:
        """The worker id named by the lease ('' if unknown)."""
        return self.lease.partition("|")[2]


@dataclass(frozen=True, slots=True)
class Terminated:
    """`withdrawn` pending actions were cancelled; `left` of them still need `cancel_pending`;
    not `changed`: the session was terminating or terminated already (returned as it is)."""

    withdrawn: int
    left: int
    row: dict[str, str]
    changed: bool = True


@dataclass(frozen=True, slots=True)
class Transitioned:
    previous: str
    row: dict[str, str]


@dataclass(frozen=True, slots=True)
class Expiry:
    """What `expire` did; `last_activity` is set with `Tag.SNAPSHOT`."""

    tag: Tag
    last_activity: str | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """What is stored of one action: its request, and its outcome once finished (or while
    running, with progress). `running`: it heads the mailbox under a live lease."""

    request: ActionRequest | None
    outcome: Outcome | None
    running: bool = False
    head_attempts: int = 0
    """While running: the attempt under way (1 for the first)."""


ClaimReply = Claimed | Busy | Tag
"""`Claimed`, `Busy`, `Tag.EMPTY` (nothing pending) or `Tag.MISSING`."""


@dataclass(frozen=True, slots=True)
class ClaimFor:
    """A worker that accepts a send and would drain the session itself: `send` then claims a
    free lease in the same call (`claim`'s arguments)."""

    worker: str
    lease_ms: int
    batch_size: int
    alive_key: str
    alive_ms: int


# -- scripts and prepared calls ------------------------------------------------------------
@dataclass(frozen=True)
class Script:
    """A Lua script: its file name, its own ARGV names (in order) and its kind."""

    name: str
    argv: tuple[str, ...] = ()
    session: bool = True
    """Session scripts get the session KEYS, the common ARGV and the shared prelude."""
    variadic: bool = False
    """Takes more ARGV after its named ones, from position REST on."""

    def source(self) -> str:
        return _source(self)


@dataclass
class Op(Generic[T]):
    """A prepared script call: run it with `RedisLayer.call` / `call_many`."""

    script: Script
    session_id: str | None
    args: list[Any]
    decoder: Callable[[Any], T]
    keys: list[str] = field(default_factory=list)
    """KEYS of a non-session script; for a session script, KEYS after the session's own
    (from K_EXTRA on)."""

    def _keys_and_args(self, layer: Layer) -> tuple[list[str], list[Any]]:
        if not self.script.session:
            return self.keys, self.args
        assert self.session_id is not None
        return ([*layer.keys.script_keys(self.session_id), *self.keys],
                [*_common_args(layer, self.session_id), *self.args])

    def run(self, layer: RedisLayer) -> T:
        return self.decode(self.run_raw(layer))

    def run_raw(self, layer: RedisLayer) -> Any:
        """Run the call; its reply, not decoded."""
        keys, args = self._keys_and_args(layer)
        return layer.loaded(self.script.name, self.script.source)(keys=keys, args=args)

    def queue(self, layer: RedisLayer, pipe: Any) -> None:
        keys, args = self._keys_and_args(layer)
        script = layer.loaded(self.script.name, self.script.source)
        if layer.cluster:  # a cluster pipeline routes a plain EVALSHA by its first key
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        else:
            script(keys=keys, args=args, client=pipe)

    def evalsha(self, layer: RedisLayer) -> tuple[Any, ...]:
        """The call as a raw EVALSHA command, to go in a pipeline beside other commands
        without redis-py's script check (a round trip of its own); its reply is NOSCRIPT if
        the script is not loaded: then `run` it."""
        keys, args = self._keys_and_args(layer)
        sha = layer.loaded(self.script.name, self.script.source).sha
        return ("EVALSHA", sha, len(keys), *keys, *args)

    def decode(self, reply: Any) -> T:
        try:
            return self.decoder(reply)
        except JidoTasksError:
            raise
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(self.script.name, reply, self.session_id) from exc


def group_event_maxlen(settings: Settings) -> int:
    """The length bound of one slot group's event stream: the groups' streams together (the
    global stream) hold about `global_event_maxlen` events."""
    return max(1, -(-settings.global_event_maxlen // settings.index_shards))


def _common_args(layer: Layer, session_id: str) -> list[Any]:
    s = layer.settings
    return [session_id, s.event_maxlen, group_event_maxlen(s),
            layer.keys.session(session_id).done_channel, int(s.terminated_events_ttl * 1000),
            int(s.record_retention * 1000), "1" if s.metrics_counters else "0"]


def _op(script: Script, session_id: str, decoder: Callable[[Any], T], *rest: Any,
        extra_keys: tuple[str, ...] = (), **argv: Any) -> Op[T]:
    if len(argv) != len(script.argv):
        raise TypeError(f"script {script.name} takes {script.argv}, got {tuple(argv)}")
    return Op(script, session_id, [*(argv[name] for name in script.argv), *rest], decoder,
              list(extra_keys))


_OUTCOME_FIELDS = ("status", "error")
"""The Outcome fields the scripts write (a cancelled outcome), by their stored names."""


def _stored_name(model: type[BaseModel], name: str) -> str:
    alias = model.model_fields[name].serialization_alias
    return alias or name


def _lua_table(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"[{_lua_str(k)}] = {v}" for k, v in values.items()) + "}"


def _lua_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@cache
def prelude() -> str:
    """The generated part of every session script's source."""
    const = [f"K_{name.upper()}" for name in SCRIPT_KEYS]
    allowed = {dst.value: _lua_table({src.value: "true" for src in SessionStatus
                                      if dst in ALLOWED_TRANSITIONS[src]})
               for dst in SessionStatus}
    lines = [
        "-- Generated by jido_tasks/store/scripts.py from the Python definitions.",
        f"local {', '.join(const)} = {', '.join(str(i + 1) for i in range(len(const)))}",
        f"local OWNED = {{{', '.join(f'K_{n.upper()}' for n in OWNED_KEYS)}}}",
        f"local INDEXES = {{{', '.join(f'K_{n.upper()}' for n in INDEX_KEYS)}}}",
        f"local {', '.join(COMMON_ARGV)} = "
        + ", ".join(f"ARGV[{i + 1}]" for i in range(len(COMMON_ARGV))),
        f"local ACCEPTS_WORK = {_lua_table({s.value: 'true' for s in ACCEPTS_WORK})}",
        f"local ALLOWED_FROM = {_lua_table(allowed)}",
        f"local CANCEL_CHUNK, UNPACK_CHUNK, TRIM_CHUNK = {CANCEL_CHUNK}, {UNPACK_CHUNK}, "
        f"{TRIM_CHUNK}",
        f"local PRELOAD_PARTS, PRELOAD_BYTES = {PRELOAD_PARTS}, {PRELOAD_BYTES}",
        f"local REPUBLISH_MAX = {REPUBLISH_MAX!r}",
        f"local PROGRESS_SUFFIX = {_lua_str(PROGRESS_SUFFIX)}",
        f"local {', '.join(f'F_{name.upper()}' for name in _OUTCOME_FIELDS)} = "
        + ", ".join(_lua_str(_stored_name(Outcome, name)) for name in _OUTCOME_FIELDS),
        f"local K_EXTRA = {len(SCRIPT_KEYS) + 1}",
    ]
    return "\n".join(lines) + "\n"


def _read(name: str) -> str:
    return (resources.files("jido_tasks") / "store" / "lua" / name).read_text()


def _source(script: Script) -> str:
    first = len(COMMON_ARGV) + 1 if script.session else 1
    parts = []
    if script.session:
        parts += [prelude(), _read("_lib.lua")]
    if script.argv:
        parts.append(f"local {', '.join(script.argv)} = "
                     + ", ".join(f"ARGV[{first + i}]" for i in range(len(script.argv))))
    if script.variadic:
        parts.append(f"local REST = {first + len(script.argv)}")
    parts.append(_read(f"{script.name}.lua"))
    return "\n".join(parts)


# -- reply helpers ---------------------------------------------------------------------------
def _request_in(record_json: str) -> ActionRequest | None:
    """The request part of a stored record (None if its request was gone when it finished)."""
    try:
        return ActionRequest.model_validate_json(record_json)
    except ValidationError:
        return None


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _actions(flat: list[Any]) -> list[PendingAction]:
    return [PendingAction(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]


def _refuse(reply: list[Any], session_id: str, target: str | None = None) -> None:
    """Raise the typed error of a refused session call; return if `reply` is 'ok'."""
    tag = Tag(reply[0])
    if tag is Tag.OK:
        return
    if tag is Tag.MISSING:
        raise SessionNotFound(session_id)
    if tag is Tag.INACTIVE:
        raise SessionNotActive(session_id, str(reply[1]))
    if tag is Tag.INVALID:
        raise InvalidTransition(session_id, str(reply[1]), target or "?")
    raise ValueError(f"unexpected tag {tag}")


# -- the scripts -----------------------------------------------------------------------------
CREATE = Script("create", ("row_json", "event_json", "n_parts"), variadic=True)
TRANSITION = Script("transition", ("target", "reason"))
TOUCH = Script("touch")
TERMINATE = Script("terminate", ("reason", "drain", "keep"))
CANCEL_PENDING = Script("cancel_pending", ("keep",))
SEND = Script("send", ("action_id", "request", "digest", "stale_after", "worker", "lease_ms",
                       "batch_size", "alive_ms"))
SEND_MANY = Script("send_many", ("n", "stale_after"), variadic=True)
CLAIM = Script("claim", ("worker", "lease_ms", "batch_size", "alive_ms"))
TAKEOVER = Script("takeover", ("worker", "lease_ms", "batch_size", "alive_ms", "expected"))
RECOVER_DEAD = Script("recover_dead", ("expected", "stale_after"))
COMMIT = Script("commit", ("token", "n", "migrate", "n_set", "n_del", "events", "keep", "last",
                           "n_count", "n_sum"), variadic=True)
RELEASE = Script("release", ("token", "batch_size", "lease_ms"))
GIVE_BACK = Script("give_back", ("token", "clean"))
RENEW = Script("renew", ("token", "lease_ms"))
PROGRESS = Script("progress", ("token", "action_id", "outcome", "event_data"))
CANCEL = Script("cancel", ("action_id", "reason", "keep"))
MARK_IDLE = Script("mark_idle", ("idle_after",))
EXPIRE = Script("expire", ("reason", "snapshot_last"))
RECOVER = Script("recover", ("stale_after", "keep"))
PURGE = Script("purge", ("retention",))
EMIT = Script("emit", ("event_type", "data_json", "counter"))
HANDBACK = Script("handback", ("token", "action_id"))
RECORD = Script("record", ("action_id",))
DELIVERED = Script("delivered", ("n", "limit"), variadic=True)
ALL_SCRIPTS = (CREATE, TRANSITION, TOUCH, TERMINATE, CANCEL_PENDING, SEND, SEND_MANY, CLAIM,
               TAKEOVER, COMMIT, RELEASE, GIVE_BACK, RENEW, PROGRESS, CANCEL, MARK_IDLE, EXPIRE,
               RECOVER, RECOVER_DEAD, PURGE, EMIT, HANDBACK, RECORD, DELIVERED)


def create(session_id: str, *, row_json: str, event_json: str,
           parts: dict[str, str]) -> Op[float]:
    """Store a new registry row and its initial state parts; the server time it was created
    at."""
    def decode(reply: Any) -> float:
        if reply == Tag.EXISTS:  # a uuid4 collision: practically impossible; never overwrite
            raise JidoTasksError(f"session {session_id} already exists", session_id=session_id)
        return float(reply)
    flat = [value for pair in parts.items() for value in pair]
    return _op(CREATE, session_id, decode, *flat, row_json=row_json, event_json=event_json,
               n_parts=len(parts))


def transition(session_id: str, *, target: SessionStatus, reason: str) -> Op[Transitioned]:
    """Change status if the lifecycle allows it (`InvalidTransition` otherwise)."""
    def decode(reply: list[Any]) -> Transitioned:
        _refuse(reply, session_id, target.value)
        return Transitioned(str(reply[1]), _pairs(reply[2:]))
    return _op(TRANSITION, session_id, decode, target=target.value, reason=reason)


def touch(session_id: str) -> Op[dict[str, str]]:
    """Record activity; the registry row after it."""
    def decode(reply: list[Any]) -> dict[str, str]:
        _refuse(reply, session_id)
        return _pairs(reply[1:])
    return _op(TOUCH, session_id, decode)


def terminate(session_id: str, *, reason: str, drain: bool, keep: int) -> Op[Terminated]:
    def decode(reply: list[Any]) -> Terminated:
        changed = Tag(reply[0]) is not Tag.UNCHANGED
        if changed:
            _refuse(reply, session_id, SessionStatus.TERMINATING.value)
        return Terminated(int(reply[1]), int(reply[2]), _pairs(reply[3:]), changed)
    return _op(TERMINATE, session_id, decode, reason=reason, drain="1" if drain else "0",
               keep=keep)


def cancel_pending(session_id: str, *, keep: int) -> Op[int]:
    """Finish the next chunk of withdrawn actions; how many are left."""
    return _op(CANCEL_PENDING, session_id, int, keep=keep)


def send(session_id: str, *, action_id: str, action: str, request: str, digest: str,
         stale_after: float, claim_for: ClaimFor | None = None) -> Op[Sent]:
    """Accept an action (`Sent`); a resend of an accepted id with the same `digest` is
    `Sent(duplicate=True)`, with another digest `ActionIdConflict`. With `claim_for`, a send
    that asks for a drain takes the free lease for it (`Sent.claimed`)."""
    def decode(reply: list[Any]) -> Sent:
        tag = Tag(reply[0])
        if tag is Tag.EXISTS:
            return Sent(False, True, Outcome.model_validate_json(reply[1]) if reply[1] else None)
        if tag is Tag.CHANGED:
            raise ActionIdConflict(session_id, action_id, action)
        if tag is Tag.CLAIMED:
            claimed = _claim_reply([Tag.OK.value, *reply[1:]])
            if not isinstance(claimed, Claimed):
                raise ValueError("a claimed send without a claim")
            return Sent(False, False, claimed=claimed)
        _refuse(reply, session_id)
        return Sent(bool(int(reply[1])), False)
    c = claim_for
    return _op(SEND, session_id, decode, extra_keys=(c.alive_key,) if c else (),
               action_id=action_id, request=request, digest=digest, stale_after=stale_after,
               worker=c.worker if c else "", lease_ms=c.lease_ms if c else 0,
               batch_size=c.batch_size if c else 0, alive_ms=c.alive_ms if c else 0)


@dataclass(frozen=True, slots=True)
class SentMany:
    """What `send_many` did: `publish` (the caller must publish a drain) and, per action in
    order, its `Sent` (a duplicate, with its outcome if finished, or newly queued)."""

    publish: bool
    sent: list[Sent]


def send_many(session_id: str, *, actions: list[tuple[str, str, str, str]],
              stale_after: float) -> Op[SentMany]:
    """Accept `actions` (action id, name, request JSON, digest or '') all or none, in order,
    in one call: every id is checked before anything is written, and one taken by other
    content refuses them all (`ActionIdConflict` naming it); a resent id with the same
    digest is a duplicate (`Sent(duplicate=True)`)."""
    def decode(reply: list[Any]) -> SentMany:
        tag = Tag(reply[0])
        if tag is Tag.CHANGED:
            action_id, action, _, _ = actions[int(reply[1]) - 1]
            raise ActionIdConflict(session_id, action_id, action)
        _refuse(reply, session_id)
        sent = [Sent(False, True, Outcome.model_validate_json(reply[i + 1]) if reply[i + 1]
                     else None) if reply[i] == Tag.EXISTS else Sent(False, False)
                for i in range(2, len(reply), 2)]
        if len(sent) != len(actions):
            raise ValueError(f"{len(sent)} replies for {len(actions)} actions")
        return SentMany(bool(int(reply[1])), sent)
    flat = [value for action_id, _, request, digest in actions
            for value in (action_id, request, digest)]
    return _op(SEND_MANY, session_id, decode, *flat, n=len(actions), stale_after=stale_after)


def _claim_reply(reply: list[Any]) -> ClaimReply:
    tag = Tag(reply[0])
    if tag is Tag.BUSY:
        wait = int(reply[1])
        if len(reply) > 3 and int(reply[3]) >= 0:  # the holder's liveness ends sooner
            wait = min(wait, int(reply[3]))
        return Busy(max(wait, 50) / 1000.0, str(reply[2]))
    if tag is not Tag.OK:
        return tag
    nrow = int(reply[4])
    at = 5 + nrow
    nparts = int(reply[at])
    parts = _pairs(reply[at + 1:at + 1 + nparts]) if nparts >= 0 else None
    return Claimed(token=str(reply[1]), legacy_state=str(reply[2]) if reply[2] else None,
                   row=_pairs(reply[5:at]), parts=parts,
                   batch=Batch(int(reply[3]), _actions(reply[at + 1 + max(nparts, 0):])))


def claim(session_id: str, *, worker: str, lease_ms: int, batch_size: int,
          alive_key: str | None = None, alive_ms: int = 1000) -> Op[ClaimReply]:
    """Take the free lease (and set the claimer's liveness key `alive_key`, if given: a
    claimer without one can only lose its sessions by lease expiry)."""
    keys = (alive_key,) if alive_key else ()
    return _op(CLAIM, session_id, _claim_reply, extra_keys=keys, worker=worker,
               lease_ms=lease_ms, batch_size=batch_size, alive_ms=alive_ms)


def takeover(session_id: str, *, worker: str, lease_ms: int, batch_size: int, alive_key: str,
             alive_ms: int, expected: str, holder_alive_key: str) -> Op[ClaimReply]:
    """Claim a session whose lease (`expected`, from a `Busy`) names a holder whose liveness
    key `holder_alive_key` is gone; `Busy` if the holder lives or the lease changed hands."""
    return _op(TAKEOVER, session_id, _claim_reply, extra_keys=(alive_key, holder_alive_key),
               worker=worker, lease_ms=lease_ms, batch_size=batch_size, alive_ms=alive_ms,
               expected=expected)


def recover_dead(session_id: str, *, expected: str, holder_alive_key: str | None,
                 stale_after: float) -> Op[Tag]:
    """Light recovery of a session whose holder is dead: `Tag.RECOVER` (publish a drain),
    `UNSCHEDULED`, `LIVE` or `GONE`. `expected`: the lease value read ('' if none)."""
    keys = (holder_alive_key,) if holder_alive_key else ()
    return _op(RECOVER_DEAD, session_id, Tag, extra_keys=keys, expected=expected,
               stale_after=stale_after)


def commit(session_id: str, *, token: str, changes: dict[str, str | None], migrate: bool,
           events: str, keep: int, last: bool, outcomes: list[tuple[str, str]],
           counts: dict[str, int] | None = None, sums: dict[str, float] | None = None,
           ) -> Op[Tag]:
    """Commit finished actions (id, Outcome JSON) in mailbox order with the state parts they
    changed (name -> JSON, None to delete; with `migrate`, every part, replacing a state
    stored before parts), and add `counts` / `sums` to the metrics hash (field -> increment,
    see `monitoring.action_counts`): `Tag.OK`, `RELEASED`, `STALE` (lease lost) or `MOVED`
    (one was cancelled meanwhile); nothing is written unless OK or RELEASED. Malformed
    `events` raise `ProtocolError` (nothing written)."""
    def decode(reply: Any) -> Tag:
        tag = Tag(reply)
        if tag is Tag.INVALID:
            raise ValueError("events must be a list of [type, data JSON] strings")
        return tag
    sets = [(name, raw) for name, raw in changes.items() if raw is not None]
    dels = [name for name, raw in changes.items() if raw is None]
    counts, sums = counts or {}, sums or {}
    flat: list[Any] = [value for pair in outcomes for value in pair]
    flat += [value for pair in sets for value in pair]
    flat += dels
    flat += [value for pair in counts.items() for value in pair]
    flat += [value for name, total in sums.items() for value in (name, f"{total:.9f}")]
    return _op(COMMIT, session_id, decode, *flat, token=token, n=len(outcomes),
               migrate="1" if migrate else "0", n_set=len(sets), n_del=len(dels),
               events=events, keep=keep, last="1" if last else "0", n_count=len(counts),
               n_sum=len(sums))


def release(session_id: str, *, token: str, batch_size: int, lease_ms: int) -> Op[Batch | Tag]:
    """End a batch: the next `Batch`, or `Tag.RELEASED` (nothing left) or `Tag.STALE`."""
    def decode(reply: list[Any]) -> Batch | Tag:
        tag = Tag(reply[0])
        if tag is Tag.MORE:
            return Batch(int(reply[1]), _actions(reply[2:]))
        return tag
    return _op(RELEASE, session_id, decode, token=token, batch_size=batch_size,
               lease_ms=lease_ms)


def give_back(session_id: str, *, token: str, clean: bool) -> Op[Tag]:
    """Give the lease up with work left (time slice over, or an unexpected error):
    `Tag.YIELDED` (publish a drain), `RELEASED` (nothing left after all) or `STALE`. `clean`:
    the head was not run (not counted as an attempt). Compare `handback` (this worker lacks
    the head action: its claim is uncounted and the session waits for a worker that has it)."""
    return _op(GIVE_BACK, session_id, Tag, token=token, clean="1" if clean else "0")


def renew(session_id: str, *, token: str, lease_ms: int) -> Op[bool]:
    """Extend the lease; False if it is no longer ours."""
    return _op(RENEW, session_id, bool, token=token, lease_ms=lease_ms)


def progress(session_id: str, *, token: str, action_id: str, outcome: str,
             event_data: str) -> Op[bool]:
    return _op(PROGRESS, session_id, bool, token=token, action_id=action_id, outcome=outcome,
               event_data=event_data)


def cancel(session_id: str, *, action_id: str, reason: str, keep: int) -> Op[Tag]:
    """Cancel a pending action: `Tag.CANCELLED`, `RUNNING` or `FINISHED`."""
    def decode(reply: Any) -> Tag:
        tag = Tag(reply)
        if tag is Tag.UNKNOWN:
            raise ActionNotFound(session_id, action_id)
        return tag
    return _op(CANCEL, session_id, decode, action_id=action_id, reason=reason, keep=keep)


def mark_idle(session_id: str, *, idle_after: float) -> Op[Tag]:
    return _op(MARK_IDLE, session_id, Tag, idle_after=idle_after)


def expire(session_id: str, *, reason: str, snapshot_last: str) -> Op[Expiry]:
    def decode(reply: list[Any]) -> Expiry:
        tag = Tag(reply[0])
        return Expiry(tag, str(reply[1]) if tag is Tag.SNAPSHOT else None)
    return _op(EXPIRE, session_id, decode, reason=reason, snapshot_last=snapshot_last)


def recover(session_id: str, *, stale_after: float, keep: int) -> Op[Tag]:
    return _op(RECOVER, session_id, Tag, stale_after=stale_after, keep=keep)


def purge(session_id: str, *, retention: float) -> Op[Tag]:
    return _op(PURGE, session_id, Tag, retention=retention)


def emit(session_id: str, *, event_type: str, data_json: str, counter: str = "") -> Op[bool]:
    """Count `counter` (a field of the metrics hash; '' none) and append an event about the
    session (none if `event_type` is ''); False if the session does not exist (the counter
    is counted all the same: a snapshot outlives its session)."""
    return _op(EMIT, session_id, bool, event_type=event_type, data_json=data_json,
               counter=counter)


def handback(session_id: str, *, token: str, action_id: str) -> Op[Tag]:
    """Give the session back with `action_id` pending at its head: `Tag.OK`, `STALE` or
    `MOVED`."""
    return _op(HANDBACK, session_id, Tag, token=token, action_id=action_id)


def record(session_id: str, *, action_id: str) -> Op[Stored]:
    """What is stored of an action; `ActionNotFound` when nothing is (never sent, or its
    record was dropped by age or count: the caller tells which it can)."""
    def decode(reply: list[Any]) -> Stored:
        tag = str(reply[0])
        if tag == "finished":
            outcome = Outcome.model_validate_json(reply[2])
            outcome.finished_at = int(reply[1]) / 1000.0
            return Stored(_request_in(reply[2]), outcome)
        if tag in ("pending", "legacy"):
            req = ActionRequest.model_validate_json(reply[1]) if reply[1] else None
            out = Outcome.model_validate_json(reply[2]) if reply[2] else None
            return Stored(req, out, bool(int(reply[3])),
                          int(reply[4] or 0) if len(reply) > 4 else 0)
        raise ActionNotFound(session_id, action_id)
    return _op(RECORD, session_id, decode, action_id=action_id)


def delivered(session_id: str, *, action_ids: list[str], limit: int,
              ) -> Op[list[tuple[str, Outcome | None]]]:
    """Acknowledge stored Celery results of by-name actions; up to `limit` by-name actions
    whose results are still to store (id, Outcome; None when the outcome is gone)."""
    def decode(reply: list[Any]) -> list[tuple[str, Outcome | None]]:
        return [(str(reply[i]), Outcome.model_validate_json(reply[i + 1]) if reply[i + 1]
                 else None) for i in range(0, len(reply), 2)]
    return _op(DELIVERED, session_id, decode, *action_ids, n=len(action_ids), limit=limit)


def parse_finish(message: str) -> tuple[str, Outcome]:
    """A finish message (published by `finish_many()` in `_lib.lua`: action id, finish time
    in ms, Outcome JSON, one a line): action id and its Outcome."""
    action_id, _, rest = message.partition("\n")
    ms, _, outcome_json = rest.partition("\n")
    outcome = Outcome.model_validate_json(outcome_json)
    outcome.finished_at = int(ms) / 1000.0
    return action_id, outcome
