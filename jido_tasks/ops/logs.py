"""Log formats: human-readable (default) or `log_format=json`, one JSON object per line.

JSON lines carry `session_id` and `action_id` when the record has them (core modules pass them
with `extra=`), or, inside a Celery drain, the drained session from the task's arguments; and
`task_id`/`task_name` inside any task (Celery's public `current_task`). Workers and beat get
the formatter through Celery's `after_setup_logger` / `after_setup_task_logger` signals
(connected in `jido_tasks.worker.app`), the CLI through `configure_cli`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from jido_tasks.core.task_names import DRAIN_TASK
from jido_tasks.settings import Settings

CONTEXT_FIELDS = ("session_id", "action_id")


def _task_context() -> dict[str, Any]:
    """The ids of the Celery task running in this thread (none outside a task)."""
    from celery import current_task  # a proxy: the task of this thread, or None

    if not current_task or current_task.request.id is None:
        return {}
    request = current_task.request
    out: dict[str, Any] = {"task_id": request.id, "task_name": current_task.name}
    args = request.args or ()
    if current_task.name == DRAIN_TASK and args and isinstance(args[0], str):
        out["session_id"] = args[0]
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, ids, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        obj.update(_task_context())
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                obj[name] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


def use_json(logger: logging.Logger) -> None:
    """Give every handler of `logger` the JSON formatter (and route warnings to logging)."""
    logging.captureWarnings(True)
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def configure_cli() -> None:
    """The CLI's logging: warnings and errors on stderr, as text or JSON lines (settings are
    read quietly here; the command itself reports a bad one)."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    try:
        json_lines = Settings().log_format == "json"
    except Exception:  # reported, clearly, by the command
        return
    if json_lines:
        use_json(logging.getLogger())


def capture_warnings_as_json() -> None:
    """Python warnings as JSON lines on stderr, even those raised before Celery sets up its
    logging (e.g. Celery's warning about running as root)."""
    logging.captureWarnings(True)
    logger = logging.getLogger("py.warnings")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
