"""The workers' fetch on a Redis broker (`jido_tasks.store.transport`): a message a dead worker
was taking comes back, messages of every priority are taken, holding lists stay empty, and
what any Celery client publishes is consumed unchanged (real redis-server, real workers)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import redis
from celery import Celery

from jido_tasks.store import transport as reliable_redis
from jido_tasks.worker.app import make_app
from tests.conftest import WorkerGroup, make_settings, wait_for

Workers = Callable[..., WorkerGroup]


def pure_app(group: WorkerGroup) -> Celery:
    """A plain Celery client (kombu's own Redis transport), as any app would build it."""
    app = Celery(broker=group.settings.broker, backend=group.settings.backend)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    result_accept_content=["json"])
    return app


def test_the_fetch_is_kombus_redis_transport_once_an_app_is_made() -> None:
    """`make_app` installs it for `redis://`; the URL keeps its scheme (Flower, `as_uri`)."""
    app = make_app(make_settings("redis://127.0.0.1:6379/0"))
    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, reliable_redis.Transport)
        assert conn.as_uri().startswith("redis://")
    app.close()


def test_a_message_a_dead_worker_was_taking_comes_back(workers: Workers) -> None:
    """A message in the holding list of a channel whose liveness key has expired (a worker
    SIGKILLed after its fetch moved the message, before it recorded it) is moved back to its
    queue by a worker's restore scan and runs; one of a live channel stays where it is."""
    group = workers(0)  # nobody consumes while the dead worker's leftovers are set up
    r = redis.Redis.from_url(group.settings.broker)
    app = pure_app(group)
    queue = group.settings.queue
    dead = app.send_task("jido_tasks.ping", args=["dead"], queue=queue)
    live = app.send_task("jido_tasks.ping", args=["live"], queue=queue)
    dead_holding = f"{reliable_redis.HOLDING_PREFIX}{uuid.uuid4().hex}/{queue}"
    live_owner = f"{reliable_redis.HOLDING_PREFIX}{uuid.uuid4().hex}"
    live_holding = f"{live_owner}/{queue}"
    # As the fetch leaves them: each message moved, its holding list registered.
    assert r.lmove(queue, dead_holding, "RIGHT", "LEFT") is not None
    assert r.lmove(queue, live_holding, "RIGHT", "LEFT") is not None
    r.hset(reliable_redis.HOLDING_REGISTRY, mapping={dead_holding: queue, live_holding: queue})
    r.set(live_owner, "1", ex=120)  # that channel is alive
    assert r.llen(queue) == 0
    group.start(1)
    assert dead.get(timeout=30)["pong"] == "dead"
    assert r.llen(dead_holding) == 0
    assert not r.hexists(reliable_redis.HOLDING_REGISTRY, dead_holding)
    assert r.llen(live_holding) == 1 and not live.ready()
    r.delete(live_owner)  # that channel dies too: the next scan (every 10 s) gives it back
    assert live.get(timeout=40)["pong"] == "live"
    app.close()
    r.close()


def test_every_priority_and_queue_is_taken(workers: Workers) -> None:
    """Messages a plain Celery client sends with priorities (kombu's priority lists), sent
    while the worker waits on the main list: each one runs, none is left in a holding list."""
    group = workers(1)
    app = pure_app(group)
    time.sleep(1.5)  # the worker is waiting (BLMOVE on the main list)
    results = [app.send_task("jido_tasks.ping", args=[p], queue=group.settings.queue,
                             priority=p) for p in (0, 3, 5, 9)]
    assert [res.get(timeout=30)["pong"] for res in results] == [0, 3, 5, 9]
    sweep = app.send_task("jido_tasks.ping", args=["sweep"], queue=group.settings.sweep_queue)
    assert sweep.get(timeout=30)["pong"] == "sweep"
    many = [app.send_task("jido_tasks.ping", args=[i], queue=group.settings.queue)
            for i in range(200)]
    assert [res.get(timeout=60)["pong"] for res in many] == list(range(200))
    r = redis.Redis.from_url(group.settings.broker)
    holdings = r.hgetall(reliable_redis.HOLDING_REGISTRY)
    assert all(r.llen(h) == 0 for h in holdings), "nothing left held"
    owners = holders(r, group)
    assert owners, "the worker's holding lists are registered"
    assert all(r.ttl(o) > 0 for o in owners), "the worker's channel is alive"
    app.close()
    r.close()


def holders(r: redis.Redis, group: WorkerGroup) -> set[bytes]:
    """The liveness keys of the channels that consume the group's queues (the registry is
    the broker database's, shared with other tests' workers)."""
    queues = (group.settings.queue, group.settings.sweep_queue)
    return {h[:reliable_redis.OWNER_LENGTH]
            for h, source in r.hgetall(reliable_redis.HOLDING_REGISTRY).items()
            if source.decode().split("\x06\x16")[0] in queues}


def test_a_stopped_worker_leaves_nothing_held(workers: Workers) -> None:
    """A warm shutdown gives back what its channel holds and drops its liveness key."""
    group = workers(1)
    app = pure_app(group)
    assert app.send_task("jido_tasks.ping", args=[1],
                         queue=group.settings.queue).get(timeout=30)["pong"] == 1
    r = redis.Redis.from_url(group.settings.broker)
    owners = holders(r, group)
    assert owners and all(r.exists(o) for o in owners)
    group.stop()
    wait_for(lambda: not any(r.exists(o) for o in owners), 10,
             message="the stopped worker's liveness keys to go")
    assert all(r.llen(h) == 0 for h in r.hgetall(reliable_redis.HOLDING_REGISTRY))
    queued = [json.loads(m) for m in r.lrange(group.settings.queue, 0, -1)]
    assert queued == []
    app.close()
    r.close()
