"""The Celery side of a drain's commits: by-name results and per-action task events.

- An action that came as a `jido_tasks.send` message (its request says `reply_to: celery`) has
  its outcome stored in the Celery result backend under its id, the message's task id, so
  `AsyncResult(id).get()` in any Celery client returns its result or raises its error.
- With the `action_events` setting (default on), every committed action is announced with the
  task events Flower builds its rows from (received, started, succeeded or failed; task id =
  action id, name `jido_tasks.action.<name>`, args `[session_id]`, kwargs = params), all the
  events of one commit in one message (Celery's buffered event groups), so the cost is one
  publish per commit, not three per action.

Errors travel as Celery's JSON exception form, `{exc_type, exc_message, exc_module}`, with
`exc_module` a name no client imports (or `builtins` for a builtin exception type): every
client rebuilds an exception whose class name is the error type and whose message is the
action's message, whether or not it has jido_tasks installed.
"""

from __future__ import annotations

import builtins
import logging
import os
from typing import Any

from celery import states
from celery.utils.saferepr import saferepr

from jido_tasks.models import ActionStatus, ReplyTo
from jido_tasks.runtime import CommitListener, Finished

log = logging.getLogger(__name__)

ACTION_TASK_PREFIX = "jido_tasks.action."
"""Flower shows an action `a.b` as a task named `jido_tasks.action.a.b`."""
REMOTE_MODULE = "jido_tasks.remote"
"""The `exc_module` of errors sent to Celery clients: never importable, so clients rebuild
the error by its type name (see module doc)."""


def remote_error(error_type: str, message: str) -> Exception:
    """An exception named `error_type` carrying `message`, serialized by Celery as
    `{exc_type: error_type, exc_message: [message], exc_module: ...}` (see `exc_module`)."""
    def reduce(self: Exception) -> tuple[Any, ...]:
        # Picklable by value, so Celery's worker does not wrap it (it checks picklability).
        return remote_error, (error_type, message)

    cls: type[Exception] = type(error_type, (Exception,), {
        "__module__": exc_module(error_type), "__qualname__": error_type,
        "__reduce__": reduce})
    return cls(message)


def exc_module(error_type: str) -> str:
    found = getattr(builtins, error_type, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return "builtins"
    return REMOTE_MODULE


def store_outcome(backend: Any, finished: Finished) -> None:
    """Store a by-name action's outcome in the Celery result backend under its id."""
    outcome = finished.outcome
    if outcome.status is ActionStatus.SUCCEEDED:
        backend.store_result(finished.action_id, outcome.result, states.SUCCESS)
        return
    err_type = outcome.error.type if outcome.error else "ActionFailed"
    message = outcome.error.message if outcome.error else ""
    backend.store_result(finished.action_id, {"exc_type": err_type, "exc_message": [message],
                                              "exc_module": exc_module(err_type)},
                         states.FAILURE)


class CeleryReporter(CommitListener):
    """Stores by-name results and sends per-action task events (one per worker process)."""

    def __init__(self, app: Any, hostname: str, events: bool) -> None:
        self.app = app
        self.hostname = hostname
        self.events = events
        self._dispatcher: Any = None
        self._pid = 0

    def dispatcher(self) -> Any:
        """This process's event dispatcher, buffering task events until `flush`."""
        if self._dispatcher is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._dispatcher = self.app.events.Dispatcher(
                self.app.connection_for_write(), hostname=self.hostname,
                buffer_group=["task"], buffer_limit=1_000_000, buffer_while_offline=False)
        return self._dispatcher

    def committed(self, session_id: str, finished: list[Finished]) -> None:
        for item in finished:
            if item.reply_to is ReplyTo.CELERY:
                try:
                    store_outcome(self.app.backend, item)
                except Exception:  # the outcome is committed; a resend delivers it again
                    log.exception("session %s: could not store the result of action %s (%s) "
                                  "in the result backend", session_id, item.action,
                                  item.action_id)
        if self.events and finished:
            try:
                self.send_events(session_id, finished)
            except Exception:
                log.warning("could not send task events for session %s", session_id,
                            exc_info=True)

    def send_events(self, session_id: str, finished: list[Finished]) -> None:
        """Buffer received/started/succeeded|failed for each action; publish them at once."""
        d = self.dispatcher()
        args = saferepr([session_id])
        for item in finished:
            common = {"uuid": item.action_id}
            started = item.started or item.outcome.finished_at or item.received
            done = item.outcome.finished_at or started + item.runtime
            d.send("task-received", timestamp=item.received, name=ACTION_TASK_PREFIX
                   + item.action, args=args, kwargs=saferepr(item.params), retries=0,
                   eta=None, expires=None, root_id=item.action_id, parent_id=None, **common)
            d.send("task-started", timestamp=started, **common)
            if item.outcome.status is ActionStatus.SUCCEEDED:
                d.send("task-succeeded", timestamp=done, result=saferepr(item.outcome.result),
                       runtime=item.runtime, **common)
            else:
                err = item.outcome.error
                shown = f"{err.type}({err.message!r})" if err else "ActionFailed()"
                d.send("task-failed", timestamp=done, exception=shown, traceback=None,
                       **common)
        d.flush(errors=False, groups=True)
