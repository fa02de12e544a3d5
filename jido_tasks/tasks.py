"""Celery tasks. Each body is a few lines calling the core function the client and CLI use."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_init, worker_process_init, worker_ready

from jido_tasks import telemetry
from jido_tasks.dispatch import DRAIN_TASK, PING_TASK, SWEEP_TASK, publish_drain
from jido_tasks.runtime import drain as drain_session
from jido_tasks.store.connection import RedisLayer
from jido_tasks.sweep import run_sweep
from jido_tasks.watch import Watch

# A busy claim (another live worker holds the lease) is retried after the lease's remaining
# time this many times; past that the holder is alive and draining, and recovery covers it.
BUSY_RETRIES = 10

_layers: dict[int, RedisLayer] = {}


def layer_for(task: Task[Any, Any]) -> RedisLayer:
    """This process's Redis layer (one per process: never shared across fork)."""
    layer = _layers.get(os.getpid())
    if layer is None:
        layer = RedisLayer(task.app.settings)  # type: ignore[attr-defined]  # JidoCelery
        _layers[os.getpid()] = layer
    return layer


@worker_init.connect
def _load_telemetry(sender: Any = None, **_: Any) -> None:
    """Register the telemetry hooks before the pool forks, so every process has them."""
    settings = getattr(getattr(sender, "app", None), "settings", None)
    if settings is not None:
        telemetry.load_hooks(settings.telemetry_hooks)


@worker_process_init.connect
def _start_watch(sender: Any = None, **_: Any) -> None:
    """In each pool process, the light recovery of sessions held by dead workers."""
    from celery import current_app

    settings = getattr(current_app, "settings", None)
    if settings is not None:
        Watch(RedisLayer(settings), current_app).start()


@worker_ready.connect
def _warn_if_redis_may_evict(sender: Any = None, **_: Any) -> None:
    """At worker start, warn (in the worker log) if Redis could evict session keys."""
    settings = getattr(getattr(sender, "app", None), "settings", None)
    if settings is not None:
        RedisLayer(settings).check_eviction_policy()


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
    layer = layer_for(self)
    report = drain_session(layer, session_id)
    if report.requeue:  # time slice over (or an error): back of the queue, not a retry
        publish_drain(self.app, layer.settings, session_id)
    if report.retry_after is not None and self.request.retries < BUSY_RETRIES:
        raise self.retry(countdown=report.retry_after)
    return report.model_dump()


@shared_task(bind=True, name=SWEEP_TASK)
def sweep(self: Task[Any, Any]) -> dict[str, Any]:
    """One sweep (beat runs it every `sweep_interval`); skipped while another holds the lock."""
    return run_sweep(layer_for(self), self.app).model_dump(mode="json")
