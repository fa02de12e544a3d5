"""`Client` and `AsyncClient` behave alike where the code used to be written twice: each
scenario runs once per client (the async one called from the test through `Blocking`).

Cancel and terminate store the Celery results of by-name actions at once; a wait gives up on
a Redis outage after `redis_outage_limit`, not before; both follow the one wait policy of the
settings (`jido_tasks.core.waiter`, tested here without Redis too).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import redis
from celery import Celery

from jido_tasks import AsyncActionHandle, AsyncClient, Client, RedisUnavailable, Settings
from jido_tasks.core.waiter import (
    GiveUp,
    Listen,
    Recheck,
    Reconnect,
    Waiter,
    WaitPolicy,
)
from tests.conftest import RedisServer, WorkerGroup, burst, make_settings, wait_for

Workers = Callable[..., WorkerGroup]
MakeClient = Callable[[Settings], Any]

OUTAGE_LIMIT = 1.5
"""`redis_outage_limit` of the outage scenarios (seconds)."""
SLACK = 5.0
"""How late a give-up may come after the limit (about 0.3 s here): the outage is noticed, and
the last attempt ends, only once redis-py's own retries of a read have failed."""


class Blocking:
    """An `AsyncClient` (or one of its handles) called like the sync API: each coroutine runs
    on the client's event loop, in a thread of its own, and its result is returned."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._target, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            result = found(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run_coroutine_threadsafe(result, self._loop).result()
            if isinstance(result, AsyncActionHandle):
                return Blocking(result, self._loop)
            return result
        return call


class AsyncSide:
    """An `AsyncClient` on an event loop running in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        client = self.run(self._make(settings))
        self.client = Blocking(client, self.loop)
        self.raw = client

    @staticmethod
    async def _make(settings: Settings) -> AsyncClient:
        return AsyncClient(settings)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.run(self.raw.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[MakeClient]:
    """Factory: a `Client`, or an `AsyncClient` behind `Blocking`, for the given settings
    (closed at the end)."""
    closers: list[Callable[[], None]] = []

    def make(settings: Settings) -> Any:
        if request.param == "sync":
            sync = Client(settings)
            closers.append(sync.close)
            return sync
        side = AsyncSide(settings)
        closers.append(side.close)
        return side.client

    yield make
    for close in reversed(closers):
        close()


def celery_client(settings: Settings) -> Celery:
    """A plain Celery app (JSON only), as any Python app would build it."""
    app = Celery(broker=settings.broker, backend=settings.backend)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    result_accept_content=["json"])
    return app


def error_of(result: Any) -> tuple[str, str]:
    """The type name and message a Celery client sees for a failed result (stored already:
    a short timeout)."""
    with pytest.raises(Exception) as info:
        result.get(timeout=2)
    return type(info.value).__name__, str(info.value)


def queued_by_name(group: WorkerGroup, app: Celery, c: Any, n: int,
                   ) -> tuple[str, list[Any]]:
    """A session whose first by-name action runs (for 10 s) while `n` more, sent by name,
    wait behind it: the session and the pending ones' Celery results."""
    r = group.client.layer.redis
    sid = c.create_session().id
    started = f"{group.settings.namespace}:test:started:{uuid.uuid4().hex}"

    def by_name(action: str, params: dict[str, Any]) -> Any:
        return app.send_task("jido_tasks.send", args=[sid, action, params],
                             queue=group.settings.queue)
    by_name("test.slow_append", {"seconds": 10, "value": "head", "started_key": started})
    wait_for(lambda: r.llen(started), 30, message="the head action to start")
    pending = [by_name("test.append", {"value": i}) for i in range(n)]
    mailbox = group.client.layer.keys.session(sid).mailbox
    wait_for(lambda: r.llen(mailbox) == n + 1, 30, message="the sends to be accepted")
    return sid, pending


def test_cancel_stores_the_by_name_result_at_once(workers: Workers,
                                                  make_client: MakeClient) -> None:
    """A cancelled by-name action's Celery result is stored before `cancel` returns: no
    sweep, no later commit of the session needed."""
    group = workers(1, concurrency=2)
    app = celery_client(group.settings)
    c = make_client(group.settings)
    try:
        sid, (first, second) = queued_by_name(group, app, c, 2)
        assert c.handle(sid, first.id).cancel("changed my mind") is True
        assert first.state == "FAILURE"  # stored already
        assert error_of(first) == ("ActionCancelled", "changed my mind")
        assert second.state == "PENDING"  # still queued
        assert group.client.layer.redis.zscore(
            group.client.layer.keys.group_for(sid).undelivered, sid) is None
    finally:
        app.close()
        group.kill(0)  # the head action's 10 s are not waited for


