"""Reliability (issue 12): all-or-nothing commits, time limits and BaseException, fair turns
between sessions, takeover of a dead holder's sessions."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from jido_tasks import ActionFailed, Client, ProtocolError, RedisOutOfMemory
from jido_tasks.store import scripts
from jido_tasks.worker import drain as runtime
from tests.conftest import BurstClient, RedisServer, WorkerGroup, burst, make_settings, wait_for

Workers = Callable[..., WorkerGroup]


# -- 1. a commit is all or nothing ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["none", "dict", "surrogate", "surrogate_data", "data_list",
                                  "nan"])
def test_a_bad_event_fails_the_action_and_commits_nothing(burst_client: BurstClient,
                                                         kind: str) -> None:
    """An event that cannot be written fails its action (InvalidEvent): state unchanged, the
    failure recorded, the lease released, the next action applied."""
    c = burst_client
    sid = c.create_session().id
    c.call(sid, "test.append", {"value": 1})
    before = [e.type for e in c.events(sid)]
    with pytest.raises(ActionFailed) as failed:
        c.call(sid, "test.emit_bad", {"kind": kind})
    assert failed.value.error_type == "InvalidEvent"
    assert c.get_state(sid) == {"items": [1]}
    assert [e.type for e in c.events(sid)] == [*before, "action.failed"]
    assert c.call(sid, "test.append", {"value": 2}) == 2
    sk = c.layer.keys.session(sid)
    assert c.layer.redis.exists(sk.lease, sk.mailbox) == 0


def test_a_bad_event_on_a_worker_does_not_hold_the_session(workers: Workers) -> None:
    """On a real worker the action fails at once and the next one follows within a second or
    two, not after the lease expired (which used to take 18-19.5 s with defaults)."""
    c = workers(1, lease_ttl=10.0).client
    sid = c.create_session().id
    with pytest.raises(ActionFailed) as failed:
        c.call(sid, "test.emit_bad", {"kind": "none"}, timeout=10)
    assert failed.value.error_type == "InvalidEvent"
    assert c.call(sid, "test.append", {"value": 1}, timeout=5) == 1
    assert c.get_state(sid) == {"items": [1]}


def test_commit_checks_events_before_its_first_write(client: Client) -> None:
    """commit.lua refuses events that XADD could not write before writing anything."""
    sid = client.create_session().id
    h = client.send(sid, "test.append", {"value": 1})
    claimed = client.layer.call(scripts.claim(sid, worker="t", lease_ms=5000, batch_size=10))
    assert isinstance(claimed, scripts.Claimed)
    sk = client.layer.keys.session(sid)
    state_before = client.layer.redis.hgetall(sk.state)
    for events in ('[[null,"{}"]]', '[[{"a":1},"{}"]]', '[["x"]]', '[7]', '[["","{}"]]'):
        with pytest.raises(ProtocolError):
            client.layer.call(scripts.commit(sid, token=claimed.token, changes={"x": "1"},
                                              migrate=False, events=events, keep=100,
                                              last=True,
                                              outcomes=[(h.id, '{"s":"succeeded"}')]))
        assert client.layer.redis.hgetall(sk.state) == state_before
        assert client.layer.redis.lrange(sk.mailbox, 0, -1) == [h.id]
        assert client.layer.redis.llen(sk.records) == 0


class _Broken(runtime.Drainer):
    """A drain whose commit fails unexpectedly (as a bug or a lost Redis would)."""

    def _commit(self, group: runtime._Group, report: runtime.DrainReport,
                last: bool) -> scripts.Tag:
        raise RuntimeError("unexpected")


def test_a_drain_that_fails_unexpectedly_hands_its_lease_back(client: Client) -> None:
    """The lease is dropped at once (not left to expire), the flag kept, the caller told to
    publish the drain again; the retry counts as another attempt of the head."""
    sid = client.create_session().id
    h = client.send(sid, "test.append", {"value": 1})
    report = _Broken(client.layer, sid, "broken").drain()
    assert (report.outcome, report.requeue) == ("error", True)
    sk = client.layer.keys.session(sid)
    r = client.layer.redis
    assert r.exists(sk.lease) == 0
    assert r.hget(sk.entry, "scheduled") is not None
    assert r.zscore(client.layer.keys.group_for(sid).scheduled, sid) is not None
    assert runtime.drain(client.layer, sid, "good").applied == 1
    assert h.record().attempts == 2
    assert client.get_state(sid) == {"items": [1]}


# -- 2. time limits and BaseException ------------------------------------------------------
def test_an_action_that_swallows_its_time_limit_fails(burst_client: BurstClient) -> None:
    """Catching BaseException around the work does not get an action past its time limit:
    it fails with ActionTimeLimitExceeded and nothing of it is committed."""
    c = burst_client
    sid = c.create_session().id
    started = time.monotonic()
    with pytest.raises(ActionFailed) as failed:
        c.call(sid, "test.swallow", {"seconds": 2.5})
    assert failed.value.error_type == "ActionTimeLimitExceeded"
    assert time.monotonic() - started < 10
    assert c.get_state(sid) == {}


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_base_exceptions_are_the_actions_own_failure(workers: Workers, kind: str) -> None:
    """SystemExit, KeyboardInterrupt, GeneratorExit raised by an action: recorded at once with
    their real type, state unchanged, the pool process alive (not killed three times and
    failed as poison half a minute later)."""
    group = workers(1)
    c = group.client
    pids = group.child_pids(group.procs[0])
    sid = c.create_session().id
    c.call(sid, "test.append", {"value": 1}, timeout=10)
    with pytest.raises(ActionFailed) as failed:
        c.call(sid, "test.raise_base", {"kind": kind}, timeout=10)
    assert failed.value.error_type == kind
    assert c.call(sid, "test.append", {"value": 2}, timeout=10) == 2
    assert c.get_state(sid) == {"items": [1, 2]}
    assert group.child_pids(group.procs[0]) == pids


# -- 7. fair turns ----------------------------------------------------------------------------
class Streamer(threading.Thread):
    """Keeps a session's mailbox full of quick actions."""

    def __init__(self, client: Client, sid: str) -> None:
        super().__init__(daemon=True)
        self.client, self.sid = client, sid
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        mailbox = self.client.layer.keys.session(self.sid).mailbox
        while not self.stop.is_set():
            if self.client.layer.redis.llen(mailbox) < 200:
                self.client.send_many(self.sid, [("test.slow_append",
                                                  {"value": 0, "seconds": 0.005})] * 50)
                self.sent += 50
            else:
                time.sleep(0.01)


