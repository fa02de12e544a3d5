"""Chaos: worker processes and whole workers SIGKILLed at random while sessions work, and Redis
restarted in the middle of it.

The default run is short; `--soak` runs the long variant. Whatever is killed, every session's
list ends exactly 0..n-1: nothing lost, nothing applied twice, order kept. Redis (the registry,
and the broker too unless the workers use another one) runs with AOF and `appendfsync always`
and is stopped (SHUTDOWN) and started again on the same port and data once, while processes are
being killed: with fsync always no acknowledged write can be lost, so the exact claim holds. The
recovery times (after each kill, after the restart) are printed in the terminal summary.

The cluster variant keeps the registry on a private three-master Redis Cluster (AOF, fsync
always; the broker and results on the single Redis) and restarts the master holding the most
sessions instead (SHUTDOWN, then started again on the same port, directory and nodes.conf): the
sessions on the other masters keep working meanwhile.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis

from jido_tasks import ActionHandle, Client, RedisUnavailable
from jido_tasks.store.keys import key_slot
from tests.cluster import RedisClusterServers
from tests.conftest import RedisServer, WorkerGroup, wait_for

Workers = Callable[..., WorkerGroup]
Figures = Callable[[str], None]


class Restartable(Protocol):
    """What the chaos stops and starts again: a single Redis, or one master of a cluster."""

    port: int

    def shutdown(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class ClusterMaster:
    """One master of a cluster (`port`, chosen once the sessions exist), restarted with its
    AOF and nodes.conf."""

    cluster: RedisClusterServers
    port: int = 0

    def shutdown(self) -> None:
        self.cluster.shutdown_node(self.port)

    def start(self) -> None:
        self.cluster.start_node(self.port)


def master_of(cluster: RedisClusterServers, client: Client, sid: str) -> int:
    """The port of the master holding session `sid`'s keys."""
    prefix = client.layer.keys.group_for(sid).prefix
    return cluster.master_of(key_slot(prefix[prefix.index("{") + 1:prefix.index("}")]))


class Commits(threading.Thread):
    """Polls every session's list length, node by node, and keeps the times it grew (the
    commits seen)."""

    def __init__(self, where: dict[str, tuple[int, str]]) -> None:
        """`where`: per session id, the port of the Redis holding it and its state key."""
        super().__init__(daemon=True)
        self.nodes = {port: redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
                      for port, _ in where.values()}
        self.where = where
        self.lengths = dict.fromkeys(where, 0)
        self.grew: dict[str, list[float]] = {sid: [] for sid in where}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            for port, node in self.nodes.items():
                sids = [sid for sid, (p, _) in self.where.items() if p == port]
                pipe = node.pipeline(transaction=False)
                for sid in sids:
                    pipe.hget(self.where[sid][1], "items")
                try:
                    values = pipe.execute()
                except redis.RedisError:  # this Redis is restarting
                    continue
                now = time.monotonic()
                for sid, raw in zip(sids, values, strict=True):
                    length = len(json.loads(raw)) if raw else 0
                    if length > self.lengths[sid]:
                        self.lengths[sid] = length
                        self.grew[sid].append(now)
        for node in self.nodes.values():
            node.close()

    def next_after(self, sid: str, moment: float) -> float | None:
        """When the session's list next grew after `moment` (None: it never did)."""
        return next((t for t in self.grew[sid] if t > moment), None)


