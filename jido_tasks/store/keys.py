"""The one place that builds Redis key names (Lua scripts receive every key through KEYS).

`SCRIPT_KEYS` fixes the order of the KEYS every session script receives; the Lua prelude's
`K_*` constants, `OWNED` and `INDEXES` tables are generated from these tuples (see
`jido_tasks.store.scripts`), so the order is written down once.

Layout, for namespace `ns` and session id `sid` (the `{sid}` hash tag keeps one session's keys
in one Redis Cluster slot):

    ns:s:{sid}            hash    registry row (SessionEntry fields) and runtime fields: timeout,
                                  fence, scheduled, head, head_attempts, republished (drains
                                  recovery published since the last claim)
    ns:s:{sid}:state      hash    the session's JSON state in parts: top-level key -> its JSON
                                  (a string of the whole JSON in sessions written before parts)
    ns:s:{sid}:mailbox    list    pending action ids, oldest first
    ns:s:{sid}:pending    hash    action id -> request JSON (ActionRequest) of each pending
                                  action, and `<id>#p` -> its running Outcome with progress;
                                  gone once the action finishes (empty hashes vanish)
    ns:s:{sid}:records    list    finished actions, oldest first, three elements each: action
                                  id, finish time (integer ms, Redis TIME), record JSON
                                  (request and Outcome fields side by side); bounded by
                                  `keep_results` and by age (`record_retention`), and the key
                                  expires `record_retention` after its last write
    ns:s:{sid}:lease      string  "token|worker" of the worker that owns the session, with a TTL
    ns:s:{sid}:events     stream  the session's events
    ns:s:{sid}:cancelling list    ids of pending actions a termination withdrew, whose records
                                  are still being finished (in bounded chunks)
    ns:s:{sid}:actions,   legacy: the request / outcome hashes and finished list of sessions
      :results, :finished written before records (read as a fallback, deleted when the session
                          goes idle or is purged)
    ns:s:{sid}:replies    list    ids of finished actions sent by name (`jido_tasks.send`) whose
                                  Celery results are still to be stored (bounded by keep_results)
    ns:s:{sid}:done       channel pub/sub: finished action records, for waiters
    ns:events             stream  every session's events
    ns:idx:activity       zset    active and terminating sessions by last activity (an idle
                                  session leaves it: it is found through `expiry`)
    ns:idx:active         zset    active sessions by last activity (idle candidates)
    ns:idx:expiry         zset    live sessions by idle deadline (last activity + timeout);
                                  the only index entry of an idle session
    ns:idx:terminated     zset    terminated sessions by termination time (purge candidates)
    ns:idx:scheduled      zset    sessions with a drain scheduled, by when (recovery candidates):
                                  the flag's time, plus the republish backoff once recovery
                                  published drains that no claim followed yet
    ns:idx:undelivered    zset    sessions whose `replies` list is not empty, by when the oldest
                                  was queued (the sweep stores what a dead worker left)
    ns:workers            hash    worker name -> JSON {actions, seen}: the actions each live
                                  worker has registered (refreshed by the worker; an entry not
                                  seen for `worker_ttl` is a dead worker's)
    ns:sweep:lock         string  short lock so overlapping sweeps do not duplicate work
    ns:recover:lock       string  short lock so one worker at a time looks for dead holders
    ns:alive:{worker}     string  liveness of a worker process (host:pid, escaped), with a short
                                  TTL renewed while it holds leases; gone = the holder is dead
    ns:snap:{sid}         string  a saved snapshot (Redis snapshot store)
    ns:idx:snapshots      zset    saved snapshot ids by save time
    ns:metrics            hash    counters and the action-duration histogram (see `metrics`)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

MAX_WORKER_KEY = 200
"""Longest worker id used as is in a key; longer ones are hashed."""

OWNED_KEYS: tuple[str, ...] = ("entry", "state", "mailbox", "pending", "records", "lease",
                               "events", "cancelling", "replies", "legacy_actions",
                               "legacy_results", "legacy_finished")
"""Names of the keys one session owns (`SessionKeys` attributes): what a purge deletes."""
INDEX_KEYS: tuple[str, ...] = ("activity", "active", "expiry", "terminated", "scheduled",
                               "undelivered")
"""Names of the global session indexes (`KeySchema` properties): a purge leaves every one."""
GLOBAL_KEYS: tuple[str, ...] = ("metrics",)
"""Other global keys every session script receives (`KeySchema` properties), after the indexes:
the `metrics` hash of counters, kept by the scripts that do the counted work."""
SCRIPT_KEYS: tuple[str, ...] = (*OWNED_KEYS, "events_global", *INDEX_KEYS, *GLOBAL_KEYS)
"""The KEYS of every session script, in order."""


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """All keys owned by one session."""

    entry: str
    state: str
    mailbox: str
    pending: str
    records: str
    lease: str
    events: str
    cancelling: str
    legacy_actions: str
    legacy_results: str
    legacy_finished: str
    replies: str
    done_channel: str

    def owned(self) -> list[str]:
        """Every key the session owns (what a purge deletes)."""
        return [getattr(self, name) for name in OWNED_KEYS]


@dataclass(frozen=True, slots=True)
class KeySchema:
    """Key names for one namespace. Session ids must be validated before they get here."""

    namespace: str

    def session(self, session_id: str) -> SessionKeys:
        return _session_keys(self.namespace, session_id)

    @property
    def events(self) -> str:
        return f"{self.namespace}:events"

    @property
    def events_global(self) -> str:
        """The global event stream (alias of `events`, the name used in `SCRIPT_KEYS`)."""
        return self.events

    @property
    def activity(self) -> str:
        return f"{self.namespace}:idx:activity"

    @property
    def active(self) -> str:
        return f"{self.namespace}:idx:active"

    @property
    def expiry(self) -> str:
        return f"{self.namespace}:idx:expiry"

    @property
    def terminated(self) -> str:
        return f"{self.namespace}:idx:terminated"

    @property
    def scheduled(self) -> str:
        return f"{self.namespace}:idx:scheduled"

    @property
    def undelivered(self) -> str:
        return f"{self.namespace}:idx:undelivered"

    @property
    def workers(self) -> str:
        return f"{self.namespace}:workers"

    @property
    def sweep_lock(self) -> str:
        return f"{self.namespace}:sweep:lock"

    @property
    def recover_lock(self) -> str:
        return f"{self.namespace}:recover:lock"

    def alive(self, worker: str) -> str:
        """The liveness key of worker process `worker` (any string: it may come from a lease
        value; characters outside [A-Za-z0-9:@._-] are %-escaped, braces included, and a long
        id is hashed, so the key is always well-formed and bounded)."""
        escaped = quote(worker, safe=":@._-")
        if len(escaped) > MAX_WORKER_KEY:
            escaped = "sha1-" + hashlib.sha1(worker.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.namespace}:alive:{{{escaped}}}"

    def snapshot(self, saved_id: str) -> str:
        return f"{self.namespace}:snap:{{{saved_id}}}"

    @property
    def snapshots(self) -> str:
        return f"{self.namespace}:idx:snapshots"

    @property
    def metrics(self) -> str:
        """The one hash of counters, kept by the scripts with HINCRBY / HINCRBYFLOAT.

        Field names (the free-form part, an action name, always comes last):
            actions:<outcome>:<action>        actions finished, outcome one of succeeded,
                                              failed, cancelled, poison
            sessions:<event>                  created, terminated, expired, purged,
                                              recovered, restored
            snapshots:<op>                    saved, restored, deleted
            duration_bucket:<le>:<action>     NOT cumulative: +1 in the first bucket whose
                                              bound `le` (a string of
                                              monitoring.DURATION_BUCKETS, or "+Inf") is >= the
                                              run time; the reader accumulates
            duration_sum:<action>             seconds (HINCRBYFLOAT)
            duration_count:<action>           runs
        Actions are counted by `commit.lua` (succeeded, failed, poison; the histogram counts the
        actions that ran: succeeded and failed), `cancel.lua` and `cancel_chunk` (cancelled);
        sessions by `create.lua` (created, and restored with snapshots:restored),
        `set_status` (terminated), `expire.lua`, `purge.lua`, `recover.lua`; snapshots saved
        and deleted by `emit.lua` (called by `jido_tasks.persistence`). Each distinct action
        name costs at most 21 fields: 4 outcomes, 15 buckets, sum and count.
        Read by `jido_tasks.monitoring.read_counters` and exposed at `/metrics`.
        """
        return f"{self.namespace}:metrics"

    def indexes(self) -> list[str]:
        """The global session indexes (a purged session must leave all of them)."""
        return [getattr(self, name) for name in INDEX_KEYS]

    def script_keys(self, session_id: str) -> list[str]:
        """The KEYS of a session script, in `SCRIPT_KEYS` order."""
        return list(_script_keys(self, session_id))


# Sending to a session builds its key names on every call (15 strings for a script's KEYS):
# the most recent sessions' names are kept (a hot path of both clients; names never change).
_CACHED_SESSIONS = 4096


@lru_cache(maxsize=_CACHED_SESSIONS)
def _session_keys(namespace: str, session_id: str) -> SessionKeys:
    base = f"{namespace}:s:{{{session_id}}}"
    return SessionKeys(
        entry=base,
        state=f"{base}:state",
        mailbox=f"{base}:mailbox",
        pending=f"{base}:pending",
        records=f"{base}:records",
        lease=f"{base}:lease",
        events=f"{base}:events",
        cancelling=f"{base}:cancelling",
        legacy_actions=f"{base}:actions",
        legacy_results=f"{base}:results",
        legacy_finished=f"{base}:finished",
        replies=f"{base}:replies",
        done_channel=f"{base}:done",
    )


@lru_cache(maxsize=_CACHED_SESSIONS)
def _script_keys(schema: KeySchema, session_id: str) -> tuple[str, ...]:
    return (*schema.session(session_id).owned(), schema.events_global, *schema.indexes(),
            *(getattr(schema, name) for name in GLOBAL_KEYS))
