"""Celery tasks. Each body is a few lines calling the core function the client and CLI use.

Besides the drain, the sweep and ping, the session API is here by name, for any Celery client in
any language (`send_task("jido_tasks.send", ...)`, celery-node, Flower's HTTP API): JSON in,
JSON out, bad input failing the task with the project's typed error (its class name and
message) and writing nothing. See `send` for how an action's own result gets back.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task
from celery.exceptions import Ignore

from jido_tasks.core.actions import is_registered
from jido_tasks.core.drains import publish_drain
from jido_tasks.core.task_names import (
    CREATE_SESSION_TASK,
    DRAIN_TASK,
    GET_SESSION_TASK,
    GET_STATE_TASK,
    LIST_SESSIONS_TASK,
    PING_TASK,
    SEND_TASK,
    SWEEP_TASK,
    TERMINATE_SESSION_TASK,
)
from jido_tasks.errors import ActionIdConflict, JidoTasksError, UnknownAction
from jido_tasks.models import JsonObject, ReplyTo, validate_action_id
from jido_tasks.ops.sweep import run_sweep
from jido_tasks.store.results import remote_error
from jido_tasks.store.scripts import Claimed
from jido_tasks.worker import fleet
from jido_tasks.worker.drain import Finished, claim_for
from jido_tasks.worker.drain import drain as drain_session
from jido_tasks.worker.reporting import store_outcome
from jido_tasks.worker.services import services

if TYPE_CHECKING:
    from jido_tasks.client.sync import Client

log = logging.getLogger(__name__)

# A busy claim (another live worker holds the lease) is retried after the lease's remaining
# time this many times; past that the holder is alive and draining, and recovery covers it.
BUSY_RETRIES = 10

HANDBACK_BACKOFF = (0.05, 2.0)
"""First and longest delay before a handed-back session's drain runs again (doubling)."""


def _client(task: Task[Any, Any]) -> Client:
    """This process's client over the task's app (the by-name tasks call what apps call)."""
    return services(task.app).client


def _typed(fn: Any) -> Any:
    """Re-raise our typed errors as their JSON-safe form (class name + message): a Celery
    client without jido_tasks (or with it) rebuilds an exception of that name."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JidoTasksError as exc:
            raise remote_error(type(exc).__name__, exc.message) from None
    return wrapper


@shared_task(name=PING_TASK)
def ping(payload: Any = None) -> dict[str, Any]:
    """Answer with the worker's host and pid: a trivial task to check workers run tasks."""
    return {"pong": payload, "host": socket.gethostname(), "pid": os.getpid()}


# ignore_result: nobody reads a drain's summary (callers wait on their action's record), so
# storing it would cost a SET and a PUBLISH per drain for nothing.
@shared_task(bind=True, name=DRAIN_TASK, acks_late=True, reject_on_worker_lost=True,
             max_retries=BUSY_RETRIES, ignore_result=True)
def drain(self: Task[Any, Any], session_id: str) -> dict[str, Any]:
    """Apply a session's pending actions in order (idempotent: commits are fenced)."""
    worker = services(self.app)
    report = drain_session(worker.layer, session_id,
                           listener=worker.reporter(self.request.hostname))
    if report.requeue:  # time slice over (or an error): back of the queue, not a retry
        publish_drain(self.app, worker.settings, session_id)
    if report.retry_after is not None and self.request.retries < BUSY_RETRIES:
        countdown = report.retry_after
        if report.outcome == "handed_back":  # give a worker that has the action a chance
            first, most = HANDBACK_BACKOFF
            countdown = min(first * 2 ** self.request.retries, most)
        raise self.retry(countdown=countdown)
    return report.model_dump()


@shared_task(bind=True, name=SWEEP_TASK, ignore_result=True)
def sweep(self: Task[Any, Any]) -> None:
    """One sweep (beat runs it every `sweep_interval`); skipped while another holds the lock."""
    run_sweep(services(self.app).layer, self.app)  # its report is logged once, by the sweep


