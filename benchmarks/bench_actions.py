"""What the session-work benchmark runs: a no-op action and a bare Celery no-op task."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import shared_task

from jido_tasks import action
from jido_tasks.core.actions import ActionContext


@action("bench.append")
def bench_append(ctx: ActionContext, params: dict[str, Any]) -> int:
    """Append the param to a list in the state (the issue's test action)."""
    items = ctx.state.setdefault("items", [])
    items.append(params.get("value"))
    return len(items)


@action("bench.noop")
def bench_noop(ctx: ActionContext, params: dict[str, Any]) -> None:
    return None


@shared_task(name="bench.noop_task")
def noop_task() -> None:
    """The baseline: a bare Celery task that does nothing."""
    return None


@action("bench.tiny")
def bench_tiny(ctx: ActionContext, params: dict[str, Any]) -> int:
    """The memory benchmark's tiny action: small params, an integer result, no state."""
    return 1


@action("bench.event")
def bench_event(ctx: ActionContext, params: dict[str, Any]) -> int:
    """Emit one small event (the memory benchmark's bytes per event)."""
    ctx.emit("bench.event", {"key": params.get("key")})
    return 1


@action("bench.slow")
def bench_slow(ctx: ActionContext, params: dict[str, Any]) -> int:
    """Tell the benchmark (a Redis list it names, if any) which process started it, then sleep."""
    from jido_tasks.store.connection import connect

    if params.get("started_key"):
        connect(ctx.settings.redis_dsn).rpush(str(params["started_key"]), str(os.getpid()))
    time.sleep(float(params.get("seconds", 0.0)))
    return bench_append(ctx, params)
