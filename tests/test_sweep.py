"""The sweep: recovery, idle, verified expiry, purge, the lock, and beat running it."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from redis.cluster import RedisCluster

from jido_tasks import ActionStatus, Client, SessionStatus, Settings
from jido_tasks.ops.sweep import Sweeper, SweepReport
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer
from jido_tasks.store.scripts import REPUBLISH_MAX
from jido_tasks.worker.app import make_app
from tests.conftest import RedisServer, WorkerGroup, make_settings, wait_for, worker_env


@pytest.fixture(params=["single", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> str:
    """This module's tests run on a single Redis and on the three-master Redis Cluster."""
    return str(request.param)

TINY = {"timeout_minutes": 0.01}  # 0.6 s


@pytest.fixture
def clients(redis_server: RedisServer, backend_settings: dict[str, Any],
            ) -> Iterator[Callable[..., Client]]:
    """Factory: a `Client` on a fresh namespace with settings overrides."""
    made: list[Client] = []

    def make(**overrides: Any) -> Client:
        made.append(Client(make_settings(redis_server.url, **{**backend_settings, **overrides})))
        return made[-1]

    yield make
    for c in made:
        c.close()


def redis_now(c: Client) -> float:
    sec, usec = c.layer.redis.time()
    return float(sec) + float(usec) / 1e6


def wait_expiry_due(c: Client, sid: str) -> None:
    """Wait (by Redis TIME) until the session is past its idle deadline (from its registry row:
    the expiry index score is only a lower bound once the session saw activity)."""
    entry = c.get_session(sid)
    deadline = entry.last_activity.timestamp() + entry.timeout_seconds(c.settings.default_timeout)
    wait_for(lambda: redis_now(c) > deadline, message=f"{sid} past its timeout")


def event_types(c: Client, sid: str) -> list[str]:
    return [e.type for e in c.events(sid)]


def index_scores(c: Client, sid: str) -> dict[str, float | None]:
    k = c.layer.keys
    return {idx: c.layer.redis.zscore(idx, sid) for idx in k.group_for(sid).indexes()}


def counts(report: SweepReport) -> dict[str, int]:
    """The report's counts (every group was read: no slots missing)."""
    assert report.missing_slots == [], report
    return report.model_dump(exclude={"duration", "skipped_locked", "missing_slots"})


def only(**nonzero: int) -> dict[str, int]:
    base = {name: 0 for name in counts(SweepReport())}
    base.update(nonzero)
    return base


# -- idle ------------------------------------------------------------------------------------
def test_idle_after_inactivity_and_active_again_on_touch(clients: Callable[..., Client]) -> None:
    c = clients(idle_after=0.3)
    sid = c.create_session().id
    assert counts(c.sweep()) == only()
    last = c.get_session(sid).last_activity.timestamp()
    wait_for(lambda: redis_now(c) > last + 0.3, message="idle_after to pass")

    assert counts(c.sweep()) == only(idled=1)
    assert c.get_session(sid).status is SessionStatus.IDLE
    assert c.layer.redis.zscore(c.layer.keys.group_for(sid).active, sid) is None
    assert counts(c.sweep()) == only()  # idempotent
    # The idle event is on the global stream; the session's own stream is dropped when idle.
    statuses = [e.data for e in c.events() if e.type == "session.status" and e.session_id == sid]
    assert statuses[-1]["status"] == "idle" and statuses[-1]["previous_status"] == "active"
    assert not c.layer.redis.exists(c.layer.keys.session(sid).events)

    c.touch(sid)
    assert c.get_session(sid).status is SessionStatus.ACTIVE
    assert c.layer.redis.zscore(c.layer.keys.group_for(sid).active, sid) is not None


# -- expiry ----------------------------------------------------------------------------------
def test_expiry_after_timeout_with_events_and_indexes(clients: Callable[..., Client]) -> None:
    c = clients()
    sid = c.create_session(config=TINY).id
    keep = c.create_session().id  # default 30 min timeout: untouched
    assert counts(c.sweep()) == only()
    wait_expiry_due(c, sid)

    assert counts(c.sweep()) == only(expired=1)
    entry = c.get_session(sid)
    assert entry.status is SessionStatus.TERMINATED and entry.reason == "idle_timeout"
    assert event_types(c, sid)[-3:] == ["session.status", "session.status", "session.terminated"]
    assert [e.data for e in c.events(sid)][-1] == {"session_id": sid, "reason": "idle_timeout"}
    scores = index_scores(c, sid)
    terminated_at = entry.terminated_at.timestamp() if entry.terminated_at else 0
    assert scores.pop(c.layer.keys.group_for(sid).terminated) == pytest.approx(terminated_at)
    assert set(scores.values()) == {None}
    assert c.get_session(keep).status is SessionStatus.ACTIVE
    assert counts(c.sweep()) == only()


