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
from redis.exceptions import ClusterError, NoScriptError, RedisClusterException

from jido_tasks import telemetry
from jido_tasks.core.drains import publish_drain
from jido_tasks.core.requests import (
    SendItem,
    cancel_op,
    check_timeout,
    normalize,
    prepare,
    record_op,
    result_of,
    send_many_op,
    send_op,
)
from jido_tasks.core.waiter import (
    Listen,
    Recheck,
    Reconnect,
    Step,
    Waiter,
    WaitPolicy,
)
from jido_tasks.errors import ActionTimeout
from jido_tasks.models import (
    ActionRecord,
    ActionRequest,
    ActionStatus,
    JsonObject,
    Outcome,
    ReplyTo,
    validate_session_id,
)
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer, redis_errors
from jido_tasks.store.results import deliver_quietly

log = logging.getLogger(__name__)

LOST = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException,
        NoScriptError)
"""Failures that mean Redis (or the node of a key) cannot be reached, or was restarted under a
call (a script loaded on the Redis that went away, run on the one that came back): a wait
reconnects and reads again."""


class Mailbox:
    """Sending and following actions for one namespace."""

    def __init__(self, layer: RedisLayer, celery: Any) -> None:
        self.layer = layer
        self.settings = layer.settings
        self.celery = celery
        self._local = threading.local()
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []
        self.policy = WaitPolicy.of(self.settings)
        """When waits re-read, reconnect and give up (from the settings)."""

    @redis_errors
    def send(self, session_id: str, action: str, params: Any = None,
             action_id: str | None = None, reply_to: ReplyTo | None = None) -> ActionHandle:
        """Accept an action durably (or raise a typed error and enqueue nothing).

        With a caller-chosen `action_id`, a resend of the same action (after a timeout or a
        dropped connection) is accepted once; the id reused for other content raises
        `ActionIdConflict`.
        """
        return self.accept(session_id, action, params, action_id, reply_to)[0]

    def accept(self, session_id: str, action: str, params: Any = None,
               action_id: str | None = None, reply_to: ReplyTo | None = None,
               publish: bool = True, claim_for: scripts.ClaimFor | None = None,
               ) -> tuple[ActionHandle, scripts.Sent]:
        """`send`, also returning what the send script did (the by-name task needs to know a
        duplicate and its outcome). Without `publish`, a drain the send asks for
        (`Sent.publish`) is the caller's to run or publish; with `claim_for` (a worker), the
        send claims the lease for that drain when it is free (`Sent.claimed`)."""
        action_id, request = prepare(self.settings, session_id, action, params, action_id,
                                     reply_to)
        sent = self.layer.call(send_op(self.settings, session_id, action_id, request,
                                       claim_for=claim_for))
        if sent.publish and publish:
            publish_drain(self.celery, self.settings, session_id)
        if not sent.duplicate:
            telemetry.dispatch.action_sent(session_id, action_id, action)
        return ActionHandle(self, session_id, action_id, action, request.to_json()), sent

    @redis_errors
    def send_many(self, session_id: str, actions: Iterable[SendItem]) -> list[ActionHandle]:
        """Accept several actions, in order, all or none, in one round trip.

        Items are `(name, params)`, `(name, params, action_id)` or a bare name. Every item is
        validated first; then one script call checks every id, then queues them all, so no
        other client's action lands between them and a session that is not active refuses
        them all. An item whose id was accepted before (a retried `send_many`) is not sent
        again; one whose id names other content raises `ActionIdConflict` and nothing is
        queued.
        """
        validate_session_id(session_id)
        prepared = [prepare(self.settings, session_id, name, params, aid)
                    for name, params, aid in normalize(actions, session_id)]
        if not prepared:
            return []
        many = self.layer.call(send_many_op(self.settings, session_id, prepared))
        if many.publish:
            publish_drain(self.celery, self.settings, session_id)
        for (action_id, request), sent in zip(prepared, many.sent, strict=True):
            if not sent.duplicate:
                telemetry.dispatch.action_sent(session_id, action_id, request.action)
        return [ActionHandle(self, session_id, action_id, request.action, request.to_json())
                for action_id, request in prepared]

    @redis_errors
    def record(self, session_id: str, action_id: str, sent: bool = False) -> ActionRecord:
        """What is known of an action (one Lua read); see `record_op`."""
        return self.layer.call(record_op(self.settings, session_id, action_id, sent))

    @redis_errors
    def cancel(self, session_id: str, action_id: str, reason: str = "cancelled") -> bool:
        """Cancel a pending action; False if it is already running or finished."""
        tag = self.layer.call(cancel_op(self.settings, session_id, action_id, reason))
        if tag is scripts.Tag.CANCELLED and self.celery is not None:
            # One that came by name gets its Celery result now (or from the sweep).
            deliver_quietly(self.layer, self.celery.backend, session_id)
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
        `timeout` seconds (the action itself goes on); `ActionExpired` if its record is gone
        (it finished longer than `record_retention` ago, or is beyond `keep_results`).

        Nothing the wait needs can vanish meanwhile: a pending action's request is never
        dropped, and once subscribed the outcome comes with the finish message, whatever
        becomes of the record afterwards. While Redis is unreachable the wait reconnects (the
        `reconnect_backoff` schedule) until its timeout, or `redis_outage_limit` without
        one; then `RedisUnavailable`. See `jido_tasks.core.waiter`.

        With `subscribed` (the channel was subscribed before the action was sent) and its
        `request` JSON, the record is built from the finish message alone: no read of Redis.
        """
        check_timeout("wait", timeout, session_id)
        return _Follow(self, session_id, action_id, timeout).run(request, subscribed)

    @redis_errors
    def call(self, session_id: str, action: str, params: Any, timeout: float | None,
             action_id: str | None = None) -> Any:
        """Send and wait: subscribe first, so the result arrives with no extra read.

        The subscription is not waited for: SUBSCRIBE is on the wire before the action is
        sent, and the finish is published only after a worker has claimed and run it. Should
        it ever be missed anyway, `wait` re-reads the record (`wait_recheck_interval`).
        """
        validate_session_id(session_id)
        check_timeout("call", timeout, session_id)
        channel = self.layer.keys.session(session_id).done_channel
        listener = self.listener()
        listener.subscribe(channel, confirm=False)
        try:
            handle, sent = self.accept(session_id, action, params, action_id)
        except BaseException:
            self.listener().unsubscribe(channel)
            raise
        if sent.duplicate:  # a retried call: the original may have finished long ago
            return result_of(self.wait(session_id, handle.id, timeout))
        return result_of(self.wait(session_id, handle.id, timeout, handle.request, True))


class _Follow:
    """One sync wait: the I/O of the steps its `Waiter` decides (listen on the thread's
    pub/sub connection, re-read the record, reconnect after a backoff delay, give up)."""

    def __init__(self, mailbox: Mailbox, session_id: str, action_id: str,
                 timeout: float | None) -> None:
        now = time.monotonic()
        self.mailbox = mailbox
        self.session_id = session_id
        self.action_id = action_id
        self.timeout = timeout
        self.channel = mailbox.layer.keys.session(session_id).done_channel
        self.listener = mailbox.listener()
        self.waiter = Waiter(mailbox.policy, now)
        self.waiter.limit(now, timeout)
        self.request: ActionRequest | None = None
        self.problem: Exception | None = None
        """The last failure to reach Redis (raised when the wait gives up on it)."""

    def run(self, request: str | None, subscribed: bool) -> ActionRecord:
        try:
            found = self._start(request, subscribed)
            while found is None:
                found = self._step(self.waiter.next(time.monotonic()))
            return found
        finally:
            self.listener.unsubscribe(self.channel)

    def _start(self, request: str | None, subscribed: bool) -> ActionRecord | None:
        """Subscribe (unless `subscribed`) and read the record (unless its request is
        known): the finished record, or None to go on waiting."""
        if subscribed and request is not None:
            self.request = ActionRequest.model_validate_json(request)
            return None
        return self._connect(subscribe=not subscribed)

    def _step(self, step: Step) -> ActionRecord | None:
        if isinstance(step, Listen):
            return self._listen(step.seconds)
        if isinstance(step, Recheck):
            return self._recheck()
        if isinstance(step, Reconnect):
            time.sleep(step.delay)
            return self._connect(subscribe=True, fresh=True)
        if step.outage and self.problem is not None:
            raise self.problem  # typed by `wait`'s redis_errors
        raise ActionTimeout(self.session_id, self.action_id, self.timeout)

    def _connect(self, subscribe: bool, fresh: bool = False) -> ActionRecord | None:
        """(Re)subscribe, then read the record: a finish published while nobody listened is
        found there."""
        try:
            if fresh:
                self.listener.reset()
            if subscribe:
                self.listener.subscribe(self.channel)
            record = self._read()
        except LOST as exc:
            self._lost(exc, attempt=True)
            return None
        self.waiter.connected(time.monotonic())
        if record.status.finished:
            return record
        self.request = ActionRequest(action=record.action, params=record.params,
                                     created_at=record.created_at)
        return None

    def _listen(self, seconds: float) -> ActionRecord | None:
        try:
            outcome = self.listener.next_outcome(self.action_id, seconds)
        except LOST as exc:  # Redis restarted or the connection broke: the action goes on
            self._lost(exc)
            return None
        return None if outcome is None else self._built(outcome)

    def _recheck(self) -> ActionRecord | None:
        """The safety net: a finish message already received (its record may be gone by
        now), else the record; None while the action is not finished."""
        self.waiter.rechecked(time.monotonic())
        try:
            outcome = self.listener.buffered_outcome(self.action_id)
            if outcome is None:
                record = self._read()
                return record if record.status.finished else None
        except LOST as exc:
            self._lost(exc)
            return None
        return self._built(outcome)

    def _read(self) -> ActionRecord:
        return self.mailbox.layer.call(record_op(self.mailbox.settings, self.session_id,
                                                 self.action_id, sent=True))

    def _built(self, outcome: Outcome) -> ActionRecord:
        assert self.request is not None  # known once connected: only then does it listen
        return ActionRecord.build(self.session_id, self.action_id, self.request, outcome,
                                  False)

    def _lost(self, exc: Exception, attempt: bool = False) -> None:
        """Redis could not be reached (`attempt`: by a reconnection)."""
        self.problem = exc
        now = time.monotonic()
        if attempt:
            self.waiter.failed(now)
        else:
            self.waiter.lost(now)
        log.info("waiting for Redis to come back (%s)", exc)


class _Listener:
    """One thread's pub/sub connection, subscribed to one done channel at a time."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pubsub = client.pubsub()

    def _renew(self) -> None:
        """Drop the connection and its subscriptions for a new pub/sub object (a cluster's
        stays bound to the node it chose first, which a failover may have taken away)."""
        self.pubsub.reset()
        self.pubsub = self.client.pubsub()

    def subscribe(self, channel: str, confirm: bool = True) -> None:
        """Subscribe; with `confirm`, wait for Redis to confirm, so no later finish can be
        missed (the confirmation is otherwise skipped by later reads). A connection that
        broke since its last use (Redis restarted) is replaced once."""
        try:
            self.pubsub.subscribe(channel)
        except LOST:
            self._renew()
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
            self._renew()

    def reset(self) -> None:
        """Drop the connection and every subscription (the next subscribe connects anew)."""
        self._renew()

    def next_outcome(self, action_id: str, timeout: float) -> Outcome | None:
        """The outcome if `action_id` finishes within `timeout`, else None."""
        msg = self.pubsub.get_message(timeout=timeout)
        if msg is None or msg["type"] != "message":
            return None
        aid, outcome = scripts.parse_finish(str(msg["data"]))
        return outcome if aid == action_id else None

    def buffered_outcome(self, action_id: str) -> Outcome | None:
        """The outcome of `action_id` among the messages already received (none waited for):
        looked at before the record is read again, since the record may be gone by then."""
        for _ in range(10_000):  # bounded: at most what the socket already holds
            msg = self.pubsub.get_message(timeout=0.0)
            if msg is None:
                return None
            if msg["type"] == "message":
                aid, outcome = scripts.parse_finish(str(msg["data"]))
                if aid == action_id:
                    return outcome
        return None

    def close(self) -> None:
        self.pubsub.close()


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
        return self._mailbox.record(self.session_id, self.id, sent=True)

    def status(self) -> ActionStatus:
        return self.record().status

    def progress(self) -> JsonObject | None:
        rec = self.record()
        return None if rec.progress is None else rec.progress.model_dump()

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises `ActionFailed`, `ActionCancelled`, `ActionTimeout` (a
        `TimeoutError`: only the wait ended, the action goes on) or `ActionExpired` (it
        finished so long ago that its record is gone)."""
        return result_of(self._mailbox.wait(self.session_id, self.id, timeout))

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel if still pending; True if cancelled, False if running or finished."""
        return self._mailbox.cancel(self.session_id, self.id, reason)
