"""The light recovery loop of a worker: every `recover_interval`, look for sessions whose lease
holder died (`sweep.recover_dead_holders`) and publish their drains again.

It runs in a daemon thread of each pool process (started by `worker_process_init`, so never in
a process that forks afterwards); a short Redis lock lets one process per interval do the work.
With it, a whole dead worker's sessions resume within seconds also on the Redis broker, whose
unacked messages wait for the visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from jido_tasks.store.connection import RedisLayer
from jido_tasks.sweep import recover_dead_holders

log = logging.getLogger(__name__)


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
