"""The Python/Lua protocol: typed script functions, one home per rule, and the bugs found on
the way (each test here failed before its fix)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from importlib import resources

import pytest
import redis

from jido_tasks import (
    ActionCancelled,
    ActionExpired,
    ActionStatus,
    ActionTimeout,
    Client,
    ConfigError,
    JidoTasksError,
    RedisUnavailable,
    Settings,
)
from jido_tasks.settings import MAX_BATCH_SIZE, load_settings
from jido_tasks.store import scripts
from jido_tasks.store.keys import SCRIPT_KEYS
from tests.conftest import ROOT, RedisServer, burst, make_settings

LUA = resources.files("jido_tasks") / "store" / "lua"
PACKAGE = ROOT / "jido_tasks"


def lua_bodies() -> dict[str, str]:
    return {p.name.removesuffix(".lua"): p.read_text() for p in LUA.iterdir()  # type: ignore[attr-defined]
            if p.name.endswith(".lua") and p.name != "_lib.lua"}


def test_every_script_has_one_typed_function_and_loads(raw_redis: redis.Redis) -> None:
    """Each .lua file has exactly one `Script` spec (and back), and each generated source
    compiles in a real Redis."""
    assert {s.name for s in scripts.ALL_SCRIPTS} == set(lua_bodies())
    for script in scripts.ALL_SCRIPTS:
        assert re.fullmatch(r"[0-9a-f]{40}", raw_redis.script_load(script.source()))


def test_scripts_name_their_argv_and_get_keys_only_through_keys() -> None:
    """No script reads ARGV by number (the variadic tail is read from REST on) or builds a key
    name; each script's header lists the ARGV names of its spec."""
    specs = {s.name: s for s in scripts.ALL_SCRIPTS}
    for name, body in lua_bodies().items():
        code = "\n".join(line.split("--")[0] for line in body.splitlines())
        assert not re.search(r"ARGV\[\d", code), name
        assert not re.search(r"KEYS\[\d", code) or not specs[name].session, name
        assert ":s:" not in code and "idx:" not in code, name
        header = " ".join(line for line in body.splitlines() if line.startswith("--"))
        for arg in specs[name].argv:
            assert arg in header, f"{name}.lua does not document its ARGV {arg}"
    lib = (LUA / "_lib.lua").read_text()
    assert not re.search(r"(ARGV|KEYS)\[\d", "\n".join(
        line.split("--")[0] for line in lib.splitlines()))


def test_prelude_is_generated_from_the_python_tuples() -> None:
    """The K_* constants follow SCRIPT_KEYS; the lifecycle tables follow the models."""
    prelude = scripts.prelude()
    names = ", ".join(f"K_{n.upper()}" for n in SCRIPT_KEYS)
    assert f"local {names} = " in prelude
    assert "local ACCEPTS_WORK = {['active'] = true, ['idle'] = true}" in prelude \
        or "local ACCEPTS_WORK = {['idle'] = true, ['active'] = true}" in prelude
    assert "['terminated'] = {['terminating'] = true}" in prelude