def test_touched_in_the_nick_of_time_is_not_expired(clients: Callable[..., Client]) -> None:
    """The session is touched after the sweep read it as a candidate: the atomic check sees
    the new activity and leaves it alone (re-checked on a later sweep)."""
    c = clients()
    sid = c.create_session(config=TINY).id
    wait_expiry_due(c, sid)

    class TouchingSweeper(Sweeper):
        def candidates(self, index: str, cutoff: float, offsets: dict[int, int],
                       ) -> dict[int, list[str]]:
            found = super().candidates(index, cutoff, offsets)
            if index == "expiry" and sid in found.get(c.layer.keys.group_of(sid), []):
                c.touch(sid)
            return found

    report = TouchingSweeper(c.layer, c.celery).run()
    assert counts(report) == only(rechecked=1)
    assert c.get_session(sid).status is SessionStatus.ACTIVE
    assert float(c.layer.redis.zscore(c.layer.keys.group_for(sid).expiry, sid) or 0) > redis_now(c)

    wait_expiry_due(c, sid)
    assert counts(c.sweep()) == only(expired=1)


def test_busy_candidates_are_rechecked_and_paged_over(clients: Callable[..., Client]) -> None:
    """With batches of 2, sessions holding a lease or pending work stay in the index and the
    sweep pages past them to expire the rest."""
    c = clients(sweep_batch=2)
    sids = [c.create_session(config=TINY).id for _ in range(6)]
    leased, pending = sids[0], sids[3]
    c.layer.redis.set(c.layer.keys.session(leased).lease, "1|someone", px=60_000)
    c.layer.redis.rpush(c.layer.keys.session(pending).mailbox, "act_" + "0" * 32)
    for sid in sids:
        wait_expiry_due(c, sid)

    assert counts(c.sweep()) == only(expired=4, rechecked=2)
    status = {sid: c.get_session(sid).status for sid in sids}
    assert status[leased] is status[pending] is SessionStatus.ACTIVE
    assert [s for s in sids if status[s] is SessionStatus.TERMINATED] == [
        s for s in sids if s not in (leased, pending)]
    assert counts(c.sweep()) == only(rechecked=2)

    c.layer.redis.delete(c.layer.keys.session(leased).lease)
    assert counts(c.sweep()) == only(expired=1, rechecked=1)


def test_running_action_is_not_expired_then_expires(workers: Callable[..., WorkerGroup],
                                                    tmp_path: Path) -> None:
    group = workers(1)
    c = group.client
    sid = c.create_session(config=TINY).id
    started = f"{c.settings.namespace}:test:started"
    handle = c.send(sid, "test.slow_append", {"value": "x", "seconds": 2.5,
                                              "started_key": started})
    wait_for(lambda: c.layer.redis.llen(started), message="action start")
    wait_expiry_due(c, sid)

    assert counts(c.sweep()) == only(rechecked=1)
    assert c.get_session(sid).status is SessionStatus.ACTIVE

    assert handle.get(timeout=10) == 1
    wait_expiry_due(c, sid)
    assert counts(c.sweep()) == only(expired=1)
    assert c.get_state(sid) == {"items": ["x"]}


