"""The Celery app at the path users type: `celery -A jido_tasks.celery_app worker|beat|flower`.

The app lives in `jido_tasks.worker.app`; this module hands out the same objects.
"""

from __future__ import annotations

from typing import Any

from jido_tasks.worker import app as _app
from jido_tasks.worker.app import JidoCelery, celery_config, make_app, tls_config

__all__ = ["JidoCelery", "celery_config", "make_app", "tls_config"]


def __getattr__(name: str) -> Any:
    """`app`: the environment's Celery app, built on first access (see `worker.app`)."""
    return getattr(_app, name)
