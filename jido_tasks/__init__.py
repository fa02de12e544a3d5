"""jido-tasks: isolated, stateful work sessions on Celery workers, with state in Redis."""

from jido_tasks.client import Client
from jido_tasks.errors import (
    ConfigError,
    InvalidSessionId,
    InvalidTransition,
    JidoTasksError,
    SessionNotActive,
    SessionNotFound,
)
from jido_tasks.models import Event, SessionConfig, SessionEntry, SessionStatus
from jido_tasks.settings import Settings

__all__ = [
    "Client",
    "ConfigError",
    "Event",
    "InvalidSessionId",
    "InvalidTransition",
    "JidoTasksError",
    "SessionConfig",
    "SessionEntry",
    "SessionNotActive",
    "SessionNotFound",
    "SessionStatus",
    "Settings",
]
