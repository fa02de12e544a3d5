"""Redis going away: typed errors at the edge, and recovery once it is back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jido_tasks import Client
from jido_tasks.errors import RedisUnavailable
from tests.conftest import ROOT, RedisServer, make_settings, worker_env


def test_lost_redis_is_a_typed_error_and_the_client_recovers(own_redis: RedisServer) -> None:
    """With Redis down every call raises RedisUnavailable naming the server; once Redis is
    back the same client works again without being rebuilt."""
    client = Client(make_settings(own_redis.url))
    sid = client.create_session().id
    own_redis.kill()
    calls = [
        lambda: client.create_session(),
        lambda: client.get_session(sid),
        lambda: client.list_sessions(),
        lambda: client.send(sid, "test.append", {"value": 1}),
        lambda: client.get_state(sid),
        lambda: list(client.events(sid)),
    ]
    for call in calls:
        with pytest.raises(RedisUnavailable) as err:
            call()
        assert err.value.where == own_redis.url
    own_redis.start()  # same port, empty data (the test server keeps nothing on disk)
    fresh = client.create_session()
    assert client.get_session(fresh.id) == fresh
    client.close()


def test_cli_reports_unreachable_redis(own_redis: RedisServer) -> None:
    """The CLI prints a one-line error and exits 1 when Redis is down."""
    settings = make_settings(own_redis.url)
    own_redis.kill()
    proc = subprocess.run([sys.executable, "-m", "jido_tasks.cli", "sessions", "list"],
                          cwd=ROOT, env=worker_env(settings), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "cannot reach Redis" in proc.stderr
    assert "Traceback" not in proc.stderr
