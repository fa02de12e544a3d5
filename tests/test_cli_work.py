"""The CLI against real workers (send, action) and Flower behind basic auth."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

from tests.conftest import ROOT, WorkerGroup, free_port, wait_for, worker_env
from tests.test_cli import ok, run_cli


def test_send_wait_and_action_record(workers: Callable[..., WorkerGroup]) -> None:
    """send --wait prints the result; send prints the id; action shows the record; a failing
    action exits 2 with the remote error."""
    group = workers(1)
    s = group.settings
    sid = group.client.create_session().id
    done = ok(s, "send", sid, "test.append", "--params", '{"value": 7}', "--wait")
    assert (done["status"], done["result"]) == ("succeeded", 1)
    sent = ok(s, "send", sid, "test.greet", "--params", '{"name": "cli"}')
    group.client.handle(sid, sent["id"]).get(timeout=20)
    record = ok(s, "action", sid, sent["id"])
    assert (record["status"], record["result"], record["action"]) == (
        "succeeded", "hello cli", "test.greet")
    failed = run_cli(s, "send", sid, "test.fail", "--params", '{"message": "no"}', "--wait")
    assert failed.returncode == 2
    assert "ValueError: no" in failed.stderr and "Traceback" not in failed.stderr
    assert group.client.get_state(sid) == {"items": [7]}


def _status(url: str, auth: str | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_flower_runs_behind_basic_auth(workers: Callable[..., WorkerGroup]) -> None:
    """`jido-tasks flower` answers 401 without credentials and 200 with them, and lists the
    running worker."""
    group = workers(1)
    port = free_port()
    env = worker_env(group.settings)
    env["JIDO_TASKS_FLOWER_BASIC_AUTH"] = "ops:s3cret"
    proc = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", "flower", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(f"{base}/", None) != 0, 60, interval=0.3,
                 message="flower to listen")
        assert _status(f"{base}/", None) == 401
        assert _status(f"{base}/", "ops:wrong") == 401
        assert _status(f"{base}/", "ops:s3cret") == 200
        for path in ("/metrics", "/healthcheck"):  # Flower 2 leaves these open; we do not
            assert _status(f"{base}{path}", None) == 401
            assert _status(f"{base}{path}", "ops:s3cret") == 200

        def workers_listed() -> bool:
            request = urllib.request.Request(f"{base}/api/workers?refresh=1")
            token = base64.b64encode(b"ops:s3cret").decode()
            request.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return len(json.loads(response.read())) >= 1
            except OSError:
                return False

        wait_for(workers_listed, 30, interval=0.5, message="flower to see the worker")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
