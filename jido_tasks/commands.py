"""Operator commands that start servers: `jido-tasks metrics` and `jido-tasks up`."""

from __future__ import annotations

import click

from jido_tasks.settings import load_settings

ADDRESS_HELP = "Address to listen on (default 127.0.0.1: this machine only)."


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9808, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help=ADDRESS_HELP)
@click.option("--no-auth", is_flag=True, help="Allow running without basic auth (unsafe).")
def metrics(port: int, address: str, no_auth: bool) -> None:
    """Serve /metrics (Prometheus) and the read-only /sessions pages, behind basic auth."""
    from jido_tasks.web import serve

    settings = load_settings()
    if settings.flower_basic_auth is None and no_auth:
        click.echo("warning: the metrics/sessions server runs WITHOUT authentication", err=True)
    serve(settings, port, address, no_auth=no_auth)


@click.command()
def up() -> None:
    """Run the whole system on this machine (placeholder)."""
