"""Command lines of the Celery processes `jido-tasks worker|beat|flower` turn into.

Pure functions (testable without starting anything) plus `exec_argv`, which replaces the
current process so signals from a supervisor (Docker, systemd) reach Celery directly.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from jido_tasks.errors import ConfigError
from jido_tasks.settings import Settings

CELERY_APP = "jido_tasks.celery_app"
FLOWER_AUTH_SETTING = "JIDO_TASKS_FLOWER_BASIC_AUTH"


def celery_argv(command: str, *args: str, quiet: bool = False) -> list[str]:
    """The argv that runs `celery -A jido_tasks.celery_app <command> <args>` in this Python
    (`quiet`: no banner, e.g. when every line must be JSON)."""
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, *(["-q"] if quiet else []),
            command, *args]


def worker_argv(settings: Settings, *, beat: bool = False, concurrency: int | None = None,
                loglevel: str = "INFO", extra: tuple[str, ...] = ()) -> list[str]:
    """A worker on the jido-tasks queue, sending task events (`-E`) for Flower."""
    args = ["-l", loglevel, "-E", "-Q", f"{settings.queue},{settings.sweep_queue}"]
    if beat:
        args.append("-B")
    if concurrency is not None:
        args += ["-c", str(concurrency)]
    return celery_argv("worker", *args, *extra, quiet=settings.log_format == "json")


def beat_argv(*, loglevel: str = "INFO", extra: tuple[str, ...] = (),
              quiet: bool = False) -> list[str]:
    return celery_argv("beat", "-l", loglevel, *extra, quiet=quiet)


def flower_command(settings: Settings, *, port: int = 5555, no_auth: bool = False,
                   address: str = "127.0.0.1", extra: tuple[str, ...] = (),
                   ) -> tuple[list[str], dict[str, str]]:
    """Flower's argv and environment; the password goes in the environment, never in argv.

    Flower runs through `jido_tasks.ops.flower` (its `/metrics` and `/healthcheck` behind
    auth too) and listens on `address` only (default: this machine).

    Raises `ConfigError` when no basic auth is configured and `no_auth` was not given.
    """
    env = dict(os.environ)
    env.pop("FLOWER_BASIC_AUTH", None)  # only the validated jido-tasks setting counts
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    elif not no_auth:
        raise ConfigError(FLOWER_AUTH_SETTING, "not set; Flower requires basic auth "
                          "(user:password), or pass --no-auth to leave it open to anyone "
                          "who can reach the port")
    argv = [sys.executable, "-m", "jido_tasks.ops.flower", "-A", CELERY_APP, "flower",
            f"--port={port}", f"--address={address}", *extra]
    return argv, env


def exec_argv(argv: list[str], env: dict[str, str] | None = None) -> NoReturn:
    """Replace this process with `argv` (run with this Python, so the venv is kept)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(os.environ) if env is None else env)
