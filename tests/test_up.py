"""`jido-tasks up`: starts everything, everything answers, SIGINT leaves no process behind."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from jido_tasks import Client, Settings
from jido_tasks.cli.stack import Stack, private_redis_argv
from jido_tasks.errors import ConfigError
from tests.conftest import ROOT, RedisServer, free_port, make_settings, wait_for, worker_env


def _status(url: str, auth: str | None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        res = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True)
        for child in map(int, res.stdout.split()):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_up_starts_everything_and_stops_cleanly(redis_server: RedisServer,
                                                tmp_path: Path) -> None:
    settings = make_settings(redis_server.url)
    port, flower_port = free_port(), free_port()
    env = worker_env(settings)
    env.pop("JIDO_TASKS_FLOWER_BASIC_AUTH", None)  # credentials are generated and printed
    proc = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", "up", "--port", str(port),
                             "--flower-port", str(flower_port), "-c", "1", "--demo"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    text = lambda: "".join(lines)  # noqa: E731
    try:
        found = wait_for(lambda: re.search(r"user '(\w+)', password '([\w-]+)'", text()), 20,
                         message="the generated credentials")
        auth = f"{found.group(1)}:{found.group(2)}"
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: _status(metrics, auth) == 200, 60, 0.3, "the metrics server")
        assert _status(metrics, None) == 401
        healthcheck = f"http://127.0.0.1:{flower_port}/healthcheck"
        wait_for(lambda: _status(healthcheck, auth) == 200, 60, 0.3, "flower")
        assert _status(healthcheck, None) == 401
        with Client(settings) as client:
            wait_for(lambda: client.celery.control.ping(timeout=0.5), 60, 0.3, "the worker")
        wait_for(lambda: "beat   | " in text() and "Starting" in text(), 30, 0.2, "beat")
        wait_for(lambda: "demo: 30 actions applied" in text(), 60, 0.3, "the demo")
        assert text().count(found.group(2)) == 1  # printed once
        for name in ("worker ", "flower ", "metrics", "beat   "):
            assert f"{name}| " in text()
        children = _descendants(proc.pid)
        assert len(children) >= 5  # worker + its pool, beat, flower, metrics
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0, text()[-3000:]
    wait_for(lambda: not [p for p in children if _alive(p)], 5, message="no child left")
    assert "all stopped" in text()


def test_private_redis_keeps_data_and_never_evicts(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(private_redis_argv(binary, port, tmp_path),
                            stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    try:
        wait_for(lambda: _ping(client), 10, message="redis-server")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("dir") == {"dir": str(tmp_path)}
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_no_redis_and_no_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    stack = Stack(Settings(redis_url="redis://localhost:6379/0"), out=lambda line: None)
    with pytest.raises(ConfigError) as info:
        stack._start_private_redis(tmp_path)
    assert "apt-get install redis-server" in str(info.value)
    assert info.value.setting == "JIDO_TASKS_REDIS_URL"


def test_up_help_lists_its_options() -> None:
    res = subprocess.run([sys.executable, "-m", "jido_tasks.cli", "up", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    for option in ("--flower-port", "--port", "--demo", "-c"):
        assert option in res.stdout
