"""The `jido-tasks` command line, run as a real subprocess against the private Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from jido_tasks import Client, SessionStatus, Settings
from jido_tasks.cli.launch import flower_command, worker_argv
from jido_tasks.errors import ConfigError
from tests.conftest import ROOT, RedisServer, free_port, make_settings, worker_env

CLI = [sys.executable, "-m", "jido_tasks.cli"]


def run_cli(settings: Settings, *args: str, env: dict[str, str] | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `jido-tasks ARGS` with the environment a deployment of `settings` would have."""
    full_env = worker_env(settings)
    full_env.update(env or {})
    return subprocess.run([*CLI, *args], env=full_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def ok(settings: Settings, *args: str) -> Any:
    """Run a command that must succeed; its stdout parsed as JSON."""
    res = run_cli(settings, *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_session_lifecycle(settings: Settings, client: Client) -> None:
    """create, show, list, touch, state and terminate print the registry entry as JSON."""
    created = ok(settings, "sessions", "create", "--metadata", '{"user": "ana"}',
                 "--llm-config", '{"model": "m1"}', "--config", '{"max_history": 7}')
    sid = created["id"]
    assert created["status"] == "active"
    assert created["metadata"] == {"user": "ana"}
    assert created["llm_config"] == {"model": "m1"}
    assert created["config"]["max_history"] == 7
    assert client.get_session(sid).metadata == {"user": "ana"}  # really stored

    assert ok(settings, "sessions", "show", sid) == created
    assert [e["id"] for e in ok(settings, "sessions", "list")] == [sid]
    assert ok(settings, "sessions") == ok(settings, "sessions", "list")  # alone: the list
    assert ok(settings, "sessions", "list", "--status", "idle") == []

    touched = ok(settings, "sessions", "touch", sid)
    assert touched["last_activity"] >= created["last_activity"]
    assert ok(settings, "sessions", "state", sid) == client.get_state(sid)

    ended = ok(settings, "sessions", "terminate", sid, "--reason", "operator", "--drain")
    assert (ended["status"], ended["reason"]) == ("terminated", "operator")
    assert client.get_session(sid).status is SessionStatus.TERMINATED
    assert ok(settings, "sessions", "list") == []
    assert [e["id"] for e in ok(settings, "sessions", "list", "--status", "terminated")] == [sid]


def test_create_reads_json_from_file(settings: Settings, tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text('{"project": "p"}')
    assert ok(settings, "sessions", "create", "--metadata", f"@{meta}")["metadata"] == {
        "project": "p"}


@pytest.mark.parametrize("value, problem", [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object, not list"),
    ("@/nonexistent/meta.json", "cannot read /nonexistent/meta.json"),
])
def test_create_rejects_bad_json(settings: Settings, client: Client, value: str,
                                 problem: str) -> None:
    res = run_cli(settings, "sessions", "create", "--metadata", value)
    assert res.returncode == 2
    assert problem in res.stderr and "--metadata" in res.stderr
    assert res.stdout == ""
    assert client.list_sessions() == []


def test_create_rejects_bad_config(settings: Settings, client: Client) -> None:
    res = run_cli(settings, "sessions", "create", "--config", '{"max_history": 0}')
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "max_history" in res.stderr
    assert client.list_sessions() == []


def test_bad_session_id(settings: Settings) -> None:
    for command in ("show", "touch", "state", "terminate"):
        res = run_cli(settings, "sessions", command, "../etc/passwd")
        assert res.returncode == 2, command
        assert res.stderr.startswith("error: invalid session id '../etc/passwd'"), res.stderr
        assert "Traceback" not in res.stderr
        assert res.stdout == ""


def test_missing_session(settings: Settings) -> None:
    sid = "session_" + "0" * 32
    res = run_cli(settings, "sessions", "show", sid)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: session {sid} not found"


def test_events_one_json_line_each(settings: Settings, client: Client) -> None:
    entry = client.create_session()
    client.terminate_session(entry.id)
    other = client.create_session()

    res = run_cli(settings, "events", "--session", entry.id)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["type"] for e in lines] == ["session.created", "session.status",
                                          "session.status", "session.terminated"]
    assert {e["session_id"] for e in lines} == {entry.id}

    after = ok_lines(settings, "events", "--session", entry.id, "--after", lines[0]["id"])
    assert [e["id"] for e in after] == [e["id"] for e in lines[1:]]

    everything = ok_lines(settings, "events")
    assert {e["session_id"] for e in everything} == {entry.id, other.id}


def ok_lines(settings: Settings, *args: str) -> list[dict[str, Any]]:
    res = run_cli(settings, *args)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_events_follow_sees_new_events(settings: Settings, client: Client) -> None:
    entry = client.create_session()
    proc = subprocess.Popen([*CLI, "events", "--session", entry.id, "--follow", "--block", "2"],
                            env=worker_env(settings), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # the existing event: the follower is running
    assert first["type"] == "session.created"
    client.touch(entry.id)
    client.terminate_session(entry.id)
    started = time.monotonic()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types[-1] == "session.terminated"
    assert time.monotonic() - started < 10  # ended by --block, not by the test's timeout


def test_events_rejects_bad_arguments(settings: Settings) -> None:
    res = run_cli(settings, "events", "--after", "abc")
    assert res.returncode == 2 and "not a stream id" in res.stderr
    res = run_cli(settings, "events", "--block", "1")
    assert res.returncode == 2 and "--block needs --follow" in res.stderr
    res = run_cli(settings, "events", "--session", "bad")
    assert res.returncode == 2 and res.stderr.startswith("error: invalid session id 'bad'")


def test_check(settings: Settings, raw_redis: redis.Redis) -> None:
    report = ok(settings, "check")
    assert report["redis_version"] == raw_redis.info("server")["redis_version"]
    assert report["eviction_warning"] is None
    assert (report["namespace"], report["queue"]) == (settings.namespace, settings.queue)


def test_check_warns_when_redis_may_evict(own_redis: RedisServer) -> None:
    settings = make_settings(own_redis.url)
    r = redis.Redis(port=own_redis.port)
    r.config_set("maxmemory-policy", "allkeys-lru")
    assert ok(settings, "check")["eviction_warning"] is None  # maxmemory 0: never evicts
    r.config_set("maxmemory", "100mb")
    r.close()
    res = run_cli(settings, "check")
    assert res.returncode == 0, res.stderr
    assert "allkeys-lru" in json.loads(res.stdout)["eviction_warning"]
    assert "noeviction" in res.stderr


def test_check_unreachable_redis() -> None:
    port = free_port()
    settings = make_settings(f"redis://:s3cret@127.0.0.1:{port}/0")
    res = run_cli(settings, "check")
    assert res.returncode == 1
    assert res.stderr.startswith(f"error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
    assert "s3cret" not in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", [["sessions", "list"], ["check"], ["worker"], ["beat"],
                                     ["flower", "--no-auth"]])
def test_invalid_setting_fails_clearly(settings: Settings, command: list[str]) -> None:
    res = run_cli(settings, *command, env={"JIDO_TASKS_LEASE_TTL": "-1"})
    assert res.returncode == 2
    assert res.stderr.startswith("error: invalid setting JIDO_TASKS_LEASE_TTL: ")
    assert "Traceback" not in res.stderr


def test_flower_refuses_to_start_without_auth(settings: Settings) -> None:
    started = time.monotonic()
    res = run_cli(settings, "flower", timeout=20)
    assert res.returncode == 2
    assert res.stderr.startswith("error: invalid setting JIDO_TASKS_FLOWER_BASIC_AUTH: not set")
    assert "--no-auth" in res.stderr
    assert time.monotonic() - started < 15


def test_flower_rejects_malformed_auth(settings: Settings) -> None:
    res = run_cli(settings, "flower", env={"JIDO_TASKS_FLOWER_BASIC_AUTH": "admin"})
    assert res.returncode == 2
    assert res.stderr.startswith("error: invalid setting JIDO_TASKS_FLOWER_BASIC_AUTH: ")
    assert "user:password" in res.stderr


def test_flower_password_goes_in_environment_not_argv(settings: Settings) -> None:
    assert settings.flower_basic_auth is None
    with pytest.raises(ConfigError) as info:
        flower_command(settings)
    assert info.value.setting == "JIDO_TASKS_FLOWER_BASIC_AUTH"
    argv, env = flower_command(settings, no_auth=True)
    assert "FLOWER_BASIC_AUTH" not in env

    secured = settings.model_copy(update={"flower_basic_auth": SecretStr("ops:pw1,viewer:pw2")})
    argv, env = flower_command(secured, port=6000)
    assert argv[1:] == ["-m", "jido_tasks.ops.flower", "-A", "jido_tasks.celery_app", "flower",
                        "--port=6000", "--address=127.0.0.1"]
    assert env["FLOWER_BASIC_AUTH"] == "ops:pw1,viewer:pw2"
    assert not any("pw1" in arg for arg in argv)
    assert "pw1" not in repr(secured)


def test_worker_argv(settings: Settings) -> None:
    argv = worker_argv(settings, beat=True, concurrency=2, loglevel="DEBUG",
                       extra=("--max-tasks-per-child", "100"))
    assert argv == [sys.executable, "-m", "celery", "-A", "jido_tasks.celery_app", "worker",
                    "-l", "DEBUG", "-E", "-Q", f"{settings.queue},{settings.sweep_queue}",
                    "-B", "-c", "2",
                    "--max-tasks-per-child", "100"]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "jido-tasks"
    if not script.exists():
        pytest.skip("package not installed in this environment")
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    for command in ("worker", "beat", "flower", "check", "sessions", "events", "send", "sweep",
                    "snapshot"):
        assert command in res.stdout
