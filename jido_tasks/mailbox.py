"""Client side of session work: send actions, follow them, cancel them.

`send` is one Lua call (store the request, append to the mailbox, touch activity, set the
"drain scheduled" flag); a Celery drain message is published only when the flag was newly set
(or found stale), so a hot session costs one message per batch, not per action.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from jido_tasks import telemetry
from jido_tasks.actions import check_params, get_action
from jido_tasks.constants import DRAIN_TASK
from jido_tasks.errors import (
    ActionCancelled,
    ActionFailed,
    ActionNotFound,
    SessionNotActive,
    SessionNotFound,
)
from jido_tasks.models import (
    ActionRecord,
    ActionStatus,
    JsonObject,
    new_action_id,
    validate_session_id,
)
from jido_tasks.redis_layer import RedisLayer, redis_errors

log = logging.getLogger(__name__)

# While waiting, the record is read again this often (seconds), in case a finish message was
# missed (e.g. pub/sub reconnected). Not a poll: the wait itself is on pub/sub.
RECHECK_EVERY = 1.0


def build_record(session_id: str, action_id: str, request: str | None,
                 outcome: str | None, running: bool) -> ActionRecord:
    """Assemble an `ActionRecord` from the stored request and outcome JSON."""
    if request is None and outcome is None:
        raise ActionNotFound(session_id, action_id)
    req: dict[str, Any] = json.loads(request) if request else {}
    out: dict[str, Any] = json.loads(outcome) if outcome else {}
    # No outcome yet: running if it heads the mailbox under a lease; a progress report also
    # records "running".
    status = out.get("status") or ("running" if running else "pending")
    error = out.get("error")
    if status == "cancelled" and error is None:
        error = {"type": "ActionCancelled", "message": out.get("reason", "")}
    return ActionRecord(
        id=action_id, session_id=session_id, action=req.get("action", "?"),
        params=req.get("params", {}), status=ActionStatus(status),
        attempts=int(out.get("attempts", 0)), result=out.get("result"), error=error,
        progress=out.get("progress"), created_at=float(req.get("created_at", 0.0)),
        finished_at=out.get("finished_at"),
    )


class Mailbox:
    """Sending and following actions for one namespace."""

    def __init__(self, layer: RedisLayer, celery: Any) -> None:
        self.layer = layer
        self.settings = layer.settings
        self.celery = celery
        self._local = threading.local()
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []

    def _request(self, session_id: str, action: str, params: Any) -> tuple[str, str]:
        """A new action id and its request JSON, after validating name and params."""
        spec = get_action(action, session_id)
        clean, _ = check_params(spec, params, session_id, self.settings.max_params_bytes)
        request = json.dumps({"action": action, "params": clean, "created_at": time.time()},
                             separators=(",", ":"))
        return new_action_id(), request

    def _accepted(self, session_id: str, res: list[Any]) -> bool:
        """Raise the typed error of a refused send; else whether to publish a drain."""
        if res[0] == "missing":
            raise SessionNotFound(session_id)
        if res[0] == "inactive":
            raise SessionNotActive(session_id, res[1])
        return bool(int(res[1]))

    @redis_errors
    def send(self, session_id: str, action: str, params: Any = None) -> ActionHandle:
        """Accept an action durably (or raise a typed error and enqueue nothing)."""
        validate_session_id(session_id)
        action_id, request = self._request(session_id, action, params)
        res = self.layer.run("send", session_id, action_id, request,
                             self.settings.lease_ttl * 3)
        if self._accepted(session_id, res):
            self.publish_drain(session_id)
        telemetry.emit("action_sent", session_id, action_id, action)
        return ActionHandle(self, session_id, action_id, action, request)

    @redis_errors
    def send_many(self, session_id: str,
                  actions: Iterable[tuple[str, Any] | str]) -> list[ActionHandle]:
        """Accept several actions, in order, all or none, in one round trip.

        Every name and params are validated first; then one MULTI/EXEC runs the send script
        for each, so no other client's action lands between them and a session that is not
        active refuses them all.
        """
        validate_session_id(session_id)
        items = [(a, None) if isinstance(a, str) else a for a in actions]
        prepared = [(name, *self._request(session_id, name, params)) for name, params in items]
        if not prepared:
            return []
        pipe = self.layer.redis.pipeline(transaction=True)
        for _, action_id, request in prepared:
            self.layer.run("send", session_id, action_id, request,
                           self.settings.lease_ttl * 3, client=pipe)
        results = pipe.execute()
        publish = [self._accepted(session_id, res) for res in results]
        if any(publish):
            self.publish_drain(session_id)
        for name, action_id, _ in prepared:
            telemetry.emit("action_sent", session_id, action_id, name)
        return [ActionHandle(self, session_id, action_id, name, request)
                for name, action_id, request in prepared]

    def publish_drain(self, session_id: str) -> None:
        """Publish a Celery drain message. A failure is logged, not raised: the action is
        already accepted, and the next send or the sweep publishes again (stale flag)."""
        try:
            self.celery.send_task(DRAIN_TASK, args=[session_id], queue=self.settings.queue)
        except Exception:  # broker down: recovery republishes
            log.exception("could not publish drain for session %s; recovery will retry",
                          session_id)

    @redis_errors
    def record(self, session_id: str, action_id: str) -> ActionRecord:
        validate_session_id(session_id)
        sk = self.layer.keys.session(session_id)
        pipe = self.layer.redis.pipeline(transaction=False)
        pipe.hget(sk.actions, action_id)
        pipe.hget(sk.results, action_id)
        pipe.lindex(sk.mailbox, 0)
        pipe.exists(sk.lease)
        request, outcome, head, leased = pipe.execute()
        return build_record(session_id, action_id, request, outcome,
                            running=(head == action_id and bool(leased)))

    @redis_errors
    def cancel(self, session_id: str, action_id: str, reason: str = "cancelled") -> bool:
        """Cancel a pending action; False if it is already running or finished."""
        validate_session_id(session_id)
        res = self.layer.run("cancel", session_id, action_id, reason, self.settings.keep_results)
        if res == "unknown":
            raise ActionNotFound(session_id, action_id)
        return bool(res == "cancelled")

    def listener(self) -> _Listener:
        """This thread's pub/sub listener (kept open: no connect per wait)."""
        found: _Listener | None = getattr(self._local, "listener", None)
        if found is None:
            found = _Listener(self.layer.redis)
            self._local.listener = found
            with self._lock:
                self._listeners.append(found)
        return found

    def close(self) -> None:
        with self._lock:
            for listener in self._listeners:
                listener.close()
            self._listeners.clear()
        self._local = threading.local()

    @redis_errors
    def wait(self, session_id: str, action_id: str, timeout: float | None,
             request: str | None = None, subscribed: bool = False) -> ActionRecord:
        """Block until the action finishes (pub/sub, no polling); `TimeoutError` after timeout.

        With `subscribed` (the channel was subscribed before the action was sent) and its
        `request` JSON, the record is built from the finish message alone: no read of Redis.
        """
        channel = self.layer.keys.session(session_id).done_channel
        listener = self.listener()
        if not subscribed:
            listener.subscribe(channel)
        try:
            if request is None or not subscribed:
                record = self.record(session_id, action_id)
                if record.status.finished:
                    return record
                request = json.dumps({"action": record.action, "params": record.params,
                                      "created_at": record.created_at})
            deadline = None if timeout is None else time.monotonic() + timeout
            check_at = time.monotonic() + RECHECK_EVERY
            while True:
                now = time.monotonic()
                remaining = RECHECK_EVERY if deadline is None else deadline - now
                if remaining <= 0:
                    raise TimeoutError(f"session {session_id}: action {action_id} did not "
                                       f"finish within {timeout}s")
                if now >= check_at:  # the safety net: a finish message that never came
                    check_at = now + RECHECK_EVERY
                    record = self.record(session_id, action_id)
                    if record.status.finished:
                        return record
                wait = min(remaining, max(check_at - now, 0.001))
                outcome = listener.next_outcome(action_id, wait)
                if outcome is not None:
                    return build_record(session_id, action_id, request, outcome, False)
        finally:
            listener.unsubscribe(channel)

    @redis_errors
    def call(self, session_id: str, action: str, params: Any, timeout: float | None) -> Any:
        """Send and wait: subscribe first, so the result arrives with no extra read.

        The subscription is not waited for: SUBSCRIBE is on the wire before the action is
        sent, and the finish is published only after a worker has claimed and run it. Should
        it ever be missed anyway, `wait` re-reads the record every RECHECK_EVERY seconds.
        """
        validate_session_id(session_id)
        channel = self.layer.keys.session(session_id).done_channel
        self.listener().subscribe(channel, confirm=False)
        try:
            handle = self.send(session_id, action, params)
        except BaseException:
            self.listener().unsubscribe(channel)
            raise
        return result_of(self.wait(session_id, handle.id, timeout, handle.request, True))


