"""jido-tasks: isolated, stateful work sessions on Celery workers, with state in Redis."""

from jido_tasks import telemetry
from jido_tasks.actions import ActionContext, action
from jido_tasks.client import Client
from jido_tasks.errors import (
    ActionCancelled,
    ActionFailed,
    ActionNotFound,
    ActionTimeLimitExceeded,
    ConfigError,
    InvalidParams,
    InvalidSessionId,
    InvalidTransition,
    JidoTasksError,
    SessionNotActive,
    SessionNotFound,
    UnknownAction,
)
from jido_tasks.mailbox import ActionHandle
from jido_tasks.models import (
    ActionRecord,
    ActionStatus,
    Event,
    SessionConfig,
    SessionEntry,
    SessionStatus,
)
from jido_tasks.settings import Settings

__all__ = [
    "ActionCancelled",
    "ActionContext",
    "ActionFailed",
    "ActionHandle",
    "ActionNotFound",
    "ActionRecord",
    "ActionStatus",
    "ActionTimeLimitExceeded",
    "Client",
    "ConfigError",
    "Event",
    "InvalidParams",
    "InvalidSessionId",
    "InvalidTransition",
    "JidoTasksError",
    "SessionConfig",
    "SessionEntry",
    "SessionNotActive",
    "SessionNotFound",
    "SessionStatus",
    "Settings",
    "UnknownAction",
    "action",
    "telemetry",
]