class Chaos(threading.Thread):
    """Every `period` seconds SIGKILL a random pool process; now and then a whole worker,
    replaced by a new one; and run a sweep (the beat's job) so abandoned drains resume. After
    `restart_after` kills, stop Redis (SHUTDOWN, keeping its AOF), kill once more while it is
    down, and start it again on the same port and data."""

    def __init__(self, group: WorkerGroup, period: float, seed: int,
                 server: Restartable | None = None, restart_after: int = 3) -> None:
        super().__init__(daemon=True)
        self.group, self.period = group, period
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills = {"process": 0, "worker": 0}
        self.errors: list[BaseException] = []
        self.server, self.restart_after = server, restart_after
        self.restarted = threading.Event()
        self.restart: tuple[float, float] | None = None
        """(SHUTDOWN sent, Redis answering again), monotonic."""
        self.victims: list[tuple[str, float, list[str]]] = []
        """Per kill: what was killed, when, and the sessions it held a lease on."""
        self.sessions: list[str] = []
        self.replaced: set[int] = set()
        self.exited = 0
        """Workers whose main process exited on its own, started again."""

    def run(self) -> None:
        try:
            while not self.stop.wait(self.period):
                self.supervise()
                self.strike()
                if (self.server is not None and not self.restarted.is_set()
                        and sum(self.kills.values()) >= self.restart_after):
                    self.restart_redis(self.server)
                self.group.client.sweep(force=True)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def supervise(self) -> None:
        """Start a new worker for one whose main process exited on its own, as a supervisor
        (systemd, compose) would: Celery ends a worker whose pool process dies while its pool
        starts ("Unrecoverable error: WorkerLostError('Could not start worker processes')")."""
        for index, proc in enumerate(self.group.procs):
            if proc.poll() is not None and index not in self.replaced:
                self.replaced.add(index)
                self.group.start(1, wait=False)
                self.exited += 1

    def restart_redis(self, server: Restartable) -> None:
        down = time.monotonic()
        server.shutdown()
        self.stop.wait(self.period)
        self.strike(leases={})  # while Redis is down: the leases cannot be read
        self.stop.wait(self.period)
        server.start()
        self.restart = (down, time.monotonic())
        self.restarted.set()

    def holders(self) -> dict[str, str]:
        """Session id by the worker id (`host:pid`) holding its lease, for the sessions with
        work pending (an idle one would not commit again until the next send)."""
        pipe = self.group.client.layer.redis.pipeline(transaction=False)
        for sid in self.sessions:
            sk = self.group.client.layer.keys.session(sid)
            pipe.get(sk.lease)
            pipe.llen(sk.mailbox)
        values = pipe.execute()
        return {str(lease).split("|", 1)[1]: sid
                for sid, lease, pending in zip(self.sessions, values[::2], values[1::2],
                                               strict=True) if lease and pending}

    def strike(self, leases: dict[str, str] | None = None) -> None:
        alive = [i for i, p in enumerate(self.group.procs) if p.poll() is None]
        if not alive:
            return
        held = self.holders() if leases is None else leases
        index = self.rng.choice(alive)
        # About one strike in seven takes a whole worker, and the fifth does if none has yet.
        whole = self.rng.random() < 0.15 or (self.kills["worker"] == 0
                                             and self.kills["process"] >= 4)
        if whole and len(alive) > 1:
            pids = self.group.child_pids(self.group.procs[index])
            self.replaced.add(index)
            self.group.kill(index)
            self.group.start(1, wait=False)
            self.kills["worker"] += 1
            self.killed("worker", pids, held)
            return
        children = self.group.child_pids(self.group.procs[index])
        if children:
            pid = self.rng.choice(children)
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills["process"] += 1
                self.killed("process", [pid], held)
            except ProcessLookupError:
                pass

    def killed(self, kind: str, pids: list[int], held: dict[str, str]) -> None:
        """Note which sessions the killed processes held, to time their recovery."""
        ends = tuple(f":{pid}" for pid in pids)
        self.victims.append((kind, time.monotonic(),
                             [sid for worker, sid in held.items() if worker.endswith(ends)]))


