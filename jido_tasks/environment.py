"""Checks of the process environment at start: variables that would silently win or be lost.

- Celery reads `CELERY_BROKER_URL`, `CELERY_BROKER_READ_URL`, `CELERY_BROKER_WRITE_URL` and
  `CELERY_RESULT_BACKEND` from the environment before its configuration (see
  `celery/app/utils.py`, `Settings.broker_url`...): one that differs from the jido-tasks setting
  stops the program, naming both variables.
- A `JIDO_TASKS_*` variable that is no setting (a typo) is reported once per process: a warning,
  or a `ConfigError` with `strict_settings`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from jido_tasks.errors import ConfigError
from jido_tasks.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

# Celery's environment overrides -> (the jido-tasks variable that should decide, attribute).
CELERY_OVERRIDES = {
    "CELERY_BROKER_URL": (f"{ENV_PREFIX}BROKER_URL", "broker"),
    "CELERY_BROKER_READ_URL": (f"{ENV_PREFIX}BROKER_URL", "broker"),
    "CELERY_BROKER_WRITE_URL": (f"{ENV_PREFIX}BROKER_URL", "broker"),
    "CELERY_RESULT_BACKEND": (f"{ENV_PREFIX}RESULT_BACKEND", "backend"),
}
# Read from the environment by jido-tasks itself, not settings.
EXTRA_KNOWN = frozenset({f"{ENV_PREFIX}CONFIG"})
_reported: set[str] = set()


def known_variables() -> frozenset[str]:
    """Every `JIDO_TASKS_*` name that means something."""
    return frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields) | EXTRA_KNOWN


def celery_conflicts(settings: Settings, environ: Mapping[str, str]) -> None:
    """Raise `ConfigError` if a Celery environment variable would override the settings."""
    from jido_tasks.settings import safe_url

    for variable, (ours, attribute) in CELERY_OVERRIDES.items():
        value = environ.get(variable)
        wanted: str = getattr(settings, attribute)
        if value and value != wanted:
            raise ConfigError(variable, f"is set ({safe_url(value)}) and conflicts with {ours} "
                              f"({safe_url(wanted)}, from the jido-tasks settings); Celery "
                              f"would use {variable}: unset it, or make the two equal")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = known_variables()
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)


def check_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Both checks; unknown variables are logged once per process (or raised when strict)."""
    env = os.environ if environ is None else environ
    celery_conflicts(settings, env)
    unknown = unknown_variables(env)
    if not unknown:
        return
    if settings.strict_settings:
        raise ConfigError(unknown[0], f"is not a jido-tasks setting (unknown: {', '.join(unknown)}"
                          f"; {ENV_PREFIX}STRICT_SETTINGS is on)")
    new = [name for name in unknown if name not in _reported]
    if new:
        _reported.update(new)
        log.warning("ignored: %s %s not a jido-tasks setting (a typo?)", ", ".join(new),
                    "is" if len(new) == 1 else "are")
