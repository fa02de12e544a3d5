"""The key layout: slot groups, the stored layout check, and `jido-tasks migrate` from the layout
before groups (written by the real previous version, taken from git)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tarfile
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
import redis

from jido_tasks import AsyncClient, Client, RedisUnavailable, SessionStatus, Settings
from jido_tasks.errors import LayoutMismatch
from jido_tasks.ops.migrate import migrate
from jido_tasks.ops.monitoring import read_counters
from jido_tasks.store.keys import CLUSTER_SLOTS, KeySchema, LegacyKeys, group_tag, key_slot
from tests.conftest import ROOT, RedisServer, WorkerGroup, burst, make_settings, worker_env

V1_COMMIT = "2c2ca8a59f9d830d633cc5c6f271f65b3fcfb836"
"""The last commit whose keys have no slot groups (`ns:s:{sid}`, global `ns:idx:*`)."""


def test_groups_tags_spread_evenly_over_the_slots() -> None:
    """Group n's tag hashes into the n-th of `index_shards` equal slot ranges, so a cluster's
    masters (contiguous ranges) hold as many groups each, give or take one."""
    for shards in (1, 3, 256, 1024):
        slots = [key_slot(group_tag(g, shards)) for g in range(shards)]
        assert all(g * CLUSTER_SLOTS // shards <= s < (g + 1) * CLUSTER_SLOTS // shards
                   for g, s in enumerate(slots))
    thirds = Counter(3 * key_slot(group_tag(g, 256)) // CLUSTER_SLOTS for g in range(256))
    assert sorted(thirds.values()) == [85, 85, 86]


def test_one_session_and_its_group_share_one_slot(client: Client) -> None:
    """Every key a session script receives hashes to the same slot."""
    sid = client.create_session().id
    keys = client.layer.keys
    tags = {key[key.index("{") + 1:key.index("}")] for key in keys.script_keys(sid)}
    assert tags == {group_tag(keys.group_of(sid), keys.shards)}
    assert keys.group_of(sid) == KeySchema("other", keys.shards).group_of(sid)  # stable


def test_layout_is_recorded_and_another_index_shards_refused(settings: Settings,
                                                             raw_redis: redis.Redis) -> None:
    c = Client(settings)
    stored = json.loads(raw_redis.get(c.layer.keys.layout) or "{}")
    assert stored == {"version": 2, "index_shards": settings.index_shards}
    c.close()
    with pytest.raises(LayoutMismatch) as err:
        Client(settings.model_copy(update={"index_shards": 64}))
    assert (err.value.namespace, err.value.wanted) == (
        settings.namespace, "layout version 2 with index_shards=64")
    assert "index_shards=256" in err.value.stored


def _v1_package(tmp: Path) -> Path:
    """The previous version's package and test actions, from git."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", V1_COMMIT, "jido_tasks",
                              "tests/actions.py", "tests/__init__.py"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


_V1_SCRIPT = """
import json, sys
from jido_tasks import Client
from jido_tasks.runtime import drain
c = Client()
out = {"live": [], "states": {}}
for i in range(3):
    sid = c.create_session(metadata={"n": i}).id
    for v in range(i + 2):
        c.send(sid, "test.append", {"value": v})
    while drain(c.layer, sid, worker="v1").applied:
        pass
    out["live"].append(sid)
    out["states"][sid] = c.get_state(sid)
c.send(out["live"][0], "test.append", {"value": 99})  # left pending
c.save_session(out["live"][1])
gone = c.create_session().id
c.terminate_session(gone)
out["terminated"] = gone
out["listed"] = [e.id for e in c.list_sessions()]
out["events"] = [(e.type, e.session_id) for e in c.events()]
print(json.dumps(out))
"""


