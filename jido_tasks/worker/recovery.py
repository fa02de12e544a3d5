"""The light recovery loop of a worker: every `recover_interval`, look for sessions whose lease
holder died (`recover_dead_holders`) and publish their drains again.

It runs in a daemon thread of each pool process (started by `worker_process_init`, so never in
a process that forks afterwards); a short Redis lock lets one process per interval do the work.
With it, a whole dead worker's sessions resume within seconds also on the Redis broker, whose
unacked messages wait for the visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from jido_tasks.core.drains import publish_drain
from jido_tasks.models import is_index_member
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer
from jido_tasks.store.scripts import Op, Tag

log = logging.getLogger(__name__)


def recover_dead_holders(layer: RedisLayer, celery: Any) -> int:
    """The light recovery, run every `recover_interval` by workers: sessions whose lease
    holder's liveness key is gone (or whose holder's lease expired with a head handed out) get
    a new drain at once, without waiting for the lease to expire or the next full sweep.

    Candidates are sessions whose drain flag was not refreshed for a renewal period plus
    `liveness_ttl` (a live holder refreshes it every third of a lease). One worker at a time
    (a short lock); returns the number of sessions recovered.
    """
    s, k = layer.settings, layer.keys
    lock_ms = max(int(s.recover_interval * 900), 1)
    if not layer.redis.set(k.recover_lock, "1", nx=True, px=lock_ms):
        return 0
    found = _candidates(layer)
    recovered = 0
    for first in range(0, len(found), s.sweep_batch):
        recovered += _recover_batch(layer, celery, found[first:first + s.sweep_batch])
    return recovered


def _candidates(layer: RedisLayer) -> list[str]:
    """Sessions with a drain flag older than a renewal period plus `liveness_ttl`: one page
    of each group, in one pipeline."""
    s, k = layer.settings, layer.keys
    sec, usec = layer.redis.time()
    cutoff = sec + usec / 1e6 - (s.lease_ttl / 3 + s.liveness_ttl)
    pipe = layer.redis.pipeline(transaction=False)
    for group in k.groups():  # one page of each group
        pipe.zrangebyscore(group.scheduled, "-inf", repr(cutoff), start=0, num=s.sweep_batch)
    return [str(sid) for ids in pipe.execute() for sid in ids]


def _recover_batch(layer: RedisLayer, celery: Any, ids: list[str]) -> int:
    """Read the leases of `ids` (one pipeline), recover those whose holder is dead (one
    pipeline of scripts) and publish their drains; how many were recovered."""
    s, k = layer.settings, layer.keys
    valid = [sid for sid in ids if is_index_member("scheduled", sid)]
    pipe = layer.redis.pipeline(transaction=False)
    for sid in valid:
        pipe.get(k.session(sid).lease)
    leases = pipe.execute() if valid else []
    ops: list[Op[Tag]] = []
    for sid, lease in zip(valid, leases, strict=True):
        holder = str(lease).partition("|")[2] if lease else ""
        ops.append(scripts.recover_dead(
            sid, expected=str(lease or ""),
            holder_alive_key=k.alive(holder, sid) if lease else None,
            stale_after=s.stale_after))
    results = layer.call_many(ops)
    recovered = 0
    for sid, res in zip(valid, results, strict=True):
        if res is Tag.RECOVER:
            publish_drain(celery, s, sid)
            recovered += 1
            log.info("session %s: its lease holder is dead; drain re-published", sid)
        elif isinstance(res, Exception):
            log.error("recover_dead failed for session %s: %s", sid, res)
    return recovered


class Watch(threading.Thread):
    """Runs the light recovery every `recover_interval` until stopped."""

    def __init__(self, layer: RedisLayer, celery: Any) -> None:
        super().__init__(daemon=True, name="jido-recover")
        self.layer, self.celery = layer, celery
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.layer.settings.recover_interval):
            try:
                recover_dead_holders(self.layer, self.celery)
            except Exception:  # Redis or the broker is away: try again next interval
                log.warning("light recovery failed", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
