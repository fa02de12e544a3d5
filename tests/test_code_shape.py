"""The code's shape: every function reads in one screen (at most `MAX_LINES` lines)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jido_tasks"

MAX_LINES = 40
"""Longest function, from its `def` line to its last line (docstring and comments included)."""

DECLARATIVE_TABLES = {
    # One dict literal of Celery options, one entry a line: a table to read down, not logic to
    # follow; split in pieces it would only be harder to check against Celery's settings.
    ("core/celery_config.py", "celery_config"),
}
"""Functions allowed to be longer: (path under jido_tasks/, qualified name)."""


def function_lengths(path: Path) -> dict[str, int]:
    """Each function and method of `path` (nested ones too) by qualified name: its lines."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text()), "")
    return lengths


def test_no_function_is_longer_than_a_screen() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        for name, lines in function_lengths(path).items():
            if lines > MAX_LINES and (where, name) not in DECLARATIVE_TABLES:
                too_long.append(f"jido_tasks/{where}: {name} has {lines} lines")
    assert not too_long, "\n".join(too_long)


def test_the_allow_list_names_only_long_functions() -> None:
    """An allowed table that shrank (or moved) leaves the list: it never hides a new one."""
    for where, name in DECLARATIVE_TABLES:
        assert function_lengths(PACKAGE / where).get(name, 0) > MAX_LINES, (where, name)


def test_the_measure_counts_methods_and_nested_functions(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(40))
    source.write_text(f"class A:\n    def m(self):\n        def inner():\n            pass\n"
                      f"        return inner\n\n\nasync def long():\n{body}\n")
    assert function_lengths(source) == {"A.m": 4, "A.m.inner": 2, "long": 41}
