"""Waiting for actions from an event loop: one pub/sub connection fans finishes out to any
number of waiters, with no polling loop per waiter.

`WaitHub` keeps a future per waiting action (action id -> futures) and subscribes to each
session's done channel while someone waits on it (reference counted). One listener task reads
the pub/sub connection and resolves the futures from the finish messages (decoded by
`scripts.parse_finish`, as the sync client does). One checker task is the safety net: every
`RECHECK_EVERY` seconds it re-reads, in one pipeline, the outcomes of the actions waited on
for longer than that, so a finish message that never came (a reconnect) is never waited for in
vain. When the pub/sub connection breaks (Redis restarted), the listener reconnects with a
backoff, subscribes again to every channel in use, waits until Redis has confirmed every
subscription, and only then has all the outcomes re-read at once: a finish published while the
connection was down is found by that read, one published after it arrives as a message.

redis-py may reconnect a pub/sub connection by itself (its retry policy, or a read on a
connection it had dropped) and resubscribe it silently: nothing raises, but the finish messages
published meanwhile are gone. The hub watches its connection for any connect after the first
(a connect callback) and treats it as a lost connection: a fresh one, subscriptions confirmed,
outcomes re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from jido_tasks.client.mailbox import RECHECK_EVERY
from jido_tasks.core.requests import outcome_ops
from jido_tasks.models import Outcome
from jido_tasks.store import scripts
from jido_tasks.store.aio import AsyncRedisLayer

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 10.0
"""Seconds to wait for Redis to confirm a subscription."""
_RECHECK_CHUNK = 1000  # outcomes re-read per pipeline by the safety net
_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between reconnection attempts


@dataclass(eq=False)
class Wait:
    """One waiter on one action; `future` gets the action's finished `Outcome`."""

    session_id: str
    action_id: str
    channel: str
    future: asyncio.Future[Outcome]
    since: float = field(default_factory=time.monotonic)


