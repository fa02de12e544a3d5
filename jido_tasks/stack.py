"""`jido-tasks up`: the whole system on one machine, as child processes of one supervisor.

Redis (the configured one when it answers; otherwise, for the default URL, a private
`redis-server` with AOF and `noeviction` in a data directory of its own), a worker, one beat,
Flower and the metrics/sessions server. Each child runs in a process group of its own, so
stopping it also stops what it forked (the worker's pool); their output is streamed with a
prefix. SIGINT/SIGTERM stops every child, and `up` waits until all of them are gone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import redis

from jido_tasks.errors import ConfigError, RedisAuthFailed
from jido_tasks.settings import ENV_PREFIX, Settings, safe_url

DEFAULT_REDIS_URL = str(Settings.model_fields["redis_url"].default)
DATA_DIR = Path("data")
STOP_GRACE = 20.0  # seconds a child gets to stop after SIGTERM before SIGKILL
INSTALL_REDIS = ("no Redis answers at {url} and there is no redis-server binary: install Redis "
                 "(Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: "
                 "`brew install redis`, or ./scripts/install-redis.sh) or set "
                 "JIDO_TASKS_REDIS_URL to a Redis that runs")


def cli_argv(*args: str) -> list[str]:
    """`jido-tasks ARGS` in this Python (each command checks its settings, then execs)."""
    return [sys.executable, "-m", "jido_tasks.cli", *args]


def redis_answers(url: str, timeout: float = 1.0, ssl: dict[str, str] | None = None) -> bool:
    """Whether Redis at `url` answers a PING (`ssl`: TLS arguments, `Settings.redis_ssl`);
    `RedisAuthFailed` if it answers but refuses the URL's credentials (starting a private
    Redis would not help)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                  **(ssl or {}))
    try:
        return bool(client.ping())
    except redis.AuthenticationError as exc:
        raise RedisAuthFailed(safe_url(url), str(exc)) from exc
    except redis.RedisError:
        return False
    finally:
        client.close()


def private_redis_argv(binary: str, port: int, data_dir: Path) -> list[str]:
    """A local redis-server that keeps its data (AOF, fsync every second) and never evicts."""
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction"]


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None


@dataclass
class Stack:
    """Starts, streams and stops the children of `jido-tasks up`."""

    settings: Settings
    flower_port: int = 5555
    port: int = 9808
    concurrency: int | None = None
    out: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.settings.flower_basic_auth is None:
            user, password = "admin", secrets.token_urlsafe(12)
            env[f"{ENV_PREFIX}FLOWER_BASIC_AUTH"] = f"{user}:{password}"
            self.out(f"Flower and the sessions page: user {user!r}, password {password!r} "
                     f"(generated; set {ENV_PREFIX}FLOWER_BASIC_AUTH to choose your own)")
        return env

    def start(self) -> None:
        """Start every child (Redis first when a private one is needed)."""
        env = self.env()
        data = DATA_DIR.resolve()
        dsn = self.settings.redis_dsn
        if not redis_answers(dsn, ssl=self.settings.redis_ssl(dsn)):
            self._start_private_redis(data)
        self.out(f"redis:    {safe_url(self.settings.redis_dsn)}")
        beat_dir = data / "beat"
        beat_dir.mkdir(parents=True, exist_ok=True)
        worker = ["worker"] if self.concurrency is None else ["worker", "-c", str(self.concurrency)]
        self._spawn("worker", cli_argv(*worker), env)
        self._spawn("beat", cli_argv("beat", "-s", str(beat_dir / "celerybeat-schedule")), env)
        self._spawn("flower", cli_argv("flower", "--port", str(self.flower_port)), env)
        self._spawn("metrics", cli_argv("metrics", "--port", str(self.port)), env)
        self.out(f"flower:   http://127.0.0.1:{self.flower_port}/")
        self.out(f"metrics:  http://127.0.0.1:{self.port}/metrics")
        self.out(f"sessions: http://127.0.0.1:{self.port}/sessions")

    def _start_private_redis(self, data: Path) -> None:
        url = self.settings.redis_dsn
        if url != DEFAULT_REDIS_URL:
            raise ConfigError(f"{ENV_PREFIX}REDIS_URL", f"no Redis answers at {safe_url(url)}")
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(f"{ENV_PREFIX}REDIS_URL", INSTALL_REDIS.format(url=url))
        redis_dir = data / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = urlsplit(url).port or 6379
        self._spawn("redis", private_redis_argv(binary, port, redis_dir), dict(os.environ))
        deadline = time.monotonic() + 15
        while not redis_answers(url):
            if time.monotonic() > deadline or self.exited():
                raise ConfigError(f"{ENV_PREFIX}REDIS_URL",
                                  f"the private redis-server did not start (data in {redis_dir})")
            time.sleep(0.1)
        self.out(f"started a private redis-server (AOF on, data in {redis_dir})")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(name, argv, env, proc)
        assert proc.stdout is not None
        child.pump = threading.Thread(target=self._pump, args=(name, proc.stdout), daemon=True)
        child.pump.start()
        self.children.append(child)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            with self._lock:
                self.out(f"{name:<7}| {line}")

    def exited(self) -> Child | None:
        """A child that exited (unexpectedly, when not stopping), if any."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return child
        return None

    def wait(self) -> int:
        """Until SIGINT/SIGTERM (0) or a child exits on its own (1)."""
        while not self.stopping.wait(0.2):
            gone = self.exited()
            if gone is not None:
                code = gone.proc.returncode if gone.proc else "?"
                self.out(f"{gone.name} exited with code {code}; stopping everything")
                return 1
        return 0

    def stop(self) -> None:
        """SIGTERM every child's process group (Redis last), SIGKILL what is left after the
        grace period, and wait for all of them."""
        self.stopping.set()
        order = sorted(self.children, key=lambda c: c.name == "redis")
        for group in ([c for c in order if c.name != "redis"],
                      [c for c in order if c.name == "redis"]):
            for child in group:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for child in group:
                assert child.proc is not None
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(child, signal.SIGKILL)
                    child.proc.wait()
                # Anything the child forked that outlived it (same process group).
                _signal_group(child, signal.SIGKILL)
                if child.pump is not None:
                    child.pump.join(2)


def _signal_group(child: Child, sig: int) -> None:
    if child.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, sig)


def run(stack: Stack, demo: Callable[[Stack], None] | None = None) -> int:
    """Start, wait for a signal (or a child's exit), stop; the exit code."""
    def on_signal(signum: int, _frame: object) -> None:
        stack.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
        if demo is not None:
            threading.Thread(target=demo, args=(stack,), daemon=True).start()
        return stack.wait()
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
