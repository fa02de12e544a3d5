"""The Celery app's configuration, shared by the clients (which publish with it) and the
worker: `configured_app(settings)`, with the broker transport of `store.transport` for
`redis://` (its reliable fetch serves workers; clients publish through it as through kombu's).
Building an app connects to nothing.

Configured from `Settings` with safe defaults; each non-default below says why it is there.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from jido_tasks.core.actions import BUILTIN_MODULES
from jido_tasks.core.task_names import SWEEP_TASK
from jido_tasks.settings import Settings, load_settings
from jido_tasks.store import transport


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
        "include": ["jido_tasks.worker.tasks"],
        # One sweep per interval (run exactly one beat; the sweep is guarded anyway).
        "beat_schedule": {
            "jido-tasks-sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval,
                                 "options": {"expires": settings.sweep_interval}},
        },
        "worker_hijack_root_logger": False,
    }


def tls_config(settings: Settings) -> dict[str, Any]:
    """Celery's TLS options: for a `rediss://` broker or result backend the `redis_ssl_*`
    settings, for an `amqps://` broker the `amqp_ssl_*` ones. Only then: set for a `redis://`
    URL they would turn TLS on, and kombu alone would take a `rediss://` broker without them
    as "do not verify the certificate"."""
    config: dict[str, Any] = {}
    if broker_ssl := settings.redis_ssl(settings.broker):
        config["broker_use_ssl"] = broker_ssl
    if amqp_ssl := settings.amqp_ssl(settings.broker):
        config["broker_use_ssl"] = amqp_ssl
    if backend_ssl := settings.redis_ssl(settings.backend):
        config["redis_backend_use_ssl"] = backend_ssl
    return config


def configured_app(settings: Settings | None = None) -> JidoCelery:
    """A Celery app configured from `settings` (default: from the environment)."""
    settings = settings or load_settings()
    celery = JidoCelery("jido_tasks")
    celery.settings = settings
    celery.conf.update(celery_config(settings))
    if settings.reliable_fetch and settings.broker.startswith("redis://"):
        transport.install()
    return celery