def send(group: WorkerGroup, sid: str, value: int, seconds: float) -> ActionHandle:
    """Send with an id of our own, again and again while Redis is away (a resend of the same
    id is accepted once), as a careful caller does."""
    action_id = f"act_{os.urandom(16).hex()}"
    deadline = time.monotonic() + 30
    while True:
        try:
            return group.client.send(sid, "test.slow_append",
                                     {"value": value, "seconds": seconds}, action_id=action_id)
        except RedisUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_chaos(workers: Workers, target: Restartable, figures: Figures, sessions: int,
              per_session: int, period: float, seed: int, **overrides: Any) -> None:
    """`target`: the Redis restarted among the kills (a `RedisServer` holding everything, or
    a `ClusterMaster` of the cluster the workers' settings name); `overrides`: more settings
    for the workers."""
    # Every record is kept, so that every handle can be checked.
    group = workers(3, concurrency=2, lease_ttl=0.5, max_attempts=50,
                    keep_results=max(100, per_session), **overrides)
    assert isinstance(target, ClusterMaster) == group.settings.redis_cluster
    c = group.client
    sids = [c.create_session().id for _ in range(sessions)]
    if isinstance(target, ClusterMaster):  # restart the master holding the most sessions
        ports = {sid: master_of(target.cluster, c, sid) for sid in sids}
        target.port = Counter(ports.values()).most_common(1)[0][0]
    else:
        assert isinstance(target, RedisServer)
        ports = dict.fromkeys(sids, target.port)
    commits = Commits({sid: (ports[sid], c.layer.keys.session(sid).state) for sid in sids})
    commits.start()
    chaos = Chaos(group, period, seed, target)
    chaos.sessions = sids
    chaos.start()
    handles: dict[str, list[ActionHandle]] = {sid: [] for sid in sids}
    # Each session's work lasts at least three chaos periods, so kills land mid-work however
    # fast the machine (0.003 s actions once finished before the first strike).
    seconds = max(0.003, 3 * period / per_session)
    try:
        for i in range(per_session):
            if i == per_session // 2:  # strikes must land while work is still pending
                wait_for(lambda: sum(chaos.kills.values()) >= 2, 30, message="two strikes")
            if i == 3 * per_session // 4:  # and the Redis restart too
                wait_for(chaos.restarted.is_set, 60, message="the Redis restart")
            for sid in sids:
                handles[sid].append(send(group, sid, i, seconds))
        deadline = time.monotonic() + 60 + sessions * per_session * 0.02
        results = {sid: [h.get(timeout=max(1.0, deadline - time.monotonic())) for h in hs]
                   for sid, hs in handles.items()}
    finally:
        chaos.stop.set()
        chaos.join(30)
        commits.stop.set()
        commits.join(5)
    assert chaos.errors == []
    assert chaos.kills["process"] > 0 and chaos.kills["worker"] > 0, chaos.kills
    assert chaos.restart is not None
    for sid in sids:
        items = c.get_state(sid)["items"]
        lost = set(range(per_session)) - set(items)
        repeated = len(items) - len(set(items))
        out_of_order = sum(1 for a, b in itertools.pairwise(items) if a > b)
        assert (len(lost), repeated, out_of_order) == (0, 0, 0), (sid, items)
        assert results[sid] == list(range(1, per_session + 1)), sid  # every handle resolved
        sk = c.layer.keys.session(sid)
        assert c.layer.redis.llen(sk.mailbox) == 0
    restarted = [sid for sid in sids if ports[sid] == target.port]
    report(figures, chaos, commits, sessions * per_session, restarted,
           "a cluster master" if isinstance(target, ClusterMaster) else "Redis")