def test_hot_sessions_cannot_starve_a_cold_one(workers: Workers) -> None:
    """One worker, 2 pool processes, two sessions streaming: a third session's calls still
    finish within a few time slices (they used to time out)."""
    group = workers(1, concurrency=2)
    c = group.client
    hot = [c.create_session().id for _ in range(2)]
    cold = c.create_session().id
    streamers = [Streamer(Client(c.settings), sid) for sid in hot]
    for s in streamers:
        s.start()
    try:
        wait_for(lambda: all(c.layer.redis.hget(c.layer.keys.session(sid).entry, "fence")
                             for sid in hot), 20, message="both hot sessions claimed")
        times = []
        for i in range(8):
            started = time.monotonic()
            assert c.call(cold, "test.append", {"value": i}, timeout=15) == i + 1
            times.append(time.monotonic() - started)
    finally:
        for s in streamers:
            s.stop.set()
            s.join(10)
            s.client.close()
    assert max(times) < 5, times
    assert statistics.median(times) < 2, times
    assert c.get_state(cold)["items"] == list(range(8))


def test_a_yield_keeps_order_and_counts_no_attempt(client: Client) -> None:
    """A drain whose time slice is over commits what it ran, hands the lease back with the
    flag kept; the next drain goes on in order, the head's attempts still 1."""
    sid = client.create_session().id
    handles = client.send_many(sid, [("test.slow_append", {"value": i, "seconds": 0.02})
                                     for i in range(60)])
    layer = client.layer
    drainer = runtime.Drainer(layer, sid, "w")
    drainer.settings = drainer.settings.model_copy(update={"drain_time_slice": 0.2})
    report = drainer.drain()
    assert report.outcome == "yielded" and report.requeue
    assert 0 < report.applied < 60
    sk = layer.keys.session(sid)
    assert layer.redis.exists(sk.lease) == 0
    assert layer.redis.hget(sk.entry, "scheduled") is not None
    burst(client, sid)
    assert client.get_state(sid)["items"] == list(range(60))
    assert {h.record().attempts for h in handles} == {1}


