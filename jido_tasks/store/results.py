"""By-name results in the Celery result backend: what `AsyncResult(id).get()` reads.

An action that came as a `jido_tasks.send` message (its request says `reply_to: celery`) has
its outcome stored in the Celery result backend under its id, the message's task id, so
`AsyncResult(id).get()` in any Celery client returns its result or raises its error.
Finishing a by-name action also queued its id in the session's `replies` list (`_lib.lua`),
acknowledged with the write (`deliver`): the results of one commit and their acknowledgement go
in one MULTI/EXEC when the backend is the session's Redis (else a pipeline, then the
acknowledgement), so leftovers of a dead worker or of a cancel are stored by the next by-name
commit, the cancelling client (sync or async) or the sweep.

Errors travel as Celery's JSON exception form, `{exc_type, exc_message, exc_module}`, with
`exc_module` a name no client imports (or `builtins` for a builtin exception type): every
client rebuilds an exception whose class name is the error type and whose message is the
action's message, whether or not it has jido_tasks installed.
"""

from __future__ import annotations

import builtins
import logging
from typing import Any

import redis
from celery import states
from celery.backends.redis import RedisBackend

from jido_tasks.models import ActionStatus, Outcome
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer

log = logging.getLogger(__name__)

REMOTE_MODULE = "jido_tasks.remote"
"""The `exc_module` of errors sent to Celery clients: never importable, so clients rebuild
the error by its type name (see module doc)."""


def remote_error(error_type: str, message: str) -> Exception:
    """An exception named `error_type` carrying `message`, serialized by Celery as
    `{exc_type: error_type, exc_message: [message], exc_module: ...}` (see `exc_module`)."""
    def reduce(self: Exception) -> tuple[Any, ...]:
        # Picklable by value, so Celery's worker does not wrap it (it checks picklability).
        return remote_error, (error_type, message)

    cls: type[Exception] = type(error_type, (Exception,), {
        "__module__": exc_module(error_type), "__qualname__": error_type,
        "__reduce__": reduce})
    return cls(message)


