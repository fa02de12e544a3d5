"""Every error jido-tasks raises descends from `JidoTasksError` and carries its context.

Each error keeps what it is about (session id, action id, key or path) as attributes as well as
in its message, so callers can act on it without parsing text.
"""

from __future__ import annotations

from typing import Any


class JidoTasksError(Exception):
    """Base of all jido-tasks errors."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.session_id = session_id

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable/copyable with their keyword context (used by multiprocessing).
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[JidoTasksError], state: dict[str, Any]) -> JidoTasksError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigError(JidoTasksError):
    """A setting is missing or invalid; `setting` names it (as its environment variable)."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"invalid setting {setting}: {problem}")
        self.setting = setting
        self.problem = problem


class InvalidSessionId(JidoTasksError):
    """A session id from outside is malformed; it never reached a Redis key or a path."""

    def __init__(self, session_id: object, problem: str) -> None:
        shown = repr(session_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"invalid session id {shown}: {problem} (expected 'session_' + 32 lowercase hex)",
            session_id=None,
        )
        self.invalid_id = session_id
        self.problem = problem


class SessionNotFound(JidoTasksError):
    """No session with this id is in the registry (never created, or already purged)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} not found", session_id=session_id)


class SessionNotActive(JidoTasksError):
    """The session exists but does not accept work in its current status."""

    def __init__(self, session_id: str, status: str) -> None:
        super().__init__(
            f"session {session_id} is {status} and does not accept work", session_id=session_id
        )
        self.status = status


class InvalidTransition(JidoTasksError):
    """A status change that the session lifecycle does not allow."""

    def __init__(self, session_id: str | None, from_status: str, to_status: str) -> None:
        super().__init__(
            f"session {session_id}: transition {from_status} -> {to_status} is not allowed",
            session_id=session_id,
        )
        self.from_status = from_status
        self.to_status = to_status


class InvalidEntry(JidoTasksError):
    """A registry row in Redis could not be read as a `SessionEntry` (corrupt or foreign data)."""

    def __init__(self, session_id: str, key: str, problem: str) -> None:
        super().__init__(f"session {session_id}: registry row {key} is invalid: {problem}",
                         session_id=session_id)
        self.key = key
        self.problem = problem


class UnknownAction(JidoTasksError):
    """No action is registered under this name."""

    def __init__(self, name: str, session_id: str | None = None) -> None:
        super().__init__(f"unknown action {name!r}", session_id=session_id)
        self.action = name


class InvalidActionId(JidoTasksError):
    """A caller-chosen action id is malformed; it never reached a Redis key."""

    def __init__(self, action_id: object, session_id: str | None = None) -> None:
        shown = repr(action_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid action id {shown}: expected 'act_' + 32 lowercase hex, or a "
                         "lowercase uuid (a Celery task id)", session_id=session_id)
        self.invalid_id = action_id


class ActionIdConflict(JidoTasksError):
    """An action id already names another action (different name or params) in the session;
    a resend of the same action with the same id is accepted, once."""

    def __init__(self, session_id: str, action_id: str, action: str) -> None:
        super().__init__(f"session {session_id}: action id {action_id} is already used by "
                         f"another action or other params (this send: {action!r}); choose a "
                         "new id", session_id=session_id)
        self.action_id = action_id
        self.action = action


class InvalidParams(JidoTasksError):
    """An action's params are not a JSON object, are too large, or fail the action's model."""

    def __init__(self, session_id: str | None, action: str, problem: str) -> None:
        super().__init__(f"session {session_id}: invalid params for {action!r}: {problem}",
                         session_id=session_id)
        self.action = action
        self.problem = problem


class ActionNotFound(JidoTasksError):
    """No record of this action id for the session (never sent, or trimmed/purged)."""

    def __init__(self, session_id: str, action_id: str) -> None:
        super().__init__(f"session {session_id}: action {action_id} not found",
                         session_id=session_id)
        self.action_id = action_id


class ActionExpired(ActionNotFound):
    """The action was sent (the caller holds its handle) and has finished, but its record is
    gone: older than `record_retention`, or beyond the last `keep_results` of its session.
    Its outcome reached whoever waited for it when it finished (the finish message)."""

    def __init__(self, session_id: str, action_id: str, retention: float, keep: int) -> None:
        JidoTasksError.__init__(
            self, f"session {session_id}: action {action_id} finished but its record is gone "
            f"(records are kept {retention:g}s and the last {keep} per session)",
            session_id=session_id)
        self.action_id = action_id
        self.retention = retention
        self.keep = keep


class ActionFailed(JidoTasksError):
    """The action ran and failed; `error_type` and `error_message` come from the worker."""

    def __init__(self, session_id: str, action_id: str, action: str, error_type: str,
                 error_message: str) -> None:
        super().__init__(
            f"session {session_id}: action {action} ({action_id}) failed: "
            f"{error_type}: {error_message}",
            session_id=session_id,
        )
        self.action_id = action_id
        self.action = action
        self.error_type = error_type
        self.error_message = error_message


class ActionCancelled(JidoTasksError):
    """The action was cancelled before it was applied; the state never saw it."""

    def __init__(self, session_id: str, action_id: str, action: str, reason: str) -> None:
        super().__init__(
            f"session {session_id}: action {action} ({action_id}) was cancelled: {reason}",
            session_id=session_id,
        )
        self.action_id = action_id
        self.action = action
        self.reason = reason


class SnapshotNotFound(JidoTasksError):
    """No saved snapshot under this id in the configured store."""

    def __init__(self, saved_id: str, where: str) -> None:
        super().__init__(f"snapshot {saved_id} not found in {where}", session_id=saved_id)
        self.where = where


class SnapshotCorrupt(JidoTasksError):
    """A stored snapshot cannot be read: `where` names the key or file, `problem` what is wrong."""

    def __init__(self, saved_id: str | None, where: str, problem: str) -> None:
        super().__init__(f"snapshot {where} is corrupt: {problem}", session_id=saved_id)
        self.where = where
        self.problem = problem


class SnapshotTooLarge(JidoTasksError):
    """A session's snapshot would be larger or more deeply nested than a snapshot may be read
    back (`setting` names the bound); nothing was saved."""

    def __init__(self, session_id: str, problem: str, setting: str) -> None:
        super().__init__(f"session {session_id}: snapshot not saved: {problem} (raise "
                         f"{setting} to save it)", session_id=session_id)
        self.problem = problem
        self.setting = setting


class PersistenceError(JidoTasksError):
    """The snapshot store cannot be used (missing or unwritable directory, ...)."""

    def __init__(self, where: str, problem: str, session_id: str | None = None) -> None:
        super().__init__(f"snapshot store {where}: {problem}", session_id=session_id)
        self.where = where
        self.problem = problem


class ActionTimeLimitExceeded(JidoTasksError):
    """An action ran past its time limit; it was stopped and its state change discarded."""

    def __init__(self, session_id: str, action_id: str, action: str, limit: float) -> None:
        super().__init__(
            f"session {session_id}: action {action} ({action_id}) exceeded its time limit of "
            f"{limit:g}s",
            session_id=session_id,
        )
        self.action_id = action_id
        self.action = action
        self.limit = limit


class PoisonAction(JidoTasksError):
    """An action's worker died every time it ran; it was failed without running again."""

    def __init__(self, session_id: str, action_id: str, action: str, attempts: int) -> None:
        super().__init__(
            f"session {session_id}: action {action} ({action_id}) was failed as poison after "
            f"{attempts} claims (its worker died or lost its lease each time)",
            session_id=session_id,
        )
        self.action_id = action_id
        self.action = action
        self.attempts = attempts


