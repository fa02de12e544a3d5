"""The worker fixture starts real Celery worker processes that run tasks."""

from __future__ import annotations

import json
from collections.abc import Callable

from jido_tasks import Client
from jido_tasks.core.task_names import PING_TASK, SWEEP_TASK
from tests.conftest import WorkerGroup


def test_worker_answers_ping_and_runs_builtin_task(workers: Callable[..., WorkerGroup]) -> None:
    group = workers(1)
    replies = group.client.celery.control.ping(timeout=1.0)
    assert len(replies) == 1
    result = group.client.celery.send_task(PING_TASK, args=["hello"]).get(timeout=20)
    assert result["pong"] == "hello"
    assert result["pid"] in group.child_pids(group.procs[0])


def test_worker_refuses_pickle(workers: Callable[..., WorkerGroup]) -> None:
    """Only JSON is accepted: a pickled message is rejected, never run."""
    group = workers(1)
    app = group.client.celery
    result = app.send_task(PING_TASK, args=["x"], serializer="pickle")
    try:
        result.get(timeout=3)
    except Exception as exc:  # the message is discarded: the result never arrives
        assert "Timeout" in type(exc).__name__ or "timed out" in str(exc).lower()
    else:
        raise AssertionError("a pickled task ran")
    finally:
        # Stop waiting now, while Redis is up (else the result's finalizer fails at exit).
        app.backend.remove_pending_result(result)
    assert "ContentDisallowed" in group.logs() or "disallowed" in group.logs().lower()


def test_one_message_per_drain_and_sweeps_on_their_own_queue(
    client: Client) -> None:
    """A send publishes one drain message, on the work queue only; a sweep goes to the sweep
    queue only (two queues bound with one routing key would each get a copy)."""
    r = client.layer.redis
    s = client.settings
    sid = client.create_session().id
    client.send(sid, "test.noop")
    client.send(sid, "test.noop")  # drain already scheduled: no second message
    client.celery.send_task(SWEEP_TASK)  # routed by task_routes
    assert (r.llen(s.queue), r.llen(s.sweep_queue)) == (1, 1)
    drain = json.loads(r.lindex(s.queue, 0))
    assert drain["headers"]["task"] == "jido_tasks.drain"
    assert json.loads(r.lindex(s.sweep_queue, 0))["headers"]["task"] == SWEEP_TASK