class WaitHub:
    """The waiters of one `AsyncClient` (bound to the event loop that first uses it)."""

    def __init__(self, layer: AsyncRedisLayer) -> None:
        self.layer = layer
        self._waits: dict[str, list[Wait]] = {}
        self._refs: dict[str, int] = {}
        self._wire: set[str] = set()
        """Channels subscribed on the current connection."""
        self._confirmed: dict[str, asyncio.Event] = {}
        self._to_subscribe: dict[str, None] = {}
        """Channels asked for since the last SUBSCRIBE was written (the next one takes all)."""
        self._subscribed: asyncio.Future[None] | None = None
        """Resolved once the next SUBSCRIBE is written."""
        self._to_unsubscribe: set[str] = set()
        self._lock = asyncio.Lock()
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._recheck_all = asyncio.Event()
        self.recheck_every = RECHECK_EVERY
        """Seconds between two rounds of the safety net (read when a round starts)."""
        self._watched: Any = None
        """The connection of `_pubsub` whose reconnections `_on_connect` notices."""
        self._reconnected_behind = False
        """Set when redis-py reconnected `_watched` by itself (subscriptions may be gone and
        finish messages missed): the listener then reconnects as after a failure."""
        self._chores: set[asyncio.Task[None]] = set()
        self._closed = False
        self.reconnects = 0
        """Times the pub/sub connection was rebuilt after a failure."""

    @property
    def waiting(self) -> int:
        """How many waits are registered (for tests and metrics)."""
        return sum(len(waits) for waits in self._waits.values())

    @property
    def channels(self) -> set[str]:
        """The done channels subscribed on the wire."""
        return set(self._wire)

    def register(self, session_id: str, action_id: str) -> Wait:
        """A new wait (before the action is sent, or before its record is read)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        channel = self.layer.keys.session(session_id).done_channel
        wait = Wait(session_id, action_id, channel, asyncio.get_running_loop().create_future())
        self._waits.setdefault(action_id, []).append(wait)
        self._refs[channel] = self._refs.get(channel, 0) + 1
        if self._checker is None:
            self._checker = asyncio.create_task(self._check_loop(), name="jido-tasks-recheck")
        return wait

    def release(self, wait: Wait) -> None:
        """Forget a wait (done, timed out or cancelled); unsubscribe when it was the last one
        on its channel. Never awaits, so it is safe in a `finally` of a cancelled task."""
        waits = self._waits.get(wait.action_id)
        if waits is not None and wait in waits:
            waits.remove(wait)
            if not waits:
                del self._waits[wait.action_id]
        left = self._refs.get(wait.channel, 0) - 1
        if left > 0:
            self._refs[wait.channel] = left
            return
        self._refs.pop(wait.channel, None)
        if wait.channel in self._wire and not self._closed:
            if not self._to_unsubscribe:
                self._chore(self._unsubscribe())
            self._to_unsubscribe.add(wait.channel)

    async def subscribe(self, wait: Wait, confirm: bool) -> None:
        """Put the wait's channel on the wire (once per channel), returning once its
        SUBSCRIBE is written; with `confirm`, only when Redis has confirmed it, so no later
        finish can be missed. Channels asked for in the same turn of the loop go in one
        SUBSCRIBE command (one write for many waiters, not one each)."""
        channel = wait.channel
        if channel not in self._wire:
            if channel not in self._to_subscribe:
                self._to_subscribe[channel] = None
                self._confirmed[channel] = asyncio.Event()
            if self._subscribed is None:
                self._subscribed = asyncio.get_running_loop().create_future()
                self._chore(self._subscribe())
            await asyncio.shield(self._subscribed)
        confirmed = self._confirmed[channel]
        if confirm:
            try:
                await asyncio.wait_for(confirmed.wait(), CONFIRM_TIMEOUT)
            except TimeoutError:
                raise TimeoutError(f"no confirmation of the subscription to "
                                   f"{wait.channel}") from None

    async def _subscribe(self) -> None:
        """Write one SUBSCRIBE for every channel asked for (after this turn of the loop)."""
        await asyncio.sleep(0)  # the other waiters of this turn join the same command
        async with self._lock:
            done, self._subscribed = self._subscribed, None
            asked = list(self._to_subscribe)
            self._to_subscribe.clear()
            channels = [c for c in asked if c in self._refs and c not in self._wire]
            for channel in asked:
                if channel not in self._refs:  # every waiter left before the write
                    self._confirmed.pop(channel, None)
            assert done is not None
            try:
                if channels:
                    if self._pubsub is None:
                        self._pubsub = self.layer.pubsub()
                    await self._pubsub.subscribe(*channels)
                    self._watch()
                    self._wire.update(channels)
                    if self._listener is None or self._listener.done():
                        self._listener = asyncio.create_task(self._listen(),
                                                             name="jido-tasks-listener")
            except asyncio.CancelledError:  # closing
                done.cancel()
                raise
            except Exception as exc:  # the waiters raise it (a typed error, upstream)
                for channel in channels:
                    self._confirmed.pop(channel, None)
                done.set_exception(exc)
                done.exception()  # retrieved even if every waiter is gone
                return
            done.set_result(None)

    async def _unsubscribe(self) -> None:
        """Write one UNSUBSCRIBE for every channel nobody waits on any more."""
        await asyncio.sleep(0)  # the other releases of this turn join the same command
        async with self._lock:
            channels = [c for c in self._to_unsubscribe
                        if c not in self._refs and c in self._wire]
            self._to_unsubscribe.clear()  # (someone waits on the others again)
            for channel in channels:
                self._wire.discard(channel)
                self._confirmed.pop(channel, None)
            if channels:
                with contextlib.suppress(redis.RedisError, OSError):  # reconnect drops them
                    await self._pubsub.unsubscribe(*channels)

    def _chore(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def resolve(self, action_id: str, outcome: Outcome) -> None:
        """Hand a finished outcome to every waiter of the action."""
        for wait in self._waits.get(action_id, ()):
            if not wait.future.done():
                wait.future.set_result(outcome)

    # -- the listener ---------------------------------------------------------------------
    async def _listen(self) -> None:
        """Read finish messages until closed; reconnect (and re-read outcomes) on failure,
        or when redis-py reconnected the connection by itself."""
        failures = 0
        while not self._closed:
            lost: object = None
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection broke: Redis restarted or is gone
                msg, lost = None, exc
            if msg is not None:
                self._on_message(msg)
            if lost is None and self._reconnected_behind:
                lost = "reconnected and resubscribed by redis-py, messages may be missed"
            if lost is None:
                failures = 0
                continue
            if self._closed:
                return
            delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
            failures += 1
            log.warning("pub/sub connection lost (%s); reconnecting in %.2fs", lost, delay)
            await asyncio.sleep(delay)
            await self._reconnect()

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "subscribe":
            event = self._confirmed.get(str(msg["channel"]))
            if event is not None:
                event.set()
        elif kind == "message":
            try:
                action_id, outcome = scripts.parse_finish(str(msg["data"]))
            except ValueError:  # not ours: logged, the safety net still covers the waiter
                log.warning("ignored a malformed finish message on %s", msg.get("channel"))
                return
            self.resolve(action_id, outcome)

    def _watch(self) -> None:
        """Notice any later reconnection of the current pub/sub connection (its first
        connect happened in the pool, before this)."""
        connection = self._pubsub.connection
        if connection is not None and connection is not self._watched:
            self._unwatch()
            connection.register_connect_callback(self._on_connect)
            self._watched = connection

    def _unwatch(self) -> None:
        if self._watched is not None:
            self._watched.deregister_connect_callback(self._on_connect)
            self._watched = None

    def _on_connect(self, connection: Any) -> None:
        """redis-py's connect callback (kept as a weak method): a connect of the watched
        connection after its first one is a reconnection behind the hub's back."""
        if connection is self._watched:
            self._reconnected_behind = True

    async def _reconnect(self) -> None:
        """A fresh pub/sub connection subscribed to every channel in use; once Redis has
        confirmed every subscription, every outcome is re-read (a finish published before
        that is found by the read, one published after it arrives as a message). Best
        effort: on failure the listener tries again."""
        async with self._lock:
            old, self._pubsub = self._pubsub, self.layer.pubsub()
            self._unwatch()
            self._reconnected_behind = False
            with contextlib.suppress(Exception):
                await old.aclose()
            self._wire.clear()
            channels = list(self._refs)
            for channel in list(self._confirmed):  # nobody waits on it: no stale event
                if channel not in self._refs and channel not in self._to_subscribe:
                    del self._confirmed[channel]
            try:
                if channels:
                    await self._pubsub.subscribe(*channels)
                else:  # a connection to read from (and to notice the next failure)
                    await self._pubsub.connect()
                self._watch()
                await self._confirm(channels)
            except (redis.RedisError, OSError, TimeoutError) as exc:
                log.warning("pub/sub reconnection failed: %s", exc)
                return
            self._wire.update(channels)
            for channel in channels:  # (a waiter may have put a fresh event meanwhile)
                self._confirmed.setdefault(channel, asyncio.Event()).set()
            gone = [c for c in channels if c not in self._refs]  # released meanwhile
            if gone:
                if not self._to_unsubscribe:
                    self._chore(self._unsubscribe())
                self._to_unsubscribe.update(gone)
            self.reconnects += 1
        log.info("pub/sub reconnected: %d channels", len(channels))
        self._recheck_all.set()

    async def _confirm(self, channels: list[str]) -> None:
        """Read the new connection until Redis has confirmed every channel (other messages
        are handled as usual); `TimeoutError` after `CONFIRM_TIMEOUT` seconds."""
        left = set(channels)
        deadline = asyncio.get_running_loop().time() + CONFIRM_TIMEOUT
        while left:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no confirmation of {len(left)} subscriptions")
            msg = await self._pubsub.get_message(timeout=min(remaining, 1.0))
            if msg is None:
                continue
            if msg.get("type") == "subscribe":
                left.discard(str(msg["channel"]))
            self._on_message(msg)

    # -- the safety net -------------------------------------------------------------------
    async def _check_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck_all.wait(), self.recheck_every)
            everyone = self._recheck_all.is_set()
            self._recheck_all.clear()
            try:
                await self.recheck(everyone)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next round (or reconnect) retries
                log.debug("re-reading outcomes failed: %s", exc)
                if everyone:  # the read after a reconnect is owed to every waiter
                    await asyncio.sleep(_BACKOFF[0])
                    self._recheck_all.set()

    async def recheck(self, everyone: bool = False) -> int:
        """Re-read the outcomes of the waits older than `recheck_every` (all with
        `everyone`), one pipeline per chunk; returns how many were finished."""
        cutoff = time.monotonic() - self.recheck_every
        due = {(w.session_id, w.action_id) for waits in list(self._waits.values())
               for w in waits if everyone or w.since <= cutoff}
        pairs = sorted(due)
        found = 0
        for i in range(0, len(pairs), _RECHECK_CHUNK):
            chunk = pairs[i:i + _RECHECK_CHUNK]
            outcomes = await self.layer.call_many(outcome_ops(chunk))
            for (_, action_id), outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, Outcome):
                    found += 1
                    self.resolve(action_id, outcome)
        return found

    async def close(self) -> None:
        """Stop the tasks and close the pub/sub connection; waiters still waiting are
        cancelled (their actions go on)."""
        self._closed = True
        tasks = [t for t in (self._listener, self._checker, *self._chores) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._subscribed is not None:
            self._subscribed.cancel()
        for waits in list(self._waits.values()):
            for wait in waits:
                wait.future.cancel()
        self._unwatch()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