# -- recovery --------------------------------------------------------------------------------
def test_killed_worker_is_recovered_then_session_expires(
        workers: Callable[..., WorkerGroup]) -> None:
    """SIGKILL the whole worker mid-action: its drain message is stuck unacked for the
    visibility timeout, so recovery brings the work back (the other worker's light recovery,
    which sees the holder's liveness gone, or the sweep), within a few lease periods."""
    group = workers(2, lease_ttl=1.0)
    c = group.client
    sid = c.create_session(config=TINY).id
    started = f"{c.settings.namespace}:test:started"
    handle = c.send(sid, "test.slow_append", {"value": "x", "seconds": 3,
                                              "started_key": started})
    pid = int(wait_for(lambda: c.layer.redis.lindex(started, 0), message="action start"))
    victim = next(i for i, proc in enumerate(group.procs) if pid in group.child_pids(proc))
    group.kill(victim)

    reports: list[SweepReport] = []

    def recovered() -> bool:
        reports.append(c.sweep())
        assert reports[-1].expired == 0  # pending work: never expired
        return reports[-1].recovered == 1 or "session.recovered" in [
            e.type for e in c.events(sid)]

    wait_for(recovered, timeout=15, interval=0.2, message="recovery of the session")
    assert handle.get(timeout=20) == 1
    record = handle.record()
    assert record.attempts == 2
    assert c.get_state(sid) == {"items": ["x"]}
    assert int(c.layer.redis.lindex(started, -1) or 0) != pid

    wait_for(lambda: c.sweep().expired == 1, timeout=10, interval=0.2,
             message="the recovered session to expire")
    assert c.get_session(sid).status is SessionStatus.TERMINATED


def test_lost_drain_message_is_republished(workers: Callable[..., WorkerGroup]) -> None:
    """A client died between the send script and its publish: the flag is set, no message."""
    group = workers(1, lease_ttl=0.5)
    c = group.client
    sid = c.create_session().id
    aid = "act_" + uuid.uuid4().hex
    request = json.dumps({"action": "test.append", "params": {"value": 1}, "created_at": 0})
    # the send script alone: the client "dies" before publishing
    assert c.layer.call(scripts.send(sid, action_id=aid, action="test.append", request=request,
                                     digest="", stale_after=1.5)).publish

    assert counts(c.sweep()) == only()  # flag still fresh
    flag = float(c.layer.redis.zscore(c.layer.keys.group_for(sid).scheduled, sid) or 0)
    wait_for(lambda: redis_now(c) > flag + 1.5, message="the flag to go stale")
    assert counts(c.sweep()) == only(recovered=1)
    recovered = [e for e in c.events(sid) if e.type == "session.recovered"]
    assert len(recovered) == 1 and recovered[0].data["pending"] == 1
    assert c.handle(sid, aid).get(timeout=10) == 1
    wait_for(lambda: c.layer.redis.zscore(c.layer.keys.group_for(sid).scheduled, sid) is None,
             message="release to drop the flag")