def test_terminate_stores_the_by_name_results_at_once(workers: Workers,
                                                      make_client: MakeClient) -> None:
    """Terminating a session stores the Celery results of its cancelled by-name actions
    before `terminate_session` returns."""
    group = workers(1, concurrency=2)
    app = celery_client(group.settings)
    c = make_client(group.settings)
    try:
        sid, pending = queued_by_name(group, app, c, 3)
        c.terminate_session(sid, "done")
        assert [res.state for res in pending] == ["FAILURE"] * 3
        for res in pending:
            assert error_of(res) == ("ActionCancelled", "session terminating: done")
    finally:
        app.close()
        group.kill(0)


def pending_action(c: Any) -> tuple[str, str, str]:
    """A session with one action that no worker runs: (session, action, done channel)."""
    sid = c.create_session().id
    handle = c.send(sid, "test.append", {"value": 1})
    return sid, handle.id, c.layer.keys.session(sid).done_channel


def give_up_time(waiting: Future[Any], since: float) -> float:
    """Seconds from `since` until the wait raised `RedisUnavailable` (a wait still going
    after the limit and the slack fails the test)."""
    with pytest.raises(RedisUnavailable):
        waiting.result(timeout=OUTAGE_LIMIT + SLACK + 10)
    return time.monotonic() - since


def test_a_wait_gives_up_after_the_outage_limit(own_redis: RedisServer,
                                                make_client: MakeClient) -> None:
    """Redis stops while a wait with no timeout waits: `RedisUnavailable` once it stayed
    unreachable for `redis_outage_limit`, not before."""
    c = make_client(make_settings(own_redis.url, redis_outage_limit=OUTAGE_LIMIT))
    raw = redis.Redis(port=own_redis.port, decode_responses=True)
    sid, action_id, channel = pending_action(c)
    with ThreadPoolExecutor(1) as pool:
        try:
            waiting = pool.submit(c.handle(sid, action_id).get)
            wait_for(lambda: raw.pubsub_numsub(channel) == [(channel, 1)], 10,
                     message="the wait to subscribe")
            down = time.monotonic()  # (the wait may notice before `kill` returns)
            own_redis.kill()
            took = give_up_time(waiting, down)
        finally:
            raw.close()
            c.close()  # (a wait that never gives up is cancelled)
    assert OUTAGE_LIMIT <= took < OUTAGE_LIMIT + SLACK


def test_a_wait_started_during_an_outage_gives_up_after_the_limit(
        own_redis: RedisServer, make_client: MakeClient) -> None:
    """A wait that starts while Redis is down keeps trying for the whole limit too."""
    c = make_client(make_settings(own_redis.url, redis_outage_limit=OUTAGE_LIMIT))
    sid, action_id, _ = pending_action(c)
    own_redis.kill()
    with ThreadPoolExecutor(1) as pool:
        try:
            start = time.monotonic()
            took = give_up_time(pool.submit(c.handle(sid, action_id).get), start)
        finally:
            c.close()
    assert OUTAGE_LIMIT <= took < OUTAGE_LIMIT + SLACK


def test_a_wait_survives_an_outage_shorter_than_the_limit(own_redis: RedisServer,
                                                          make_client: MakeClient) -> None:
    """Redis is saved, stopped and started again within the limit: the wait goes on and
    gets the result once the action runs."""
    settings = make_settings(own_redis.url, redis_outage_limit=20.0)
    c = make_client(settings)
    raw = redis.Redis(port=own_redis.port, decode_responses=True)
    runner = Client(settings)
    sid, action_id, channel = pending_action(c)
    with ThreadPoolExecutor(1) as pool:
        try:
            waiting = pool.submit(c.handle(sid, action_id).get)
            wait_for(lambda: raw.pubsub_numsub(channel) == [(channel, 1)], 10,
                     message="the wait to subscribe")
            raw.save()
            own_redis.kill()
            time.sleep(1.0)  # the wait finds Redis gone meanwhile
            own_redis.start()  # loads the dump saved above
            assert not waiting.done()
            burst(runner, sid)
            assert waiting.result(timeout=30) == 1
        finally:
            raw.close()
            runner.close()
            c.close()


