"""`jido-tasks up`: the whole system on one machine, as child processes of one supervisor.

Redis (the configured one when it answers; otherwise, for the default URL, a private
`redis-server` with AOF and `noeviction` in a data directory of its own), a worker, one beat,
Flower and the metrics/sessions server. Their output is streamed with a prefix. A child that
exits on its own is started again with backoff (`jido_tasks.cli.supervise` has the rule), unless
its exit code says a restart cannot help. SIGINT/SIGTERM stops every child, even during a
backoff wait, and `up` waits until all of them are gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

from jido_tasks.cli.supervise import Supervisor, run_supervised
from jido_tasks.errors import ConfigError, RedisAuthFailed
from jido_tasks.settings import ENV_PREFIX, Settings, safe_url

DEFAULT_REDIS_URL = str(Settings.model_fields["redis_url"].default)
DATA_DIR = Path("data")
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
class Stack:
    """Starts the children of `jido-tasks up` under a `Supervisor` (which starts again those
    that exit), streams their output and stops them."""

    settings: Settings
    flower_port: int = 5555
    port: int = 9808
    concurrency: int | None = None
    out: Callable[[str], None] = print
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(out=self.out)

    @property
    def stopping(self) -> threading.Event:
        """Set on SIGINT/SIGTERM, and when the stack stops."""
        return self.supervisor.stopping

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
        spawn = self.supervisor.spawn
        spawn("worker", cli_argv(*worker), env)
        spawn("beat", cli_argv("beat", "-s", str(beat_dir / "celerybeat-schedule")), env)
        spawn("flower", cli_argv("flower", "--port", str(self.flower_port)), env)
        spawn("metrics", cli_argv("metrics", "--port", str(self.port)), env)
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
        self.supervisor.spawn("redis", private_redis_argv(binary, port, redis_dir),
                              dict(os.environ))
        deadline = time.monotonic() + 15
        while not redis_answers(url):
            if time.monotonic() > deadline or self.supervisor.exited():
                raise ConfigError(f"{ENV_PREFIX}REDIS_URL",
                                  f"the private redis-server did not start (data in {redis_dir})")
            time.sleep(0.1)
        self.out(f"started a private redis-server (AOF on, data in {redis_dir})")


def run(stack: Stack, demo: Callable[[Stack], None] | None = None) -> int:
    """Start, restart children that exit, until SIGINT/SIGTERM (0) or a child that cannot be
    restarted (its exit code); stop every child (Redis last) in any case."""
    def start() -> None:
        stack.start()
        if demo is not None:
            threading.Thread(target=demo, args=(stack,), daemon=True).start()

    try:
        return run_supervised(stack.supervisor, start, last=("redis",))
    finally:
        sys.stdout.flush()
