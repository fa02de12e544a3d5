"""Waiting for actions from an event loop: one pub/sub connection fans finishes out to any
number of waiters, with no polling loop per waiter.

`WaitHub` keeps a future per waiting action (action id -> futures) and subscribes to each
session's done channel while someone waits on it (reference counted). One task drives the
connection as the hub's `Waiter` (`jido_tasks.core.waiter`, the schedule the sync client
follows too) decides: it reads finish messages and resolves the futures (decoded by
`scripts.parse_finish`, as the sync client does); every `wait_recheck_interval` it re-reads, in
one pipeline, the outcomes of the actions waited on for longer than that (the safety net: a
finish message that never came is never waited for in vain); when the connection breaks (Redis
restarted) it reconnects after the `reconnect_backoff` delays, subscribes again to every
channel in use, waits until Redis has confirmed every subscription, and only then re-reads all
the outcomes at once: a finish published while the connection was down is found by that read,
one published after it arrives as a message.

Each wait has a `Waiter` of its own on the hub's connection state (`Link`), which says when it
gives up: at its deadline, or, with none, once Redis has stayed unreachable for
`redis_outage_limit` (the hub then fails its future with the connection error).

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
import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from jido_tasks.client.mailbox import LOST
from jido_tasks.core.requests import outcome_ops
from jido_tasks.core.waiter import (
    GiveUp,
    Link,
    Listen,
    Recheck,
    Reconnect,
    Waiter,
    WaitPolicy,
)
from jido_tasks.errors import ActionTimeout
from jido_tasks.models import Outcome
from jido_tasks.store import scripts
from jido_tasks.store.aio import AsyncRedisLayer

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 10.0
"""Seconds to wait for Redis to confirm a subscription."""
_RECHECK_CHUNK = 1000  # outcomes re-read per pipeline by the safety net
_LISTEN_MAX = 1.0
"""Longest single read of the connection: a reconnection behind the hub's back, or a read a
waiter found failing, is acted on within it."""


@dataclass(eq=False)
class Wait:
    """One waiter on one action; `future` gets the action's finished `Outcome`."""

    session_id: str
    action_id: str
    channel: str
    future: asyncio.Future[Outcome]
    waiter: Waiter
    """When the wait gives up (its deadline; the outage limit on the hub's connection)."""


