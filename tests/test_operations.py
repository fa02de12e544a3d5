"""Operations: environment checks, `check` URLs, eviction check, JSON logs, `send --wait`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from jido_tasks import Client, Settings
from jido_tasks.ops.checks import EX_CONFIG, eviction_warning
from tests.conftest import ROOT, RedisServer, WorkerGroup, make_settings, wait_for, worker_env
from tests.test_cli import run_cli


def test_celery_variable_that_conflicts_stops_the_program(settings: Settings) -> None:
    for command in (["sessions", "list"], ["worker"], ["check"]):
        res = run_cli(settings, *command, env={"CELERY_BROKER_URL": "redis://elsewhere:1/0"})
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: invalid setting CELERY_BROKER_URL: ")
        assert "JIDO_TASKS_BROKER_URL" in res.stderr
    res = run_cli(settings, "sessions", "list", env={"CELERY_RESULT_BACKEND": "redis://x:1/1"})
    assert res.returncode == 2 and "JIDO_TASKS_RESULT_BACKEND" in res.stderr
    # The same value is no conflict.
    res = run_cli(settings, "sessions", "list", env={"CELERY_BROKER_URL": settings.broker})
    assert res.returncode == 0, res.stderr


def test_unknown_variable_warns_or_fails_when_strict(settings: Settings) -> None:
    res = run_cli(settings, "sessions", "list", env={"JIDO_TASKS_LEASE_TTLL": "3"})
    assert res.returncode == 0
    assert res.stderr.count("JIDO_TASKS_LEASE_TTLL") == 1  # reported once
    res = run_cli(settings, "sessions", "list",
                  env={"JIDO_TASKS_LEASE_TTLL": "3", "JIDO_TASKS_STRICT_SETTINGS": "true"})
    assert res.returncode == 2
    assert res.stderr.startswith("error: invalid setting JIDO_TASKS_LEASE_TTLL: ")


def test_check_prints_every_url_masked(settings: Settings) -> None:
    res = run_cli(settings, "check",
                  env={"JIDO_TASKS_RESULT_BACKEND": "redis://:topsecret@127.0.0.1:1/0"})
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["redis_url"] == settings.redis_dsn
    assert report["broker_url"] == settings.redis_dsn
    assert report["result_backend"] == "redis://:***@127.0.0.1:1/0"
    assert "topsecret" not in res.stdout + res.stderr


def test_eviction_warning_like_redbeat(own_redis: RedisServer) -> None:
    r = redis.Redis(port=own_redis.port, decode_responses=True)
    cases = [("0", "allkeys-lru", False), ("100mb", "allkeys-lru", True),
             ("100mb", "volatile-ttl", True), ("100mb", "noeviction", False)]
    for maxmemory, policy, warns in cases:
        r.config_set("maxmemory", maxmemory)
        r.config_set("maxmemory-policy", policy)
        assert (eviction_warning(r) is not None) is warns, (maxmemory, policy)
    r.close()


def test_eviction_fatal_stops_the_worker_at_start(own_redis: RedisServer,
                                                  tmp_path: Path) -> None:
    r = redis.Redis(port=own_redis.port)
    r.config_set("maxmemory", "100mb")
    r.config_set("maxmemory-policy", "allkeys-lru")
    group = WorkerGroup(make_settings(own_redis.url, eviction_fatal=True), tmp_path)
    try:
        group.start(1, wait=False)
        assert group.procs[0].wait(60) == EX_CONFIG  # not restarted by `up`
        assert "JIDO_TASKS_EVICTION_FATAL" in group.logs()
    finally:
        group.stop()
        r.close()


# Printed by Celery itself (not through logging) when a worker is stopped.
CELERY_PRINTS = ("worker: Warm shutdown (MainProcess)",)


def _json_lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        if line.strip() and line.strip() not in CELERY_PRINTS:
            out.append(json.loads(line))  # every other line is one JSON object
    return out


def test_json_logs_for_worker_beat_and_cli(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = make_settings(redis_server.url, sweep_interval=1.0, log_format="json")
    env = worker_env(settings)
    procs = {}
    for name, args in (("worker", ["worker", "-c", "1", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat"]),
                       ("beat", ["beat", "-s", str(tmp_path / "schedule")])):
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
        procs[name] = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", *args],
                                       cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with Client(settings) as client:
            wait_for(lambda: client.celery.control.ping(timeout=0.5), 60, 0.3, "the worker")
            sid = client.create_session().id
            client.call(sid, "test.append", {"value": 1})
        wait_for(lambda: (tmp_path / "worker.log").read_text().count("sweep done") >= 2, 30,
                 0.2, "two sweeps")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(20)
    worker = _json_lines((tmp_path / "worker.log").read_text())
    beat = _json_lines((tmp_path / "beat.log").read_text())
    assert any(line.get("session_id") == sid and line.get("task_name") == "jido_tasks.drain"
               for line in worker)
    assert any("Sending due task" in str(line["message"]) for line in beat)
    # The sweep's report is logged once per sweep: only by the sweep itself.
    reports = [line for line in worker if "recovered" in str(line["message"])]
    assert reports and all(str(r["message"]).startswith("sweep done") for r in reports)

    res = run_cli(settings, "sessions", "list",
                  env={"JIDO_TASKS_LOG_FORMAT": "json", "JIDO_TASKS_TYPO": "1"})
    assert res.returncode == 0
    [warning] = _json_lines(res.stderr)
    assert warning["level"] == "WARNING" and "JIDO_TASKS_TYPO" in str(warning["message"])


def test_send_wait_shows_progress(workers: Callable[..., WorkerGroup], tmp_path: Path) -> None:
    group = workers(1)
    sid = group.client.create_session().id
    gate = tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", "send", sid,
                             "test.progress", "--params", json.dumps({"gate_file": str(gate)}),
                             "--wait"], cwd=ROOT, env=worker_env(group.settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    started = time.monotonic()
    line = proc.stderr.readline()
    assert line.strip() == "progress: 50% half way"
    assert time.monotonic() - started < 20
    gate.touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["result"] == "done"


@pytest.mark.parametrize("command", ["up", "metrics", "flower", "check"])
def test_new_options_in_help(command: str) -> None:
    res = subprocess.run([sys.executable, "-m", "jido_tasks.cli", command, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    if command in ("metrics", "flower"):
        assert "--address" in res.stdout and "127.0.0.1" in res.stdout
