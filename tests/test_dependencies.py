"""The installed dependencies are inside the ranges pyproject.toml pins: for the packages whose
private names jido-tasks uses (docs/dependencies.md), the minor versions those names were read
from. A `pip install -U` past a pin fails here, naming the package, before it breaks results,
the fetch or Flower's auth in production."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
INTERNALS_USED = {"celery", "kombu", "billiard", "flower", "redis"}
"""Packages whose private names the code relies on (see docs/dependencies.md)."""


def pinned() -> dict[str, SpecifierSet]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d).specifier for d in deps}


def outside(pins: dict[str, SpecifierSet], installed: dict[str, str]) -> list[str]:
    """One message per package whose installed version is outside its pin (or missing)."""
    problems = []
    for name, spec in sorted(pins.items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"{name} is not installed (pyproject.toml wants {spec})")
        elif not spec.contains(Version(have), prereleases=True):
            problems.append(f"{name} {have} is installed, outside {spec} that pyproject.toml "
                            "pins (the range its internals were checked against)")
    return problems


def installed_versions(names: list[str]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def test_installed_versions_are_inside_the_pins() -> None:
    pins = pinned()
    assert not outside(pins, installed_versions(list(pins)))


def test_a_version_outside_its_pin_is_named() -> None:
    """The check itself: kombu 5.8.0 against `~=5.7.0` is reported by name."""
    pins = {"kombu": SpecifierSet("~=5.7.0"), "redis": SpecifierSet(">=8.0,<9")}
    problems = outside(pins, {"kombu": "5.8.0", "redis": "8.2.0"})
    assert len(problems) == 1 and problems[0].startswith("kombu 5.8.0 is installed")
    assert outside(pins, {"redis": "8.2.0"}) == ["kombu is not installed (pyproject.toml wants "
                                                 "~=5.7.0)"]


@pytest.mark.parametrize("name", sorted(INTERNALS_USED))
def test_packages_whose_internals_we_use_are_pinned_to_a_minor_range(name: str) -> None:
    """Each has an upper bound (a new version is read before it is allowed) and a row in
    docs/dependencies.md."""
    spec = pinned()[name]
    uppers = [s for s in spec if s.operator in ("<", "<=", "~=", "==")]
    assert uppers, f"{name} has no upper bound in pyproject.toml ({spec})"
    docs = (ROOT / "docs" / "dependencies.md").read_text()
    assert re.search(rf"\b{name}\b", docs), f"{name} is not in docs/dependencies.md"