def exc_module(error_type: str) -> str:
    found = getattr(builtins, error_type, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return "builtins"
    return REMOTE_MODULE


def celery_result(outcome: Outcome) -> tuple[Any, str]:
    """An outcome as Celery stores it: (result, SUCCESS) or (the error's JSON form,
    FAILURE) for a failed, cancelled or poison action."""
    if outcome.status is ActionStatus.SUCCEEDED:
        return outcome.result, states.SUCCESS
    err_type = outcome.error.type if outcome.error else "ActionFailed"
    message = outcome.error.message if outcome.error else ""
    return ({"exc_type": err_type, "exc_message": [message],
             "exc_module": exc_module(err_type)}, states.FAILURE)


def result_writes(backend: Any, items: list[tuple[str, Outcome]],
                  ) -> list[tuple[Any, ...]] | None:
    """What Celery's Redis backend writes for by-name actions' outcomes (SET with the backend's
    expiry + PUBLISH each, exactly what `RedisBackend.set` writes, with the meta of
    `_store_result`), as commands for one pipeline; None for other backends.

    Without its GET-before-SET: an action's outcome is committed once and never changes, so a
    second write (a redelivered send, the sweep's leftovers) writes the same meta.
    """
    if not isinstance(backend, RedisBackend) or getattr(backend, "client", None) is None:
        return None
    rb: Any = backend  # Celery's RedisBackend: typed too loosely for strict mypy
    writes: list[tuple[Any, ...]] = []
    for action_id, outcome in items:
        result, state = celery_result(outcome)
        meta = rb._get_result_meta(result=rb.encode_result(result, state), state=state,
                                   traceback=None, request=None)
        meta["task_id"] = action_id
        value = rb.encode(meta)
        key = rb.get_key_for_task(action_id)
        expires = failure_expires(rb) if state == states.FAILURE else rb.expires
        writes.append(("SET", key, value, "EX", int(expires)) if expires
                      else ("SET", key, value))
        writes.append(("PUBLISH", key, value))
    return writes


def failure_expires(backend: Any) -> Any:
    """How long Celery keeps a failed task's result: `result_failure_expires`, a backend
    attribute from Celery 5.7 on; before it (and on backends without it), `expires`, as
    `RedisBackend.set` does there."""
    return getattr(backend, "failure_expires", backend.expires)


def store_outcomes(backend: Any, items: list[tuple[str, Outcome]]) -> None:
    """Store by-name actions' outcomes in the Celery result backend under their ids: with
    Celery's Redis backend all of them in one pipeline (`result_writes`), other backends get
    `store_result` per item."""
    if not items:
        return
    writes = result_writes(backend, items)
    if writes is None:
        for action_id, outcome in items:
            result, state = celery_result(outcome)
            backend.store_result(action_id, result, state)
        return
    with backend.client.pipeline(transaction=False) as pipe:
        for command in writes:
            pipe.execute_command(*command)
        pipe.execute()


DELIVER_CHUNK = 500
"""Most leftover results one `delivered` call hands back."""
DELIVER_ROUNDS = 10
"""Most `delivered` calls of one `deliver`: the rest is left for the next one (the sweep)."""


def deliver(layer: RedisLayer, backend: Any, session_id: str,
            items: list[tuple[str, Outcome]]) -> int:
    """Store the results of by-name actions `items` (empty: only leftovers), acknowledge them
    (the session's `replies` list), and do the same for what is still queued there: results a
    dead worker did not store, actions a client cancelled. How many results were stored."""
    stored = 0
    acks = [action_id for action_id, _ in items]
    for _ in range(DELIVER_ROUNDS):
        left = _store_and_ack(layer, backend, session_id, items, acks)
        stored += len(items)
        if not left:
            break
        items = [(action_id, outcome) for action_id, outcome in left if outcome is not None]
        acks = [action_id for action_id, _ in left]
    return stored


def _store_and_ack(layer: RedisLayer, backend: Any, session_id: str,
                   items: list[tuple[str, Outcome]], acks: list[str],
                   ) -> list[tuple[str, Outcome | None]]:
    """Store `items`' results, then acknowledge `acks`; the leftovers `delivered` hands back.

    When the result backend is the session's own Redis (the default), one MULTI/EXEC does
    both, in one round trip: Redis refuses a transaction a command of which it refused
    (out of memory), so no id is acknowledged without its result. Elsewhere, two round trips.
    """
    ack = scripts.delivered(session_id, action_ids=acks, limit=DELIVER_CHUNK)
    writes = result_writes(backend, items) if items else []
    if writes is None or not same_redis(layer, backend):
        store_outcomes(backend, items)
        return layer.call(ack)
    pipe = layer.redis.pipeline(transaction=True)
    for command in writes:
        pipe.execute_command(*command)
    pipe.execute_command(*ack.evalsha(layer))
    reply = pipe.execute(raise_on_error=False)[-1]
    if isinstance(reply, redis.exceptions.NoScriptError):  # the results are stored
        return layer.call(ack)
    if isinstance(reply, Exception):
        raise reply
    return ack.decode(reply)


def same_redis(layer: RedisLayer, backend: Any) -> bool:
    """True if Celery's result backend writes to the database `layer` uses."""
    theirs = getattr(backend, "connparams", None) or {}
    ours = getattr(getattr(layer.redis, "connection_pool", None), "connection_kwargs", {})
    return bool(theirs) and all(theirs.get(k) == ours.get(k)
                                for k in ("host", "port", "db", "path"))


def deliver_quietly(layer: RedisLayer, backend: Any, session_id: str) -> None:
    """`deliver` the session's leftovers after a cancel or termination; a failure is logged
    (the sweep stores them later)."""
    try:
        deliver(layer, backend, session_id, [])
    except Exception:
        log.warning("session %s: could not store the results of cancelled by-name actions "
                    "now; the sweep will", session_id, exc_info=True)
