"""jido-tasks: isolated, stateful work sessions on Celery workers, with state in Redis."""

from jido_tasks import telemetry
from jido_tasks.actions import ActionContext, action
from jido_tasks.aio import AsyncActionHandle, AsyncClient
from jido_tasks.client import Client
from jido_tasks.errors import (
    ActionCancelled,
    ActionFailed,
    ActionNotFound,
    ActionTimeLimitExceeded,
    ActionTimeout,
    ConfigError,
    InvalidArgument,
    InvalidEntry,
    InvalidParams,
    InvalidSessionId,
    InvalidTransition,
    JidoTasksError,
    PersistenceError,
    PoisonAction,
    ProtocolError,
    RedisOutOfMemory,
    RedisUnavailable,
    SessionNotActive,
    SessionNotFound,
    SnapshotCorrupt,
    SnapshotNotFound,
    UnknownAction,
)
from jido_tasks.mailbox import ActionHandle
from jido_tasks.models import (
    ActionError,
    ActionRecord,
    ActionStatus,
    Event,
    Outcome,
    Progress,
    SessionConfig,
    SessionEntry,
    SessionStatus,
)
from jido_tasks.persistence import SnapshotInfo
from jido_tasks.settings import Settings
from jido_tasks.sweep import SweepReport

__all__ = [
    "ActionCancelled",
    "ActionContext",
    "ActionError",
    "ActionFailed",
    "ActionHandle",
    "ActionNotFound",
    "ActionRecord",
    "ActionStatus",
    "ActionTimeLimitExceeded",
    "ActionTimeout",
    "AsyncActionHandle",
    "AsyncClient",
    "Client",
    "ConfigError",
    "Event",
    "InvalidArgument",
    "InvalidEntry",
    "InvalidParams",
    "InvalidSessionId",
    "InvalidTransition",
    "JidoTasksError",
    "Outcome",
    "PersistenceError",
    "PoisonAction",
    "Progress",
    "ProtocolError",
    "RedisOutOfMemory",
    "RedisUnavailable",
    "SessionConfig",
    "SessionEntry",
    "SessionNotActive",
    "SessionNotFound",
    "SessionStatus",
    "Settings",
    "SnapshotCorrupt",
    "SnapshotInfo",
    "SnapshotNotFound",
    "SweepReport",
    "UnknownAction",
    "action",
    "telemetry",
]
