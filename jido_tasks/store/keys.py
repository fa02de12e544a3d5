"""The one place that builds Redis key names (Lua scripts receive every key through KEYS).

`SCRIPT_KEYS` fixes the order of the KEYS every session script receives; the Lua prelude's
`K_*` constants, `OWNED` and `INDEXES` tables are generated from these tuples (see
`jido_tasks.store.scripts`), so the order is written down once.

Slot groups. Every session belongs to one of `index_shards` groups (`group_of`: CRC-32 of its
id, so stable); the group's hash tag `{g<n>.<k>}` (`group_tag`) is in every key of the session
and in the keys of its group's indexes, event stream, counters and snapshots, so each script
touches one Redis Cluster slot, and a hot session stays on one node. The tags are chosen so
that group n's slot lies in the n-th of `index_shards` equal slot ranges: the groups spread
evenly over the masters of a cluster whose masters own contiguous slot ranges (as
`redis-cli --cluster create` makes them). On a single Redis the groups are just key prefixes.
Readers of "all sessions" read every group (`KeySchema.groups`) and merge.

Layout, for namespace `ns`, session id `sid` and its group's tag `{g}`:

    ns:layout             hash    version and index_shards of the stored layout (checked at
                                  start: see `jido_tasks.layout`)
    ns:{g}:s:sid          hash    registry row (SessionEntry fields) and runtime fields: timeout,
                                  fence, scheduled, head, head_attempts, republished (drains
                                  recovery published since the last claim)
    ns:{g}:s:sid:state    hash    the session's JSON state in parts: top-level key -> its JSON
                                  (a string of the whole JSON in sessions written before parts)
    ns:{g}:s:sid:mailbox  list    pending action ids, oldest first
    ns:{g}:s:sid:pending  hash    action id -> request JSON (ActionRequest) of each pending
                                  action, and `<id>#p` -> its running Outcome with progress;
                                  gone once the action finishes (empty hashes vanish)
    ns:{g}:s:sid:records  list    finished actions, oldest first, three elements each: action
                                  id, finish time (integer ms, Redis TIME), record JSON
                                  (request and Outcome fields side by side); bounded by
                                  `keep_results` and by age (`record_retention`), and the key
                                  expires `record_retention` after its last write
    ns:{g}:s:sid:lease    string  "token|worker" of the worker that owns the session, with a TTL
    ns:{g}:s:sid:events   stream  the session's events
    ns:{g}:s:sid:cancelling list  ids of pending actions a termination withdrew, whose records
                                  are still being finished (in bounded chunks)
    ns:{g}:s:sid:actions, legacy: the request / outcome hashes and finished list of sessions
      :results, :finished written before records (read as a fallback, deleted when the session
                          goes idle or is purged)
    ns:{g}:s:sid:replies  list    ids of finished actions sent by name (`jido_tasks.send`) whose
                                  Celery results are still to be stored (bounded by keep_results)
    ns:{g}:s:sid:done     channel pub/sub: finished action records, for waiters
    ns:{g}:events         stream  the events of every session of the group (the global stream
                                  is the merge of the groups', see `jido_tasks.events`)
    ns:{g}:idx:activity   zset    active and terminating sessions by last activity (an idle
                                  session leaves it: it is found through `expiry`)
    ns:{g}:idx:active     zset    active sessions by last activity (idle candidates)
    ns:{g}:idx:expiry     zset    live sessions by idle deadline (last activity + timeout);
                                  the only index entry of an idle session
    ns:{g}:idx:terminated zset    terminated sessions by termination time (purge candidates)
    ns:{g}:idx:scheduled  zset    sessions with a drain scheduled, by when (recovery candidates):
                                  the flag's time, plus the republish backoff once recovery
                                  published drains that no claim followed yet
    ns:{g}:idx:undelivered zset   sessions whose `replies` list is not empty, by when the oldest
                                  was queued (the sweep stores what a dead worker left)
    ns:{g}:metrics        hash    the group's counters and action-duration histogram (see
                                  `GroupKeys.metrics`; readers sum the groups)
    ns:{g}:alive:worker   string  liveness of a worker process (host:pid, escaped) for the
                                  sessions of the group it holds, with a short TTL renewed
                                  while it holds leases there; gone = the holder is dead
    ns:{g}:snap:sid       string  a saved snapshot (Redis snapshot store)
    ns:{g}:idx:snapshots  zset    the group's saved snapshot ids by save time
    ns:workers            hash    worker name -> JSON {actions, seen}: the actions each live
                                  worker has registered (refreshed by the worker; an entry not
                                  seen for `worker_ttl` is a dead worker's)
    ns:sweep:lock         string  short lock so overlapping sweeps do not duplicate work: the
                                  owner's random token (redis-py's `redis.lock.Lock`)
    ns:recover:lock       string  short lock so one worker at a time looks for dead holders

`LegacyKeys` names the keys of the layout before groups (`ns:s:{sid}...`, `ns:idx:*`,
`ns:events`, `ns:metrics`, `ns:snap:{sid}`), read only by `jido-tasks migrate`.
"""

