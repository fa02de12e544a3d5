"""Test actions, imported by worker subprocesses through the `action_modules` setting."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import redis
from celery import Task, shared_task
from pydantic import BaseModel

from jido_tasks import action, telemetry
from jido_tasks.core.actions import ActionContext
from jido_tasks.store.connection import connect


@action("test.append")
def append(ctx: ActionContext, params: dict[str, Any]) -> int:
    """Append params["value"] to state["items"]; returns the new length."""
    items = ctx.state.setdefault("items", [])
    items.append(params.get("value"))
    return len(items)


@action("test.noop")
def noop(ctx: ActionContext, params: dict[str, Any]) -> None:
    return None


@action("test.fail")
def fail(ctx: ActionContext, params: dict[str, Any]) -> None:
    ctx.state["touched_by_failure"] = True
    raise ValueError(params.get("message", "boom"))


def _signal_started(ctx: ActionContext, params: dict[str, Any]) -> None:
    """Tell the test (through a Redis list it names) that the action started, and where."""
    key = params.get("started_key")
    if key:
        connect(ctx.settings.redis_dsn, cluster=ctx.settings.redis_cluster).rpush(
            key, f"{os.getpid()}")


@action("test.slow_append")
def slow_append(ctx: ActionContext, params: dict[str, Any]) -> int:
    """Signal start, sleep `seconds`, then append `value`."""
    _signal_started(ctx, params)
    time.sleep(float(params.get("seconds", 1.0)))
    return append(ctx, params)


@action("test.sleep", time_limit=0.5)
def sleep(ctx: ActionContext, params: dict[str, Any]) -> None:
    """Sleeps past its 0.5 s time limit when asked to."""
    ctx.state["slept"] = True
    time.sleep(float(params.get("seconds", 5)))


@action("test.kill_worker")
def kill_worker(ctx: ActionContext, params: dict[str, Any]) -> None:
    """Kill the worker process running it (a poison action)."""
    _signal_started(ctx, params)
    ctx.state["poisoned"] = True
    os.kill(os.getpid(), signal.SIGKILL)


@action("test.progress")
def progress(ctx: ActionContext, params: dict[str, Any]) -> str:
    _signal_started(ctx, params)
    ctx.progress(0.5, "half way")
    gate = params.get("gate_file")
    if gate:
        deadline = time.monotonic() + 10
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return "done"


class Greeting(BaseModel):
    name: str
    times: int = 1


@action("test.greet", params=Greeting)
def greet(ctx: ActionContext, params: Greeting) -> str:
    return " ".join([f"hello {params.name}"] * params.times)


@action("test.not_json")
def not_json(ctx: ActionContext, params: dict[str, Any]) -> Any:
    return {1, 2, 3}


class RecordingTelemetry(telemetry.Telemetry):
    """Records every finished action in a Redis list, so a test can see worker-side hooks."""

    def action_finished(self, session_id: str, action_id: str, action: str, status: str,
                        duration: float, error_type: str | None) -> None:
        from jido_tasks.settings import load_settings

        settings = load_settings()
        connect(settings.redis_dsn, cluster=settings.redis_cluster).rpush(
            f"{settings.namespace}:test:telemetry", f"{action}|{status}|{error_type}")


@action("test.set_many")
def set_many(ctx: ActionContext, params: dict[str, Any]) -> list[str]:
    """Set each of params["values"] as a top-level key, delete params["delete"]; raise if
    params["fail"] (after the changes). Returns the parts this drain has loaded so far."""
    for key, value in params.get("values", {}).items():
        ctx.state[key] = value
    for key in params.get("delete", []):
        ctx.state.pop(key, None)
    if params.get("seconds"):
        time.sleep(params["seconds"])
    if params.get("fail"):
        raise RuntimeError("failed after changing several parts")
    return sorted(getattr(ctx.state, "loaded_parts", set()))


@action("test.read")
def read(ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
    """The values of params["keys"] (None where absent), the number of keys, and the parts
    this drain has loaded so far."""
    values = {key: ctx.state.get(key) for key in params.get("keys", [])}
    out: dict[str, Any] = {"values": values,
                           "loaded": sorted(getattr(ctx.state, "loaded_parts", set()))}
    if params.get("all"):
        out["len"] = len(ctx.state)
        out["keys"] = sorted(ctx.state)
    return out


@action("test.emit")
def emit(ctx: ActionContext, params: dict[str, Any]) -> int:
    """Emit one event; returns 1."""
    ctx.emit("test.emitted", {"n": params.get("n")})
    return 1


@action("test.die_after_commit")
def die_after_commit(ctx: ActionContext, params: dict[str, Any]) -> str:
    """Succeeds; `DieAfterCommit` then SIGKILLs its whole worker right after the commit."""
    return "committed"


class DieAfterCommit(telemetry.Telemetry):
    """Test hook: once `test.die_after_commit` is committed (telemetry's action_finished runs
    after the commit, before the Celery reporter stores by-name results), SIGKILL the worker's
    whole process group: a real crash in the window between a commit and its result write."""

    def action_finished(self, session_id: str, action_id: str, action: str, status: str,
                        duration: float, error_type: str | None) -> None:
        if action == "test.die_after_commit":
            os.killpg(os.getpgid(0), signal.SIGKILL)


@action("test.emit_bad")
def emit_bad(ctx: ActionContext, params: dict[str, Any]) -> None:
    """Change the state, then emit an event of a type (or with data) that cannot be written."""
    ctx.state["emitted"] = True
    kind = params.get("kind")
    if kind == "none":
        ctx.emit(None, {"x": 1})  # type: ignore[arg-type]
    elif kind == "dict":
        ctx.emit({"a": 1}, {})  # type: ignore[arg-type]
    elif kind == "surrogate":
        ctx.emit("\ud800", {})
    elif kind == "surrogate_data":
        ctx.emit("test.bad", {"text": "\udc80"})
    elif kind == "data_list":
        ctx.emit("test.bad", [1, 2])  # type: ignore[arg-type]
    elif kind == "nan":
        ctx.emit("test.bad", {"x": float("nan")})


@action("test.swallow", time_limit=1)
def swallow(ctx: ActionContext, params: dict[str, Any]) -> str:
    """Catch BaseException around its work (the time limit's alarm included)."""
    ctx.state["swallowed"] = True
    deadline = time.monotonic() + float(params.get("seconds", 2.5))
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):  # the point of the test
            time.sleep(0.05)
    return "finished"


@action("test.raise_base")
def raise_base(ctx: ActionContext, params: dict[str, Any]) -> None:
    """Raise a BaseException subclass that is not an Exception."""
    ctx.state["raised"] = True
    kind = params["kind"]
    if kind == "SystemExit":
        raise SystemExit(3)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt()
    if kind == "GeneratorExit":
        raise GeneratorExit()
    raise ValueError(kind)


@shared_task(bind=True, name="tests.nap")
def nap(self: Task[Any, Any], redis_url: str, key: str, seconds: float) -> str:
    """An ordinary app task (no session): records each start as `hostname|unix time` in the
    list `key`, then sleeps `seconds`."""
    r = redis.Redis.from_url(redis_url)
    try:
        r.rpush(key, f"{self.request.hostname}|{time.time()}")
    finally:
        r.close()
    time.sleep(seconds)
    return str(self.request.hostname)