# -- 5. recovery in seconds with default settings -------------------------------------------
def test_takeover_needs_the_same_holder_and_its_liveness_gone(client: Client) -> None:
    """takeover claims only while the lease still names the holder read and that holder's
    liveness key is gone; the new token fences the old holder out."""
    sid = client.create_session().id
    h = client.send(sid, "test.append", {"value": 1})
    layer, keys = client.layer, client.layer.keys
    first = layer.call(scripts.claim(sid, worker="host:1", lease_ms=60_000, batch_size=10,
                                     alive_key=keys.alive("host:1", sid), alive_ms=60_000))
    assert isinstance(first, scripts.Claimed)
    busy = layer.call(scripts.claim(sid, worker="host:2", lease_ms=60_000, batch_size=10,
                                    alive_key=keys.alive("host:2", sid), alive_ms=60_000))
    assert isinstance(busy, scripts.Busy) and busy.holder == "host:1"

    def takeover(expected: str) -> scripts.ClaimReply:
        return layer.call(scripts.takeover(
            sid, worker="host:2", lease_ms=60_000, batch_size=10,
            alive_key=keys.alive("host:2", sid), alive_ms=60_000, expected=expected,
            holder_alive_key=keys.alive("host:1", sid)))

    alive = takeover(busy.lease)
    assert isinstance(alive, scripts.Busy) and 0 < alive.retry_after <= 60
    layer.redis.delete(keys.alive("host:1", sid))
    assert isinstance(takeover("999|host:1"), scripts.Busy)  # not the lease it read
    second = takeover(busy.lease)
    assert isinstance(second, scripts.Claimed)
    assert int(second.token) == int(first.token) + 1
    assert second.batch.attempts == 2  # the dead holder's hand-out counts
    assert layer.redis.pttl(keys.alive("host:2", sid)) > 0
    stale = layer.call(scripts.commit(sid, token=first.token, changes={}, migrate=False,
                                      events="[]", keep=10, last=True,
                                      outcomes=[(h.id, '{"s":"succeeded"}')]))
    assert stale is scripts.Tag.STALE
    layer.redis.delete(keys.session(sid).lease, keys.alive("host:2", sid))  # leave no live lease


def test_liveness_keys_escape_any_worker_id(client: Client) -> None:
    """A worker id read from a lease may hold anything: its key stays one well-formed key."""
    keys = client.layer.keys
    ns = client.settings.namespace
    sid = client.create_session().id
    tagged = keys.group_for(sid).prefix  # the session's slot group: `ns:{g<n>.<k>}`
    assert tagged.startswith(f"{ns}:{{g{keys.group_of(sid)}.")
    assert keys.alive("host-1.example:123", sid) == f"{tagged}:alive:host-1.example:123"
    odd = keys.alive("a}{b c\n\u00e9", sid)
    assert odd.startswith(f"{tagged}:alive:") and odd.count("{") == 1 and odd.count("}") == 1
    assert "\n" not in odd and " " not in odd
    assert len(keys.alive("x" * 5000, sid)) < 100


def _started(c: Client, key: str, n: int = 1, timeout: float = 60) -> list[int]:
    wait_for(lambda: c.layer.redis.llen(key) >= n, timeout, message=f"{n} action starts")
    return [int(p) for p in c.layer.redis.lrange(key, 0, -1)]


@pytest.mark.brokers
def test_a_dead_pool_process_resumes_in_seconds_with_default_lease(workers: Workers) -> None:
    """SIGKILL the pool process running an action, with the default 10 s lease: the action
    starts again elsewhere within seconds (the holder's liveness key is gone), not after the
    lease expired."""
    group = workers(1, concurrency=2, lease_ttl=10.0)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    first = c.send(sid, "test.slow_append", {"value": 0, "seconds": 1.0, "started_key": key})
    after = c.send(sid, "test.append", {"value": 1})
    pid = _started(c, key)[0]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _started(c, key, 2, timeout=30)
    resumed = time.monotonic() - killed
    assert after.get(timeout=30) == 2
    assert first.record().attempts == 2
    assert c.get_state(sid)["items"] == [0, 1]
    assert resumed < 5, resumed  # the goal (measured by bench_recovery) is under 2 s


