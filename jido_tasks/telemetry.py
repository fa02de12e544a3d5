"""Telemetry hooks: subclass `Telemetry`, override what you need, register with `add_hook`.

Every hook is a no-op by default and is called synchronously where the event happens (the
client process for sends, the worker for actions and sweeps), so keep hooks fast. A hook that
raises is logged and ignored: telemetry never breaks session work. Workers and clients also
register the hooks named by the `telemetry_hooks` setting (dotted `module:Class` paths).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jido_tasks.models import SessionEntry

log = logging.getLogger(__name__)


class Telemetry:
    """Base class of telemetry hooks (all no-ops)."""

    def session_created(self, entry: SessionEntry, duration: float) -> None:
        """A session was created; `duration` is the seconds the registry write took."""

    def session_terminated(self, entry: SessionEntry, cancelled: int, duration: float) -> None:
        """Termination started or finished (`entry.status` says which); `cancelled` pending
        actions were cancelled."""

    def action_sent(self, session_id: str, action_id: str, action: str) -> None:
        """An action was durably accepted."""

    def action_finished(self, session_id: str, action_id: str, action: str, status: str,
                        duration: float, error_type: str | None) -> None:
        """A worker committed an action's outcome; `duration` is the action's run time."""

    def drain_finished(self, session_id: str, outcome: str, applied: int, failed: int,
                       duration: float) -> None:
        """A drain (one claim of a session by a worker) ended."""

    def sweep_finished(self, report: dict[str, Any]) -> None:
        """A sweep ended; `report` is its `SweepReport` as a dict."""


class LoggingTelemetry(Telemetry):
    """Logs every hook at INFO on the `jido_tasks.telemetry` logger."""

    def session_created(self, entry: SessionEntry, duration: float) -> None:
        log.info("session created %s in %.2f ms", entry.id, duration * 1000)

    def action_finished(self, session_id: str, action_id: str, action: str, status: str,
                        duration: float, error_type: str | None) -> None:
        log.info("action %s %s on %s %s in %.2f ms", action, action_id, session_id, status,
                 duration * 1000)

    def drain_finished(self, session_id: str, outcome: str, applied: int, failed: int,
                       duration: float) -> None:
        log.info("drain %s: %s, %d applied (%d failed) in %.2f ms", session_id, outcome,
                 applied, failed, duration * 1000)

    def sweep_finished(self, report: dict[str, Any]) -> None:
        log.info("sweep: %s", report)


_hooks: list[Telemetry] = []
_lock = threading.Lock()


def add_hook(hook: Telemetry) -> None:
    with _lock:
        if hook not in _hooks:
            _hooks.append(hook)


def remove_hook(hook: Telemetry) -> None:
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def load_hooks(paths: list[str]) -> None:
    """Instantiate and register hooks named `module:Class` (no arguments)."""
    from jido_tasks.errors import ConfigError

    for path in paths:
        module, _, name = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError("JIDO_TASKS_TELEMETRY_HOOKS", f"cannot load {path!r}: {exc}") \
                from exc
        if not (isinstance(cls, type) and issubclass(cls, Telemetry)):
            raise ConfigError("JIDO_TASKS_TELEMETRY_HOOKS",
                              f"{path!r} is not a subclass of jido_tasks.telemetry.Telemetry")
        if not any(type(h) is cls for h in _hooks):
            add_hook(cls())


class _Dispatch(Telemetry):
    """Calls each hook method on every registered hook; errors are logged, never raised."""

    def _each(self, name: str, call: Callable[[Telemetry], None]) -> None:
        for hook in list(_hooks):
            try:
                call(hook)
            except Exception:
                log.exception("telemetry hook %r failed in %s", hook, name)

    def session_created(self, entry: SessionEntry, duration: float) -> None:
        if _hooks:
            self._each("session_created", lambda h: h.session_created(entry, duration))

    def session_terminated(self, entry: SessionEntry, cancelled: int, duration: float) -> None:
        if _hooks:
            self._each("session_terminated",
                       lambda h: h.session_terminated(entry, cancelled, duration))

    def action_sent(self, session_id: str, action_id: str, action: str) -> None:
        if _hooks:
            self._each("action_sent", lambda h: h.action_sent(session_id, action_id, action))

    def action_finished(self, session_id: str, action_id: str, action: str, status: str,
                        duration: float, error_type: str | None) -> None:
        if _hooks:
            self._each("action_finished", lambda h: h.action_finished(
                session_id, action_id, action, status, duration, error_type))

    def drain_finished(self, session_id: str, outcome: str, applied: int, failed: int,
                       duration: float) -> None:
        if _hooks:
            self._each("drain_finished", lambda h: h.drain_finished(
                session_id, outcome, applied, failed, duration))

    def sweep_finished(self, report: dict[str, Any]) -> None:
        if _hooks:
            self._each("sweep_finished", lambda h: h.sweep_finished(report))


dispatch: Telemetry = _Dispatch()
"""Where the core reports: `telemetry.dispatch.action_sent(...)` calls every registered hook."""
