"""The Celery broker as operators see it, on Redis and on RabbitMQ: `jido-tasks check` reaches
it and reads its queues, and an unusable broker is one clear line naming its URL (password
hidden). The guarantees on each broker are tested where they live (`@pytest.mark.brokers`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jido_tasks import Client, Settings
from tests.conftest import ROOT, RedisServer, make_settings, worker_env


def check(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`jido-tasks check` run with `settings`."""
    return subprocess.run([sys.executable, "-m", "jido_tasks.cli", "check"], cwd=ROOT,
                          env=worker_env(settings), capture_output=True, text=True, timeout=60)


@pytest.mark.brokers
def test_check_reads_the_broker_queues(redis_server: RedisServer,
                                       broker_url: str | None) -> None:
    """With no worker running, three sends to one session publish one drain: `check` sees
    the broker and that one message in the jido-tasks queue (none in the sweeps' queue)."""
    settings = make_settings(redis_server.url, **({"broker_url": broker_url} if broker_url
                                                  else {}))
    client = Client(settings)
    sid = client.create_session().id
    for i in range(3):
        client.send(sid, "test.append", {"value": i})
    client.close()
    proc = check(settings)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["broker"] == {"ok": True, "queued": {settings.queue: 1,
                                                       settings.sweep_queue: 0}}
    assert report["broker_url"] == (broker_url or redis_server.url).replace(
        ":guest@", ":***@")


def test_unusable_broker_is_one_clear_line(redis_server: RedisServer, amqp_url: str) -> None:
    """A RabbitMQ refusing the password: exit 1, the URL with its password hidden."""
    wrong = amqp_url.replace("guest:guest@", "guest:not-the-password@")
    settings = make_settings(redis_server.url, broker_url=wrong)
    proc = check(settings)
    assert proc.returncode == 1
    shown = wrong.replace(":not-the-password@", ":***@")
    assert proc.stderr.startswith(f"error: cannot reach the broker at {shown}: "), proc.stderr
    assert "ACCESS_REFUSED" in proc.stderr
    assert "not-the-password" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
