"""Lease heartbeats: one thread per process renews every lease the process holds.

A drain registers its lease for as long as it runs (`Heartbeat` is a context manager); the
thread renews each one every third of `lease_ttl` with the `renew` script, which also keeps
the drain flag fresh. A renewal that finds the token stale marks the lease lost, and the drain
stops before its next commit (which the token check would refuse anyway).

The same thread renews the process's liveness keys (one per slot group it holds sessions of,
set by the claim) four times per `liveness_ttl` while it holds a lease there: when the process
dies the keys are gone within `liveness_ttl`, and other workers take its sessions over
(`takeover`, `recover_dead`) without waiting for the lease to expire.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer

log = logging.getLogger(__name__)


class Heartbeat:
    """One held lease, renewed by the process's heartbeat thread while registered."""

    def __init__(self, layer: RedisLayer, session_id: str, token: str,
                 worker: str | None = None) -> None:
        self.layer, self.session_id, self.token = layer, session_id, token
        self.period = layer.settings.lease_ttl / 3
        self.due = time.monotonic() + self.period
        self.lost = threading.Event()
        self.alive_key = layer.keys.alive(worker, session_id) if worker else None
        self.alive_period = layer.settings.liveness_ms / 4000
        self.alive_due = time.monotonic() + self.alive_period

    def next_due(self) -> float:
        return min(self.due, self.alive_due) if self.alive_key else self.due

    def renew_alive(self) -> None:
        """Keep the process's liveness key (a plain SET: nothing to check)."""
        self.alive_due = time.monotonic() + self.alive_period
        if self.alive_key is None:
            return
        try:
            self.layer.redis.set(self.alive_key, "1", px=self.layer.settings.liveness_ms)
        except Exception:  # a Redis blip: the next beat tries again
            log.warning("liveness renewal failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        _beats.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _beats.remove(self)

    def renew(self) -> None:
        self.due = time.monotonic() + self.period
        try:
            ok = self.layer.call(scripts.renew(self.session_id, token=self.token,
                                               lease_ms=self.layer.settings.lease_ms))
        except Exception:  # a Redis blip: try again next beat; the lease TTL is the bound
            log.warning("lease renewal failed for %s", self.session_id, exc_info=True)
            return
        if not ok:
            self.lost.set()


class _Beats:
    """The process's heartbeat thread (started on first use, again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._leases: list[Heartbeat] = []
        self._pid = 0

    def add(self, beat: Heartbeat) -> None:
        with self._lock:
            if self._pid != os.getpid():  # threads do not survive fork
                self._pid = os.getpid()
                self._leases = []
                threading.Thread(target=self._run, daemon=True, name="jido-heartbeat").start()
            self._leases.append(beat)
            self._wake.notify()

    def remove(self, beat: Heartbeat) -> None:
        with self._lock:
            if beat in self._leases:
                self._leases.remove(beat)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                live = [b for b in self._leases if not b.lost.is_set()]
                due = [b for b in live if b.due <= now]
                alive: dict[str, Heartbeat] = {}  # one renewal per liveness key
                for b in live:
                    if b.alive_key and b.alive_due <= now:
                        alive.setdefault(b.alive_key, b)
                if not due and not alive:
                    nxt = min((b.next_due() for b in live), default=now + 60)
                    self._wake.wait(max(0.001, nxt - now))
                    continue
            # Outside the lock: a renewal is a round trip. Liveness first: it is the tighter.
            for beat in alive.values():
                beat.renew_alive()
            for b in live:
                if b.alive_key in alive:
                    b.alive_due = alive[b.alive_key].alive_due
            for beat in due:
                beat.renew()


_beats = _Beats()
