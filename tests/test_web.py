"""The metrics/sessions server (`jido-tasks metrics`), run as a subprocess, read over real HTTP."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from jido_tasks import Settings
from jido_tasks.ops.monitoring import read_gauges
from jido_tasks.ops.web.probe import probe
from jido_tasks.store.connection import RedisLayer
from tests.conftest import ROOT, WorkerGroup, free_port, wait_for, worker_env

AUTH = "ops:s3cret-pw"
HEADERS = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}


class WebServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, auth: bool = True, method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(self.base + path, headers=HEADERS if auth else {},
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{label=value,...}` -> value."""
        status, text = self.get("/metrics")
        assert status == 200, text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
        return out


@contextmanager
def web_server(settings: Settings, *extra: str) -> Iterator[WebServer]:
    port = free_port()
    env = worker_env(settings)
    env["JIDO_TASKS_FLOWER_BASIC_AUTH"] = AUTH
    proc = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", "metrics", "--port",
                             str(port), *extra], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = WebServer(port)

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return server.get("/metrics", auth=False)[0] == 401
        except OSError:
            return False
    try:
        wait_for(up, 15, 0.1, "the metrics server")
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def web(settings: Settings) -> Iterator[WebServer]:
    with web_server(settings) as server:
        yield server


def test_auth_and_read_only(web: WebServer) -> None:
    """Every path needs the basic auth; only GET is served; the server binds 127.0.0.1."""
    for path in ("/metrics", "/sessions", "/sessions/session_" + "0" * 32):
        assert web.get(path, auth=False)[0] == 401
    assert web.get("/metrics")[0] == 200
    assert web.get("/sessions/session_" + "0" * 32)[0] == 404
    assert web.get("/sessions", method="POST")[0] == 405
    assert web.get("/sessions?status=bogus")[0] == 400


def test_container_health_probe(web: WebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m jido_tasks.ops.web.probe URL` (the compose health check) sends the credentials."""
    monkeypatch.delenv("JIDO_TASKS_FLOWER_BASIC_AUTH", raising=False)
    assert probe(f"{web.base}/metrics") == 1
    monkeypatch.setenv("JIDO_TASKS_FLOWER_BASIC_AUTH", AUTH)
    assert probe(f"{web.base}/metrics") == 0
    assert probe(f"http://127.0.0.1:{free_port()}/metrics") == 1


def test_counters_are_read_from_the_metrics_hash(settings: Settings, web: WebServer,
                                                 raw_redis: redis.Redis) -> None:
    """Reader test: fields written directly (as the scripts will) show as counters/histogram."""
    key = RedisLayer(settings).keys.group(3).metrics  # the reader sums every group's
    raw_redis.hset(key, mapping={
        "actions:succeeded:test.append": 5, "actions:failed:test.fail": 2,
        "sessions:created": 3, "sessions:expired": 1, "snapshots:saved": 4,
        "duration_bucket:0.01:test.append": 3, "duration_bucket:0.5:test.append": 2,
        "duration_sum:test.append": 0.75, "duration_count:test.append": 5,
        "bogus": "x", "other:thing": 1,
    })
    m = web.metrics()
    assert m["jido_tasks_actions_total{action=test.append,outcome=succeeded}"] == 5
    assert m["jido_tasks_actions_total{action=test.fail,outcome=failed}"] == 2
    assert m["jido_tasks_sessions_total{event=created}"] == 3
    assert m["jido_tasks_sessions_total{event=expired}"] == 1
    assert m["jido_tasks_sessions_total{event=purged}"] == 0
    assert m["jido_tasks_snapshots_total{op=saved}"] == 4
    assert m["jido_tasks_action_duration_seconds_bucket{action=test.append,le=0.005}"] == 0
    assert m["jido_tasks_action_duration_seconds_bucket{action=test.append,le=0.01}"] == 3
    assert m["jido_tasks_action_duration_seconds_bucket{action=test.append,le=0.25}"] == 3
    assert m["jido_tasks_action_duration_seconds_bucket{action=test.append,le=0.5}"] == 5
    assert m["jido_tasks_action_duration_seconds_bucket{action=test.append,le=+Inf}"] == 5
    assert m["jido_tasks_action_duration_seconds_sum{action=test.append}"] == 0.75
    assert m["jido_tasks_action_duration_seconds_count{action=test.append}"] == 5


def test_gauges_follow_a_real_workload(workers: Callable[..., WorkerGroup]) -> None:
    """Pending work queued with no worker, then a running action (a lease), then drained."""
    group = workers(0)
    c = group.client
    live = [c.create_session() for _ in range(3)]
    ended = c.create_session()
    c.terminate_session(ended.id)
    for i in range(4):
        c.send(live[0].id, "test.append", {"value": i})
    c.send(live[1].id, "test.append", {"value": 9})
    with web_server(group.settings) as web:
        m = web.metrics()
        assert m["jido_tasks_sessions{status=active}"] == 3
        assert m["jido_tasks_sessions{status=idle}"] == 0
        assert m["jido_tasks_sessions{status=terminated}"] == 1
        assert m["jido_tasks_pending_sessions{}"] == 2
        assert m["jido_tasks_pending_actions{}"] == 5
        assert m["jido_tasks_oldest_pending_action_seconds{}"] > 0
        assert m["jido_tasks_leases{}"] == 0

        started = f"{group.settings.namespace}:started"
        c.send(live[2].id, "test.slow_append", {"value": 1, "seconds": 3,
                                                "started_key": started})
        group.start(1, concurrency=2)
        wait_for(lambda: c.layer.redis.llen(started), 20, message="the slow action to start")
        assert web.metrics()["jido_tasks_leases{}"] >= 1
        wait_for(lambda: web.metrics()["jido_tasks_pending_actions{}"] == 0, 20, 0.2,
                 "the mailboxes to drain")
        m = web.metrics()
        assert m["jido_tasks_pending_sessions{}"] == 0
        assert m["jido_tasks_leases{}"] == 0
        assert m["jido_tasks_oldest_pending_action_seconds{}"] == 0
    assert c.get_state(live[0].id)["items"] == [0, 1, 2, 3]


def test_gauge_reads_are_bounded(settings: Settings, raw_redis: redis.Redis) -> None:
    """More scheduled sessions than `metrics_max_sessions`: only that many are read."""
    layer = RedisLayer(settings)
    for i in range(5):
        sid = f"session_{i:032x}"
        raw_redis.zadd(layer.keys.group_for(sid).scheduled, {sid: i})
    gauges = read_gauges(layer, max_sessions=2)
    assert (gauges.pending_sessions, gauges.truncated, gauges.pending_actions) == (5, True, 0)