def test_migrate_moves_v1_data_into_groups(settings: Settings, raw_redis: redis.Redis,
                                           tmp_path: Path) -> None:
    """Data written by the previous version is refused at start, then moved by `migrate`:
    the sessions list as before, keep their state, pending work, snapshots, events and
    counters; work goes on; a second run moves nothing."""
    old = _v1_package(tmp_path / "v1")
    env = worker_env(settings)
    env["PYTHONPATH"] = str(old)
    done = subprocess.run([sys.executable, "-c", _V1_SCRIPT], env=env, cwd=old, check=True,
                          capture_output=True, text=True)
    v1 = json.loads(done.stdout.strip().splitlines()[-1])
    ns = settings.namespace
    assert raw_redis.exists(f"{ns}:idx:expiry", f"{ns}:events", f"{ns}:metrics") == 3

    with pytest.raises(LayoutMismatch) as err:
        Client(settings)
    assert "jido-tasks migrate" in err.value.remedy

    cli = subprocess.run([sys.executable, "-c", "from jido_tasks.cli.commandline import cli; cli()",
                          "migrate"],
                         env={**worker_env(settings), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert (report["sessions"], report["snapshots"]) == (4, 1)
    assert report["events"] == len(v1["events"]) and report["counters"] > 0
    leftovers = [k for k in raw_redis.scan_iter(match=f"{ns}:*", count=1000)
                 if "{g" not in k and k != f"{ns}:layout"]
    assert all(":alive:" in k and raw_redis.pttl(k) > 0 for k in leftovers)  # expiring

    c = Client(settings)
    try:
        assert [e.id for e in c.list_sessions()] == v1["listed"]
        for sid, state in v1["states"].items():
            assert c.get_state(sid) == state
        assert c.get_session(v1["terminated"]).status is SessionStatus.TERMINATED
        assert c.list_saved_sessions() == [v1["live"][1]]
        assert [(e.type, e.session_id) for e in c.events()] == [tuple(e) for e in v1["events"]]
        assert read_counters(c.layer).sessions["created"] == 4
        first = v1["live"][0]
        assert burst(c, first) == 1  # the pending action, then new work
        assert c.get_state(first)["items"] == [0, 1, 99]
        assert migrate(c.layer).sessions == 0
    finally:
        c.close()


def test_a_worker_refuses_another_index_shards(settings: Settings, tmp_path: Path) -> None:
    """A worker whose index_shards differs from the stored layout stops at start, naming it."""
    group = WorkerGroup(settings, tmp_path)  # its client records the layout (256 groups)
    group.settings = settings.model_copy(update={"index_shards": 64})  # the worker's
    try:
        group.start(1, wait=False)
        assert group.procs[0].wait(60) == 78  # EX_CONFIG: supervisors do not restart it
        assert "the settings ask for layout version 2 with index_shards=64" in group.logs()
    finally:
        group.stop()


def test_async_client_refuses_another_index_shards(settings: Settings,
                                                   raw_redis: redis.Redis) -> None:
    """The `AsyncClient` checks the stored layout like `Client`: at `connect`, at `async with`
    or at its first call, another `index_shards` is `LayoutMismatch`, and nothing is written."""
    Client(settings).close()  # records index_shards=256
    other = settings.model_copy(update={"index_shards": 64})

    async def main() -> None:
        c = AsyncClient(other)
        with pytest.raises(LayoutMismatch) as err:
            await c.connect()
        assert err.value.wanted == "layout version 2 with index_shards=64"
        assert "index_shards=256" in err.value.stored
        with pytest.raises(LayoutMismatch):  # not marked checked: refused again
            await c.create_session()
        with pytest.raises(LayoutMismatch):
            await c.list_sessions()
        with pytest.raises(LayoutMismatch):
            _ = [e async for e in c.events()]
        await c.close()
        with pytest.raises(LayoutMismatch):
            async with AsyncClient(other):
                pass
    asyncio.run(main())
    assert {k for k in raw_redis.scan_iter(f"{settings.namespace}:*")} == {
        f"{settings.namespace}:layout"}


def test_async_client_refuses_the_old_layout(settings: Settings,
                                             raw_redis: redis.Redis) -> None:
    """Data of the layout before slot groups (an old global index) and no layout marker: the
    `AsyncClient`'s first call raises `LayoutMismatch` naming `jido-tasks migrate`, and
    records no layout."""
    old_index = LegacyKeys(settings.namespace).index("expiry")
    raw_redis.zadd(old_index, {"session_" + "0" * 32: 1.0})

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            with pytest.raises(LayoutMismatch) as err:
                await stack.enter_async_context(AsyncClient(settings))
            assert "jido-tasks migrate" in err.value.remedy
            c = AsyncClient(settings)
            stack.push_async_callback(c.close)
            with pytest.raises(LayoutMismatch):
                await c.create_session()
            assert not c.layout_checked
    asyncio.run(main())
    assert raw_redis.exists(KeySchema(settings.namespace, settings.index_shards).layout) == 0


def test_async_client_records_the_layout_of_a_clean_namespace(settings: Settings,
                                                              raw_redis: redis.Redis) -> None:
    """A clean namespace: the first call records the layout and works; a `Client` and a
    second `AsyncClient` with the same settings then work too."""
    async def main() -> str:
        async with AsyncClient(settings) as c:
            assert c.layout_checked  # checked at `async with`
            sid = (await c.create_session()).id
            assert (await c.get_session(sid)).id == sid
        c2 = AsyncClient(settings)
        assert not c2.layout_checked
        assert (await c2.get_session(sid)).id == sid  # checked at the first call
        assert c2.layout_checked
        await c2.close()
        return sid
    sid = asyncio.run(main())
    stored = json.loads(raw_redis.get(KeySchema(settings.namespace, 256).layout) or "{}")
    assert stored == {"version": 2, "index_shards": settings.index_shards}
    with Client(settings) as c:
        assert c.get_session(sid).id == sid


def test_async_client_checks_the_layout_once_redis_answers(own_redis: RedisServer) -> None:
    """Redis down at the first call: the call raises `RedisUnavailable` (not a layout
    error), the layout is left unchecked, and the first call once Redis is back checks it
    (another `index_shards` is then refused)."""
    settings = make_settings(own_redis.url)
    own_redis.shutdown()

    async def main() -> None:
        c = AsyncClient(settings.model_copy(update={"index_shards": 64}))
        with pytest.raises(RedisUnavailable):
            await c.create_session()
        assert not c.layout_checked
        own_redis.start()  # empty (no AOF): a client of index_shards=256 records it
        Client(settings).close()
        with pytest.raises(LayoutMismatch):
            await c.create_session()
        await c.close()
    asyncio.run(main())
