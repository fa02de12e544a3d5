"""`AsyncClient`: the `Client` API for asyncio apps (FastAPI, Starlette, aiohttp).

The same methods, arguments, return types and typed errors as `Client`, as coroutines. The
logic is the sync client's: validation, key names, script calls, reply decoding and when a
wait re-reads, reconnects or gives up come from the same functions and plans
(`jido_tasks.core.sessions`, `jido_tasks.core.requests`, `jido_tasks.core.events`,
`jido_tasks.core.waiter`); only the I/O differs (`redis.asyncio` through `AsyncRedisLayer`).
Waiting never polls and never blocks the loop: one pub/sub connection per client fans finish
messages out to every waiter (`jido_tasks.client.waiting.WaitHub`). What must stay synchronous
runs off the loop, on the client's own threads: publishing a Celery drain (kombu), storing the
Celery results of cancelled by-name actions, snapshots (disk or Redis store) and the sweep.

One `AsyncClient` belongs to one event loop; close it (`await client.close()`, or
`async with AsyncClient() as client:`) before the loop ends.

Like `Client`, it checks the stored key layout (`LayoutMismatch`: see `jido_tasks.layout`),
once: at `await client.connect()` (or `async with`), else at its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis

from jido_tasks import telemetry
from jido_tasks.client.mailbox import LOST
from jido_tasks.client.waiting import Wait, WaitHub
from jido_tasks.core.actions import load_action_modules
from jido_tasks.core.drains import publish_drains
from jido_tasks.core.events import Pause, Step, reader_plan
from jido_tasks.core.layout import layout_plan
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
from jido_tasks.core.sessions import (
    create_plan,
    get_plan,
    list_plan,
    state_plan,
    terminate_plan,
    touch_plan,
)
from jido_tasks.errors import RedisOutOfMemory, RedisUnavailable
from jido_tasks.models import (
    ActionRecord,
    ActionRequest,
    ActionStatus,
    Event,
    JsonObject,
    SessionConfig,
    SessionEntry,
    SessionList,
    SessionStatus,
    validate_session_id,
)
from jido_tasks.ops.snapshots.service import (
    SnapshotInfo,
    SnapshotStore,
    delete_snapshot,
    list_snapshots,
    restore_plan,
    save_snapshot,
    snapshot_store,
)
from jido_tasks.ops.sweep import SweepReport, run_sweep
from jido_tasks.settings import Settings, load_settings
from jido_tasks.store import scripts
from jido_tasks.store.aio import DEFAULT_MAX_CONNECTIONS, AsyncRedisLayer
from jido_tasks.store.connection import RedisLayer, redis_errors, typed_redis_error
from jido_tasks.store.results import deliver_quietly

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

OFF_LOOP_THREADS = 2
"""Threads of one client for the work that must stay synchronous (kombu, snapshot files)."""


def _layout_checked(fn: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
                    ) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]:
    """Check the stored key layout before the client's first call (see `AsyncClient.connect`):
    `LayoutMismatch` is raised; Redis unreachable leaves the check for the next call."""
    @functools.wraps(fn)
    async def wrapper(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not self.layout_checked:
            await self._check_layout_quietly()
        return await fn(self, *args, **kwargs)
    return wrapper


class AsyncClient:
    """Entry point for asyncio apps: `AsyncClient()` reads settings from the environment."""

    def __init__(self, settings: Settings | None = None, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.settings = settings or load_settings()
        self.layer = AsyncRedisLayer(self.settings, max_connections=max_connections)
        self.hub = WaitHub(self.layer)
        # Bounds the sends in progress: 1,000 calls started at once then prepare and send in
        # slices, so no single turn of the loop does all the validation work (loop lag).
        self._sending = asyncio.Semaphore(2 * max_connections)
        self._executor = ThreadPoolExecutor(OFF_LOOP_THREADS,
                                            thread_name_prefix="jido-tasks-aio")
        self._lock = threading.RLock()
        self._celery: Any = None
        self._sync_layer: RedisLayer | None = None
        self._store: SnapshotStore | None = None
        self._drains: dict[str, None] = {}
        """Sessions whose drain goes out in the next batch (in order, once each)."""
        self._drains_out: asyncio.Future[None] | None = None
        self._drain_publishers: set[asyncio.Task[None]] = set()
        self.layout_checked = False
        """The stored key layout was found to match the settings (checked once)."""
        self._layout_lock = asyncio.Lock()
        self._closed = False
        load_action_modules(self.settings)

    # -- the stored layout ----------------------------------------------------------------
    @redis_errors
    async def connect(self) -> None:
        """Check the stored key layout now (else the first call does): raises
        `LayoutMismatch` if the namespace holds data of another layout or `index_shards`
        (recording the layout in an empty namespace), `RedisUnavailable` if Redis does not
        answer. Checked once per client; `async with` calls it."""
        async with self._layout_lock:  # concurrent first calls wait for one check
            if not self.layout_checked:
                await self.layer.run(layout_plan(self.layer))
                self.layout_checked = True

    async def _check_layout_quietly(self) -> None:
        """`connect` before a first call: as `Client` does, a Redis that cannot be reached (or
        refuses the write, e.g. full) does not fail the call here; the next call checks."""
        try:
            await self.connect()
        except (redis.RedisError, RedisUnavailable, RedisOutOfMemory) as exc:
            log.debug("key layout not checked yet: %s", exc)

    # -- off the loop ---------------------------------------------------------------------
    async def _off_loop(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work on the client's threads; the loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @property
    def celery(self) -> Any:
        """The Celery app used to publish work (built on first use, off the loop)."""
        with self._lock:
            if self._celery is None:
                from jido_tasks.core.celery_config import configured_app as make_app

                self._celery = make_app(self.settings)
            return self._celery

    @property
    def sync_layer(self) -> RedisLayer:
        """The blocking Redis layer the off-loop work (snapshots, sweep) runs on."""
        with self._lock:
            if self._sync_layer is None:
                self._sync_layer = RedisLayer(self.settings)
            return self._sync_layer

    @property
    def snapshot_store(self) -> SnapshotStore:
        """The snapshot store chosen by the `persistence` setting (used off the loop)."""
        with self._lock:
            if self._store is None:
                self._store = snapshot_store(self.sync_layer)
            return self._store

    async def _publish(self, session_id: str) -> None:
        """Publish the session's drain; returns once it is published. Up to one batch per
        off-loop thread is being published at a time; drains asked for meanwhile go out
        together in the next batch (one kombu batch, one round trip on a Redis broker), so
        1,000 concurrent sends do not cost 1,000 publishes' worth of thread time competing
        with the loop for the GIL, and a lone send does not wait for a batch to fill."""
        self._drains[session_id] = None
        if self._drains_out is None:
            self._drains_out = asyncio.get_running_loop().create_future()
        out = self._drains_out
        if len(self._drain_publishers) < OFF_LOOP_THREADS:
            self._drain_publishers.add(asyncio.create_task(self._publish_drains(),
                                                           name="jido-tasks-drains"))
        await asyncio.shield(out)  # a cancelled sender does not stop the batch

    def _publish_batch(self, session_ids: list[str]) -> None:
        publish_drains(self.celery, self.settings, session_ids)  # off the loop

    async def _publish_drains(self) -> None:
        """One publisher: publish the drains asked for, batch after batch, until none is."""
        try:
            while self._drains:
                batch, out = list(self._drains), self._drains_out
                self._drains.clear()
                self._drains_out = None
                assert out is not None
                try:  # publish_drains logs its failures itself (recovery republishes)
                    await self._off_loop(self._publish_batch, batch)
                except asyncio.CancelledError:
                    out.cancel()
                    raise
                except Exception as exc:
                    out.set_exception(exc)
                    out.exception()  # retrieved: the senders awaiting it raise it
                    raise
                out.set_result(None)
        finally:  # at once, not in a done callback: a drain asked for from now on must
            # start a publisher of its own (none may be left counted but gone)
            task = asyncio.current_task()
            if task is not None:
                self._drain_publishers.discard(task)

    # -- registry -------------------------------------------------------------------------
    @_layout_checked
    @redis_errors
    async def create_session(self, metadata: JsonObject | None = None,
                             llm_config: JsonObject | None = None,
                             config: SessionConfig | JsonObject | None = None) -> SessionEntry:
        return await self.layer.run(create_plan(self.layer, metadata, llm_config, config))

    @_layout_checked
    @redis_errors
    async def get_session(self, session_id: str) -> SessionEntry:
        return await self.layer.run(get_plan(self.layer, session_id))

    @_layout_checked
    @redis_errors
    async def list_sessions(self, status: SessionStatus | str | None = None, *, offset: int = 0,
                            limit: int | None = None) -> SessionList:
        """Sessions newest activity first; default every one that is not terminated.
        `offset`/`limit` count sessions of the requested status.
        On a Redis Cluster with a node down: the live nodes' sessions, and the unreadable
        slots in `SessionList.missing_slots` (`complete` is False)."""
        return await self.layer.run(list_plan(self.layer, status, offset=offset, limit=limit))

    @_layout_checked
    @redis_errors
    async def touch(self, session_id: str) -> SessionEntry:
        return await self.layer.run(touch_plan(self.layer, session_id))

    @_layout_checked
    @redis_errors
    async def terminate_session(self, session_id: str, reason: str = "requested", *,
                                drain: bool = False, save: bool = False) -> SessionEntry:
        """Terminate a session: pending actions are cancelled (or, with `drain`, run first).
        With `save`, a snapshot is saved first (see `Client.terminate_session`)."""
        validate_session_id(session_id)
        if save:
            await self._off_loop(save_snapshot, self.sync_layer, self.snapshot_store,
                                 session_id, live_only=True)
        entry, _ = await self.layer.run(terminate_plan(self.layer, session_id, reason, drain))
        # Cancelled actions that came by name: their Celery results, now (else the sweep).
        await self._off_loop(self._deliver, session_id)
        return entry

    def _deliver(self, session_id: str) -> None:
        """Store the Celery results a cancel or termination left (off the loop: Celery's
        backend writes with the sync Redis client); a failure is logged, the sweep stores
        them later."""
        deliver_quietly(self.sync_layer, self.celery.backend, session_id)

    @_layout_checked
    @redis_errors
    async def get_state(self, session_id: str) -> JsonObject:
        return await self.layer.run(state_plan(self.layer, session_id))

    # -- session work ---------------------------------------------------------------------
    @_layout_checked
    @redis_errors
    async def send(self, session_id: str, action: str, params: Any = None, *,
                   action_id: str | None = None) -> AsyncActionHandle:
        """Accept an action for the session; returns once it is durably queued. A
        caller-chosen `action_id` makes a retried send accepted once (`Client.send`)."""
        async with self._sending:
            action_id, request = prepare(self.settings, session_id, action, params, action_id)
            request_json = request.to_json()  # encoded once: for the script and the handle
            sent = await self.layer.call(send_op(self.settings, session_id, action_id,
                                                 request, request_json))
        await self._sent(session_id, action_id, request, sent)
        return AsyncActionHandle(self, session_id, action_id, action, request_json)

    async def _sent(self, session_id: str, action_id: str, request: ActionRequest,
                    sent: scripts.Sent) -> None:
        """After the send script (outside `_sending`, so a drain batch can take more than
        the sends in progress): publish the drain if the script asked for one."""
        if sent.publish:
            await self._publish(session_id)
        if not sent.duplicate:
            telemetry.dispatch.action_sent(session_id, action_id, request.action)

    @_layout_checked
    @redis_errors
    async def send_many(self, session_id: str, actions: Iterable[SendItem],
                        ) -> list[AsyncActionHandle]:
        """Accept several actions (`(name, params)`, `(name, params, action_id)` or a bare
        name), all or none, in order, in one round trip."""
        validate_session_id(session_id)
        prepared = [prepare(self.settings, session_id, name, params, aid)
                    for name, params, aid in normalize(actions, session_id)]
        if not prepared:
            return []
        async with self._sending:
            many = await self.layer.call(send_many_op(self.settings, session_id, prepared))
        if many.publish:
            await self._publish(session_id)
        for (action_id, request), sent in zip(prepared, many.sent, strict=True):
            if not sent.duplicate:
                telemetry.dispatch.action_sent(session_id, action_id, request.action)
        return [AsyncActionHandle(self, session_id, action_id, request.action,
                                  request.to_json()) for action_id, request in prepared]

    @_layout_checked
    @redis_errors
    async def call(self, session_id: str, action: str, params: Any = None,
                   timeout: float | None = 30.0, *, action_id: str | None = None) -> Any:
        """Send and wait for the result (raises `ActionFailed`, `ActionCancelled`,
        `ActionTimeout`); `action_id` as for `send` (a retried call waits for the first).
        Cancelling the awaiting task stops the wait, not the action."""
        check_timeout("call", timeout, session_id)
        wait: Wait | None = None
        try:
            async with self._sending:
                action_id, request = prepare(self.settings, session_id, action, params,
                                             action_id)
                wait = self.hub.register(session_id, action_id)  # before the send
                await self.hub.subscribe(wait, confirm=False)
                sent = await self.layer.call(send_op(self.settings, session_id, action_id,
                                                     request))
            await self._sent(session_id, action_id, request, sent)
            if sent.duplicate:  # a retried call: the original may have finished long ago
                self.hub.release(wait)
                wait = None
                return result_of(await self.wait(session_id, action_id, timeout))
            wait.waiter.limit(time.monotonic(), timeout)  # as `Client.call`: after the send
            return result_of(await self._wait(wait, request, timeout))
        finally:
            if wait is not None:
                self.hub.release(wait)

    @_layout_checked
    @redis_errors
    async def action(self, session_id: str, action_id: str) -> ActionRecord:
        """The record of one sent action."""
        return await self._record(session_id, action_id)

    async def _record(self, session_id: str, action_id: str, sent: bool = False,
                      ) -> ActionRecord:
        return await self.layer.call(record_op(self.settings, session_id, action_id, sent))

    def handle(self, session_id: str, action_id: str, action: str = "?") -> AsyncActionHandle:
        """A handle on an action sent earlier (e.g. by another process)."""
        return AsyncActionHandle(self, session_id, action_id, action)

    @_layout_checked
    @redis_errors
    async def wait(self, session_id: str, action_id: str, timeout: float | None = None,
                   ) -> ActionRecord:
        """The finished record of an action (pub/sub, no polling); `ActionTimeout` after
        `timeout` seconds (the action itself goes on). Through a Redis outage as `Client`'s
        waits: tried again until the timeout, or `redis_outage_limit` without one; then
        `RedisUnavailable` (see `jido_tasks.core.waiter`)."""
        validate_session_id(session_id)
        check_timeout("wait", timeout, session_id)
        wait = self.hub.register(session_id, action_id)
        try:
            wait.waiter.limit(time.monotonic(), timeout)
            record = await self._first_read(wait, timeout)
            if record.status.finished:
                return record
            request = ActionRequest(action=record.action, params=record.params,
                                    created_at=record.created_at)
            return await self._wait(wait, request, timeout)
        finally:
            self.hub.release(wait)

    async def _first_read(self, wait: Wait, timeout: float | None) -> ActionRecord:
        """Subscribe (confirmed), then read the record; while Redis is unreachable, again
        once the hub has reconnected, until the wait gives up."""
        while True:
            try:
                await self.hub.subscribe(wait, confirm=True)
                return await self._record(wait.session_id, wait.action_id, sent=True)
            except LOST as exc:
                self.hub.lost(exc)
            await self.hub.recovered(wait, timeout)

    async def _wait(self, wait: Wait, request: ActionRequest, timeout: float | None,
                    ) -> ActionRecord:
        """The record once the action finishes (or the wait's error: see `WaitHub.outcome`);
        `timeout`: the caller's, for the error."""
        outcome = await self.hub.outcome(wait, timeout)
        return ActionRecord.build(wait.session_id, wait.action_id, request, outcome, False)

    async def cancel(self, session_id: str, action_id: str, reason: str = "cancelled") -> bool:
        """Cancel a pending action; False if it is already running or finished."""
        tag = await self._cancel(session_id, action_id, reason)
        if tag is scripts.Tag.CANCELLED:  # one that came by name gets its Celery result now
            await self._off_loop(self._deliver, session_id)  # (or from the sweep)
        return tag is scripts.Tag.CANCELLED

    @_layout_checked
    @redis_errors
    async def _cancel(self, session_id: str, action_id: str, reason: str) -> scripts.Tag:
        return await self.layer.call(cancel_op(self.settings, session_id, action_id, reason))

    # -- snapshots (store I/O off the loop) -----------------------------------------------
    @_layout_checked
    @redis_errors
    async def save_session(self, session_id: str) -> SnapshotInfo:
        """Save the session's entry and whole state (between two actions) under its id."""
        validate_session_id(session_id)
        return await self._off_loop(save_snapshot, self.sync_layer, self.snapshot_store,
                                    session_id)

    @_layout_checked
    @redis_errors
    async def restore_session(self, saved_id: str) -> SessionEntry:
        """A new active session from a snapshot, with `restored_from` set to `saved_id`."""
        snap = await self._off_loop(self.snapshot_store.load, saved_id)
        return await self.layer.run(restore_plan(self.layer, snap, saved_id))

    @_layout_checked
    @redis_errors
    async def list_saved_sessions(self) -> list[str]:
        """Ids of the readable snapshots, sorted (corrupt ones are skipped with a warning)."""
        return [info.id for info in await self.saved_sessions()]

    @_layout_checked
    @redis_errors
    async def saved_sessions(self) -> list[SnapshotInfo]:
        """Id, save time, size and store of each readable snapshot, sorted by id."""
        return await self._off_loop(list_snapshots, self.snapshot_store)

    @_layout_checked
    @redis_errors
    async def delete_saved_session(self, saved_id: str) -> None:
        await self._off_loop(delete_snapshot, self.sync_layer, self.snapshot_store,
                             saved_id)

    # -- maintenance ----------------------------------------------------------------------
    @_layout_checked
    @redis_errors
    async def sweep(self, force: bool = False) -> SweepReport:
        """Run one sweep now, off the loop (see `Client.sweep`)."""
        return await self._off_loop(lambda: run_sweep(self.sync_layer, self.celery,
                                                      force=force))

    # -- events ---------------------------------------------------------------------------
    def events(self, session_id: str | None = None, after: str = "0",
               block: float | None = None) -> AsyncIterator[Event]:
        """Events of one session (or all) after stream id `after`, as an async iterator
        (`async for`); resumable by id, like `Client.events`. Bad arguments raise here."""
        return self._events(reader_plan(self.layer, session_id, after, block))

    async def _events(self, plan: Generator[Step, Any, None]) -> AsyncIterator[Event]:
        reply: Any = None
        if not self.layout_checked:
            await self._check_layout_quietly()
        try:
            while True:
                try:
                    step = plan.send(reply)
                except StopIteration:
                    return
                if isinstance(step, Event):
                    reply = None
                    yield step
                elif isinstance(step, Pause):
                    reply = None
                    await asyncio.sleep(step.seconds)
                else:
                    reply = await self.layer.read(step)
        except redis.RedisError as exc:
            raise typed_redis_error(exc, self.settings, None) or exc from exc

    async def __aenter__(self) -> AsyncClient:
        """Checks the stored key layout (`connect`); a Redis not up yet is checked later."""
        await self._check_layout_quietly()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop waiting (waiters still waiting are cancelled), close the Redis connections,
        the Celery connection pool and the client's threads. Drains being published are
        published first. Closing again does nothing (as with `Client.close`)."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._drain_publishers):
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        await self.hub.close()
        await self.layer.aclose()
        if self._celery is not None:
            await self._off_loop(self._celery.close)
        self._executor.shutdown(wait=False)


class AsyncActionHandle:
    """A caller's handle on one sent action (the twin of `ActionHandle`, with `await`)."""

    def __init__(self, client: AsyncClient, session_id: str, action_id: str, action: str,
                 request: str | None = None) -> None:
        self._client = client
        self.session_id = session_id
        self.id = action_id
        self.action = action
        self.request = request

    def __repr__(self) -> str:
        return f"AsyncActionHandle({self.session_id!r}, {self.id!r}, {self.action!r})"

    async def record(self) -> ActionRecord:
        """Everything known of the action: status, attempts, result or error, progress."""
        return await self._client._record(self.session_id, self.id, sent=True)

    async def status(self) -> ActionStatus:
        return (await self.record()).status

    async def progress(self) -> JsonObject | None:
        rec = await self.record()
        return None if rec.progress is None else rec.progress.model_dump()

    async def get(self, timeout: float | None = None) -> Any:
        """The result; raises `ActionFailed`, `ActionCancelled` or `ActionTimeout` (a
        `TimeoutError`: only the wait ended, the action goes on)."""
        return result_of(await self._client.wait(self.session_id, self.id, timeout))

    async def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel if still pending; True if cancelled, False if running or finished."""
        return await self._client.cancel(self.session_id, self.id, reason)