@pytest.mark.brokers
def test_a_dead_worker_resumes_in_seconds(workers: Workers, broker: str) -> None:
    """SIGKILL a whole worker holding a session: the session resumes within 15 s with the
    default lease. On the Redis broker the message stays unacked until the visibility timeout,
    so another worker's light recovery sees the holder's liveness gone and publishes a drain
    (it took about a minute before); RabbitMQ redelivers the message when the dead worker's
    connection closes, and its drain takes the session over once the liveness key is gone."""
    group = workers(2, lease_ttl=10.0)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    c.send(sid, "test.slow_append", {"value": 0, "seconds": 1.0, "started_key": key})
    after = c.send(sid, "test.append", {"value": 1})
    pid = _started(c, key)[0]
    holder = next(i for i, p in enumerate(group.procs) if pid in group.child_pids(p))
    group.kill(holder)
    killed = time.monotonic()
    _started(c, key, 2, timeout=40)
    resumed = time.monotonic() - killed
    assert after.get(timeout=30) == 2
    assert c.get_state(sid)["items"] == [0, 1]
    if broker == "redis":
        assert "session.recovered" in [e.type for e in c.events(sid)]
    assert resumed < 15, resumed


# -- 4. Redis restarted -------------------------------------------------------------------------
def test_calls_survive_a_redis_restart(tmp_path: Path) -> None:
    """Redis stopped (SHUTDOWN, AOF on) and started again on the same port and data: the same
    client's calls go on, and a call waiting across the restart gets its result (it used to
    raise RedisUnavailable although its send was accepted, inviting a double apply)."""
    server = RedisServer(tmp_path, aof=True)
    server.start()
    logdir = tmp_path / "workers"
    logdir.mkdir()
    group = WorkerGroup(make_settings(server.url), logdir)
    try:
        group.start(1)
        c = group.client
        sid = c.create_session().id
        assert c.call(sid, "test.append", {"value": 0}, timeout=20) == 1
        server.shutdown()
        server.start()
        assert c.call(sid, "test.append", {"value": 1}, timeout=30) == 2
        result: list[object] = []
        waiter = threading.Thread(target=lambda: result.append(c.call(
            sid, "test.slow_append", {"value": 2, "seconds": 1.5}, timeout=60)))
        waiter.start()
        wait_for(lambda: c.layer.redis.exists(c.layer.keys.session(sid).lease), 20,
                 message="the slow action to start")
        server.shutdown()
        server.start()
        waiter.join(90)
        assert result == [3]
        assert c.get_state(sid)["items"] == [0, 1, 2]
    finally:
        group.stop()
        server.kill()


def test_redis_out_of_memory_is_a_typed_error_everywhere(tmp_path: Path) -> None:
    """At maxmemory (noeviction) every public call that writes raises RedisOutOfMemory (not
    redis-py's untyped OutOfMemoryError, not RedisUnavailable), and nothing is half-written."""
    server = RedisServer(tmp_path, args=("--maxmemory", "4mb"))
    server.start()
    c = Client(make_settings(server.url))
    try:
        sid = c.create_session().id
        c.send(sid, "test.append", {"value": 0})
        filler = redis.Redis(port=server.port)
        for size in (100_000, 1000, 10):  # until even the smallest write is refused
            with contextlib.suppress(redis.exceptions.OutOfMemoryError):
                for i in range(100_000):
                    filler.set(f"filler:{size}:{i}", "x" * size)
        before = c.layer.redis.llen(c.layer.keys.session(sid).mailbox)
        calls = {
            "create_session": lambda: c.create_session(),
            "send": lambda: c.send(sid, "test.append", {"value": 1}),
            "send_many": lambda: c.send_many(sid, ["test.noop", "test.noop"]),
            "call": lambda: c.call(sid, "test.append", {"value": 1}, timeout=1),
            "save_session": lambda: c.save_session(sid),
            "terminate_session": lambda: c.terminate_session(sid),
            "sweep": lambda: c.sweep(),
        }
        for name, fn in calls.items():
            with pytest.raises(RedisOutOfMemory) as err:
                fn()
            assert err.value.where == server.url, name
        assert c.layer.redis.llen(c.layer.keys.session(sid).mailbox) == before
        assert c.get_session(sid).status.value == "active"
    finally:
        c.close()
        server.kill()


