"""Sessions on a real three-master Redis Cluster: spread over every master, and no script
ever touches keys of two slots (Redis would answer CROSSSLOT, or refuse a non-local key)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from jido_tasks import Client, SessionStatus
from jido_tasks.errors import RedisUnavailable
from jido_tasks.store.keys import key_slot
from tests.cluster import RedisClusterServers
from tests.conftest import WorkerGroup, make_settings, wait_for

Workers = Callable[..., WorkerGroup]
TINY = {"timeout_minutes": 0.01}  # 0.6 s


@pytest.fixture
def redis_backend() -> str:
    return "cluster"


def _script_stats(cluster: RedisClusterServers) -> dict[int, dict[str, int]]:
    """Per node: EVALSHA calls, failed calls (a script error, e.g. a non-local key) and
    rejected calls (e.g. CROSSSLOT), and CROSSSLOT errors of any command."""
    out = {}
    for port in cluster.ports:
        node = redis.Redis(port=port)
        stats = node.info("commandstats").get("cmdstat_evalsha", {})
        errors = node.info("errorstats")
        out[port] = {"calls": int(stats.get("calls", 0)),
                     "failed": int(stats.get("failed_calls", 0)),
                     "rejected": int(stats.get("rejected_calls", 0)),
                     "crossslot": int(errors.get("errorstat_CROSSSLOT", {}).get("count", 0))}
    return out


def _reset_stats(cluster: RedisClusterServers) -> None:
    for port in cluster.ports:
        redis.Redis(port=port).config_resetstat()


def test_sessions_spread_over_every_master(client: Client,
                                           redis_cluster: RedisClusterServers) -> None:
    """300 sessions: each master holds between 20% and 47% of them (a third each on
    average), and each master's DBSIZE grew."""
    before = {p: redis.Redis(port=p).dbsize() for p in redis_cluster.ports}
    sids = [client.create_session().id for _ in range(300)]
    tags = [client.layer.keys.session(sid).entry for sid in sids]
    masters = Counter(redis_cluster.master_of(key_slot(key[key.index("{") + 1:key.index("}")]))
                      for key in tags)
    assert set(masters) == set(redis_cluster.ports)
    assert all(60 <= n <= 140 for n in masters.values()), masters
    assert all(redis.Redis(port=p).dbsize() > before[p] for p in redis_cluster.ports)


def test_every_script_runs_in_one_slot(workers: Workers,
                                       redis_cluster: RedisClusterServers) -> None:
    """Create, send, drain (claim, commit, release), progress, cancel, terminate, snapshot
    and restore, sweep (idle, expire, purge, recover), events and counters, on the cluster:
    every node ran scripts, and none failed or was rejected (no CROSSSLOT, no non-local
    key)."""
    group = workers(1, sweep_interval=600, retention=0.5, idle_after=0.3)
    c = group.client
    _reset_stats(redis_cluster)
    sids = [c.create_session(config=TINY if i % 2 else None).id for i in range(12)]
    handles = [c.send(sid, "test.append", {"value": v}) for sid in sids for v in range(3)]
    assert [h.get(30) for h in handles[:3]] == [1, 2, 3]
    for h in handles:
        h.get(30)
    slow = c.send(sids[0], "test.slow_append", {"value": 7, "seconds": 1})
    queued = c.send(sids[0], "test.append", {"value": 9})
    assert queued.cancel()
    saved = c.save_session(sids[2])
    restored = c.restore_session(saved.id)
    c.terminate_session(sids[4])
    wait_for(lambda: c.sweep().expired >= 1, 20, interval=0.3, message="an expiry")
    wait_for(lambda: c.sweep().purged >= 1, 20, interval=0.3, message="a purge")
    slow.get(30)
    assert c.get_state(restored.id)["items"] == [0, 1, 2]
    assert {e.type for e in c.events()} >= {"session.created", "action.succeeded",
                                            "session.terminated", "session.purged"}
    idle = c.list_sessions(status=SessionStatus.IDLE)
    assert {e.id for e in c.list_sessions()} >= {sids[0], restored.id}
    assert [e.last_activity for e in idle] == sorted((e.last_activity for e in idle),
                                                     reverse=True)
    stats = _script_stats(redis_cluster)
    assert all(s["calls"] > 10 for s in stats.values()), stats
    assert {(s["failed"], s["rejected"], s["crossslot"]) for s in stats.values()} == {(0, 0, 0)}


def test_a_lost_master_fails_only_its_sessions(tmp_path: Any) -> None:
    """A cluster of its own loses one master (no replica): the sessions on it raise
    `RedisUnavailable`, the others keep working."""
    cluster = RedisClusterServers(tmp_path / "lost")
    cluster.start()
    try:
        settings = make_settings(cluster.url, redis_cluster=True)
        c = Client(settings)
        sids = [c.create_session().id for _ in range(30)]
        where = {sid: cluster.master_of(key_slot(
            c.layer.keys.group_for(sid).prefix.split("{")[1].rstrip("}"))) for sid in sids}
        lost = cluster.ports[1]
        cluster.procs[lost].kill()
        cluster.procs[lost].wait()
        for sid in sids:
            if where[sid] == lost:
                with pytest.raises(RedisUnavailable) as err:
                    c.get_session(sid)
                assert err.value.session_id == sid
            else:
                assert c.get_session(sid).id == sid
        c.close()
    finally:
        cluster.stop()
