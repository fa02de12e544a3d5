"""Sessions on a real three-master Redis Cluster: spread over every master, and no script
ever touches keys of two slots (Redis would answer CROSSSLOT, or refuse a non-local key)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
import redis

from jido_tasks import AsyncClient, Client, SessionStatus
from jido_tasks.errors import RedisUnavailable
from jido_tasks.store.connection import DOWN_MEMORY
from jido_tasks.store.keys import group_tag, key_slot
from tests.cluster import RedisClusterServers
from tests.conftest import WorkerGroup, make_settings, wait_for
from tests.test_cli import run_cli
from tests.test_web import HEADERS, web_server

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
    sids: list[str] = []
    per_master: dict[Any, int] = {}
    while len(per_master) < 3 or min(per_master.values()) < 3:  # ids are random: at least
        sid = c.create_session(config=TINY if len(sids) % 2 else None).id  # 3 on each master
        sids.append(sid)
        master = redis_cluster.master_of(key_slot(
            c.layer.keys.group_for(sid).prefix.split("{")[1].rstrip("}")))
        per_master[master] = per_master.get(master, 0) + 1
        assert len(sids) < 200, per_master
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


def test_a_lost_master_leaves_listing_and_sweep_partial(tmp_path: Any) -> None:
    """A cluster of its own (AOF on) loses one master. `list_sessions` (both clients),
    `jido-tasks sessions list` and the sweep do the live nodes' part and name the slots they
    could not read; once the master is back, the next sweep does the rest."""
    cluster = RedisClusterServers(tmp_path / "partial", aof=True)
    cluster.start()
    page = ExitStack()
    try:
        settings = make_settings(cluster.url, redis_cluster=True)
        c = Client(settings)
        due = [c.create_session(config=TINY).id for _ in range(24)]
        live = [c.create_session().id for _ in range(24)]
        lost = cluster.ports[1]

        def node(sid: str) -> int:
            return cluster.master_of(key_slot(c.layer.keys.group_for(sid).prefix
                                              .split("{")[1].rstrip("}")))
        lost_slots = sorted(s for s in (key_slot(group_tag(g, settings.index_shards))
                                        for g in range(settings.index_shards))
                            if cluster.master_of(s) == lost)
        kept = {sid for sid in due + live if node(sid) != lost}
        assert 0 < len(kept) < 48
        web = page.enter_context(web_server(settings))
        cluster.shutdown_node(lost)

        listed = c.list_sessions()
        assert {e.id for e in listed} == kept
        assert not listed.complete and list(listed.missing_slots) == lost_slots
        assert {e.id for e in asyncio.run(_async_list(settings))} == kept
        res = run_cli(settings, "sessions", "list", timeout=120)
        assert res.returncode == 3, res.stderr
        assert {row["id"] for row in json.loads(res.stdout)} == kept
        assert f"missing slots: {', '.join(map(str, lost_slots))}" in res.stderr
        with urllib.request.urlopen(urllib.request.Request(web.base + "/sessions",
                                                           headers=HEADERS), timeout=60) as r:
            html = r.read().decode()
        page.close()
        assert 'id="missing"' in html and ", ".join(map(str, lost_slots)) in html
        assert {sid for sid in due + live if sid in html} == kept

        time.sleep(0.7)  # the tiny timeouts (0.6 s) have passed
        report = c.sweep()
        assert report.expired == len([sid for sid in due if sid in kept]), report
        assert report.missing_slots == lost_slots and report.errors == 0, report

        cluster.start_node(lost)
        gone = [sid for sid in due if sid not in kept]
        wait_for(lambda: _reachable(c, gone[0]), timeout=30, message="lost master back")
        assert all(c.get_session(sid).status is SessionStatus.ACTIVE for sid in gone)
        expired: list[int] = []

        def swept_all() -> bool:  # a node found down is tried again after DOWN_MEMORY
            report = c.sweep()
            expired.append(report.expired)
            return report.missing_slots == [] and report.errors == 0
        wait_for(swept_all, timeout=DOWN_MEMORY + 20, interval=1.0,
                 message="a sweep that reads every group again")
        assert sum(expired) == len(gone)
        assert c.list_sessions().complete
        c.close()
    finally:
        page.close()
        cluster.stop()


async def _async_list(settings: Any) -> list[Any]:
    ac = AsyncClient(settings)
    try:
        listed = await ac.list_sessions()
        assert not listed.complete
        return list(listed)
    finally:
        await ac.close()


def _reachable(c: Client, sid: str) -> bool:
    try:
        c.get_session(sid)
    except RedisUnavailable:
        return False
    return True


def test_async_client_on_the_cluster(workers: Workers) -> None:
    """The AsyncClient runs the same scripts and readers through redis-py's asyncio cluster
    client: sends, waits (pub/sub), state, listing and the merged global events."""
    group = workers(1)

    async def main() -> None:
        async with AsyncClient(group.settings) as c:
            sids = [(await c.create_session()).id for _ in range(6)]
            handles = [await c.send(sid, "test.append", {"value": v}) for sid in sids
                       for v in range(3)]
            assert [await h.get(timeout=60) for h in handles] == [1, 2, 3] * 6
            assert await c.get_state(sids[-1]) == {"items": [0, 1, 2]}
            assert {e.id for e in await c.list_sessions()} >= set(sids)
            created = [e.session_id async for e in c.events() if e.type == "session.created"]
            assert set(created) >= set(sids)
    asyncio.run(main())


def _slot(c: Client, sid: str) -> int:
    prefix = c.layer.keys.group_for(sid).prefix
    return key_slot(prefix[prefix.index("{") + 1:prefix.index("}")])


def test_moved_slot_is_followed(workers: Workers, redis_cluster: RedisClusterServers) -> None:
    """A session's slot moves to another master between two batches of work (its keys
    migrated, as a reshard does): clients and workers follow the MOVED redirections, and
    every action is applied once, in order."""
    group = workers(1)
    c = group.client
    sid = c.create_session().id
    assert [c.call(sid, "test.append", {"value": v}) for v in range(5)] == [1, 2, 3, 4, 5]
    slot = _slot(c, sid)
    src = redis_cluster.master_of(slot)
    dst = next(p for p in redis_cluster.masters() if p != src)
    redis_cluster.move_slot(slot, dst)
    assert redis_cluster.master_of(slot) == dst
    assert redis.Redis(port=dst).exists(c.layer.keys.session(sid).entry) == 1
    handles = [c.send(sid, "test.append", {"value": v}) for v in range(5, 20)]
    assert [h.get(30) for h in handles] == list(range(6, 21))
    assert c.get_state(sid) == {"items": list(range(20))}


def test_failover_to_a_replica(tmp_path: Any, redis_server: Any) -> None:
    """A cluster of its own with a replica per master: the master holding a busy session is
    killed, its replica is promoted, and the session's work goes on (after the replica had
    every write: WAIT), with workers and clients that followed the failover."""
    cluster = RedisClusterServers(tmp_path / "failover", replicas=1)
    cluster.start()
    settings = make_settings(cluster.url, redis_cluster=True, broker_url=redis_server.url,
                             result_backend=redis_server.url)
    (tmp_path / "logs").mkdir()
    group = WorkerGroup(settings, tmp_path / "logs")
    try:
        group.start(1)
        c = group.client
        sid = c.create_session().id
        assert [c.call(sid, "test.append", {"value": v}) for v in range(3)] == [1, 2, 3]
        master = cluster.master_of(_slot(c, sid))
        replica = cluster.replica_of(master)
        assert redis.Redis(port=master).execute_command("WAIT", 1, 5000) == 1
        cluster.procs[master].kill()
        cluster.procs[master].wait()
        wait_for(lambda: cluster.master_of(_slot(c, sid)) == replica, 30, interval=0.2,
                 message="the replica to be promoted")

        def works() -> bool:
            try:
                return bool(c.call(sid, "test.append", {"value": 3}, timeout=5) == 4)
            except RedisUnavailable:
                return False
        wait_for(works, 30, interval=0.5, message="work to go on after the failover")
        assert c.get_state(sid) == {"items": [0, 1, 2, 3]}
    finally:
        group.stop()
        cluster.stop()