def test_both_clients_take_the_wait_policy_from_the_settings(
        redis_server: RedisServer, make_client: MakeClient) -> None:
    settings = make_settings(redis_server.url, wait_recheck_interval=2.5,
                             redis_outage_limit=7.0, reconnect_backoff="0.2,0.4,0.8")
    c = make_client(settings)
    policy = c.hub.policy if isinstance(c, Blocking) else c.mailbox.policy
    assert policy == WaitPolicy(2.5, 7.0, (0.2, 0.4, 0.8)) == WaitPolicy.of(settings)


# -- the waiter alone (no Redis) -------------------------------------------------------------
POLICY = WaitPolicy(recheck_every=1.0, outage_limit=5.0, backoff=(0.1, 0.3, 0.7))


def test_the_default_policy_is_the_one_of_the_sync_client_before() -> None:
    """Re-read every second, give up after 60 s of outage; the backoff of both clients."""
    assert WaitPolicy.of(Settings()) == WaitPolicy(1.0, 60.0, (0.05, 0.1, 0.2, 0.5, 1.0))


def test_a_waiter_listens_and_rechecks_on_schedule() -> None:
    waiter = Waiter(POLICY, now=100.0)
    assert waiter.next(100.0) == Listen(1.0)
    assert waiter.next(100.4) == Listen(pytest.approx(0.6))
    assert waiter.next(101.0) == Recheck()
    waiter.rechecked(101.2)
    assert waiter.next(101.2) == Listen(pytest.approx(1.0))
    assert waiter.give_up_at() is None


def test_reconnections_follow_the_backoff_then_give_up_at_the_outage_limit() -> None:
    """Delays 0.1, 0.3, 0.7, then 0.7 again; the last attempt comes at the limit itself, and
    only past it does the waiter give up, with Redis unreachable."""
    waiter = Waiter(POLICY, now=0.0)
    waiter.lost(10.0)
    assert waiter.next(10.0) == Reconnect(pytest.approx(0.1))
    delays = []
    now = 10.0
    while isinstance(step := waiter.next(now), Reconnect):
        delays.append(round(step.delay, 6))
        now += step.delay
        waiter.failed(now)
    assert delays == [0.1, 0.3, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.4]  # the last: to the limit
    assert step == GiveUp(outage=True) and now == pytest.approx(15.0)


def test_a_reconnection_resets_the_backoff_and_the_outage_clock() -> None:
    waiter = Waiter(POLICY, now=0.0)
    waiter.lost(1.0)
    waiter.failed(1.1)
    waiter.failed(1.4)
    waiter.connected(2.1)
    assert waiter.next(2.1) == Listen(1.0) and not waiter.down
    waiter.lost(4.0)
    assert waiter.next(4.0) == Reconnect(pytest.approx(0.1))
    assert waiter.give_up_at() == 9.0


def test_a_deadline_outlasts_the_outage_limit_and_says_why_it_gave_up() -> None:
    """With a deadline the wait keeps trying through an outage until the deadline (then
    Redis unreachable); with Redis up, the deadline is a timeout."""
    waiter = Waiter(POLICY, now=0.0)
    waiter.limit(0.0, 30.0)
    waiter.lost(1.0)
    assert isinstance(waiter.next(20.0), Reconnect)
    assert waiter.next(30.0) == GiveUp(outage=True)
    waiter.connected(30.0)
    assert waiter.next(30.0) == GiveUp(outage=False)
    assert waiter.next(29.5) == Listen(pytest.approx(0.5))


def test_a_wait_started_during_an_outage_gets_the_whole_limit() -> None:
    """Waits share their connection's state (the async hub's): the limit counts from the
    outage's start, or from the wait's if it started later."""
    hub = Waiter(POLICY, now=0.0, deadline=float("inf"))
    hub.lost(10.0)
    early = Waiter(POLICY, now=5.0, link=hub.link)
    late = Waiter(POLICY, now=12.0, link=hub.link)
    assert (early.give_up_at(), late.give_up_at()) == (15.0, 17.0)
    assert early.next(15.0) == GiveUp(outage=True)
    assert isinstance(late.next(15.0), Reconnect)
    assert isinstance(hub.next(1e9), Reconnect)  # the hub itself never gives up