class WaitHub:
    """The waiters of one `AsyncClient` (bound to the event loop that first uses it)."""

    def __init__(self, layer: AsyncRedisLayer) -> None:
        self.layer = layer
        self.policy = WaitPolicy.of(layer.settings)
        """When waits re-read, reconnect and give up (from the settings)."""
        self.link = Link()
        """The state of the pub/sub connection, shared by the hub's waiter and every wait's."""
        self.waiter = Waiter(self.policy, time.monotonic(), math.inf, self.link)
        """The connection's schedule (no deadline: the hub never gives up; its waits do)."""
        self.problem = ""
        """The last failure to reach Redis (the error of the waits that give up on it)."""
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
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        """Set when the connection task has something to do at once (a first subscription,
        a failure a waiter found)."""
        self._up = asyncio.Event()
        self._up.set()
        self._expiry: asyncio.TimerHandle | None = None
        self._watched: Any = None
        """The connection of `_pubsub` whose reconnections `_on_connect` notices."""
        self._reconnected_behind = False
        """Set when redis-py reconnected `_watched` by itself (subscriptions may be gone and
        finish messages missed): the hub then reconnects as after a failure."""
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
        """A new wait (before the action is sent, or before its record is read); no deadline
        until `Waiter.limit` sets one."""
        if self._closed:
            raise RuntimeError("the client is closed")
        channel = self.layer.keys.session(session_id).done_channel
        waiter = Waiter(self.policy, time.monotonic(), link=self.link)
        wait = Wait(session_id, action_id, channel,
                    asyncio.get_running_loop().create_future(), waiter)
        self._waits.setdefault(action_id, []).append(wait)
        self._refs[channel] = self._refs.get(channel, 0) + 1
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="jido-tasks-waits")
        if self.link.down_since is not None:  # its outage clock starts now
            self._schedule_expiry()
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
                    self._poke.set()  # (the first one: there is a connection to read now)
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

    # -- what a wait awaits ---------------------------------------------------------------
    async def outcome(self, wait: Wait, asked: float | None) -> Outcome:
        """The wait's outcome; its error once it gives up: at its deadline (`ActionTimeout`,
        or the connection error while Redis is unreachable), or with no deadline once an
        outage passes the limit (`_expire`). `asked`: the caller's timeout, for the error."""
        deadline = wait.waiter.deadline
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(wait.future, left)
        except TimeoutError:
            raise self.error(wait, GiveUp(self.link.down_since is not None), asked) from None

    async def recovered(self, wait: Wait, asked: float | None) -> None:
        """Return once the connection is back (after `lost`); the wait's error if it gives up
        first."""
        while self.link.down_since is not None:
            now = time.monotonic()
            step = wait.waiter.next(now)
            if isinstance(step, GiveUp):
                raise self.error(wait, step, asked)
            give_up = wait.waiter.give_up_at()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(),
                                       None if give_up is None else give_up - now)

    def error(self, wait: Wait, step: GiveUp, asked: float | None) -> Exception:
        """The error of a wait that gives up (a Redis error is typed by the client's
        `redis_errors`, as the sync client's is)."""
        if step.outage:
            return redis.ConnectionError(self.problem or "Redis is unreachable")
        return ActionTimeout(wait.session_id, wait.action_id, asked)

    def lost(self, problem: object) -> None:
        """The connection broke, or a read failed: the hub reconnects after the backoff; the
        waits with no deadline give up once the outage passes `redis_outage_limit`."""
        self.problem = str(problem) or type(problem).__name__
        if self.link.down_since is not None:
            return
        log.warning("pub/sub connection lost (%s); reconnecting", problem)
        self.waiter.lost(time.monotonic())
        self._up.clear()
        self._poke.set()
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        """While the connection is down: wake when the next wait with no deadline gives up."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        due = [w.waiter.give_up_at() for waits in self._waits.values() for w in waits
               if w.waiter.deadline is None and not w.future.done()]
        times = [at for at in due if at is not None]
        if times and self.link.down_since is not None:
            delay = max(0.0, min(times) - time.monotonic())
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """Fail the waits with no deadline past the outage limit (their error); then wake
        for the next one."""
        self._expiry = None
        now = time.monotonic()
        for waits in list(self._waits.values()):
            for wait in waits:
                step = wait.waiter.next(now)
                if wait.waiter.deadline is None and not wait.future.done() \
                        and isinstance(step, GiveUp):
                    wait.future.set_exception(self.error(wait, step, None))
                    wait.future.exception()  # retrieved even if its waiter is gone
        self._schedule_expiry()

    # -- the connection -------------------------------------------------------------------
    async def _follow(self) -> None:
        """Until closed, what the hub's waiter decides: read finish messages, re-read the
        outcomes of older waits (the safety net), or reconnect after a backoff delay."""
        while not self._closed:
            step = self.waiter.next(time.monotonic())
            if isinstance(step, Listen):
                await self._listen(min(step.seconds, _LISTEN_MAX))
            elif isinstance(step, Recheck):
                await self._recheck_due()
            elif isinstance(step, Reconnect):
                await asyncio.sleep(step.delay)
                await self._reconnect_all()
            else:  # never: the hub's waiter has no deadline
                raise AssertionError(f"the hub's waiter gave up: {step}")

    async def _listen(self, seconds: float) -> None:
        """Read one message (or none within `seconds`); a failure, or redis-py's own
        reconnection of the connection, is a lost connection."""
        if self._pubsub is None:  # nothing subscribed yet: nothing to read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), seconds)
            self._poke.clear()
            return
        try:
            msg = await self._pubsub.get_message(timeout=seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke: Redis restarted or is gone
            self.lost(exc)
            return
        if msg is not None:
            self._on_message(msg)
        if self._reconnected_behind:
            self.lost("reconnected and resubscribed by redis-py, messages may be missed")

    async def _recheck_due(self) -> None:
        """One round of the safety net; Redis unreachable is a lost connection."""
        self.waiter.rechecked(time.monotonic())
        try:
            await self.recheck()
        except LOST as exc:
            self.lost(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not a lost Redis: the next round tries again
            log.warning("re-reading outcomes failed: %s", exc)

    async def _reconnect_all(self) -> None:
        """Reconnect, then re-read every outcome waited for (a finish published before the
        subscriptions were confirmed is found by the read, one after it arrives as a
        message). On failure the next attempt comes after the next backoff delay."""
        try:
            channels = await self._reconnect()
            await self.recheck(everyone=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis still away, or no confirmation in time
            self.problem = str(exc) or type(exc).__name__
            self.waiter.failed(time.monotonic())
            log.warning("pub/sub reconnection failed: %s", exc)
            return
        self.reconnects += 1
        self.waiter.connected(time.monotonic())
        self._up.set()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        log.info("pub/sub reconnected: %d channels", len(channels))

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

    async def _reconnect(self) -> list[str]:
        """A fresh pub/sub connection subscribed to every channel in use, returned once Redis
        has confirmed every subscription; raises if Redis does not answer."""
        async with self._lock:
            old, self._pubsub = self._pubsub, self.layer.pubsub()
            self._unwatch()
            self._reconnected_behind = False
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
            self._wire.clear()
            channels = list(self._refs)
            for channel in list(self._confirmed):  # nobody waits on it: no stale event
                if channel not in self._refs and channel not in self._to_subscribe:
                    del self._confirmed[channel]
            if channels:
                await self._pubsub.subscribe(*channels)
            else:  # a connection to read from (and to notice the next failure)
                await self._pubsub.connect()
            self._watch()
            await self._confirm(channels)
            self._wired(channels)
        return channels

    def _wired(self, channels: list[str]) -> None:
        """After a reconnection: the channels are on the wire, confirmed; those released
        meanwhile are unsubscribed."""
        self._wire.update(channels)
        for channel in channels:  # (a waiter may have put a fresh event meanwhile)
            self._confirmed.setdefault(channel, asyncio.Event()).set()
        gone = [c for c in channels if c not in self._refs]
        if gone:
            if not self._to_unsubscribe:
                self._chore(self._unsubscribe())
            self._to_unsubscribe.update(gone)

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
    async def recheck(self, everyone: bool = False) -> int:
        """Re-read the outcomes of the waits older than `wait_recheck_interval` (all with
        `everyone`), one pipeline per chunk; returns how many were finished."""
        cutoff = time.monotonic() - self.policy.recheck_every
        due = {(w.session_id, w.action_id) for waits in list(self._waits.values())
               for w in waits if everyone or w.waiter.since <= cutoff}
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
        """Stop the connection's task and close the pub/sub connection; waiters still waiting
        are cancelled (their actions go on)."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        tasks = [t for t in (self._task, *self._chores) if t is not None]
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
