"""The worker fixture starts real Celery worker processes that run tasks."""

from __future__ import annotations

from collections.abc import Callable

from jido_tasks.constants import PING_TASK
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
