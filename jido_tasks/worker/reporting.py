"""The Celery side of a drain's commits (`CeleryReporter`, the drain's commit listener).

- An action that came as a `jido_tasks.send` message has its outcome stored in the Celery
  result backend under its id as soon as its commit is done (`store.results.deliver`).
- With the `action_events` setting (default on), every committed action is announced with the
  task events Flower builds its rows from (received, started, succeeded or failed; task id =
  action id, name `jido_tasks.action.<name>`, args `[session_id]`, kwargs = params). They are
  buffered (Celery's buffered event groups) and published by a thread of the pool process
  `EVENT_FLUSH_INTERVAL` after the first of them, or at once when `EVENT_BUFFER_LIMIT` are
  waiting: one publish for many commits, not three per action (a drain that applies its
  actions one by one would otherwise pay one publish per action). Flower shows an action that
  much later; the events a SIGKILLed process had not yet published are lost (the actions and
  their results are not: only their rows in Flower).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.utils.saferepr import saferepr

from jido_tasks.models import ActionStatus, ReplyTo
from jido_tasks.store.connection import RedisLayer
from jido_tasks.store.results import deliver, store_outcomes
from jido_tasks.store.transport import share_client
from jido_tasks.worker.drain import CommitListener, Finished

log = logging.getLogger(__name__)

ACTION_TASK_PREFIX = "jido_tasks.action."
"""Flower shows an action `a.b` as a task named `jido_tasks.action.a.b`."""
EVENT_FLUSH_INTERVAL = 0.2
"""Seconds between a commit's task events and their publication (with what came meanwhile)."""
EVENT_BUFFER_LIMIT = 300
"""Buffered task events (100 actions) that are published at once, without waiting."""
EVENT_BUFFER_KEEP = 3_000
"""Most task events kept for a later try when publishing fails (more are dropped)."""
REPR_MAXSIZE = 1024
"""Longest args, kwargs or result repr in an event (Celery's own `argsrepr_maxsize`)."""


def store_outcome(backend: Any, finished: Finished) -> None:
    """Store one by-name action's outcome in the Celery result backend under its id."""
    store_outcomes(backend, [(finished.action_id, finished.outcome)])


def brief(value: Any) -> str:
    """What Flower shows of an action's params or result: `repr` for a small flat value
    (`saferepr` costs 20-30 µs even for `{"a": 1}`), else Celery's `saferepr`, cut at
    `REPR_MAXSIZE` as Celery cuts a task's own args."""
    if _small(value):
        return repr(value)
    if isinstance(value, list) and len(value) <= 16 and all(_small(item) for item in value):
        return repr(value)
    if isinstance(value, dict) and len(value) <= 16 and all(
            isinstance(key, str) and len(key) <= 64 and _small(item)
            for key, item in value.items()):
        return repr(value)
    return saferepr(value, REPR_MAXSIZE)


