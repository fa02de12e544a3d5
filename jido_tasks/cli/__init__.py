"""The operator's side: the `jido-tasks` command line (`commandline`, `commands`), the Celery
processes' command lines (`launch`), the metrics server (`serve`), and `jido-tasks up`'s
stack (`stack`) with its supervisor (`supervise`).

May import every other package; nothing imports `cli`.
"""

from jido_tasks.cli.commandline import main

__all__ = ["main"]
