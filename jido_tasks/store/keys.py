"""The one place that builds Redis key names (Lua scripts receive every key through KEYS).

`SCRIPT_KEYS` fixes the order of the KEYS every session script receives; the Lua prelude's
`K_*` constants, `OWNED` and `INDEXES` tables are generated from these tuples (see
`jido_tasks.store.scripts`), so the order is written down once.

Layout, for namespace `ns` and session id `sid` (the `{sid}` hash tag keeps one session's keys
in one Redis Cluster slot):

    ns:s:{sid}            hash    registry row (SessionEntry fields) and runtime fields: timeout,
                                  fence, scheduled, head, head_attempts
    ns:s:{sid}:state      hash    the session's JSON state in parts: top-level key -> its JSON
                                  (a string of the whole JSON in sessions written before parts)
    ns:s:{sid}:mailbox    list    pending action ids, oldest first
    ns:s:{sid}:actions    hash    action id -> JSON request (name, params, created_at); immutable
    ns:s:{sid}:results    hash    action id -> JSON outcome (status, result or error, progress)
    ns:s:{sid}:finished   list    finished action ids, oldest first (bounds the two hashes)
    ns:s:{sid}:lease      string  "token|worker" of the worker that owns the session, with a TTL
    ns:s:{sid}:events     stream  the session's events
    ns:s:{sid}:cancelling list    ids of pending actions a termination withdrew, whose records
                                  are still being finished (in bounded chunks)
    ns:s:{sid}:done       channel pub/sub: finished action records, for waiters
    ns:events             stream  every session's events
    ns:idx:activity       zset    live (not terminated) sessions by last activity
    ns:idx:active         zset    active sessions by last activity (idle candidates)
    ns:idx:expiry         zset    live sessions by idle deadline (last activity + timeout)
    ns:idx:terminated     zset    terminated sessions by termination time (purge candidates)
    ns:idx:scheduled      zset    sessions with a drain scheduled, by when (recovery candidates)
    ns:workers            hash    worker name -> JSON {actions, seen}: the actions each live
                                  worker has registered (refreshed by the worker; an entry not
                                  seen for `worker_ttl` is a dead worker's)
    ns:sweep:lock         string  short lock so overlapping sweeps do not duplicate work
    ns:snap:{sid}         string  a saved snapshot (Redis snapshot store)
    ns:idx:snapshots      zset    saved snapshot ids by save time
    ns:metrics            hash    counters and the action-duration histogram (see `metrics`)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

OWNED_KEYS: tuple[str, ...] = ("entry", "state", "mailbox", "actions", "results", "finished",
                               "lease", "events", "cancelling")
"""Names of the keys one session owns (`SessionKeys` attributes): what a purge deletes."""
INDEX_KEYS: tuple[str, ...] = ("activity", "active", "expiry", "terminated", "scheduled")
"""Names of the global session indexes (`KeySchema` properties): a purge leaves every one."""
SCRIPT_KEYS: tuple[str, ...] = (*OWNED_KEYS, "events_global", *INDEX_KEYS)
"""The KEYS of every session script, in order."""


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """All keys owned by one session."""

    entry: str
    state: str
    mailbox: str
    actions: str
    results: str
    finished: str
    lease: str
    events: str
    cancelling: str
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
    def workers(self) -> str:
        return f"{self.namespace}:workers"

    @property
    def sweep_lock(self) -> str:
        return f"{self.namespace}:sweep:lock"

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
        actions=f"{base}:actions",
        results=f"{base}:results",
        finished=f"{base}:finished",
        lease=f"{base}:lease",
        events=f"{base}:events",
        cancelling=f"{base}:cancelling",
        done_channel=f"{base}:done",
    )


@lru_cache(maxsize=_CACHED_SESSIONS)
def _script_keys(schema: KeySchema, session_id: str) -> tuple[str, ...]:
    return (*schema.session(session_id).owned(), schema.events_global, *schema.indexes())
