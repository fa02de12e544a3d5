"""docker-compose.yml, read as data (Docker does not run here): every command, setting, secret
and singleton it relies on is real."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from typing import Any

import pytest
import yaml

from jido_tasks.environment import known_variables
from tests.conftest import ROOT

AUTH = "JIDO_TASKS_FLOWER_BASIC_AUTH"


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def env_example() -> dict[str, str]:
    """The variables of `deploy.env.example` (what `.env`, the services' env_file, holds)."""
    out = {}
    for line in (ROOT / "deploy.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    """What a service sees: its env_file (.env, as in the example) and its `environment`."""
    env = env_example() if any(f.get("path") == ".env" for f in service.get("env_file", [])) \
        else {}
    env.update(service.get("environment") or {})
    return env


def jido_services() -> list[str]:
    return [name for name, s in services().items() if s["command"][0] == "jido-tasks"]


@pytest.mark.parametrize("name", jido_services())
def test_each_command_is_a_real_jido_tasks_command(name: str) -> None:
    command = services()[name]["command"]
    res = subprocess.run([sys.executable, "-m", "jido_tasks.cli", *command[1:], "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, (command, res.stderr)


def test_every_jido_tasks_variable_is_a_setting() -> None:
    known = known_variables()
    names = set(env_example())
    for service in services().values():
        names |= set(service.get("environment") or {})
    jido = {n for n in names if n.startswith("JIDO_TASKS_")}
    assert jido and jido <= known, jido - known


def test_web_uis_have_auth_and_redis_a_password() -> None:
    web = [n for n in jido_services() if services()[n]["command"][1] in ("flower", "metrics")]
    assert sorted(web) == ["flower", "metrics"]
    for name in web:
        service = services()[name]
        assert environment(service).get(AUTH), name
        assert "--no-auth" not in service["command"]
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", [])), name
    redis = services()["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert environment(redis).get("REDIS_PASSWORD")
    password = environment(redis)["REDIS_PASSWORD"]
    for name in jido_services():
        assert f":{password}@redis:" in environment(services()[name])["JIDO_TASKS_REDIS_URL"]
    assert "--maxmemory " in " ".join(redis["command"])


def test_exactly_one_beat_that_cannot_be_scaled() -> None:
    beats = [n for n in jido_services() if services()[n]["command"][1] == "beat"
             or "--beat" in services()[n]["command"] or "-B" in services()[n]["command"]]
    assert beats == ["beat"]
    beat = services()["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert beat["container_name"]  # Compose refuses to scale a service with a fixed name


def test_health_checks_one_image_and_pinned_tags() -> None:
    built = [n for n, s in services().items() if "build" in s]
    assert built == ["worker"]
    images = {s["image"] for n, s in services().items() if n != "redis"}
    assert images == {"jido-tasks:0.1.0"}
    for name, service in services().items():
        assert service.get("healthcheck", {}).get("test"), name
        tag = service["image"].rpartition(":")[2]
        assert tag != "latest" and any(ch.isdigit() for ch in tag), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM"))
    assert base.count(".") >= 2  # python:X.Y.Z-..., not a floating tag