from __future__ import annotations

import binascii
import hashlib
import zlib
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from jido_tasks.settings import MAX_INDEX_SHARDS

MAX_WORKER_KEY = 200
"""Longest worker id used as is in a key; longer ones are hashed."""
CLUSTER_SLOTS = 16384
"""Hash slots of a Redis Cluster."""
LAYOUT_VERSION = 2
"""Version of the key layout (1: before slot groups; see `LegacyKeys`)."""

OWNED_KEYS: tuple[str, ...] = ("entry", "state", "mailbox", "pending", "records", "lease",
                               "events", "cancelling", "replies", "legacy_actions",
                               "legacy_results", "legacy_finished")
"""Names of the keys one session owns (`SessionKeys` attributes): what a purge deletes."""
INDEX_KEYS: tuple[str, ...] = ("activity", "active", "expiry", "terminated", "scheduled",
                               "undelivered")
"""Names of a group's session indexes (`GroupKeys` attributes): a purge leaves every one."""
GLOBAL_KEYS: tuple[str, ...] = ("metrics",)
"""Other group keys every session script receives (`GroupKeys` attributes), after the
indexes: the `metrics` hash of counters, kept by the scripts that do the counted work."""
SCRIPT_KEYS: tuple[str, ...] = (*OWNED_KEYS, "events_global", *INDEX_KEYS, *GLOBAL_KEYS)
"""The KEYS of every session script, in order (`events_global`: the group's event stream)."""


def group_of(session_id: str, shards: int) -> int:
    """The slot group of a session (or of a snapshot, by its id): stable across processes."""
    return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % shards


def key_slot(tag: str) -> int:
    """The Redis Cluster slot of a hash tag (CRC16-XMODEM, as Redis computes it)."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


@lru_cache(maxsize=4 * MAX_INDEX_SHARDS)
def group_tag(group: int, shards: int) -> str:
    """The hash tag text of `group` of `shards`: `g<group>.<k>` with the smallest k whose slot
    is in the group's own range of slots (so the groups are spread evenly over the slots)."""
    low = group * CLUSTER_SLOTS // shards
    high = (group + 1) * CLUSTER_SLOTS // shards
    k = 0
    while not low <= key_slot(f"g{group}.{k}") < high:
        k += 1
    return f"g{group}.{k}"


def _escape_worker(worker: str) -> str:
    """A worker id as a key part: characters outside [A-Za-z0-9:@._-] are %-escaped, braces
    included, and a long id is hashed, so the key is always well-formed and bounded."""
    escaped = quote(worker, safe=":@._-")
    if len(escaped) > MAX_WORKER_KEY:
        escaped = "sha1-" + hashlib.sha1(worker.encode("utf-8", "surrogatepass")).hexdigest()
    return escaped


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
class GroupKeys:
    """The keys of one slot group (all with the group's hash tag)."""

    group: int
    prefix: str
    """`ns:{tag}`: every key of the group and of its sessions starts with it."""
    events: str
    activity: str
    active: str
    expiry: str
    terminated: str
    scheduled: str
    undelivered: str
    snapshots: str
    metrics: str
    """The group's hash of counters, kept by the scripts with HINCRBY / HINCRBYFLOAT.

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
    Read (summed over the groups) by `jido_tasks.monitoring.read_counters`.
    """

    @property
    def events_global(self) -> str:
        """The group's event stream (the name used in `SCRIPT_KEYS`)."""
        return self.events

    def indexes(self) -> list[str]:
        """The group's session indexes (a purged session must leave all of them)."""
        return [getattr(self, name) for name in INDEX_KEYS]

    def alive(self, worker: str) -> str:
        """The liveness key of worker process `worker` in this group (any string: it may come
        from a lease value; see `_escape_worker`)."""
        return f"{self.prefix}:alive:{_escape_worker(worker)}"

    def snapshot(self, saved_id: str) -> str:
        return f"{self.prefix}:snap:{saved_id}"


