"""Read-only views of the registry for operators: gauges, counters, per-session details.

Every read is bounded and uses the key schema (no SCAN, no key formatting here):
- session counts come from index cardinalities (ZCARD of `activity`, `active`, `expiry`,
  `terminated`);
- pending work is read only for sessions in the `scheduled` index (a session with pending
  actions always holds the drain flag), at most `max_sessions` of them, oldest flag first, in
  two pipelined round trips; past that bound `truncated` is set and the sums are lower bounds;
- counters come from the groups' `metrics` hashes, kept by the scripts (see
  `GroupKeys.metrics`), summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from jido_tasks.core.counters import DURATION_BUCKETS
from jido_tasks.core.requests import record_op
from jido_tasks.models import (
    ActionRecord,
    ActionRequest,
    SessionEntry,
    is_index_member,
    validate_session_id,
)
from jido_tasks.store.connection import RedisLayer


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
    names = ("activity", "active", "expiry", "terminated", "scheduled")
    per_group = -(-max_sessions // k.shards)  # the oldest of each group, about max_sessions
    pipe = layer.redis.pipeline(transaction=False)
    for group in k.groups():
        for name in names:
            pipe.zcard(getattr(group, name))
        pipe.zrange(group.scheduled, 0, per_group - 1)
    pipe.time()
    replies = pipe.execute()
    now = replies.pop()
    step = len(names) + 1
    live, active, with_deadline, terminated, scheduled = (
        sum(int(r) for r in replies[i::step]) for i in range(len(names)))
    ids = [sid for found in replies[len(names)::step] for sid in found][:max_sessions]
    # `activity` holds active and terminating sessions, `expiry` active and idle ones (an idle
    # session has no other index entry), `active` the active ones.
    gauges = Gauges(
        sessions={"active": active, "idle": max(0, with_deadline - active),
                  "terminating": max(0, live - active), "terminated": terminated},
        pending_sessions=scheduled, truncated=scheduled > max_sessions)
    ids = [sid for sid in ids if is_index_member("scheduled", sid)]
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
        pipe.hget(layer.keys.session(sid).pending, head)
    oldest = math.inf
    for request in pipe.execute():
        if request:
            oldest = min(oldest, ActionRequest.model_validate_json(request).created_at or now)
    if oldest is not math.inf:
        gauges.oldest_pending_seconds = max(0.0, now - oldest)


def _summed_counters(layer: RedisLayer) -> dict[str, float]:
    """Every group's counters, field by field, summed (one pipeline)."""
    pipe = layer.redis.pipeline(transaction=False)
    for group in layer.keys.groups():
        pipe.hgetall(group.metrics)
    totals: dict[str, float] = {}
    for fields in pipe.execute():
        for name, raw in fields.items():
            try:
                totals[name] = totals.get(name, 0.0) + float(raw)
            except ValueError:
                continue
    return totals


def read_counters(layer: RedisLayer) -> Counters:
    """Parse the groups' `metrics` hashes, summed (unknown fields are ignored, so scripts may
    add more)."""
    out = Counters()
    for name, value in _summed_counters(layer).items():
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
    pipe.lrange(sk.records, -3 * limit, -1)  # (id, finish ms, record JSON) triples
    pipe.lrange(sk.mailbox, 0, limit - 1)
    finished, pending = pipe.execute()
    ids: list[str] = [*reversed(pending), *reversed(finished[0::3])]
    out: list[ActionRecord] = []
    for record in layer.call_many([record_op(layer.settings, session_id, aid) for aid in ids]):
        if isinstance(record, ActionRecord):  # else dropped between the two reads
            out.append(record)
    return out