def test_a_drain_waiting_in_a_long_queue_is_not_republished_each_sweep(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """No worker takes from the queue, so the session's drain waits there past `stale_after`
    (as behind a long queue): sweeps run by hand every 0.1 s republish it with a doubling
    backoff (after stale_after, 2x, 4x... since the last claim), so the Celery queue holds a
    few drains, not one more per `stale_after` (before: 5,820 queued in a chaos run). A worker
    then applies the action once; the extra drains find nothing to do, and no sweep publishes
    again. The count starts over once a drain claimed the session."""
    settings = make_settings(redis_server.url, lease_ttl=0.2)  # stale_after 0.6 s
    stale = settings.stale_after
    c = Client(settings)
    broker = redis.Redis.from_url(settings.broker, decode_responses=True)
    group = WorkerGroup(settings, tmp_path)
    try:
        sid = c.create_session().id
        handle = c.send(sid, "test.append", {"value": "x"})
        sent = redis_now(c)
        assert broker.llen(settings.queue) == 1  # the send's drain
        sweeps, recovered, sizes = 0, 0, []
        while redis_now(c) < sent + 8.0:
            recovered += c.sweep(force=True).recovered
            sweeps += 1
            sizes.append(broker.llen(settings.queue))
            time.sleep(0.1)
        elapsed = redis_now(c) - sent
        # the n-th republish comes at least stale * (2**n - 1) after the send
        most = math.floor(math.log2(elapsed / stale + 1))
        assert sweeps >= 40 and 3 <= recovered <= most  # 13 before (one per stale_after)
        assert sizes == sorted(sizes) and sizes[-1] == 1 + recovered
        events = [e.data for e in c.events(sid) if e.type == "session.recovered"]
        assert [e["republished"] for e in events] == list(range(1, recovered + 1))
        entry = c.layer.keys.session(sid).entry
        assert c.layer.redis.hget(entry, "republished") == str(recovered)
        flag = float(c.layer.redis.hget(entry, "scheduled") or 0)
        due = flag + min(stale * 2 ** recovered, REPUBLISH_MAX)  # when it is stale again
        assert c.layer.redis.zscore(c.layer.keys.group_for(sid).scheduled, sid) == pytest.approx(
            due - stale, abs=1e-5)  # the sweep's cutoff (now - stale) reaches it then

        group.start(1)
        assert handle.get(timeout=30) == 1
        wait_for(lambda: broker.llen(settings.queue) == 0, timeout=30,
                 message="the worker to take every queued drain")
        assert c.get_state(sid) == {"items": ["x"]}  # applied once
        assert handle.record().attempts == 1
        wait_for(lambda: c.layer.redis.zscore(c.layer.keys.group_for(sid).scheduled, sid) is None,
                 message="the drain to release the session")
        assert c.layer.redis.hget(entry, "republished") is None
        for _ in range(5):
            assert c.sweep(force=True).recovered == 0
        assert broker.llen(settings.queue) == 0
        assert len([e for e in c.events(sid) if e.type == "session.recovered"]) == recovered

        group.stop()  # no worker again: a new drain waits; the backoff starts from the top
        second = c.send(sid, "test.append", {"value": "y"})
        wait_for(lambda: c.sweep(force=True).recovered == 1, timeout=10, interval=0.1,
                 message="the new drain to be republished")
        last = [e.data for e in c.events(sid) if e.type == "session.recovered"][-1]
        assert last["republished"] == 1 and broker.llen(settings.queue) == 2
        assert second.status() is ActionStatus.PENDING
    finally:
        group.stop()
        broker.close()
        c.close()


def test_stale_flag_without_work_is_dropped(clients: Callable[..., Client]) -> None:
    """No pending action and no lease: the flag goes; a terminating session is terminated."""
    c = clients(lease_ttl=0.2)
    plain, ending = c.create_session().id, c.create_session().id
    for sid in (plain, ending):
        handle = c.send(sid, "test.noop")  # no worker runs it
        if sid == ending:
            c.terminate_session(sid, drain=True)
        assert handle.cancel()
    assert c.get_session(ending).status is SessionStatus.TERMINATING
    wait_for(lambda: redis_now(c) > float(
        max(c.layer.redis.zscore(c.layer.keys.group_for(s).scheduled, s) or 0
            for s in (plain, ending))) + 0.6, message="the flags to go stale")

    assert counts(c.sweep()) == only(unscheduled=2)
    assert all(c.layer.redis.zcard(g.scheduled) == 0 for g in c.layer.keys.groups())
    assert c.layer.redis.hget(c.layer.keys.session(plain).entry, "scheduled") is None
    assert c.get_session(plain).status is SessionStatus.ACTIVE
    assert c.get_session(ending).status is SessionStatus.TERMINATED
    assert event_types(c, ending)[-1] == "session.terminated"


# -- concurrency and the lock ----------------------------------------------------------------
def test_concurrent_sweeps_terminate_each_session_once(clients: Callable[..., Client]) -> None:
    c = clients(sweep_batch=7)
    sids = [c.create_session(config=TINY).id for _ in range(30)]
    for sid in sids:
        wait_expiry_due(c, sid)
    barrier = threading.Barrier(4)
    reports: list[SweepReport] = []

    def sweep() -> None:
        own: Any = (RedisCluster if c.settings.redis_cluster else redis.Redis).from_url(
            c.settings.redis_dsn, decode_responses=True)  # a connection of its own
        layer = RedisLayer(c.settings, own)
        sweeper = Sweeper(layer, c.celery)
        barrier.wait()
        reports.append(sweeper.run(force=True))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.expired for r in reports) == 30
    assert all(r.errors == 0 for r in reports)
    for sid in sids:
        assert c.get_session(sid).status is SessionStatus.TERMINATED
        assert event_types(c, sid).count("session.terminated") == 1
    terminated = [str(e.session_id) for e in c.events() if e.type == "session.terminated"]
    assert sorted(terminated) == sorted(sids)


def test_lock_skips_a_second_sweep_and_force_overrides(clients: Callable[..., Client]) -> None:
    c = clients()
    sid = c.create_session(config=TINY).id
    wait_expiry_due(c, sid)
    lock = c.layer.keys.sweep_lock
    c.layer.redis.set(lock, "other-owner", px=60_000)

    report = c.sweep()
    assert report.skipped_locked and counts(report) == only()
    assert c.get_session(sid).status is SessionStatus.ACTIVE

    report = c.sweep(force=True)
    assert not report.skipped_locked and counts(report) == only(expired=1)
    assert c.layer.redis.get(lock) == "other-owner"  # never released by a non-owner

    c.layer.redis.delete(lock)
    assert not c.sweep().skipped_locked
    assert c.layer.redis.exists(lock) == 0  # released by its owner


