"""Stock Celery, the benchmarks' baseline: a Celery app of its own on kombu's Redis transport.

Nothing here imports jido_tasks, so a worker started with `celery -A benchmarks.stock_app
worker` runs kombu's own fetch and kombu's own Redis clients, as a user's Celery does today.
Broker and result backend: the one URL in `STOCK_CELERY_URL` (a private redis-server). Settings
as the jido-tasks worker's where they change the work per task: task events on (worker and
"sent"), `task_acks_late`, prefetch 1, JSON only; everything else is Celery's default (results
kept `result_expires`, one day).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, Task

URL_ENV = "STOCK_CELERY_URL"
KOMBU_REDIS = "kombu.transport.redis:Transport"
"""kombu's transport, named: in a process that imported jido_tasks, `redis://` may mean
jido-tasks' transport (`store.transport.install`), and the benchmark publishes from there."""
NOOP = "stock.noop"
PROBE = "stock.probe"


def noop() -> None:
    """The baseline task: does nothing (its result, None, is stored)."""
    return None


def probe(task: Task[Any, Any]) -> dict[str, Any]:
    """What the worker runs: jido_tasks modules imported (none expected), broker transport."""
    with task.app.connection_for_read() as conn:
        cls = type(conn.transport)
    return {"jido_tasks": sorted(m for m in sys.modules if m.split(".")[0] == "jido_tasks"),
            "transport": f"{cls.__module__}.{cls.__qualname__}"}


def make_app(url: str) -> Celery:
    """A stock Celery app with broker and result backend at `url`."""
    app = Celery("stock", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport=KOMBU_REDIS,
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
    )
    app.task(name=NOOP)(noop)
    app.task(name=PROBE, bind=True)(probe)
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """`app`: what `celery -A benchmarks.stock_app` finds, built from `STOCK_CELERY_URL` on
    first access (so importing `make_app` needs no environment)."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_app(os.environ[URL_ENV])
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