class _Listener:
    """One thread's pub/sub connection, subscribed to one done channel at a time."""

    def __init__(self, client: Any) -> None:
        self.pubsub = client.pubsub()

    def subscribe(self, channel: str, confirm: bool = True) -> None:
        """Subscribe; with `confirm`, wait for Redis to confirm, so no later finish can be
        missed (the confirmation is otherwise skipped by later reads)."""
        self.pubsub.subscribe(channel)
        if not confirm:
            return
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=1.0)
            if msg and msg["type"] == "subscribe" and msg["channel"] == channel:
                return
        raise TimeoutError(f"no confirmation of the subscription to {channel}")

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe without waiting (the confirmation is skipped by later reads)."""
        try:
            self.pubsub.unsubscribe(channel)
        except Exception:  # a broken connection: start afresh next time
            self.pubsub.reset()

    def next_outcome(self, action_id: str, timeout: float) -> str | None:
        """The outcome JSON if `action_id` finishes within `timeout`, else None."""
        msg = self.pubsub.get_message(timeout=timeout)
        if msg is None or msg["type"] != "message":
            return None
        aid, _, outcome = str(msg["data"]).partition("\n")
        return outcome if aid == action_id else None

    def close(self) -> None:
        self.pubsub.close()


def result_of(record: ActionRecord) -> Any:
    """The action's result, or the typed error it ended with."""
    if record.status is ActionStatus.SUCCEEDED:
        return record.result
    err_type = record.error.type if record.error else "Error"
    err_msg = record.error.message if record.error else ""
    if record.status is ActionStatus.CANCELLED:
        raise ActionCancelled(record.session_id, record.id, record.action, err_msg)
    raise ActionFailed(record.session_id, record.id, record.action, err_type, err_msg)


class ActionHandle:
    """A caller's handle on one sent action."""

    def __init__(self, mailbox: Mailbox, session_id: str, action_id: str, action: str,
                 request: str | None = None) -> None:
        self._mailbox = mailbox
        self.session_id = session_id
        self.id = action_id
        self.action = action
        self.request = request

    def __repr__(self) -> str:
        return f"ActionHandle({self.session_id!r}, {self.id!r}, {self.action!r})"

    def record(self) -> ActionRecord:
        """Everything known of the action: status, attempts, result or error, progress."""
        return self._mailbox.record(self.session_id, self.id)

    def status(self) -> ActionStatus:
        return self.record().status

    def progress(self) -> JsonObject | None:
        rec = self.record()
        return None if rec.progress is None else rec.progress.model_dump()

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises `ActionFailed`, `ActionCancelled` or `TimeoutError`."""
        return result_of(self._mailbox.wait(self.session_id, self.id, timeout))

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel if still pending; True if cancelled, False if running or finished."""
        return self._mailbox.cancel(self.session_id, self.id, reason)