@dataclass(frozen=True, slots=True)
class KeySchema:
    """Key names for one namespace and number of slot groups. Session ids must be validated
    before they get here."""

    namespace: str
    shards: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_INDEX_SHARDS:
            raise ValueError(f"index_shards must be 1..{MAX_INDEX_SHARDS}, not {self.shards}")

    def group_of(self, session_id: str) -> int:
        return group_of(session_id, self.shards)

    def group(self, group: int) -> GroupKeys:
        """The keys of slot group `group` (0 <= group < shards)."""
        return _group_keys(self.namespace, group, self.shards)

    def group_for(self, session_id: str) -> GroupKeys:
        """The keys of the group of `session_id`."""
        return self.group(self.group_of(session_id))

    def groups(self) -> list[GroupKeys]:
        """Every slot group, in group order (the readers of "all sessions" merge them)."""
        return [self.group(g) for g in range(self.shards)]

    def session(self, session_id: str) -> SessionKeys:
        return _session_keys(self.namespace, session_id, self.shards)

    def alive(self, worker: str, session_id: str) -> str:
        """The liveness key of `worker` for the sessions of `session_id`'s group."""
        return self.group_for(session_id).alive(worker)

    def snapshot(self, saved_id: str) -> str:
        """The key of a saved snapshot (in the group of its id, a session id)."""
        return self.group_for(saved_id).snapshot(saved_id)

    @property
    def layout(self) -> str:
        return f"{self.namespace}:layout"

    @property
    def workers(self) -> str:
        return f"{self.namespace}:workers"

    @property
    def sweep_lock(self) -> str:
        return f"{self.namespace}:sweep:lock"

    @property
    def recover_lock(self) -> str:
        return f"{self.namespace}:recover:lock"

    def script_keys(self, session_id: str) -> list[str]:
        """The KEYS of a session script, in `SCRIPT_KEYS` order."""
        return list(_script_keys(self, session_id))


@dataclass(frozen=True, slots=True)
class LegacyKeys:
    """Key names of the layout before slot groups (version 1), for `jido-tasks migrate`."""

    namespace: str

    def session(self, session_id: str) -> SessionKeys:
        return _make_session_keys(f"{self.namespace}:s:{{{session_id}}}")

    def index(self, name: str) -> str:
        """A global index (`INDEX_KEYS` name, or `snapshots`)."""
        return f"{self.namespace}:idx:{name}"

    @property
    def events(self) -> str:
        return f"{self.namespace}:events"

    @property
    def metrics(self) -> str:
        return f"{self.namespace}:metrics"

    def snapshot(self, saved_id: str) -> str:
        return f"{self.namespace}:snap:{{{saved_id}}}"

    def alive(self, worker: str) -> str:
        return f"{self.namespace}:alive:{{{_escape_worker(worker)}}}"


# Sending to a session builds its key names on every call (15 strings for a script's KEYS):
# the most recent sessions' names are kept (a hot path of both clients; names never change).
_CACHED_SESSIONS = 4096


@lru_cache(maxsize=4 * MAX_INDEX_SHARDS)
def _group_keys(namespace: str, group: int, shards: int) -> GroupKeys:
    if not 0 <= group < shards:
        raise ValueError(f"group {group} is not in 0..{shards - 1}")
    prefix = f"{namespace}:{{{group_tag(group, shards)}}}"
    idx = f"{prefix}:idx"
    return GroupKeys(group=group, prefix=prefix, events=f"{prefix}:events",
                     activity=f"{idx}:activity", active=f"{idx}:active",
                     expiry=f"{idx}:expiry", terminated=f"{idx}:terminated",
                     scheduled=f"{idx}:scheduled", undelivered=f"{idx}:undelivered",
                     snapshots=f"{idx}:snapshots", metrics=f"{prefix}:metrics")


def _make_session_keys(base: str) -> SessionKeys:
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
def _session_keys(namespace: str, session_id: str, shards: int) -> SessionKeys:
    group = _group_keys(namespace, group_of(session_id, shards), shards)
    return _make_session_keys(f"{group.prefix}:s:{session_id}")


@lru_cache(maxsize=_CACHED_SESSIONS)
def _script_keys(schema: KeySchema, session_id: str) -> tuple[str, ...]:
    group = schema.group_for(session_id)
    return (*schema.session(session_id).owned(), group.events, *group.indexes(),
            *(getattr(group, name) for name in GLOBAL_KEYS))
