"""Shared benchmark plumbing: a private redis-server and Celery worker subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from jido_tasks import Client, Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A private redis-server on a free port (nothing persisted)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jido-bench-")
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def settings_for(url: str, **overrides: Any) -> Settings:
    ns = f"b{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {"redis_url": url, "namespace": ns, "queue": ns,
                              "action_modules": ["benchmarks.bench_actions"]}
    values.update(overrides)
    return Settings(**values)


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
    env.update(settings.to_env())
    env["JIDO_TASKS_CONFIG"] = "/nonexistent"
    env["PYTHONPATH"] = str(ROOT)
    return env


class Worker:
    """One Celery worker process (prefork) for the given settings."""

    def __init__(self, settings: Settings, concurrency: int = 2) -> None:
        logfile = Path(tempfile.gettempdir()) / f"jido-bench-{settings.namespace}.log"
        self.log = open(logfile, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "jido_tasks.celery_app", "worker",
             "-P", "prefork", "-c", str(concurrency), "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "WARNING", "-E",
             "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=env_for(settings), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        client = Client(settings)
        deadline = time.monotonic() + 60
        while not client.celery.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
        client.close()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def command_calls(r: redis.Redis) -> int:
    """Total commands Redis has executed since the last CONFIG RESETSTAT."""
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (a prefork worker: the main process and its pool)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(int(child) for child in found.split())]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes `pids` have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]
