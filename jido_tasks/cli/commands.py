"""Operator commands that start servers: `jido-tasks metrics` and `jido-tasks up`."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from jido_tasks.settings import load_settings

if TYPE_CHECKING:
    from jido_tasks.cli.stack import Stack
    from jido_tasks.client.mailbox import ActionHandle

ADDRESS_HELP = "Address to listen on (default 127.0.0.1: this machine only)."


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9808, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help=ADDRESS_HELP)
@click.option("--no-auth", is_flag=True, help="Allow running without basic auth (unsafe).")
def metrics(port: int, address: str, no_auth: bool) -> None:
    """Serve /metrics (Prometheus) and the read-only /sessions pages, behind basic auth."""
    from jido_tasks.cli.serve import serve

    settings = load_settings()
    if settings.flower_basic_auth is None and no_auth:
        click.echo("warning: the metrics/sessions server runs WITHOUT authentication", err=True)
    serve(settings, port, address, no_auth=no_auth)


@click.command()
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=9808, show_default=True,
              help="Port of the metrics/sessions server.")
@click.option("--demo", is_flag=True, help="Also create a few sessions and stream actions to "
              "them, with a progress bar.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Worker processes.")
def up(flower_port: int, port: int, demo: bool, concurrency: int | None) -> None:
    """Run the whole system here: Redis, a worker, beat, Flower and the metrics/sessions
    server, until Ctrl-C; one that exits is started again, with backoff."""
    from jido_tasks.cli.stack import Stack, run

    stack = Stack(load_settings(), flower_port=flower_port, port=port, concurrency=concurrency,
                  out=lambda line: click.echo(line))
    code = run(stack, run_demo if demo else None)
    click.echo("all stopped")
    sys.exit(code)


def run_demo(stack: Stack, sessions: int = 3, actions: int = 30) -> None:
    """Create `sessions` sessions, stream `actions` messages to them, show a progress bar."""
    from jido_tasks.client.sync import Client

    with Client(stack.settings) as client:
        while not client.celery.control.ping(timeout=1.0):  # a worker is ready
            if stack.stopping.wait(0.5):
                return
        ids = [client.create_session(metadata={"demo": True, "n": i}).id
               for i in range(sessions)]
        handles: list[ActionHandle] = []
        with click.progressbar(length=actions, label="demo: actions applied") as bar:
            done = 0
            while done < actions and not stack.stopping.is_set():
                if len(handles) < actions:  # stream: one new action per tick
                    i = len(handles)
                    handles.append(client.send(ids[i % sessions], "context.add_message",
                                               {"role": "user", "content": f"demo message {i}"}))
                finished = sum(1 for h in handles if h.status().finished)
                bar.update(finished - done)
                done = finished
                time.sleep(0.1)
        stack.out(f"demo: {done} actions applied to {sessions} sessions; see "
                  f"http://127.0.0.1:{stack.port}/sessions")
