"""The example app in examples/ runs against real workers (so it cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.conftest import ROOT, WorkerGroup, worker_env


def test_review_app_example(workers: Callable[..., WorkerGroup]) -> None:
    """examples/review_app.py: its actions load in the worker and its script prints the
    summary and the events."""
    group = workers(1, action_modules=["examples.review_app"])
    proc = subprocess.run([sys.executable, "-m", "examples.review_app"], cwd=ROOT,
                          env=worker_env(group.settings), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "{'files': 2, 'todos': 1}"
    assert "review.todos_found" in lines[1] and "context.file_added" in lines[1]
