"""An ordinary app task for bench_recovery: records each start, then sleeps."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Task, shared_task


@shared_task(bind=True, name="bench.nap")
def nap(self: Task[Any, Any], redis_url: str, key: str, seconds: float) -> str:
    """Push `unix time|pid` to the list `key`, then sleep `seconds`."""
    r = redis.Redis.from_url(redis_url)
    try:
        r.rpush(key, f"{time.time()}|{os.getpid()}")
    finally:
        r.close()
    time.sleep(seconds)
    return str(self.request.hostname)
