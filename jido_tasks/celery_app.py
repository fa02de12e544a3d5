"""The Celery app: `celery -A jido_tasks.celery_app worker|beat|flower`.

Configured from `Settings` with safe defaults; each non-default below says why it is there.
The module-level `app` (what `celery -A` finds) is built from the environment on first access
only, so a `Client(Settings(...))` that builds its own app with `make_app(settings)` never reads
`JIDO_TASKS_*`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, current_app
from celery.signals import after_setup_logger, after_setup_task_logger
from kombu import Exchange, Queue

from jido_tasks import reliable_redis
from jido_tasks.actions import BUILTIN_MODULES
from jido_tasks.dispatch import SWEEP_TASK
from jido_tasks.logs import capture_warnings_as_json, use_json
from jido_tasks.settings import Settings, load_settings


class JidoCelery(Celery):
    """A Celery app that carries the jido-tasks settings it was built from."""

    settings: Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration for `settings`."""
    transport = {
        # Redelivery of a message a dead worker never acked. Our own leases recover session
        # work within seconds, so this only bounds the worst case; the same value is used for
        # the broker and result backend transports so they agree.
        "visibility_timeout": settings.visibility_timeout,
    }
    return {
        "broker_url": settings.broker,
        "result_backend": settings.backend,
        **tls_config(settings),

        # JSON only: pickle would let anyone who can write to the broker run code on workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task ran, and requeue when the worker process dies mid-task: a drain is
        # idempotent (fenced commits), so redelivery can never apply an action twice.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process, so a busy process does not hoard drains that idle
        # processes could run.
        "worker_prefetch_multiplier": 1,
        # Task events for Flower, including "sent" so Flower shows queued work.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Results are summaries nobody needs for long; bound them so Redis does not grow.
        "result_expires": int(settings.result_expires),
        # Redis broker: kombu scans for unacked messages past the visibility timeout when a
        # worker starts, then every `unacked_restore_interval` (10 s) times this throttle
        # (default 10: 100 s). A message a dead worker had prefetched (a by-name send, which no
        # sweep can see) is restored within 10 s of its timeout, not 100 s. Other brokers
        # ignore it.
        "broker_transport_options": {**transport, "unacked_restore_throttle": 1},
        "result_backend_transport_options": dict(transport),
        "broker_connection_retry_on_startup": True,
        # A Redis error reply to the consumer (an OOM at `maxmemory` in kombu's delivery or
        # ack bookkeeping) restarts the consumer like a lost connection, instead of ending the
        # worker's main process with "Unrecoverable error".
        "broker_channel_error_retry": True,
        # Drop in-flight messages' prefetch on a lost connection rather than run them twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Queues of our own, so workers of other apps on the same broker never take our work;
        # sweeps get a separate one so a backlog of drains can never starve (and expire) them.
        # The Redis transport rotates between a worker's queues, so a sweep waits for at most
        # one drain per worker process.
        "task_default_queue": settings.queue,
        # Each queue has its own exchange and routing key: two queues bound with the default
        # key would each get a copy of every message.
        "task_queues": [Queue(name, Exchange(name, type="direct"), routing_key=name)
                        for name in (settings.queue, settings.sweep_queue)],
        "task_routes": {SWEEP_TASK: {"queue": settings.sweep_queue}},
        "timezone": "UTC",
        "enable_utc": True,
        # Actions register at import: workers import the built-in and the app's action modules
        # at start (an import error stops the worker at once, not at the first action).
        "imports": [*BUILTIN_MODULES, *settings.action_modules],
        "include": ["jido_tasks.tasks"],
        # One sweep per interval (run exactly one beat; the sweep is guarded anyway).
        "beat_schedule": {
            "jido-tasks-sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval,
                                 "options": {"expires": settings.sweep_interval}},
        },
        "worker_hijack_root_logger": False,
    }


def tls_config(settings: Settings) -> dict[str, Any]:
    """Celery's TLS options for a `rediss://` broker or result backend (the `redis_ssl_*`
    settings). Only then: set for a `redis://` URL they would turn TLS on, and kombu alone
    would take a `rediss://` broker without them as "do not verify the certificate"."""
    config: dict[str, Any] = {}
    if broker_ssl := settings.redis_ssl(settings.broker):
        config["broker_use_ssl"] = broker_ssl
    if backend_ssl := settings.redis_ssl(settings.backend):
        config["redis_backend_use_ssl"] = backend_ssl
    return config


def make_app(settings: Settings | None = None) -> JidoCelery:
    """A Celery app configured from `settings` (default: from the environment)."""
    settings = settings or load_settings()
    celery = JidoCelery("jido_tasks")
    celery.settings = settings
    celery.conf.update(celery_config(settings))
    if settings.reliable_fetch and settings.broker.startswith("redis://"):
        # A fetch a SIGKILL cannot lose (kombu's BRPOP loses the message it was taking).
        reliable_redis.install()
    return celery


_app: JidoCelery | None = None


def __getattr__(name: str) -> Any:
    """`app`: the Celery app of `celery -A jido_tasks.celery_app`, built from the environment
    on first access (not at import)."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_app()
            if _app.settings.log_format == "json":
                capture_warnings_as_json()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger | None = None, **_: object) -> None:
    """`log_format=json`: the worker's and beat's log handlers write JSON lines."""
    settings = getattr(current_app, "settings", None)
    if logger is not None and settings is not None and settings.log_format == "json":
        use_json(logger)
