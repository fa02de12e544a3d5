"""Settings: defaults, environment overrides, the TOML file, and typed errors for bad values."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from jido_tasks.errors import ConfigError, JidoTasksError
from jido_tasks.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No JIDO_TASKS_* variable from the outside, and no settings file unless a test writes one."""
    for name in list(os.environ):
        if name.upper().startswith("JIDO_TASKS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JIDO_TASKS_CONFIG", str(tmp_path / "nonexistent.toml"))
    yield


def write_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jido-tasks.toml"
    path.write_text(text)
    monkeypatch.setenv("JIDO_TASKS_CONFIG", str(path))
    return path


def test_defaults() -> None:
    """With no environment and no file, every setting has its documented default."""
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.redis_dsn == "redis://localhost:6379/0"
    assert s.broker == s.backend == "redis://localhost:6379/0"
    assert s.broker == s.backend == "redis://localhost:6379/0"
    assert s.namespace == "jido"
    assert s.queue == "jido_tasks"
    assert s.idle_after == 300.0
    assert s.default_timeout == 1800.0
    assert s.lease_ttl == 10.0
    assert s.persistence == "redis"
    assert s.action_modules == []


def test_broker_and_backend_follow_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """broker_url and result_backend default to redis_url, but an explicit value wins."""
    monkeypatch.setenv("JIDO_TASKS_REDIS_URL", "redis://cache:6380/2")
    s = load_settings()
    assert s.broker == s.backend == "redis://cache:6380/2"
    monkeypatch.setenv("JIDO_TASKS_BROKER_URL", "redis://broker:6379/1")
    s = load_settings()
    assert s.broker == "redis://broker:6379/1"
    assert s.backend == "redis://cache:6380/2"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """JIDO_TASKS_<NAME> variables override the defaults, converted to the setting's type."""
    monkeypatch.setenv("JIDO_TASKS_NAMESPACE", "prod-1")
    monkeypatch.setenv("JIDO_TASKS_IDLE_AFTER", "12.5")
    monkeypatch.setenv("JIDO_TASKS_DEFAULT_TIMEOUT", "60")
    monkeypatch.setenv("JIDO_TASKS_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("JIDO_TASKS_PERSISTENCE", "disk")
    monkeypatch.setenv("JIDO_TASKS_PERSISTENCE_DIR", "/tmp/snaps")
    s = load_settings()
    assert s.namespace == "prod-1"
    assert s.idle_after == 12.5
    assert s.default_timeout == 60.0
    assert s.max_attempts == 5
    assert s.persistence == "disk"
    assert s.persistence_dir == Path("/tmp/snaps")


def test_action_modules_comma_separated_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """action_modules in the environment is a comma-separated list; blanks are dropped."""
    monkeypatch.setenv("JIDO_TASKS_ACTION_MODULES", "a.b, c ,")
    assert load_settings().action_modules == ["a.b", "c"]


def test_keyword_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword arguments to load_settings win over the environment."""
    monkeypatch.setenv("JIDO_TASKS_NAMESPACE", "fromenv")
    assert load_settings(namespace="fromkw").namespace == "fromkw"


def test_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The TOML file named by JIDO_TASKS_CONFIG supplies settings."""
    write_config(monkeypatch, tmp_path,
                 'namespace = "filens"\nidle_after = 42\naction_modules = ["x.y", "z"]\n')
    s = load_settings()
    assert s.namespace == "filens"
    assert s.idle_after == 42.0
    assert s.action_modules == ["x.y", "z"]
    assert s.default_timeout == 1800.0


def test_environment_beats_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment variable overrides the same setting in the TOML file."""
    write_config(monkeypatch, tmp_path, 'namespace = "filens"\nidle_after = 42\n')
    monkeypatch.setenv("JIDO_TASKS_IDLE_AFTER", "7")
    s = load_settings()
    assert s.idle_after == 7.0
    assert s.namespace == "filens"


def test_example_config_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped config/jido-tasks.toml.example loads as-is."""
    example = Path(__file__).resolve().parent.parent / "config" / "jido-tasks.toml.example"
    monkeypatch.setenv("JIDO_TASKS_CONFIG", str(example))
    s = load_settings()
    assert s.namespace == "jido"
    assert s.lease_ttl == 10.0


@pytest.mark.parametrize(("var", "value"), [
    ("JIDO_TASKS_LEASE_TTL", "-1"),
    ("JIDO_TASKS_LEASE_TTL", "0"),
    ("JIDO_TASKS_IDLE_AFTER", "abc"),
    ("JIDO_TASKS_DEFAULT_TIMEOUT", "-5"),
    ("JIDO_TASKS_NAMESPACE", "a:b"),
    ("JIDO_TASKS_NAMESPACE", "x" * 65),
    ("JIDO_TASKS_NAMESPACE", "a{b}"),
    ("JIDO_TASKS_QUEUE", "q q"),
    ("JIDO_TASKS_PERSISTENCE", "s3"),
    ("JIDO_TASKS_ACTION_MODULES", "good.mod, 1bad"),
    ("JIDO_TASKS_ACTION_MODULES", "a..b"),
    ("JIDO_TASKS_ACTION_MODULES", "a/b"),
    ("JIDO_TASKS_MAX_ATTEMPTS", "0"),
    ("JIDO_TASKS_MAX_PARAMS_BYTES", "-1"),
    ("JIDO_TASKS_EVENT_MAXLEN", "many"),
    ("JIDO_TASKS_REDIS_URL", "localhost:6379"),
    ("JIDO_TASKS_BROKER_URL", "nowhere"),
])
def test_invalid_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str,
                                              value: str) -> None:
    """An invalid value fails with ConfigError whose .setting is the environment variable."""
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    err = info.value
    assert type(err) is ConfigError
    assert isinstance(err, JidoTasksError)
    assert err.setting == var
    assert err.problem
    assert var in str(err)


def test_invalid_value_in_file_names_the_setting(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """An invalid value in the TOML file fails with ConfigError naming the setting."""
    write_config(monkeypatch, tmp_path, "lease_ttl = -3\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "JIDO_TASKS_LEASE_TTL"


def test_unknown_key_in_file_is_rejected(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    """A misspelt key in the TOML file is an error, not silently ignored."""
    write_config(monkeypatch, tmp_path, "lease_tll = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "JIDO_TASKS_LEASE_TLL"


def test_malformed_file_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A TOML file that does not parse fails with ConfigError naming the file."""
    path = write_config(monkeypatch, tmp_path, "namespace = \n[[[")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == str(path)


def test_invalid_keyword_argument_names_the_setting() -> None:
    """A bad keyword override is reported the same way as a bad environment variable."""
    with pytest.raises(ConfigError) as info:
        load_settings(sweep_interval=-1)
    assert info.value.setting == "JIDO_TASKS_SWEEP_INTERVAL"


def test_settings_are_frozen() -> None:
    """Settings are immutable once loaded (shared by client, CLI and workers)."""
    s = load_settings()
    with pytest.raises(ValidationError) as info:
        s.namespace = "other"  # type: ignore[misc]
    assert info.value.errors()[0]["type"] == "frozen_instance"
