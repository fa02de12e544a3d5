"""`Client`: the API apps use. Thin: every method calls a core service."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any

import redis

from jido_tasks.client.mailbox import ActionHandle, Mailbox
from jido_tasks.core.actions import load_action_modules
from jido_tasks.core.events import iter_events
from jido_tasks.core.layout import check_layout
from jido_tasks.core.requests import SendItem
from jido_tasks.core.sessions import SessionService
from jido_tasks.models import (
    ActionRecord,
    Event,
    JsonObject,
    SessionConfig,
    SessionEntry,
    SessionList,
    SessionStatus,
)
from jido_tasks.ops.snapshots.service import (
    SnapshotInfo,
    SnapshotStore,
    delete_snapshot,
    list_snapshots,
    restore_snapshot,
    save_snapshot,
    snapshot_store,
)
from jido_tasks.ops.sweep import SweepReport, run_sweep
from jido_tasks.settings import Settings, load_settings
from jido_tasks.store.connection import RedisLayer, redis_errors
from jido_tasks.store.results import deliver_quietly

log = logging.getLogger(__name__)


class Client:
    """Entry point for apps: `Client()` reads settings from the environment."""

    def __init__(self, settings: Settings | None = None, *, celery: Any = None) -> None:
        """`celery`: the Celery app to publish drains with (default: one built from
        `settings` on first use)."""
        self.settings = settings or load_settings()
        self.layer = RedisLayer(self.settings)
        try:
            check_layout(self.layer)
        except (redis.ConnectionError, redis.TimeoutError):  # Redis is not up yet: workers
            log.debug("key layout not checked: Redis unreachable", exc_info=True)  # check it
        except redis.RedisError as exc:  # e.g. full (OOM): workers check it at start
            log.warning("key layout not checked: %s", exc)
        self.sessions = SessionService(self.layer)
        self._celery: Any = celery
        self._mailbox: Mailbox | None = None
        load_action_modules(self.settings)

    @property
    def celery(self) -> Any:
        """The Celery app used to publish work (built on first use)."""
        if self._celery is None:
            from jido_tasks.core.celery_config import configured_app as make_app

            self._celery = make_app(self.settings)
        return self._celery

    @property
    def mailbox(self) -> Mailbox:
        if self._mailbox is None:
            self._mailbox = Mailbox(self.layer, self.celery)
        return self._mailbox

    # -- registry -------------------------------------------------------------------------
    @redis_errors
    def create_session(self, metadata: JsonObject | None = None,
                       llm_config: JsonObject | None = None,
                       config: SessionConfig | JsonObject | None = None) -> SessionEntry:
        return self.sessions.create(metadata, llm_config, config)

    @redis_errors
    def get_session(self, session_id: str) -> SessionEntry:
        return self.sessions.get(session_id)

    @redis_errors
    def list_sessions(self, status: SessionStatus | str | None = None, *, offset: int = 0,
                      limit: int | None = None) -> SessionList:
        """Sessions newest activity first; default every one that is not terminated.
        `offset`/`limit` count sessions of the requested status.
        On a Redis Cluster with a node down: the live nodes' sessions, and the unreadable
        slots in `SessionList.missing_slots` (`complete` is False)."""
        return self.sessions.list(status, offset=offset, limit=limit)

    @redis_errors
    def touch(self, session_id: str) -> SessionEntry:
        return self.sessions.touch(session_id)

    @redis_errors
    def terminate_session(self, session_id: str, reason: str = "requested", *,
                          drain: bool = False, save: bool = False) -> SessionEntry:
        """Terminate a session: pending actions are cancelled (or, with `drain`, run first).

        With `save`, a snapshot is saved first (under the session id); a session that is not
        active or idle raises `InvalidTransition` and neither a snapshot nor the session changes.
        """
        if save:
            save_snapshot(self.layer, self.snapshot_store, session_id, live_only=True)
        entry, _ = self.sessions.terminate(session_id, reason, drain=drain)
        # Cancelled actions that came by name: their Celery results, now (else the sweep).
        deliver_quietly(self.layer, self.celery.backend, session_id)
        return entry

    @redis_errors
    def get_state(self, session_id: str) -> JsonObject:
        return self.sessions.get_state(session_id)

    # -- session work ---------------------------------------------------------------------
    @redis_errors
    def send(self, session_id: str, action: str, params: Any = None, *,
             action_id: str | None = None) -> ActionHandle:
        """Accept an action for the session; returns once it is durably queued.

        An action not registered in this process is accepted if its name is well formed, and
        validated by the worker (`UnknownAction` / `InvalidParams` from `handle.get()`).
        `action_id` (`act_` + 32 hex, or a uuid): a caller-chosen id makes a retried send
        (after a timeout or a dropped connection) accepted once; the id reused for another
        action or other params raises `ActionIdConflict`.
        """
        return self.mailbox.send(session_id, action, params, action_id)

    @redis_errors
    def send_many(self, session_id: str, actions: Iterable[SendItem]) -> list[ActionHandle]:
        """Accept several actions (`(name, params)`, `(name, params, action_id)` or a bare
        name), all or none, in order, in one round trip."""
        return self.mailbox.send_many(session_id, actions)

    @redis_errors
    def call(self, session_id: str, action: str, params: Any = None,
             timeout: float | None = 30.0, *, action_id: str | None = None) -> Any:
        """Send and wait for the result (raises `ActionFailed`, `ActionCancelled`,
        `TimeoutError`); `action_id` as for `send` (a retried call waits for the first)."""
        return self.mailbox.call(session_id, action, params, timeout, action_id)

    @redis_errors
    def action(self, session_id: str, action_id: str) -> ActionRecord:
        """The record of one sent action."""
        return self.mailbox.record(session_id, action_id)

    def handle(self, session_id: str, action_id: str, action: str = "?") -> ActionHandle:
        """A handle on an action sent earlier (e.g. by another process)."""
        return ActionHandle(self.mailbox, session_id, action_id, action)

    # -- snapshots ------------------------------------------------------------------------
    @cached_property
    def snapshot_store(self) -> SnapshotStore:
        """The snapshot store chosen by the `persistence` setting ("redis" or "disk")."""
        return snapshot_store(self.layer)

    @redis_errors
    def save_session(self, session_id: str) -> SnapshotInfo:
        """Save the session's entry and whole state (between two actions) under its id."""
        return save_snapshot(self.layer, self.snapshot_store, session_id)

    @redis_errors
    def restore_session(self, saved_id: str) -> SessionEntry:
        """A new active session from a snapshot, with `restored_from` set to `saved_id`."""
        return restore_snapshot(self.layer, self.snapshot_store, saved_id)

    @redis_errors
    def list_saved_sessions(self) -> list[str]:
        """Ids of the readable snapshots, sorted (corrupt ones are skipped with a warning)."""
        return [info.id for info in list_snapshots(self.snapshot_store)]

    @redis_errors
    def saved_sessions(self) -> list[SnapshotInfo]:
        """Id, save time, size and store of each readable snapshot, sorted by id."""
        return list_snapshots(self.snapshot_store)

    @redis_errors
    def delete_saved_session(self, saved_id: str) -> None:
        delete_snapshot(self.layer, self.snapshot_store, saved_id)

    # -- maintenance ----------------------------------------------------------------------
    @redis_errors
    def sweep(self, force: bool = False) -> SweepReport:
        """Run one sweep now (recover, expire, mark idle, purge); with `force`, even while
        another sweep holds the lock (harmless: every change is re-checked atomically)."""
        return run_sweep(self.layer, self.celery, force=force)

    # -- events ---------------------------------------------------------------------------
    def events(self, session_id: str | None = None, after: str = "0",
               block: float | None = None) -> Iterator[Event]:
        """Events of one session (or all), after stream id `after`; see `iter_events`."""
        return iter_events(self.layer, session_id, after, block)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pub/sub listeners and the Celery connection pool."""
        if self._mailbox is not None:
            self._mailbox.close()
        if self._celery is not None:
            self._celery.close()