def report(figures: Figures, chaos: Chaos, commits: Commits, actions: int,
           restarted: list[str], what: str) -> None:
    """The recovery times: per kill (until every session the killed processes held commits
    again), and after the restart of `what` (for the `restarted` sessions: those it held;
    the others' commits while it was down are counted)."""
    assert chaos.restart is not None
    down, up = chaos.restart
    recoveries: dict[str, list[float]] = {"process": [], "worker": []}
    for kind, moment, held in chaos.victims:
        times = [commits.next_after(sid, moment) for sid in held]
        if not held or None in times:
            continue
        recovered = max(t for t in times if t is not None)
        if not moment <= down <= recovered and not down <= moment <= up:  # not the restart's
            recoveries[kind].append(recovered - moment)
    figures(f"chaos: {actions} actions, {chaos.kills['process']} pool processes and "
            f"{chaos.kills['worker']} workers killed ({chaos.exited} more exited on their own "
            f"and were started again): 0 lost, 0 repeated, 0 out of order")
    for kind, times in recoveries.items():
        if times:
            figures(f"chaos: a killed {kind}'s sessions commit again after: median "
                    f"{statistics.median(times):.2f} s, max {max(times):.2f} s "
                    f"({len(times)} kills of a lease holder with work pending)")
    resumed = [commits.next_after(sid, up) for sid in restarted]
    after = [t - up for t in resumed if t is not None]
    assert after, f"no commit after the restart of {what}"
    others = [sid for sid in commits.grew if sid not in restarted]
    meanwhile = sum(1 for sid in others for t in commits.grew[sid] if down <= t <= up)
    figures(f"chaos: {what} restart (SHUTDOWN, AOF fsync always) while killing: down "
            f"{up - down:.2f} s (until it served again); after that, first commit "
            f"{min(after):.2f} s, every session it held committing again {max(after):.2f} s "
            f"({len(after)} sessions)"
            + (f"; the {len(others)} sessions on the other masters committed {meanwhile} "
               "times while it was down (their queued work: the sender, sending round-robin, "
               "waited on a session of the down master)" if others else ""))


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own with AOF on, fsync always (see the module's doc)."""
    server = RedisServer(tmp_path / "redis", aof=True)
    server.dir.mkdir()
    server.start()
    yield server
    server.kill()


@pytest.mark.brokers
def test_chaos_short(workers: Workers, aof_redis: RedisServer, figures: Figures) -> None:
    """Short chaos: 8 sessions x 40 actions while processes are killed every 0.4 s, and Redis
    restarted once among the kills."""
    run_chaos(workers, aof_redis, figures, sessions=8, per_session=40, period=0.4, seed=1,
              redis_url=aof_redis.url)


@pytest.fixture
def aof_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A three-master Redis Cluster of the test's own with AOF on, fsync always."""
    cluster = RedisClusterServers(tmp_path / "cluster", aof=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_workers(workers: Workers, aof_cluster: RedisClusterServers,
                    redis_server: RedisServer) -> Workers:
    """`workers` with the registry on `aof_cluster` and the broker and results on the run's
    single Redis (Celery's Redis transport does not speak Cluster)."""
    def start(n: int = 1, concurrency: int = 1, wait: bool = True,
              **overrides: Any) -> WorkerGroup:
        return workers(n, concurrency, wait, redis_url=aof_cluster.url, redis_cluster=True,
                       broker_url=redis_server.url, result_backend=redis_server.url,
                       **overrides)

    return start


def test_chaos_short_cluster(cluster_workers: Workers, aof_cluster: RedisClusterServers,
                             figures: Figures) -> None:
    """Short chaos with the registry on a Redis Cluster (the broker and results on the single
    Redis): 8 sessions x 40 actions while processes are killed every 0.4 s, and the master
    holding the most sessions restarted once among the kills. On the Redis broker only."""
    run_chaos(cluster_workers, ClusterMaster(aof_cluster), figures, sessions=8,
              per_session=40, period=0.4, seed=3)


@pytest.mark.soak
def test_chaos_soak(workers: Workers, aof_redis: RedisServer, figures: Figures) -> None:
    """Long chaos (--soak): 40 sessions x 250 actions, a kill every 0.25 s, one Redis
    restart."""
    run_chaos(workers, aof_redis, figures, sessions=40, per_session=250, period=0.25, seed=2,
              redis_url=aof_redis.url)