class RedisUnavailable(JidoTasksError):
    """Redis could not be reached (or timed out); nothing was changed by the failed call."""

    def __init__(self, where: str, problem: str, session_id: str | None = None) -> None:
        super().__init__(f"cannot reach Redis at {where}: {problem}", session_id=session_id)
        self.where = where
        self.problem = problem


class LayoutMismatch(JidoTasksError):
    """The namespace's data in Redis is stored in another key layout than the settings ask for
    (`stored` and `wanted` describe both): run `jido-tasks migrate` (data of the layout before
    slot groups), or set `index_shards` back to the stored number."""

    def __init__(self, namespace: str, stored: str, wanted: str, remedy: str) -> None:
        super().__init__(f"namespace {namespace!r} in Redis is stored as {stored}, the settings "
                         f"ask for {wanted}: {remedy}")
        self.namespace = namespace
        self.stored = stored
        self.wanted = wanted
        self.remedy = remedy


class RedisAuthFailed(RedisUnavailable):
    """Redis refused the URL's credentials (a wrong user or password, or none given to a
    Redis that requires one): retrying cannot help, the URL must change. `where` is the URL
    with its password hidden."""

    def __init__(self, where: str, problem: str, session_id: str | None = None) -> None:
        JidoTasksError.__init__(
            self, f"Redis at {where} refused the credentials: {problem} (give the user and "
            "password in the URL: redis://user:password@host:port/db)", session_id=session_id)
        self.where = where
        self.problem = problem


class RedisOutOfMemory(JidoTasksError):
    """Redis refused a write because it reached `maxmemory` (policy `noeviction`); nothing of
    the refused call was written. Free memory or raise the limit, then retry."""

    def __init__(self, where: str, problem: str, session_id: str | None = None) -> None:
        super().__init__(f"Redis at {where} is out of memory: {problem}", session_id=session_id)
        self.where = where
        self.problem = problem


class InvalidArgument(JidoTasksError, ValueError):
    """An argument of a call (not an action's params) is invalid: `argument` names it and
    `operation` the call."""

    def __init__(self, operation: str, argument: str, problem: str,
                 session_id: str | None = None) -> None:
        super().__init__(f"{operation}: invalid {argument}: {problem}", session_id=session_id)
        self.operation = operation
        self.argument = argument
        self.problem = problem


class ActionTimeout(JidoTasksError, TimeoutError):
    """Waiting for an action took longer than `timeout` seconds. Only the wait ended: the
    action is still accepted and goes on; its outcome stays readable by its id."""

    def __init__(self, session_id: str, action_id: str, timeout: float | None) -> None:
        super().__init__(f"session {session_id}: action {action_id} did not finish within "
                         f"{timeout}s", session_id=session_id)
        self.action_id = action_id
        self.timeout = timeout


class ProtocolError(JidoTasksError):
    """A Lua script answered something its typed function does not know (a version mismatch
    between the scripts and the code, or foreign data under our keys)."""

    def __init__(self, script: str, reply: object, session_id: str | None = None) -> None:
        shown = repr(reply)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"script {script} gave an unexpected reply {shown}",
                         session_id=session_id)
        self.script = script
        self.reply = reply


class InvalidEvent(JidoTasksError, ValueError):
    """An action emitted an event with an invalid type or data (`ActionContext.emit`); the
    action fails with this error and nothing of it is committed."""

    def __init__(self, event_type: object, problem: str, session_id: str | None = None) -> None:
        shown = repr(event_type)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid event {shown}: {problem}", session_id=session_id)
        self.event_type = shown
        self.problem = problem
