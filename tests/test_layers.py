"""The packages import one way only (see `jido_tasks/__init__.py` and docs/architecture.md),
and what apps import does not load the worker side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jido_tasks"

ALLOWED = {
    "base": {"base"},
    "store": {"base", "store"},
    "core": {"base", "store", "core"},
    "ops": {"base", "store", "core", "ops"},
    "client": {"base", "store", "core", "ops", "client"},
    "builtins": {"base", "core", "builtins"},  # actions, like an app's own
    "worker": {"base", "store", "core", "ops", "client", "worker"},
    "cli": {"base", "store", "core", "ops", "client", "worker", "cli"},
}
"""Which packages each package may import at run time (imports under `TYPE_CHECKING` are
types only and may point anywhere)."""
SUBPACKAGES = {"store", "core", "ops", "client", "worker", "cli", "builtins"}
COMPAT = {"jido_tasks.celery_app": "worker"}
"""Old paths kept for users: `celery -A jido_tasks.celery_app` is the worker's app."""


def side(module: str) -> str:
    if module in COMPAT:
        return COMPAT[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else "base"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> list[str]:
    """The jido_tasks modules `path` imports outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    types_only = {id(node) for block in ast.walk(tree)
                  if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                  for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in types_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jido_tasks"):
            assert node.module is not None
            if node.module == "jido_tasks":
                found += [f"jido_tasks.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("jido_tasks")]
    return found


def test_every_package_imports_only_the_packages_below_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        if here == "jido_tasks":  # the lazy re-exports of the public names
            continue
        for target in runtime_imports(path):
            if side(target) not in ALLOWED[side(here)]:
                wrong.append(f"{here} ({side(here)}) imports {target} ({side(target)})")
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself: a core module importing the worker is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from jido_tasks.worker.drain import Drainer\n"
                   "from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from jido_tasks.cli.commandline import main\n")
    targets = runtime_imports(bad)
    assert targets == ["jido_tasks.worker.drain"]
    assert side(targets[0]) not in ALLOWED["core"]


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for sub in sorted(SUBPACKAGES - {"builtins"}):
        doc = ast.get_docstring(ast.parse((PACKAGE / sub / "__init__.py").read_text()))
        assert doc and ("May import" in doc or "may import" in doc), sub


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print('\\n'.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


def test_import_jido_tasks_loads_neither_celery_nor_the_client() -> None:
    loaded = _loaded_after("import jido_tasks")
    assert not {m for m in loaded if m.startswith(("celery", "billiard", "kombu"))}
    assert {m for m in loaded if m.startswith("jido_tasks")} == {"jido_tasks"}


def test_an_app_importing_the_clients_does_not_load_the_worker_side() -> None:
    loaded = _loaded_after("from jido_tasks import Client, AsyncClient, action, Settings")
    assert "jido_tasks.client.sync" in loaded
    worker_side = {m for m in loaded if m.split(".")[:2] in (["jido_tasks", "worker"],
                                                            ["jido_tasks", "cli"])
                   or m.startswith(("celery.worker", "celery.apps.worker"))}
    assert not worker_side


def test_every_public_name_resolves() -> None:
    import jido_tasks

    for name in jido_tasks.__all__:
        assert getattr(jido_tasks, name) is not None, name