def test_a_sweep_meanwhile_does_nothing_and_the_owner_renews_its_lock(
        clients: Callable[..., Client], raw_redis: redis.Redis) -> None:
    """While a sweep runs, its lock (redis-py's `Lock`: a random token, with a TTL renewed
    after each batch) makes a second sweep do nothing, so no session is swept twice; the
    owner deletes it at the end."""
    c = clients(sweep_batch=1)
    sids = [c.create_session(config=TINY).id for _ in range(2)]
    for sid in sids:
        wait_expiry_due(c, sid)
    key = c.layer.keys.sweep_lock
    seen: list[tuple[str, int, SweepReport]] = []

    class Overlapped(Sweeper):
        def _expire(self, ids: list[str], seen_activity: list[str] | None = None) -> set[str]:
            seen.append((str(raw_redis.get(key)), int(raw_redis.pttl(key)),
                         Sweeper(c.layer, c.celery).run()))  # a second sweep meanwhile
            raw_redis.pexpire(key, 5_000)  # what is left after the first batch: renewed
            return super()._expire(ids, seen_activity)

    sweeper = Overlapped(c.layer, c.celery)
    report = sweeper.run()
    assert counts(report) == only(expired=2)
    assert len(seen) == 2 and seen[0][0] == seen[1][0]
    assert re.fullmatch(r"[0-9a-f]{32}", seen[0][0])  # the owner's token, not a constant
    assert 5_000 < seen[1][1] <= sweeper.lock_ttl * 1000  # renewed to the full TTL
    for _, _, second in seen:
        assert second.skipped_locked and counts(second) == only()
    assert raw_redis.exists(key) == 0  # released by its owner
    for sid in sids:
        assert event_types(c, sid).count("session.terminated") == 1


def test_a_sweep_that_lost_its_lock_leaves_the_next_owners_alone(
        clients: Callable[..., Client], raw_redis: redis.Redis) -> None:
    """The lock expired mid-sweep and another sweep took it: the first finishes its work
    (each change is checked in its script anyway) but neither renews nor deletes the new
    owner's lock."""
    c = clients()
    sid = c.create_session(config=TINY).id
    wait_expiry_due(c, sid)
    key = c.layer.keys.sweep_lock

    class Overtaken(Sweeper):
        def _expire(self, ids: list[str], seen_activity: list[str] | None = None) -> set[str]:
            raw_redis.set(key, "next-owner", px=600_000)
            return super()._expire(ids, seen_activity)

    sweeper = Overtaken(c.layer, c.celery)
    assert counts(sweeper.run()) == only(expired=1)
    assert not sweeper.held
    assert raw_redis.get(key) == "next-owner"
    assert raw_redis.pttl(key) > 60_000  # not renewed to the sweep's own TTL (30 s)
    assert c.get_session(sid).status is SessionStatus.TERMINATED


# -- purge -----------------------------------------------------------------------------------
def test_purge_removes_every_key_and_index_entry(clients: Callable[..., Client],
                                                 raw_redis: redis.Redis) -> None:
    c = clients(retention=0.5)
    sid = c.sessions.create(state={"history": ["hello"]}).id
    other = c.create_session().id
    c.send(sid, "test.noop")  # no worker: cancelled by terminate
    c.send(sid, "test.noop")
    c.terminate_session(sid)
    sk = c.layer.keys.session(sid)
    # Records of a session written by an older version are purged too.
    raw_redis.hset(sk.legacy_actions, "act_" + "0" * 32, '{"action":"test.noop"}')
    raw_redis.hset(sk.legacy_results, "act_" + "0" * 32, '{"status":"succeeded"}')
    raw_redis.rpush(sk.legacy_finished, "act_" + "0" * 32)
    owned = [k for k in sk.owned() if raw_redis.exists(k)]
    assert set(owned) == {sk.entry, sk.state, sk.records, sk.events, sk.legacy_actions,
                          sk.legacy_results, sk.legacy_finished}
    assert counts(c.sweep()) == only()  # not old enough yet

    at = float(raw_redis.zscore(c.layer.keys.group_for(sid).terminated, sid) or 0)
    wait_for(lambda: redis_now(c) > at + 0.5, message="retention to pass")
    assert counts(c.sweep()) == only(purged=1)

    assert list(raw_redis.scan_iter(match=f"*{sid}*", count=1000)) == []
    assert set(index_scores(c, sid).values()) == {None}
    assert [e.type for e in c.events() if e.session_id == sid][-1] == "session.purged"
    assert c.get_session(other).status is SessionStatus.ACTIVE
    assert counts(c.sweep()) == only()

    # A leftover index entry of a purged session is cleaned, idempotently.
    raw_redis.zadd(c.layer.keys.group_for(sid).terminated, {sid: 1.0})
    assert c.layer.call(scripts.purge(sid, retention=0.5)) is scripts.Tag.GONE
    assert list(raw_redis.scan_iter(match=f"*{sid}*", count=1000)) == []


