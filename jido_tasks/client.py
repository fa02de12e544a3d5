"""`Client`: the API apps use. Thin: every method calls a core service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jido_tasks.actions import load_action_modules
from jido_tasks.events import iter_events
from jido_tasks.mailbox import ActionHandle, Mailbox, result_of
from jido_tasks.models import (
    ActionRecord,
    Event,
    JsonObject,
    SessionConfig,
    SessionEntry,
    SessionStatus,
)
from jido_tasks.redis_layer import RedisLayer
from jido_tasks.sessions import SessionService
from jido_tasks.settings import Settings, load_settings


class Client:
    """Entry point for apps: `Client()` reads settings from the environment."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.layer = RedisLayer(self.settings)
        self.sessions = SessionService(self.layer)
        self._celery: Any = None
        self._mailbox: Mailbox | None = None
        load_action_modules(self.settings)

    @property
    def celery(self) -> Any:
        """The Celery app used to publish work (built on first use)."""
        if self._celery is None:
            from jido_tasks.celery_app import make_app

            self._celery = make_app(self.settings)
        return self._celery

    @property
    def mailbox(self) -> Mailbox:
        if self._mailbox is None:
            self._mailbox = Mailbox(self.layer, self.celery)
        return self._mailbox

    # -- registry -------------------------------------------------------------------------
    def create_session(self, metadata: JsonObject | None = None,
                       llm_config: JsonObject | None = None,
                       config: SessionConfig | JsonObject | None = None) -> SessionEntry:
        return self.sessions.create(metadata, llm_config, config)

    def get_session(self, session_id: str) -> SessionEntry:
        return self.sessions.get(session_id)

    def list_sessions(self, status: SessionStatus | str | None = None) -> list[SessionEntry]:
        """Sessions newest activity first; default every one that is not terminated."""
        return self.sessions.list(status)

    def touch(self, session_id: str) -> SessionEntry:
        return self.sessions.touch(session_id)

    def terminate_session(self, session_id: str, reason: str = "requested", *,
                          drain: bool = False) -> SessionEntry:
        """Terminate a session: pending actions are cancelled (or, with `drain`, run first)."""
        entry, _ = self.sessions.terminate(session_id, reason, drain=drain)
        return entry

    def get_state(self, session_id: str) -> JsonObject:
        return self.sessions.get_state(session_id)

    # -- session work ---------------------------------------------------------------------
    def send(self, session_id: str, action: str, params: Any = None) -> ActionHandle:
        """Accept an action for the session; returns once it is durably queued."""
        return self.mailbox.send(session_id, action, params)

    def call(self, session_id: str, action: str, params: Any = None,
             timeout: float | None = 30.0) -> Any:
        """Send and wait for the result (raises `ActionFailed`, `ActionCancelled`,
        `TimeoutError`)."""
        handle = self.mailbox.send(session_id, action, params)
        return result_of(self.mailbox.wait(session_id, handle.id, timeout))

    def action(self, session_id: str, action_id: str) -> ActionRecord:
        """The record of one sent action."""
        return self.mailbox.record(session_id, action_id)

    def handle(self, session_id: str, action_id: str, action: str = "?") -> ActionHandle:
        """A handle on an action sent earlier (e.g. by another process)."""
        return ActionHandle(self.mailbox, session_id, action_id, action)

    # -- events ---------------------------------------------------------------------------
    def events(self, session_id: str | None = None, after: str = "0",
               block: float | None = None) -> Iterator[Event]:
        """Events of one session (or all), after stream id `after`; see `iter_events`."""
        return iter_events(self.layer, session_id, after, block)

    def close(self) -> None:
        if self._celery is not None:
            self._celery.close()