def _fill(server: RedisServer) -> list[str]:
    """Write filler keys until Redis refuses even a tiny write; their names."""
    filler = redis.Redis(port=server.port)
    names: list[str] = []
    for size in (100_000, 1000, 10):
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
            for i in range(100_000):
                filler.set(f"filler:{size}:{i}", "x" * size)
                names.append(f"filler:{size}:{i}")
    filler.close()
    return names


def test_the_worker_survives_redis_out_of_memory(tmp_path: Path) -> None:
    """Redis (broker and registry) at maxmemory while a worker drains: the worker's main
    process meets the OOM in kombu's delivery bookkeeping and stays alive (it used to exit
    with "Unrecoverable error: OutOfMemoryError"); once memory is freed the same worker applies
    every action exactly once, in order, new ones included."""
    server = RedisServer(tmp_path, args=("--maxmemory", "6mb"))
    server.start()
    logdir = tmp_path / "workers"
    logdir.mkdir()
    group = WorkerGroup(make_settings(server.url), logdir)
    stop = threading.Event()
    try:
        group.start(1)
        c = group.client
        sids = [c.create_session().id for _ in range(4)]
        handles = [c.send(sid, "test.slow_append", {"value": i, "seconds": 0.1})
                   for i in range(10) for sid in sids]
        leases = [c.layer.keys.session(sid).lease for sid in sids]
        # Fill while a drain runs and others wait in the queue: the worker's main process
        # takes the next one (kombu's delivery bookkeeping) under the OOM.
        wait_for(lambda: c.layer.redis.exists(*leases)
                 and c.layer.redis.llen(c.settings.queue) >= 2, 20,
                 message="a drain running and two waiting")
        names = _fill(server)
        wait_for(lambda: "OutOfMemoryError" in "".join(
            line for line in group.logs().splitlines() if "/MainProcess]" in line), 30,
                 message="the worker's main process to meet the OOM")
        filler = redis.Redis(port=server.port)
        for i in range(0, len(names), 1000):
            filler.delete(*names[i:i + 1000])
        filler.close()

        def beat() -> None:  # the beat's sweep republishes drains lost to the OOM
            while not stop.wait(1.0):
                with contextlib.suppress(Exception):
                    c.sweep(force=True)

        threading.Thread(target=beat, daemon=True).start()
        main = group.procs[0]
        wait_for(lambda: main.poll() is not None or all(h.status().finished for h in handles),
                 60, interval=0.2, message="every action to finish")
        assert main.poll() is None, "the worker's main process exited"
        assert [h.get(timeout=1) for h in handles] == [i + 1 for i in range(10) for _ in sids]
        for sid in sids:
            assert c.call(sid, "test.append", {"value": 10}, timeout=30) == 11
            assert c.get_state(sid)["items"] == list(range(11)), sid
        assert group.procs[0].poll() is None and len(group.procs) == 1
        assert "Unrecoverable error" not in group.logs()
    finally:
        stop.set()
        group.stop()
        server.kill()


def test_a_drain_cancelled_by_sigterm_is_not_the_actions_failure(workers: Workers) -> None:
    """Celery cancels running drains with SIGTERM when its broker connection drops (a Redis
    restart); billiard turns the signal into SystemExit inside the action. That is the process
    stopping, not the action failing: the action runs again elsewhere and succeeds once (it was
    recorded as failed with `SystemExit: -241`)."""
    group = workers(1, concurrency=2, lease_ttl=2.0)
    c = group.client
    sid = c.create_session().id
    key = f"{c.settings.namespace}:test:started"
    first = c.send(sid, "test.slow_append", {"value": 0, "seconds": 1.0, "started_key": key})
    after = c.send(sid, "test.append", {"value": 1})
    os.kill(_started(c, key)[0], signal.SIGTERM)
    _started(c, key, 2, timeout=30)
    assert first.get(timeout=30) == 1
    assert after.get(timeout=30) == 2
    assert first.record().attempts == 2
    assert c.get_state(sid)["items"] == [0, 1]
