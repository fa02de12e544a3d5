"""The fleet: which actions each live worker has registered, kept in Redis.

Workers of one namespace may differ (a rolling deploy; an app's worker next to a plain one).
Each worker's main process records its registered action names under its name in the
`workers` hash with the time it last did so, every third of `worker_ttl`; an entry older than
`worker_ttl` is a dead worker's (and is dropped by the next refresh of any worker). A worker that
lacks an action asks `live_actions` whether another may run it before failing it.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from jido_tasks.core.actions import registered_actions
from jido_tasks.store.connection import RedisLayer

log = logging.getLogger(__name__)


def register_worker(layer: RedisLayer, worker: str, actions: list[str] | None = None) -> None:
    """Record (or refresh) `worker`'s registered actions, and drop entries of dead workers."""
    key = layer.keys.workers
    now = time.time()
    entry = json.dumps({"actions": registered_actions() if actions is None else actions,
                        "seen": now}, separators=(",", ":"))
    layer.redis.hset(key, worker, entry)
    dead = [name for name, seen in _entries(layer).items()
            if seen[1] < now - 10 * layer.settings.worker_ttl]
    if dead:
        layer.redis.hdel(key, *dead)


def unregister_worker(layer: RedisLayer, worker: str) -> None:
    layer.redis.hdel(layer.keys.workers, worker)


def _entries(layer: RedisLayer) -> dict[str, tuple[set[str], float]]:
    out: dict[str, tuple[set[str], float]] = {}
    for name, raw in layer.redis.hgetall(layer.keys.workers).items():
        try:
            data = json.loads(raw)
            out[str(name)] = (set(data["actions"]), float(data["seen"]))
        except (ValueError, KeyError, TypeError):
            log.warning("worker registry %s: entry %r is unreadable; ignored",
                        layer.keys.workers, name)
    return out


def live_actions(layer: RedisLayer) -> dict[str, set[str]]:
    """Worker name -> registered action names, for workers seen within `worker_ttl`."""
    horizon = time.time() - layer.settings.worker_ttl
    return {name: actions for name, (actions, seen) in _entries(layer).items()
            if seen >= horizon}


def someone_has(layer: RedisLayer, action: str) -> bool:
    """True if a live worker has registered `action`."""
    return any(action in actions for actions in live_actions(layer).values())


class Registration:
    """A daemon thread that keeps one worker's entry fresh until `stop`."""

    def __init__(self, layer: RedisLayer, worker: str) -> None:
        self.layer, self.worker = layer, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="jido-worker-registration")

    def start(self) -> None:
        register_worker(self.layer, self.worker)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.layer.settings.worker_ttl / 3):
            try:
                register_worker(self.layer, self.worker)
            except Exception:  # a Redis blip: the entry lives worker_ttl; try again
                log.warning("could not refresh worker %s in the registry", self.worker,
                            exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        try:
            unregister_worker(self.layer, self.worker)
        except Exception:
            log.warning("could not remove worker %s from the registry", self.worker,
                        exc_info=True)
