"""Client side of session work: send actions, follow them, cancel them.

`send` is one Lua call (store the request, append to the mailbox, touch activity, set the
"drain scheduled" flag); a Celery drain message is published only when the flag was newly set
(or found stale), so a hot session costs one message per batch, not per action.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from jido_tasks import telemetry
from jido_tasks.actions import check_params, get_action
from jido_tasks.dispatch import publish_drain
from jido_tasks.errors import (
    ActionCancelled,
    ActionFailed,
    ActionNotFound,
    ActionTimeout,
    RedisUnavailable,
)
from jido_tasks.models import (
    ActionRecord,
    ActionRequest,
    ActionStatus,
    JsonObject,
    Outcome,
    new_action_id,
    validate_session_id,
)
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer, redis_errors

log = logging.getLogger(__name__)

# While waiting, the record is read again this often (seconds), in case a finish message was
# missed (e.g. pub/sub reconnected). Not a poll: the wait itself is on pub/sub.
RECHECK_EVERY = 1.0
# A wait with no timeout gives up after Redis stayed unreachable this long (seconds).
OUTAGE_LIMIT = 60.0
_LOST = (redis.ConnectionError, redis.TimeoutError)


class Mailbox:
    """Sending and following actions for one namespace."""

    def __init__(self, layer: RedisLayer, celery: Any) -> None:
        self.layer = layer
        self.settings = layer.settings
        self.celery = celery
        self._local = threading.local()
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []

    def _request(self, session_id: str, action: str, params: Any) -> tuple[str, ActionRequest]:
        """A new action id and its request, after validating name and params."""
        spec = get_action(action, session_id)
        clean, _ = check_params(spec, params, session_id, self.settings.max_params_bytes)
        return new_action_id(), ActionRequest(action=action, params=clean,
                                              created_at=time.time())

    def _send_op(self, session_id: str, action_id: str, request: str) -> scripts.Op[bool]:
        return scripts.send(session_id, action_id=action_id, request=request,
                            stale_after=self.settings.stale_after)

    @redis_errors
    def send(self, session_id: str, action: str, params: Any = None) -> ActionHandle:
        """Accept an action durably (or raise a typed error and enqueue nothing)."""
        validate_session_id(session_id)
        action_id, request = self._request(session_id, action, params)
        request_json = request.to_json()
        if self.layer.call(self._send_op(session_id, action_id, request_json)):
            publish_drain(self.celery, self.settings, session_id)
        telemetry.dispatch.action_sent(session_id, action_id, action)
        return ActionHandle(self, session_id, action_id, action, request_json)

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
        requests = [(name, action_id, request.to_json())
                    for name, action_id, request in prepared]
        replies = self.layer.call_many(
            [self._send_op(session_id, action_id, request) for _, action_id, request in requests],
            transaction=True)
        for reply in replies:
            if isinstance(reply, Exception):  # the same refusal for all (one transaction)
                raise reply
        if any(replies):
            publish_drain(self.celery, self.settings, session_id)
        for name, action_id, _ in requests:
            telemetry.dispatch.action_sent(session_id, action_id, name)
        return [ActionHandle(self, session_id, action_id, name, request)
                for name, action_id, request in requests]

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
        if request is None and outcome is None:
            raise ActionNotFound(session_id, action_id)
        return ActionRecord.build(
            session_id, action_id,
            ActionRequest.model_validate_json(request) if request else None,
            Outcome.model_validate_json(outcome) if outcome else None,
            running=(head == action_id and bool(leased)))

    @redis_errors
    def cancel(self, session_id: str, action_id: str, reason: str = "cancelled") -> bool:
        """Cancel a pending action; False if it is already running or finished."""
        validate_session_id(session_id)
        tag = self.layer.call(scripts.cancel(session_id, action_id=action_id, reason=reason,
                                             keep=self.settings.keep_results))
        return tag is scripts.Tag.CANCELLED

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
        """Block until the action finishes (pub/sub, no polling); `ActionTimeout` after
        `timeout` seconds (the action itself goes on).

        With `subscribed` (the channel was subscribed before the action was sent) and its
        `request` JSON, the record is built from the finish message alone: no read of Redis.
        """
        channel = self.layer.keys.session(session_id).done_channel
        listener = self.listener()
        if not subscribed:
            listener.subscribe(channel)
        try:
            req: ActionRequest | None = None
            if request is None or not subscribed:
                record = self.record(session_id, action_id)
                if record.status.finished:
                    return record
                req = ActionRequest(action=record.action, params=record.params,
                                    created_at=record.created_at)
            else:
                req = ActionRequest.model_validate_json(request)
            deadline = None if timeout is None else time.monotonic() + timeout
            check_at = time.monotonic() + RECHECK_EVERY
            while True:
                now = time.monotonic()
                remaining = RECHECK_EVERY if deadline is None else deadline - now
                if remaining <= 0:
                    raise ActionTimeout(session_id, action_id, timeout)
                if now >= check_at:  # the safety net: a finish message that never came
                    check_at = now + RECHECK_EVERY
                    record = self.record(session_id, action_id)
                    if record.status.finished:
                        return record
                wait = min(remaining, max(check_at - now, 0.001))
                try:
                    outcome = listener.next_outcome(action_id, wait)
                except _LOST:  # Redis restarted or the connection broke: the action goes on
                    record = self._reconnect(listener, channel, session_id, action_id,
                                             deadline)
                    if record.status.finished:
                        return record
                    check_at = time.monotonic() + RECHECK_EVERY
                    continue
                if outcome is not None:
                    return ActionRecord.build(session_id, action_id, req, outcome, False)
        finally:
            listener.unsubscribe(channel)

    def _reconnect(self, listener: _Listener, channel: str, session_id: str, action_id: str,
                   deadline: float | None) -> ActionRecord:
        """Subscribe again on a new connection, then re-read the record (a finish published
        while the connection was down is found there). Retried until the wait's deadline (or
        OUTAGE_LIMIT without one); past it, `RedisUnavailable`."""
        give_up = deadline if deadline is not None else time.monotonic() + OUTAGE_LIMIT
        pause = 0.05
        while True:
            try:
                listener.reset()
                listener.subscribe(channel)
                return self.record(session_id, action_id)
            except (*_LOST, RedisUnavailable) as exc:
                if time.monotonic() + pause >= give_up:
                    raise  # typed by the caller's redis_errors if it is not yet
                log.info("waiting for Redis to come back (%s)", exc)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    @redis_errors
    def call(self, session_id: str, action: str, params: Any, timeout: float | None) -> Any:
        """Send and wait: subscribe first, so the result arrives with no extra read.

        The subscription is not waited for: SUBSCRIBE is on the wire before the action is
        sent, and the finish is published only after a worker has claimed and run it. Should
        it ever be missed anyway, `wait` re-reads the record every RECHECK_EVERY seconds.
        """
        validate_session_id(session_id)
        channel = self.layer.keys.session(session_id).done_channel
        listener = self.listener()
        listener.subscribe(channel, confirm=False)
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
        missed (the confirmation is otherwise skipped by later reads). A connection that
        broke since its last use (Redis restarted) is replaced once."""
        try:
            self.pubsub.subscribe(channel)
        except _LOST:
            self.pubsub.reset()
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

    def reset(self) -> None:
        """Drop the connection and every subscription (the next subscribe connects anew)."""
        self.pubsub.reset()

    def next_outcome(self, action_id: str, timeout: float) -> Outcome | None:
        """The outcome if `action_id` finishes within `timeout`, else None."""
        msg = self.pubsub.get_message(timeout=timeout)
        if msg is None or msg["type"] != "message":
            return None
        aid, outcome = scripts.parse_finish(str(msg["data"]))
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
        """The result; raises `ActionFailed`, `ActionCancelled` or `ActionTimeout` (a
        `TimeoutError`: only the wait ended, the action goes on)."""
        return result_of(self._mailbox.wait(self.session_id, self.id, timeout))

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel if still pending; True if cancelled, False if running or finished."""
        return self._mailbox.cancel(self.session_id, self.id, reason)