# -- the session API by name -----------------------------------------------------------------
# ignore_result: the send task's own return is never the action's result (the drain stores that
# under the same id), so Celery must store nothing on return; a refusal (bad input) is still
# stored (store_errors_even_if_ignored). send_events off: the id is the action's, whose Flower
# row the drain's per-action events write; the worker's own events for the send would collide
# with them (a task-succeeded with result None). A refusal is announced by `_announced`.
def _announced(fn: Any) -> Any:
    """A refused by-name send (bad input) still shows in Flower, as a failed `jido_tasks.send`
    (the send task's own events are off: see `send`)."""
    @functools.wraps(fn)
    def wrapper(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except JidoTasksError as exc:
            services(self.app).reporter(self.request.hostname).refused(
                str(self.request.id), SEND_TASK, args, kwargs, type(exc).__name__, exc.message)
            raise
    return wrapper


@shared_task(bind=True, name=SEND_TASK, ignore_result=True, store_errors_even_if_ignored=True,
             send_events=False)
@_typed
@_announced
def send(self: Task[Any, Any], session_id: str, action: str,
         params: JsonObject | None = None) -> None:
    """Accept an action whose id is this message's id; its own result comes later.

    Accepting is one script call and never waits for another task: the task ends storing
    nothing (when the session had no drain scheduled, this task runs that drain itself: see
    `_drain_here`); once the session's drain commits the action, the worker stores the action's
    result (or error) in the result backend under this id, and `AsyncResult(id).get()` returns
    it. A second delivery of the message (broker redelivery, a client retry with the same task
    id) is accepted once: it only delivers the outcome again if the action has finished; a
    reused id with other content is logged and ignored, so the first action's result stays. An
    action no live worker has registered fails at once with `UnknownAction`.
    """
    action_id = validate_action_id(self.request.id)
    client = _client(self)
    if (isinstance(action, str) and not is_registered(action)
            and not fleet.someone_has(client.layer, action)):
        raise UnknownAction(action, session_id if isinstance(session_id, str) else None)
    try:
        _, sent = client.mailbox.accept(session_id, action, params, action_id, ReplyTo.CELERY,
                                        publish=False,
                                        claim_for=claim_for(client.layer, session_id))
    except ActionIdConflict:
        # The id is another action's: failing this task would overwrite that action's result
        # in the backend (the same task id). Say so in the log and store nothing.
        log.warning("jido_tasks.send %s refused: the id is taken by another action of "
                    "session %s (a reused task id with other content); nothing stored",
                    action_id, session_id)
        _end(self)
        return
    if sent.publish or sent.claimed is not None:
        _drain_here(self, session_id, sent.claimed)
    elif sent.duplicate:
        if sent.outcome is not None and sent.outcome.status.finished:
            store_outcome(self.app.backend, Finished(action_id, action, params or {},
                                                     sent.outcome, 0.0, 0.0, 0.0,
                                                     ReplyTo.CELERY))
        else:  # a redelivery after its worker died, maybe mid-drain: resume at once
            publish_drain(self.app, self.app.settings, session_id)  # type: ignore[attr-defined]
    _end(self)


def _end(task: Task[Any, Any]) -> None:
    """End a send storing nothing. The task ignores its result, unless the message asked for
    it (`ignore_result=False` sent by the client): then only `Ignore` keeps Celery from
    storing None over the action's result. Raising costs the pool a traceback walk and a
    pickled one sent to the parent (about a third of a send's time), so only then."""
    if vars(task.request).get("ignore_result") is False:
        raise Ignore()


def _drain_here(task: Task[Any, Any], session_id: str, claimed: Claimed | None) -> None:
    """Run the drain this send scheduled in this process, instead of publishing a drain
    message for another task to run: the same fenced, ordered, batched drain, one broker
    round trip and task less per idle session's first action (and, when the send script
    claimed the lease for it, `claimed`, no claim round trip either). What it cannot finish
    here (the lease is busy, the session handed back, a failure) goes to a published drain
    task, which retries as drains do; a worker lost mid-drain redelivers this send
    (acks_late), which publishes a drain (see `send`), and the sweep or the light recovery
    of dead holders (liveness keys) takes the session back in any case."""
    worker = services(task.app)
    settings = worker.settings
    try:
        report = drain_session(worker.layer, session_id,
                               listener=worker.reporter(task.request.hostname), claimed=claimed)
    except Exception:
        log.exception("session %s: drain in the accepting send failed; publishing a drain",
                      session_id)
        publish_drain(task.app, settings, session_id)
        return
    if report.retry_after is not None or report.requeue:
        publish_drain(task.app, settings, session_id)


@shared_task(bind=True, name=CREATE_SESSION_TASK)
@_typed
def create_session(self: Task[Any, Any], metadata: JsonObject | None = None,
                   llm_config: JsonObject | None = None,
                   config: JsonObject | None = None) -> JsonObject:
    """Create a session; its entry as JSON."""
    return _client(self).create_session(metadata, llm_config, config).model_dump(mode="json")


@shared_task(bind=True, name=GET_SESSION_TASK)
@_typed
def get_session(self: Task[Any, Any], session_id: str) -> JsonObject:
    return _client(self).get_session(session_id).model_dump(mode="json")


@shared_task(bind=True, name=GET_STATE_TASK)
@_typed
def get_state(self: Task[Any, Any], session_id: str) -> JsonObject:
    return _client(self).get_state(session_id)


@shared_task(bind=True, name=LIST_SESSIONS_TASK)
@_typed
def list_sessions(self: Task[Any, Any], status: str | None = None, offset: int = 0,
                  limit: int | None = None) -> list[JsonObject]:
    return [entry.model_dump(mode="json") for entry in
            _client(self).list_sessions(status, offset=offset, limit=limit)]


@shared_task(bind=True, name=TERMINATE_SESSION_TASK)
@_typed
def terminate_session(self: Task[Any, Any], session_id: str, reason: str = "requested",
                      drain: bool = False, save: bool = False) -> JsonObject:
    return _client(self).terminate_session(session_id, reason, drain=drain,
                                           save=save).model_dump(mode="json")
