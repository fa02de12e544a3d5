"""The Celery app: `celery -A jido_tasks.celery_app worker|beat|flower`.

Its configuration is `core.celery_config` (shared with the clients). The module-level `app`
(what `celery -A` finds) is built from the environment on first access only, so a
`Client(Settings(...))` that builds its own app with `make_app(settings)` never reads
`JIDO_TASKS_*`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from celery.signals import after_setup_logger, after_setup_task_logger

from jido_tasks.core.celery_config import JidoCelery, celery_config, configured_app, tls_config
from jido_tasks.ops.logs import capture_warnings_as_json, use_json

__all__ = ["JidoCelery", "celery_config", "make_app", "tls_config"]

make_app = configured_app
"""The Celery app for `settings` (its old name; see `core.celery_config`)."""


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
