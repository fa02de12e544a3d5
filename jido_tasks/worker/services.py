"""The services of one worker process, and the Celery signals that start and stop them.

`services(app)` is this process's `WorkerServices`, created on first use in each process (so
never shared across a fork): the Redis layer and the client its tasks use, its reporters of
committed actions, the light recovery watch of a pool process and the fleet registration of
the main process. The signals call its start and stop methods:

- `worker_init` (main process, before the pool forks): load the telemetry hooks; check that
  Redis takes the credentials, keeps session keys (eviction policy) and has our key layout.
- `worker_process_init` (each pool process): start the light recovery watch.
- `worker_ready` (main process): register the worker's actions in the fleet.
- `worker_process_shutdown` (a pool process exits): publish the task events it buffers.
- `worker_shutdown` (main process): the same for a solo or threads pool, which runs its
  actions in the main process; then leave the fleet.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from celery.app import app_or_default
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from jido_tasks import telemetry
from jido_tasks.client.sync import Client
from jido_tasks.core.layout import check_layout
from jido_tasks.errors import LayoutMismatch
from jido_tasks.ops.checks import enforce_start_checks, stop_worker
from jido_tasks.settings import Settings
from jido_tasks.store.connection import RedisLayer
from jido_tasks.worker import fleet
from jido_tasks.worker.recovery import Watch
from jido_tasks.worker.reporting import CeleryReporter


class WorkerServices:
    """What one worker process keeps between tasks (one per process: see `services`)."""

    def __init__(self, app: Any) -> None:
        self.pid = os.getpid()
        self.app = app
        self.settings: Settings = app.settings
        self.layer = RedisLayer(self.settings)
        """The process's Redis layer (its tasks, the watch, the registration, the checks)."""
        self.watch: Watch | None = None
        self.registration: fleet.Registration | None = None
        self._client: Client | None = None
        self._reporters: dict[str, CeleryReporter] = {}
        self._making = threading.Lock()  # a threads pool may ask for them at once

    @property
    def client(self) -> Client:
        """The process's client over the app (the by-name tasks call what apps call)."""
        if self._client is None:
            with self._making:
                if self._client is None:
                    self._client = Client(self.settings, celery=self.app)
        return self._client

    def reporter(self, hostname: str | None) -> CeleryReporter:
        """The process's reporter of committed actions (by-name results, Flower events) for
        the worker named `hostname` (the task's; this host's name if none)."""
        name = hostname or socket.gethostname()
        found = self._reporters.get(name)
        if found is None:
            with self._making:
                found = self._reporters.get(name)
                if found is None:
                    found = CeleryReporter(self.app, name, self.settings.action_events,
                                           self.layer)
                    self._reporters[name] = found
        return found

    def flush(self) -> None:
        """Publish the task events this process's reporters still buffer."""
        for reporter in list(self._reporters.values()):
            reporter.flush()

    def load_telemetry(self) -> None:
        """Register the telemetry hooks (before the pool forks: every process has them)."""
        telemetry.load_hooks(self.settings.telemetry_hooks)

    def check_start(self) -> None:
        """Before the pool consumes anything: stop if Redis refuses the credentials; warn (or
        stop, with `eviction_fatal`) if Redis could evict session keys; stop if the stored
        key layout is not the settings' (`LayoutMismatch`)."""
        enforce_start_checks(self.layer.redis, self.settings)
        try:
            check_layout(self.layer)
        except LayoutMismatch as exc:
            stop_worker(exc)

    def start_pool_process(self) -> None:
        """In a pool process: the light recovery of sessions held by dead workers."""
        self.watch = Watch(self.layer, self.app)
        self.watch.start()

    def stop_pool_process(self) -> None:
        """A pool process that exits publishes the task events it still buffers."""
        self.flush()
        if self.watch is not None:
            self.watch.stop()

    def start_main(self, hostname: str) -> None:
        """Record the worker's registered actions (refreshed until it stops)."""
        self.registration = fleet.Registration(self.layer, hostname)
        self.registration.start()

    def stop_main(self) -> None:
        """Publish what a solo or threads pool (actions run in this process) buffers, and
        leave the fleet."""
        self.flush()
        if self.registration is not None:
            self.registration.stop()


_current: WorkerServices | None = None
_creating = threading.Lock()


def services(app: Any) -> WorkerServices:
    """This process's services, created (over `app`) on first use in each process."""
    global _current
    found = _current
    if found is None or found.pid != os.getpid():
        with _creating:
            found = _current
            if found is None or found.pid != os.getpid():
                found = _current = WorkerServices(app)
    return found


def current() -> WorkerServices | None:
    """This process's services if it has any yet (a stop signal creates none)."""
    found = _current
    return found if found is not None and found.pid == os.getpid() else None


def _app_of(sender: Any) -> Any:
    """The jido-tasks Celery app of a signal's sender (a worker or consumer), or None."""
    app = getattr(sender, "app", None)
    return app if getattr(app, "settings", None) is not None else None


# Each a receiver of its own: Celery logs a receiver's exception and calls the next one.
@worker_init.connect
def _load_telemetry(sender: Any = None, **_: Any) -> None:
    if (app := _app_of(sender)) is not None:
        services(app).load_telemetry()


@worker_init.connect
def _check_start(sender: Any = None, **_: Any) -> None:
    if (app := _app_of(sender)) is not None:
        services(app).check_start()


@worker_process_init.connect
def _start_pool_process(**_: Any) -> None:
    app = app_or_default()  # the worker's (the signal's sender is only its name)
    if getattr(app, "settings", None) is not None:
        services(app).start_pool_process()


@worker_process_shutdown.connect
def _stop_pool_process(**_: Any) -> None:
    if (found := current()) is not None:
        found.stop_pool_process()


@worker_ready.connect
def _start_main(sender: Any = None, **_: Any) -> None:
    if (app := _app_of(sender)) is not None:
        services(app).start_main(str(getattr(sender, "hostname", "") or socket.gethostname()))


@worker_shutdown.connect
def _stop_main(**_: Any) -> None:
    if (found := current()) is not None:
        found.stop_main()