# -- persistence -----------------------------------------------------------------------------
def test_snapshot_saved_before_expiry(clients: Callable[..., Client]) -> None:
    persistence = pytest.importorskip("jido_tasks.ops.snapshots.service")
    c = clients()
    sid = c.sessions.create(config={**TINY, "persistence_enabled": True},
                            state={"notes": [1, 2]}).id
    wait_expiry_due(c, sid)

    assert counts(c.sweep()) == only(expired=1, snapshots=1)
    assert c.get_session(sid).status is SessionStatus.TERMINATED
    snap = persistence.snapshot_store(c.layer).load(sid)
    assert snap.state == {"notes": [1, 2]}
    assert snap.entry.status in (SessionStatus.ACTIVE, SessionStatus.IDLE)


# -- entry points: CLI and beat --------------------------------------------------------------
def test_cli_sweep_prints_the_report(clients: Callable[..., Client]) -> None:
    from jido_tasks.cli.commandline import cli

    c = clients()
    sid = c.create_session(config=TINY).id
    wait_expiry_due(c, sid)
    result = CliRunner().invoke(cli, ["sweep"], env=worker_env(c.settings))
    assert result.exit_code == 0, result.output
    report = SweepReport.model_validate_json(result.output)
    assert counts(report) == only(expired=1)


def test_beat_runs_the_sweep_on_schedule(workers: Callable[..., WorkerGroup],
                                         tmp_path: Path) -> None:
    group = workers(1, sweep_interval=0.5)
    c = group.client
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jido_tasks.celery_app", "beat", "-l", "INFO",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=tmp_path, env=worker_env(group.settings), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        sid = c.create_session(config=TINY).id
        wait_for(lambda: c.get_session(sid).status is SessionStatus.TERMINATED, timeout=30,
                 interval=0.1, message="beat's sweep to expire the session")
        assert c.get_session(sid).reason == "idle_timeout"
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(10)
        log.close()
    assert "jido_tasks.sweep" in (tmp_path / "beat.log").read_text(errors="replace")


def test_sweep_settings_reach_the_beat_schedule() -> None:
    app = make_app(Settings(sweep_interval=7.0, redis_url="redis://127.0.0.1:1/0"))
    entry = app.conf.beat_schedule["jido-tasks-sweep"]
    assert entry["task"] == "jido_tasks.sweep" and entry["schedule"] == 7.0


def test_stale_index_scores_are_rechecked_not_acted_on(clients: Callable[..., Client]) -> None:
    """Touches move only the activity index: a session whose active/expiry scores are past
    due but whose row shows recent activity is re-scored by the sweep, not idled or expired."""
    c = clients(idle_after=0.3)
    sid = c.create_session(config={"timeout_minutes": 0.01}).id  # 0.6 s
    created = c.get_session(sid).last_activity.timestamp()
    wait_for(lambda: redis_now(c) > created + 0.7, message="both deadlines to pass")
    touched = c.touch(sid).last_activity.timestamp()
    k = c.layer.keys
    assert float(c.layer.redis.zscore(k.group_for(sid).expiry, sid)) < redis_now(c)
    report = c.sweep()
    assert (report.idled, report.expired) == (0, 0)
    assert c.get_session(sid).status is SessionStatus.ACTIVE
    g = k.group_for(sid)
    assert float(c.layer.redis.zscore(g.active, sid)) == pytest.approx(touched, abs=1e-6)
    assert float(c.layer.redis.zscore(g.expiry, sid)) == pytest.approx(touched + 0.6, abs=1e-6)
