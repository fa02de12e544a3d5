"""`python -m jido_tasks.cli`: the `jido-tasks` command line."""

from jido_tasks.cli.commandline import main

main()
