"""jido-tasks: isolated, stateful work sessions on Celery workers, with state in Redis.

What apps import: `Client`, `AsyncClient`, `action`, the errors, the models and `Settings`.
Each name is imported on first use (PEP 562), so `import jido_tasks` loads neither Celery
nor the worker side; `from jido_tasks import Client` loads the client only.

The packages, each importing only those below it: `cli` (the command line) and `worker`
(the Celery side) over `client` (the two clients) over `ops` (sweep, snapshots, monitoring,
web) over `core` (the rules, no I/O of its own) over `store` (all that talks to Redis) over the
base modules here (`errors`, `models`, `settings`, `telemetry`). See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jido_tasks import telemetry
    from jido_tasks.client.aio import (
        AsyncActionHandle,
        AsyncClient,
    )
    from jido_tasks.client.mailbox import (
        ActionHandle,
    )
    from jido_tasks.client.sync import (
        Client,
    )
    from jido_tasks.core.actions import (
        ActionContext,
        action,
    )
    from jido_tasks.errors import (
        ActionCancelled,
        ActionExpired,
        ActionFailed,
        ActionNotFound,
        ActionTimeLimitExceeded,
        ActionTimeout,
        ConfigError,
        InvalidArgument,
        InvalidEntry,
        InvalidEvent,
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
    from jido_tasks.models import (
        ActionError,
        ActionRecord,
        ActionStatus,
        Event,
        Outcome,
        Progress,
        SessionConfig,
        SessionEntry,
        SessionList,
        SessionStatus,
    )
    from jido_tasks.ops.snapshots.service import (
        SnapshotInfo,
    )
    from jido_tasks.ops.sweep import (
        SweepReport,
    )
    from jido_tasks.settings import (
        Settings,
    )

_WHERE: dict[str, str] = {
    "action": "jido_tasks.core.actions",
    "ActionCancelled": "jido_tasks.errors",
    "ActionContext": "jido_tasks.core.actions",
    "ActionError": "jido_tasks.models",
    "ActionExpired": "jido_tasks.errors",
    "ActionFailed": "jido_tasks.errors",
    "ActionHandle": "jido_tasks.client.mailbox",
    "ActionNotFound": "jido_tasks.errors",
    "ActionRecord": "jido_tasks.models",
    "ActionStatus": "jido_tasks.models",
    "ActionTimeLimitExceeded": "jido_tasks.errors",
    "ActionTimeout": "jido_tasks.errors",
    "AsyncActionHandle": "jido_tasks.client.aio",
    "AsyncClient": "jido_tasks.client.aio",
    "Client": "jido_tasks.client.sync",
    "ConfigError": "jido_tasks.errors",
    "Event": "jido_tasks.models",
    "InvalidArgument": "jido_tasks.errors",
    "InvalidEntry": "jido_tasks.errors",
    "InvalidEvent": "jido_tasks.errors",
    "InvalidParams": "jido_tasks.errors",
    "InvalidSessionId": "jido_tasks.errors",
    "InvalidTransition": "jido_tasks.errors",
    "JidoTasksError": "jido_tasks.errors",
    "Outcome": "jido_tasks.models",
    "PersistenceError": "jido_tasks.errors",
    "PoisonAction": "jido_tasks.errors",
    "Progress": "jido_tasks.models",
    "ProtocolError": "jido_tasks.errors",
    "RedisOutOfMemory": "jido_tasks.errors",
    "RedisUnavailable": "jido_tasks.errors",
    "SessionConfig": "jido_tasks.models",
    "SessionEntry": "jido_tasks.models",
    "SessionList": "jido_tasks.models",
    "SessionNotActive": "jido_tasks.errors",
    "SessionNotFound": "jido_tasks.errors",
    "SessionStatus": "jido_tasks.models",
    "Settings": "jido_tasks.settings",
    "SnapshotCorrupt": "jido_tasks.errors",
    "SnapshotInfo": "jido_tasks.ops.snapshots.service",
    "SnapshotNotFound": "jido_tasks.errors",
    "SweepReport": "jido_tasks.ops.sweep",
    "telemetry": "jido_tasks.telemetry",
    "UnknownAction": "jido_tasks.errors",
}

__all__ = [
    "ActionCancelled",
    "ActionContext",
    "ActionError",
    "ActionExpired",
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
    "InvalidEvent",
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
    "SessionList",
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


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it in this module."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(module) if module == f"{__name__}.{name}" else getattr(
        importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
