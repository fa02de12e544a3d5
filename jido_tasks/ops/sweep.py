"""The sweep: recover abandoned work, expire timed-out sessions, mark idle ones, purge old ones.

Run by beat (task `jido_tasks.sweep`, every `sweep_interval`), `Client.sweep()` and
`jido-tasks sweep`. Candidates are read from the indexes by score, `sweep_batch` at a time (never
a scan of the registry), and each one is changed by a Lua script that re-checks, by Redis TIME,
that the change is still due; one pipeline per batch. Two sweeps at once are therefore
harmless; a short lock just keeps them from doing the same work twice: redis-py's
`redis.lock.Lock` on the namespace's `sweep_lock` key (SET NX PX with a random token; extended
and released by scripts that check the token, so only its owner does either). It is one key,
so one slot also on a Redis Cluster, whose client runs those scripts by that key (loaded on
every master first, as our own scripts are: `_load_lock_script`).

On a Redis Cluster with a node down, the sweep does the live nodes' work: the groups the dead
node serves are left for a later sweep (their slots in `SweepReport.missing_slots`, logged),
and a sweep whose lock's node is down goes on without the lock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from jido_tasks import telemetry
from jido_tasks.core.drains import publish_drain
from jido_tasks.errors import RedisUnavailable
from jido_tasks.models import is_index_member
from jido_tasks.ops.snapshots.service import SnapshotStore, save_snapshot, snapshot_store
from jido_tasks.store import scripts
from jido_tasks.store.connection import NODE_DOWN, Read, RedisLayer
from jido_tasks.store.groups import group_slots
from jido_tasks.store.results import deliver
from jido_tasks.store.scripts import Op, Tag

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPIRE_REASON = "idle_timeout"
STALE_TEMP_AGE = 3600.0  # seconds; a save never takes this long


class SweepReport(BaseModel):
    """What one sweep did."""

    recovered: int = 0
    """Sessions with pending actions and no live lease handed to a worker again."""
    unscheduled: int = 0
    """Stale drain flags dropped from sessions with nothing pending."""
    expired: int = 0
    """Sessions terminated (reason `idle_timeout`) after the atomic check."""
    snapshots: int = 0
    """Snapshots saved of expiring sessions with persistence enabled."""
    idled: int = 0
    purged: int = 0
    delivered: int = 0
    """Celery results of by-name actions stored that a dead worker or a cancel left."""
    rechecked: int = 0
    """Expiry candidates that failed the check (busy or touched): looked at again later."""
    temp_removed: int = 0
    """Leftover temporary files of dead snapshot writers removed (disk store)."""
    errors: int = 0
    """Candidates whose script failed (logged); looked at again later."""
    missing_slots: list[int] = []
    """Redis Cluster slots whose indexes could not be read (their node down): their sessions
    are left for a later sweep."""
    skipped_locked: bool = False
    """Another sweep held the lock, so this one did nothing."""
    duration: float = 0.0
    """Seconds."""


class Sweeper:
    """One sweep over one namespace; `celery` publishes the drains of recovered sessions."""

    def __init__(self, layer: RedisLayer, celery: Any) -> None:
        self.layer = layer
        self.settings = layer.settings
        self.celery = celery
        # The short lock that keeps overlapping sweeps from duplicating work (not for
        # safety): it lives a sweep interval (at least a second) unless extended, and is never
        # waited for. `held`: this sweep holds it (False once found lost: left alone then).
        self.lock_ttl = max(self.settings.sweep_interval, 1.0)
        self.lock = Lock(layer.redis, layer.keys.sweep_lock, timeout=self.lock_ttl,
                         blocking=False, thread_local=False)
        self.held = False
        self.report = SweepReport()
        self._store: SnapshotStore | None = None

    def run(self, force: bool = False) -> SweepReport:
        """Sweep once; without `force`, do nothing if another sweep holds the lock."""
        started = time.monotonic()
        taken = self._acquire()
        self.held = bool(taken)
        if taken is None:  # the lock's node is down: the live nodes' work, unlocked
            force = True
        if not self.held and not force:
            self.report.skipped_locked = True
            self.report.duration = time.monotonic() - started
            log.info("sweep skipped: another sweep holds %s", self.lock.name)
            return self.report
        try:
            now = self._now()
            s = self.settings
            self._scan("scheduled", now - s.stale_after, self._recover)
            self._scan("expiry", now, self._expire)
            self._scan("active", now - s.idle_after, self._idle)
            self._scan("terminated", now - s.retention, self._purge)
            self._scan("undelivered", now - s.stale_after, self._deliver)
            self._remove_stale_temp()
        finally:
            self._release()
            self.report.duration = time.monotonic() - started
        log.info("sweep done: %s", self.report.model_dump_json())
        telemetry.dispatch.sweep_finished(self.report.model_dump())
        return self.report

    def _now(self) -> float:
        """Redis's clock (TIME); on a cluster, that of the first master that answers."""
        if not self.layer.cluster:
            sec, usec = self.layer.redis.time()
            return float(sec) + usec / 1e6
        cluster: Any = self.layer.redis
        failure: BaseException | None = None
        for node in cluster.get_primaries():
            if self.layer.down.skip(node.name):
                continue
            try:
                sec, usec = cluster.execute_command("TIME", target_nodes=node)
                return float(sec) + float(usec) / 1e6
            except NODE_DOWN as exc:
                self.layer.down.mark(node.name, exc)
                failure = exc
        raise RedisUnavailable(self.layer.keys.namespace, f"no cluster master answers TIME: "
                                                          f"{failure}")

    def _acquire(self) -> bool | None:
        """Take the lock if free: True if taken, False if another sweep holds it, None if
        its node cannot be reached (logged)."""
        try:
            return bool(self.lock.acquire())
        except NODE_DOWN as exc:
            log.warning("sweep: the lock %s cannot be reached (%s); sweeping without it",
                        self.lock.name, exc)
            return None

    def candidates(self, index: str, cutoff: float, offsets: dict[int, int],
                   ) -> dict[int, list[str] | Exception]:
        """Members of index `index` (a `GroupKeys` name) scored up to `cutoff`: one batch of
        each group in `offsets` (group -> offset), all in one pipeline; a group whose node
        is down (on a cluster) gets the error instead."""
        groups = list(offsets)
        keys = self.layer.keys
        commands = [("ZRANGEBYSCORE", getattr(keys.group(g), index), "-inf", repr(cutoff),
                     "LIMIT", offsets[g], self.settings.sweep_batch) for g in groups]
        replies = self.layer.read(Read(commands, list, partial=True))
        return {g: ids if isinstance(ids, Exception) else [str(sid) for sid in ids]
                for g, ids in zip(groups, replies, strict=True)}

    def _unreachable(self, index: str, groups: set[int]) -> None:
        """Note the groups whose index `index` could not be read (their node down)."""
        if not groups:
            return
        slots = group_slots(self.layer, groups)
        self.report.missing_slots = sorted({*self.report.missing_slots, *slots})
        log.warning("sweep: index %r of %d slot group(s) unreachable (a Redis Cluster node "
                    "down), left for a later sweep; slots: %s", index, len(groups),
                    ", ".join(map(str, slots)))

    def _scan(self, index: str, cutoff: float, step: Callable[[list[str]], set[str]]) -> None:
        """Feed due members of index `index` of every group to `step`, `sweep_batch` at a
        time. `step` returns its sessions that stay due (left for a later sweep): each group's
        paging skips over those. Work: the due members, plus one read per group."""
        offsets = dict.fromkeys(range(self.layer.keys.shards), 0)
        seen: set[str] = set()
        unreachable: set[int] = set()
        while offsets:
            fresh: list[tuple[int, str]] = []
            for g, ids in self.candidates(index, cutoff, offsets).items():
                if isinstance(ids, Exception):
                    unreachable.add(g)
                    del offsets[g]
                    continue
                for sid in ids:
                    if sid in seen or not is_index_member(index, sid):
                        offsets[g] += 1
                        continue
                    seen.add(sid)
                    fresh.append((g, sid))
                if len(ids) < self.settings.sweep_batch:
                    del offsets[g]
            for first in range(0, len(fresh), self.settings.sweep_batch):
                chunk = fresh[first:first + self.settings.sweep_batch]
                stay = self._step(step, [sid for _, sid in chunk])
                for g, sid in chunk:
                    if sid in stay and g in offsets:
                        offsets[g] += 1
                self._extend()
        self._unreachable(index, unreachable)

    def _step(self, step: Callable[[list[str]], set[str]], ids: list[str]) -> set[str]:
        """`step(ids)`; if Redis cannot be reached for the batch (a cluster node that died
        during the sweep), the batch is logged, counted and left for a later sweep."""
        try:
            return step(ids)
        except (RedisUnavailable, *NODE_DOWN) as exc:
            self.report.errors += len(ids)
            log.error("sweep: a batch of %d session(s) left for a later sweep: %s",
                      len(ids), exc)
            return set(ids)

    def _extend(self) -> None:
        """Give the lock we hold its full time again; a lock found lost is left alone."""
        if self.held:
            try:
                self._load_lock_script("extend", Lock.LUA_EXTEND_SCRIPT)
                self.lock.extend(self.lock_ttl, replace_ttl=True)
            except LockNotOwnedError:  # expired, maybe taken: this sweep goes on, unlocked
                self.held = False
            except NODE_DOWN as exc:  # its node died: this sweep goes on, unlocked
                log.warning("sweep: the lock %s cannot be reached (%s)", self.lock.name, exc)
                self.held = False

    def _release(self) -> None:
        """Delete the lock if it still holds our token (never another owner's)."""
        if self.held:
            self.held = False
            # expired: nothing of ours to delete; its node down: it expires by itself
            with contextlib.suppress(LockNotOwnedError, *NODE_DOWN):
                self._load_lock_script("release", Lock.LUA_RELEASE_SCRIPT)
                self.lock.release()

    def _load_lock_script(self, name: str, source: str) -> None:
        """On a cluster, put the lock's script on every master as the layer's own scripts are
        (once per layer): redis-py would load it on a node only after that node refused its
        first call (NOSCRIPT: a failed call, and a round trip more). The same source, so the
        same SHA as the `Lock`'s."""
        self.layer.loaded(f"redis-py-lock-{name}", lambda: source)

    def _batch(self, ops: list[Op[T]]) -> list[T | Exception]:
        """Run the script calls in one pipeline. A failure comes back as an exception in the
        list (logged, counted), so one bad row cannot stop the sweep."""
        results = self.layer.call_many(ops)
        for op, res in zip(ops, results, strict=True):
            if isinstance(res, Exception):
                self.report.errors += 1
                log.error("sweep: %s failed for session %s: %s", op.script.name,
                          op.session_id, res)
        return results

    def _recover(self, ids: list[str]) -> set[str]:
        stay: set[str] = set()
        s = self.settings
        results = self._batch([scripts.recover(sid, stale_after=s.stale_after,
                                               keep=s.keep_results) for sid in ids])
        for sid, res in zip(ids, results, strict=True):
            if res is Tag.RECOVER:
                publish_drain(self.celery, s, sid)
                self.report.recovered += 1
                log.info("sweep: session %s recovered (abandoned work re-published)", sid)
            elif res is Tag.UNSCHEDULED:
                self.report.unscheduled += 1
            elif res in (Tag.LEASED, Tag.CANCELLING) or isinstance(res, Exception):
                stay.add(sid)
        return stay

    def _expire(self, ids: list[str], seen_activity: list[str] | None = None) -> set[str]:
        """Expire verified candidates. A session with persistence enabled is answered
        'snapshot' first: its snapshot is saved, then it expires only if it saw no activity
        since (`seen_activity`)."""
        stay: set[str] = set()
        lasts = seen_activity or [""] * len(ids)
        results = self._batch([scripts.expire(sid, reason=EXPIRE_REASON, snapshot_last=last)
                               for sid, last in zip(ids, lasts, strict=True)])
        snap_ids, snap_lasts = [], []
        for sid, res in zip(ids, results, strict=True):
            tag = None if isinstance(res, Exception) else res.tag
            if tag is Tag.EXPIRED:
                self.report.expired += 1
            elif (tag is Tag.SNAPSHOT and not isinstance(res, Exception)
                  and res.last_activity is not None and self._snapshot(sid)):
                snap_ids.append(sid)
                snap_lasts.append(res.last_activity)
            elif tag in (Tag.BUSY, Tag.SNAPSHOT, None):  # still due: paging steps over it
                self.report.rechecked += 1
                stay.add(sid)
            elif tag in (Tag.FRESH, Tag.CHANGED):  # touched: no longer due
                self.report.rechecked += 1
        if snap_ids:
            stay |= self._expire(snap_ids, snap_lasts)
        return stay

    def _snapshot(self, session_id: str) -> bool:
        """Save the expiring session's snapshot; False (logged) if that failed."""
        try:
            if self._store is None:
                self._store = snapshot_store(self.layer)
            save_snapshot(self.layer, self._store, session_id)
            self.report.snapshots += 1
        except Exception:  # the session is kept (and re-checked) rather than lost unsaved
            log.exception("sweep: snapshot of session %s failed; not expired", session_id)
            return False
        return True

    def _remove_stale_temp(self) -> None:
        """Clean what snapshot writers that died mid-save left behind (older than an hour)."""
        try:
            if self._store is None:
                self._store = snapshot_store(self.layer)
            self.report.temp_removed += self._store.remove_stale_temp(STALE_TEMP_AGE)
        except Exception:  # the store's own problem: logged, the sweep goes on
            self.report.errors += 1
            log.exception("sweep: cleaning the snapshot store's temporary files failed")

    def _idle(self, ids: list[str]) -> set[str]:
        results = self._batch([scripts.mark_idle(sid, idle_after=self.settings.idle_after)
                               for sid in ids])
        self.report.idled += sum(1 for res in results if res is Tag.IDLED)
        return {sid for sid, res in zip(ids, results, strict=True)
                if res is Tag.BUSY or isinstance(res, Exception)}

    def _purge(self, ids: list[str]) -> set[str]:
        results = self._batch([scripts.purge(sid, retention=self.settings.retention)
                               for sid in ids])
        self.report.purged += sum(1 for res in results if res is Tag.PURGED)
        return {sid for sid, res in zip(ids, results, strict=True)
                if isinstance(res, Exception)}


    def _deliver(self, ids: list[str]) -> set[str]:
        stay: set[str] = set()
        for sid in ids:
            try:
                self.report.delivered += deliver(self.layer, self.celery.backend, sid, [])
            except Exception:  # the result backend is down: looked at again later
                self.report.errors += 1
                stay.add(sid)
                log.exception("sweep: storing the by-name results of session %s failed", sid)
        return stay


def run_sweep(layer: RedisLayer, celery: Any, force: bool = False) -> SweepReport:
    """One sweep (the body of the beat task, `Client.sweep()` and `jido-tasks sweep`)."""
    return Sweeper(layer, celery).run(force=force)
