"""Telemetry hooks are called in the client and in workers, and never break work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jido_tasks import ActionFailed, Client, ConfigError, Settings, telemetry
from jido_tasks.models import SessionEntry
from jido_tasks.settings import load_settings
from tests.conftest import WorkerGroup, wait_for


class Recorder(telemetry.Telemetry):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def session_created(self, entry: SessionEntry, duration: float) -> None:
        self.calls.append(("created", entry.id))

    def session_terminated(self, entry: SessionEntry, cancelled: int, duration: float) -> None:
        self.calls.append(("terminated", (entry.id, entry.status.value, cancelled)))

    def action_sent(self, session_id: str, action_id: str, action: str) -> None:
        self.calls.append(("sent", action))


class Broken(telemetry.Telemetry):
    def session_created(self, entry: SessionEntry, duration: float) -> None:
        raise RuntimeError("hook bug")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    hook = Recorder()
    telemetry.add_hook(hook)
    yield hook
    telemetry.remove_hook(hook)


def test_client_side_hooks(client: Client, recorder: Recorder) -> None:
    """create, send and terminate call their hooks with the session and action."""
    sid = client.create_session().id
    client.send(sid, "test.append", {"value": 1})
    client.terminate_session(sid)
    assert recorder.calls == [("created", sid), ("sent", "test.append"),
                              ("terminated", (sid, "terminated", 1))]


def test_failing_hook_never_breaks_work(client: Client, recorder: Recorder) -> None:
    """A hook that raises is logged and ignored."""
    broken = Broken()
    telemetry.add_hook(broken)
    try:
        sid = client.create_session().id
    finally:
        telemetry.remove_hook(broken)
    assert client.get_session(sid).id == sid
    assert ("created", sid) in recorder.calls


def test_worker_side_hooks_from_settings(workers: Callable[..., WorkerGroup]) -> None:
    """Workers register the hooks named by telemetry_hooks; action_finished reports status."""
    group = workers(1, telemetry_hooks=["tests.actions:RecordingTelemetry"])
    c = group.client
    sid = c.create_session().id
    c.call(sid, "test.append", {"value": 1})
    with pytest.raises(ActionFailed):
        c.call(sid, "test.fail")
    key = f"{c.settings.namespace}:test:telemetry"
    seen = wait_for(lambda: c.layer.redis.lrange(key, 0, -1) if c.layer.redis.llen(key) >= 2
                    else None, 10)
    assert seen == ["test.append|succeeded|None", "test.fail|failed|ValueError"]


def test_bad_hook_path_is_a_config_error(settings: Settings) -> None:
    """A hook that cannot be loaded stops the client at start, naming the setting."""
    with pytest.raises(ConfigError) as err:
        load_settings(telemetry_hooks=["nope"])
    assert err.value.setting == "JIDO_TASKS_TELEMETRY_HOOKS"
    bad = settings.model_copy(update={"telemetry_hooks": ["tests.actions:nothing_here"]})
    with pytest.raises(ConfigError) as err2:
        Client(bad)
    assert err2.value.setting == "JIDO_TASKS_TELEMETRY_HOOKS"