def test_no_script_reply_is_indexed_outside_the_store() -> None:
    """Only `jido_tasks/store/scripts.py` runs scripts by name or takes replies apart."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "store":
            continue
        text = path.read_text()
        if re.search(r"\.run\(\s*\"|register_script|\.script\(\"", text):
            offenders.append(str(path))
    assert offenders == []


def test_typed_replies(client: Client) -> None:
    """Claims, commits and releases come back as typed values, never lists."""
    layer = client.layer
    sid = client.create_session().id
    assert layer.call(scripts.claim(sid, worker="w", lease_ms=5000, batch_size=5)) \
        is scripts.Tag.EMPTY
    missing = "session_" + "0" * 32
    assert layer.call(scripts.claim(missing, worker="w", lease_ms=5000, batch_size=5)) \
        is scripts.Tag.MISSING
    handles = client.send_many(sid, [("test.append", {"value": i}) for i in range(3)])
    claimed = layer.call(scripts.claim(sid, worker="w", lease_ms=5000, batch_size=2))
    assert isinstance(claimed, scripts.Claimed)
    assert [p.id for p in claimed.batch.actions] == [h.id for h in handles[:2]]
    assert claimed.batch.attempts == 1 and claimed.row["status"] == "active"
    nxt = layer.call(scripts.release(sid, token=claimed.token, batch_size=5, lease_ms=5000))
    assert isinstance(nxt, scripts.Batch) and len(nxt.actions) == 3
    assert layer.call(scripts.renew(sid, token="999", lease_ms=5000)) is False


# -- bug 1: batch_size bound and chunked unpack ----------------------------------------------
def test_batch_size_is_bounded() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(batch_size=MAX_BATCH_SIZE + 1)
    assert err.value.setting == "JIDO_TASKS_BATCH_SIZE"
    assert load_settings(batch_size=MAX_BATCH_SIZE).batch_size == MAX_BATCH_SIZE


def test_claim_hands_out_a_batch_larger_than_luas_unpack_limit(client: Client) -> None:
    """9,000 pending actions claimed at once: the request read is chunked (before: 'too many
    results to unpack', and every claim of the session failed)."""
    sid = client.create_session().id
    client.send_many(sid, [("test.append", {"value": i}) for i in range(9000)])
    claimed = client.layer.call(scripts.claim(sid, worker="w", lease_ms=30_000,
                                              batch_size=9000))
    assert isinstance(claimed, scripts.Claimed)
    assert len(claimed.batch.actions) == 9000
    assert all(p.request for p in claimed.batch.actions)


# -- bug 2: RedisUnavailable names no session for calls about none ----------------------------
def test_redis_down_errors_name_the_session_only_when_there_is_one(own_redis: RedisServer,
                                                                   ) -> None:
    c = Client(make_settings(own_redis.url))
    sid = c.create_session().id
    own_redis.kill()
    with pytest.raises(RedisUnavailable) as listing:
        c.list_sessions("idle")
    assert listing.value.session_id is None
    with pytest.raises(RedisUnavailable) as getting:
        c.get_session(sid)
    assert getting.value.session_id == sid
    with pytest.raises(RedisUnavailable) as sending:
        c.send(sid, "test.append", {"value": 1})
    assert sending.value.session_id == sid
    c.close()


# -- bug 3: a Client with explicit settings never reads JIDO_TASKS_* for its Celery app -------
def test_client_celery_app_ignores_the_environment(redis_server: RedisServer) -> None:
    code = ("from jido_tasks import Client, Settings\n"
            f"c = Client(Settings(redis_url={redis_server.url!r}, lease_ttl=5))\n"
            "print(c.celery.conf.broker_url, c.settings.lease_ttl)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
    env.update(JIDO_TASKS_LEASE_TTL="-1", JIDO_TASKS_CONFIG="/nonexistent",
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [redis_server.url, "5.0"]


# -- bug 4: no password in repr or dumps -------------------------------------------------------
def test_settings_never_show_passwords() -> None:
    s = Settings(redis_url="redis://user:s3cret-pw@cache:6379/0",
                 broker_url="amqp://guest:other-pw@mq:5672//", flower_basic_auth="a:flower-pw")
    shown = [repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), str(s.redis_url)]
    for text in shown:
        for secret in ("s3cret-pw", "other-pw", "flower-pw"):
            assert secret not in text
    assert "redis://user:***@cache:6379/0" in s.model_dump_json()
    assert s.redis_dsn == "redis://user:s3cret-pw@cache:6379/0"
    assert s.broker == "amqp://guest:other-pw@mq:5672//"
    assert s.to_env()["JIDO_TASKS_REDIS_URL"] == s.redis_dsn


# -- bug 5: terminating a huge backlog never blocks Redis for long ----------------------------
def test_terminate_cancels_a_backlog_in_bounded_chunks(own_redis: RedisServer) -> None:
    """20,000 pending actions: the terminate script finishes at most CANCEL_CHUNK of them per
    call (before: all in one 190 ms script); every action still ends cancelled, with its event,
    and the session ends terminated."""
    # each of the 256 slot groups' streams keeps its share of global_event_maxlen: 100,000
    c = Client(make_settings(own_redis.url, keep_results=30_000,
                             global_event_maxlen=256 * 100_000))
    n = 20_000
    sid = c.create_session().id
    handles = c.send_many(sid, [("test.append", {"value": i}) for i in range(n)])
    c.layer.redis.config_set("slowlog-log-slower-than", 50_000)  # microseconds
    c.layer.redis.slowlog_reset()
    done = c.layer.call(scripts.terminate(sid, reason="bye", drain=False, keep=30_000))
    assert (done.withdrawn, done.left) == (n, n - scripts.CANCEL_CHUNK)
    assert done.row["status"] == "terminating"
    assert c.layer.redis.llen(c.layer.keys.session(sid).mailbox) == 0
    left = done.left
    while left:
        before = left
        left = c.layer.call(scripts.cancel_pending(sid, keep=30_000))
        assert before - left <= scripts.CANCEL_CHUNK
    assert c.get_session(sid).status.value == "terminated"
    assert [e for e in c.layer.redis.slowlog_get(10) if b"EVALSHA" in e["command"]
            or "EVALSHA" in str(e["command"])] == []
    for handle in (handles[0], handles[n // 2], handles[-1]):
        rec = handle.record()
        assert rec.status is ActionStatus.CANCELLED
        assert rec.error is not None and rec.error.type == "ActionCancelled"
        with pytest.raises(ActionCancelled):
            handle.get(timeout=1)
    cancelled = sum(1 for e in c.events() if e.type == "action.cancelled")
    assert cancelled == n
    c.close()


def test_terminate_session_finishes_every_chunk(client: Client) -> None:
    """The client's terminate_session loops over the chunks and returns the final entry."""
    sid = client.create_session().id
    handles = client.send_many(sid, [("test.append", {"value": i})
                                     for i in range(scripts.CANCEL_CHUNK * 2 + 7)])
    entry = client.terminate_session(sid)
    assert entry.status.value == "terminated"
    assert all(h.status() is ActionStatus.CANCELLED for h in handles[-100::10])
    # Only the last keep_results (100) records are kept: an older handle's record is gone.
    with pytest.raises(ActionExpired) as err:
        handles[0].status()
    assert (err.value.session_id, err.value.action_id) == (sid, handles[0].id)
    assert err.value.keep == client.settings.keep_results == 100


def test_a_cancel_of_a_withdrawn_action_says_cancelled(client: Client) -> None:
    sid = client.create_session().id
    handles = client.send_many(sid, [("test.append", {"value": i})
                                     for i in range(scripts.CANCEL_CHUNK + 5)])
    client.layer.call(scripts.terminate(sid, reason="x", drain=False, keep=10_000))
    assert handles[-1].cancel() is True


# -- waits and records ---------------------------------------------------------------------
def test_wait_timeout_is_a_typed_timeout_error(client: Client) -> None:
    sid = client.create_session().id
    handle = client.send(sid, "test.append", {"value": 1})
    started = time.monotonic()
    with pytest.raises(ActionTimeout) as err:
        handle.get(timeout=0.3)
    assert time.monotonic() - started < 5
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, JidoTasksError)
    assert (err.value.session_id, err.value.action_id, err.value.timeout) == (sid, handle.id, 0.3)
    assert handle.status() is ActionStatus.PENDING


def test_outcome_status_is_a_field_even_while_running(client: Client) -> None:
    """A progress report stores an Outcome with status running; cancel reads that field (not
    JSON text) and refuses to cancel the running head."""
    sid = client.create_session().id
    handle = client.send(sid, "test.append", {"value": 1})
    claimed = client.layer.call(scripts.claim(sid, worker="w", lease_ms=30_000, batch_size=1))
    assert isinstance(claimed, scripts.Claimed)
    from jido_tasks.models import Outcome, Progress
    running = Outcome(status=ActionStatus.RUNNING, progress=Progress(fraction=0.5)).to_json()
    assert client.layer.call(scripts.progress(sid, token=claimed.token, action_id=handle.id,
                                              outcome=running, event_data="{}"))
    assert handle.record().status is ActionStatus.RUNNING
    assert handle.cancel() is False


def test_burst_drain_runs_the_real_runtime(client: Client) -> None:
    sid = client.create_session().id
    client.send_many(sid, [("test.append", {"value": i}) for i in range(25)])
    assert burst(client, sid) == 25
    assert client.get_state(sid) == {"items": list(range(25))}


def test_public_surface_exports_what_users_catch() -> None:
    import jido_tasks

    for name in ("RedisUnavailable", "RedisOutOfMemory", "SnapshotCorrupt", "SnapshotNotFound",
                 "PersistenceError", "PoisonAction", "SnapshotInfo", "SweepReport",
                 "ActionTimeout", "InvalidArgument", "Outcome"):
        assert name in jido_tasks.__all__ and hasattr(jido_tasks, name)
    assert not hasattr(jido_tasks.errors, "LeaseLost")


def test_cli_printer_and_telemetry_dispatcher_are_not_called_emit() -> None:
    from jido_tasks import telemetry
    from jido_tasks.cli import commandline as cli

    assert not hasattr(cli, "emit") and hasattr(cli, "print_json")
    assert not hasattr(telemetry, "emit") and isinstance(telemetry.dispatch,
                                                         telemetry.Telemetry)


def test_stale_after_and_lease_ms_have_one_home() -> None:
    s = Settings(lease_ttl=2.5)
    assert (s.lease_ms, s.stale_after) == (2500, 7.5)
    hits = [p for p in PACKAGE.rglob("*.py")
            if re.search(r"lease_ttl \* (3|1000)", p.read_text()) and p.name != "settings.py"]
    assert hits == []

