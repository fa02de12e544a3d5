"""Read-only views of the registry for operators: gauges, counters, per-session details.

Every read is bounded and uses the key schema (no SCAN, no key formatting here):
- session counts come from index cardinalities (ZCARD of `activity`, `active`, `expiry`,
  `terminated`);
- pending work is read only for sessions in the `scheduled` index (a session with pending
  actions always holds the drain flag), at most `max_sessions` of them, oldest flag first, in
  two pipelined round trips; past that bound `truncated` is set and the sums are lower bounds;
- counters come from the one `metrics` hash, kept by the scripts (see `KeySchema.metrics`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jido_tasks.models import ActionRecord, SessionEntry, is_index_member, validate_session_id
from jido_tasks.store.connection import RedisLayer

# Upper bounds (seconds) of the action-duration histogram buckets, as written in the fields.
DURATION_BUCKETS: tuple[str, ...] = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                                     "1", "2.5", "5", "10", "30", "60", "300", "+Inf")
ACTION_OUTCOMES = ("succeeded", "failed", "cancelled", "poison")
SESSION_EVENTS = ("created", "terminated", "expired", "purged", "recovered", "restored")
SNAPSHOT_OPS = ("saved", "restored", "deleted")
_BOUNDS = tuple((le, float(le)) for le in DURATION_BUCKETS)  # float("+Inf") is inf


def action_counts(finished: Sequence[tuple[str, str, float | None]],
                  ) -> tuple[dict[str, int], dict[str, float]]:
    """The metrics-hash increments (see `KeySchema.metrics`) for finished actions, each as
    (action name, outcome, run time or None if it did not run): integer increments by field,
    and the float ones (run-time sums). Same fields are added up, so a commit of a group of
    one action costs a few HINCRBYs whatever its size."""
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for action, outcome, duration in finished:
        field_ = f"actions:{outcome}:{action}"
        counts[field_] = counts.get(field_, 0) + 1
        if duration is None:
            continue
        le = next(le for le, bound in _BOUNDS if duration <= bound)
        for field_ in (f"duration_bucket:{le}:{action}", f"duration_count:{action}"):
            counts[field_] = counts.get(field_, 0) + 1
        field_ = f"duration_sum:{action}"
        sums[field_] = sums.get(field_, 0.0) + duration
    return counts, sums


@dataclass
class Gauges:
    """Values read at scrape time."""

    sessions: dict[str, int]
    pending_sessions: int
    pending_actions: int = 0
    oldest_pending_seconds: float = 0.0
    leases: int = 0
    truncated: bool = False


@dataclass
class Histogram:
    """One action's run-time histogram: cumulative bucket counts by bound, sum, count."""

    buckets: dict[str, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        total = 0.0
        out: list[tuple[str, float]] = []
        for le in DURATION_BUCKETS:
            total += self.buckets.get(le, 0.0)
            out.append((le, total))
        # A count larger than the buckets' total (fields written out of order) goes to +Inf.
        out[-1] = ("+Inf", max(total, self.count))
        return out


@dataclass
class Counters:
    """The `metrics` hash, parsed."""

    actions: dict[tuple[str, str], float] = field(default_factory=dict)
    """(action, outcome) -> count."""
    sessions: dict[str, float] = field(default_factory=dict)
    snapshots: dict[str, float] = field(default_factory=dict)
    durations: dict[str, Histogram] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionRow:
    """A registry row with what the sessions page shows next to it."""

    entry: SessionEntry
    pending: int
    lease_holder: str | None


def read_gauges(layer: RedisLayer, max_sessions: int = 1000) -> Gauges:
    """Session counts by status, and pending work of at most `max_sessions` scheduled sessions."""
    k = layer.keys
    pipe = layer.redis.pipeline(transaction=False)
    for index in (k.activity, k.active, k.expiry, k.terminated, k.scheduled):
        pipe.zcard(index)
    pipe.zrange(k.scheduled, 0, max_sessions - 1)
    pipe.time()
    live, active, with_deadline, terminated, scheduled, ids, now = pipe.execute()
    # `terminating` sessions leave `active` and `expiry` but stay in `activity` until terminated.
    gauges = Gauges(
        sessions={"active": active, "idle": max(0, with_deadline - active),
                  "terminating": max(0, live - with_deadline), "terminated": terminated},
        pending_sessions=scheduled, truncated=scheduled > max_sessions)
    ids = [sid for sid in ids if is_index_member(k.scheduled, sid)]
    if ids:
        _read_pending(layer, ids, float(now[0]) + float(now[1]) / 1e6, gauges)
    return gauges


def _read_pending(layer: RedisLayer, ids: list[str], now: float, gauges: Gauges) -> None:
    pipe = layer.redis.pipeline(transaction=False)
    for sid in ids:
        sk = layer.keys.session(sid)
        pipe.llen(sk.mailbox)
        pipe.lindex(sk.mailbox, 0)
        pipe.exists(sk.lease)
    replies = pipe.execute()
    heads: list[tuple[str, str]] = []
    for i, sid in enumerate(ids):
        length, head, leased = replies[3 * i: 3 * i + 3]
        gauges.pending_actions += int(length)
        gauges.leases += int(leased)
        if head:
            heads.append((sid, head))
    if not heads:
        return
    pipe = layer.redis.pipeline(transaction=False)
    for sid, head in heads:
        pipe.hget(layer.keys.session(sid).actions, head)
    oldest = math.inf
    for request in pipe.execute():
        if request:
            oldest = min(oldest, float(json.loads(request).get("created_at", now)))
    if oldest is not math.inf:
        gauges.oldest_pending_seconds = max(0.0, now - oldest)


def read_counters(layer: RedisLayer) -> Counters:
    """Parse the `metrics` hash (unknown fields are ignored, so scripts may add more)."""
    out = Counters()
    for name, raw in layer.redis.hgetall(layer.keys.metrics).items():
        try:
            value = float(raw)
        except ValueError:
            continue
        kind, _, rest = name.partition(":")
        if kind == "actions":
            outcome, _, action = rest.partition(":")
            if action:
                out.actions[(action, outcome)] = value
        elif kind == "sessions":
            out.sessions[rest] = value
        elif kind == "snapshots":
            out.snapshots[rest] = value
        elif kind == "duration_bucket":
            le, _, action = rest.partition(":")
            if action and le in DURATION_BUCKETS:
                out.durations.setdefault(action, Histogram()).buckets[le] = value
        elif kind in ("duration_sum", "duration_count"):
            hist = out.durations.setdefault(rest, Histogram())
            if kind == "duration_sum":
                hist.sum = value
            else:
                hist.count = value
    return out


def _lease_holder(lease: str | None) -> str | None:
    if not lease:
        return None
    _, _, worker = lease.partition("|")
    return worker or None


def session_rows(layer: RedisLayer, entries: Sequence[SessionEntry]) -> list[SessionRow]:
    """Pending count and lease holder of each entry (one pipeline)."""
    if not entries:
        return []
    pipe = layer.redis.pipeline(transaction=False)
    for entry in entries:
        sk = layer.keys.session(entry.id)
        pipe.llen(sk.mailbox)
        pipe.get(sk.lease)
    replies = pipe.execute()
    return [SessionRow(entry, int(replies[2 * i]), _lease_holder(replies[2 * i + 1]))
            for i, entry in enumerate(entries)]


def recent_actions(layer: RedisLayer, session_id: str, limit: int = 20) -> list[ActionRecord]:
    """The session's pending actions and its last `limit` finished ones, newest first."""
    validate_session_id(session_id)
    sk = layer.keys.session(session_id)
    pipe = layer.redis.pipeline(transaction=False)
    pipe.lrange(sk.finished, -limit, -1)
    pipe.lrange(sk.mailbox, 0, limit - 1)
    pipe.exists(sk.lease)
    pipe.hget(sk.entry, "head_attempts")
    finished, pending, leased, attempts = pipe.execute()
    ids: list[str] = [*reversed(pending), *reversed(finished)]
    if not ids:
        return []
    pipe = layer.redis.pipeline(transaction=False)
    for aid in ids:
        pipe.hget(sk.actions, aid)
        pipe.hget(sk.results, aid)
    replies: list[Any] = pipe.execute()
    head = pending[0] if pending else None
    out: list[ActionRecord] = []
    for i, aid in enumerate(ids):
        request, outcome = replies[2 * i], replies[2 * i + 1]
        if request is None and outcome is None:  # trimmed between the two reads
            continue
        out.append(ActionRecord.from_stored(session_id, aid, request, outcome,
                                            running=(aid == head and bool(leased)),
                                            head_attempts=int(attempts or 0)))
    return out
