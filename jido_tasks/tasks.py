"""Celery tasks. Each body is a few lines calling the core function the client and CLI use."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Task, shared_task

from jido_tasks.celery_app import PING_TASK


@shared_task(name=PING_TASK)
def ping(payload: Any = None) -> dict[str, Any]:
    """Answer with the worker's host and pid: a trivial task to check workers run tasks."""
    return {"pong": payload, "host": socket.gethostname(), "pid": os.getpid()}


__all__ = ["Task", "ping"]