def _small(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or (
        isinstance(value, str) and len(value) <= 64)


class CeleryReporter(CommitListener):
    """Stores by-name results and sends per-action task events (one per worker process)."""

    def __init__(self, app: Any, hostname: str, events: bool, layer: RedisLayer, *,
                 flush_interval: float = EVENT_FLUSH_INTERVAL) -> None:
        self.app = app
        self.layer = layer
        self.hostname = hostname
        self.events = events
        self.flush_interval = flush_interval
        self._dispatcher: Any = None
        self._pid = 0
        self._waiting = threading.Event()  # events are buffered
        self._flusher: threading.Thread | None = None

    def dispatcher(self) -> Any:
        """This process's event dispatcher, buffering task events until `flush`."""
        if self._dispatcher is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._dispatcher = self.app.events.Dispatcher(
                self.app.connection_for_write(), hostname=self.hostname,
                buffer_group=["task"], buffer_limit=EVENT_BUFFER_LIMIT,
                buffer_while_offline=False)
            # kombu would build a redis client per event publish (~60 us of CPU).
            share_client(self._dispatcher.producer.channel)
            self._waiting = threading.Event()
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="jido-tasks-events")
            self._flusher.start()
        return self._dispatcher

    def _flush_loop(self) -> None:
        waiting = self._waiting
        while True:
            waiting.wait()
            time.sleep(self.flush_interval)  # gather the events of the commits that follow
            waiting.clear()  # before the flush: what is buffered during it sets it again
            self.flush()

    def flush(self) -> None:
        """Publish the buffered task events now (at a pool process's exit); never raises."""
        if self._dispatcher is None or self._pid != os.getpid():
            return
        try:
            self._dispatcher.flush(errors=False, groups=True)
        except Exception:
            # Kept for the next flush, up to a bound: events are telemetry, never a leak.
            buffered = getattr(self._dispatcher, "_group_buffer", {}).get("task")
            dropped = 0
            if isinstance(buffered, list) and len(buffered) > EVENT_BUFFER_KEEP:
                dropped = len(buffered)
                buffered.clear()
            log.warning("could not send task events (%s): Flower misses some actions "
                        "(%d dropped)", self.hostname, dropped, exc_info=True)

    def committed(self, session_id: str, finished: list[Finished]) -> None:
        replies = [(item.action_id, item.outcome) for item in finished
                   if item.reply_to is ReplyTo.CELERY]
        if replies:
            try:
                deliver(self.layer, self.app.backend, session_id, replies)
            except Exception:  # committed, and queued in `replies`: the sweep stores them
                log.exception("session %s: could not store the results of %d by-name "
                              "actions in the result backend (the sweep will retry)",
                              session_id, len(replies))
        if self.events and finished:
            try:
                self.send_events(session_id, finished)
            except Exception:
                log.warning("could not send task events for session %s", session_id,
                            exc_info=True)

    def refused(self, task_id: str, name: str, args: Any, kwargs: Any, error_type: str,
                message: str) -> None:
        """Announce a task that refused its input (received, then failed), so Flower shows
        it; never raises (a lost announcement is logged)."""
        if not self.events:
            return
        try:
            d = self.dispatcher()
            now = time.time()
            d.send("task-received", uuid=task_id, timestamp=now, name=name,
                   args=saferepr(list(args), REPR_MAXSIZE), kwargs=brief(kwargs), retries=0,
                   eta=None, expires=None, root_id=task_id, parent_id=None)
            d.send("task-failed", uuid=task_id, timestamp=now, traceback=None,
                   exception=f"{error_type}({message!r})")
            self._waiting.set()
        except Exception:
            log.warning("could not announce refused task %s", task_id, exc_info=True)

    def send_events(self, session_id: str, finished: list[Finished]) -> None:
        """Buffer received/started/succeeded|failed for each action, for the flusher thread
        (the dispatcher publishes at once when `EVENT_BUFFER_LIMIT` are buffered)."""
        d = self.dispatcher()
        args = repr([session_id])  # a session id is a short word (SESSION_ID_PATTERN)
        try:
            for item in finished:
                common = {"uuid": item.action_id}
                started = item.started or item.outcome.finished_at or item.received
                done = item.outcome.finished_at or started + item.runtime
                d.send("task-received", timestamp=item.received, name=ACTION_TASK_PREFIX
                       + item.action, args=args, kwargs=brief(item.params), retries=0,
                       eta=None, expires=None, root_id=item.action_id, parent_id=None, **common)
                d.send("task-started", timestamp=started, **common)
                if item.outcome.status is ActionStatus.SUCCEEDED:
                    d.send("task-succeeded", timestamp=done, result=brief(item.outcome.result),
                           runtime=item.runtime, **common)
                else:
                    err = item.outcome.error
                    shown = f"{err.type}({err.message!r})" if err else "ActionFailed()"
                    d.send("task-failed", timestamp=done, exception=shown, traceback=None,
                           **common)
        finally:  # the flusher retries what a failed publish at EVENT_BUFFER_LIMIT kept
            self._waiting.set()
