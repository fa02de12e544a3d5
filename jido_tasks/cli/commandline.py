"""`jido-tasks`: the operator's command line. Thin: every command calls a `Client` method.

Output is JSON (one object or a list; events one object per line) so scripts can parse it.
A jido-tasks error prints `error: <message>` on stderr and exits 2; unreachable Redis exits 1.
A listing that lacks what a down Redis Cluster node holds prints what the live nodes hold, says
which slots are missing on stderr, and exits 3.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
import redis
from pydantic_core import to_jsonable_python

from jido_tasks.cli.commands import ADDRESS_HELP, metrics, up
from jido_tasks.cli.launch import (
    beat_argv,
    exec_argv,
    flower_command,
    worker_argv,
)
from jido_tasks.cli.supervise import Supervisor, run_supervised
from jido_tasks.client.mailbox import ActionHandle
from jido_tasks.client.sync import Client
from jido_tasks.core import bounds
from jido_tasks.errors import JidoTasksError, RedisUnavailable
from jido_tasks.models import JsonObject, SessionStatus
from jido_tasks.ops.checks import broker_status, check_eviction_policy
from jido_tasks.ops.logs import configure_cli
from jido_tasks.ops.migrate import migrate as migrate_layout
from jido_tasks.settings import load_settings, safe_url
from jido_tasks.store.connection import RedisLayer, typed_redis_error

_STREAM_ID = re.compile(r"\d+(-\d+)?")
_JSON_HELP = "a JSON object, or @path of a file holding one."
PROGRESS_EVERY = 0.25  # seconds between progress reads of `send --wait`
_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}
log = logging.getLogger("jido_tasks.cli.supervise")


PARTIAL = 3
"""Exit status of a listing that lacks what a down Redis Cluster node holds."""


def print_json(value: Any) -> None:
    """Print `value` (models, lists, dicts) as indented JSON on stdout."""
    click.echo(json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False))


def json_object(ctx: click.Context, param: click.Parameter, value: str | None,
                ) -> JsonObject | None:
    """Option callback: a JSON object given inline or as `@path` to a file holding it, within
    the bounds of the settings (`--params`: `max_params_bytes`, the others
    `max_metadata_bytes`; `max_json_depth`), checked before it is parsed."""
    if value is None:
        return None
    settings = client().settings
    limit = settings.max_params_bytes if param.name == "params" else settings.max_metadata_bytes
    raw: str | bytes = _read_limited(value[1:], limit) if value.startswith("@") else value
    try:
        data = bounds.loads(raw, max_depth=settings.max_json_depth, max_bytes=limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"must be a JSON object, not {type(data).__name__}")
    return data


class Seconds(click.FloatRange):
    """A number of seconds: finite (click's FloatRange lets `nan` and `inf` through)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


def _read_limited(path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the file (enough to tell it is too large)."""
    try:
        with Path(path).open("rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None


class _Group(click.Group):
    """Turns jido-tasks errors and usage mistakes (exit 2) and Redis errors (exit 1) into a
    one-line `error: ...` message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedisUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except JidoTasksError as exc:  # includes ConfigError for a bad JIDO_TASKS_* setting
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            client = ctx.find_root().obj
            typed = typed_redis_error(exc, client.settings if client is not None else None, None)
            click.echo(f"error: {typed or exc}", err=True)
            ctx.exit(1)
        except redis.RedisError as exc:  # e.g. a read-only replica, a disk error (MISCONF)
            click.echo(f"error: Redis refused: {exc}", err=True)
            ctx.exit(1)
        except click.ClickException as exc:  # a usage mistake: bad option value, ...
            click.echo(f"error: {exc.format_message()}", err=True)
            ctx.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)


def client() -> Client:
    """The command's `Client`, built on first use (settings are validated here)."""
    root = click.get_current_context().find_root()
    if root.obj is None:
        root.obj = Client()
        root.call_on_close(root.obj.close)
    found: Client = root.obj
    return found


@click.group(cls=_Group)
@click.version_option(package_name="jido-tasks")
def cli() -> None:
    """Operate jido-tasks: workers, sessions, actions, events and snapshots."""


# -- processes (this process becomes Celery) -----------------------------------------------
@cli.command(context_settings=_PASSTHROUGH)
@click.option("--beat", is_flag=True, help="Also run beat in this worker (only one per site).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Worker processes.")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("--restart", is_flag=True, help="Start the worker again when it exits, with "
              "backoff (1 s doubling to 30 s), unless it exits with 2 or 78 (configuration "
              "errors); for running without compose or systemd.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(beat: bool, concurrency: int | None, loglevel: str, restart: bool,
           celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker on the jido-tasks queue (extra args go to celery)."""
    argv = worker_argv(load_settings(), beat=beat, concurrency=concurrency, loglevel=loglevel,
                       extra=celery_args)
    if not restart:
        exec_argv(argv)
    supervisor = Supervisor(out=lambda line: log.warning("%s", line))
    sys.exit(run_supervised(supervisor, lambda: supervisor.spawn(
        "worker", argv, dict(os.environ), prefixed=False)))


@cli.command(context_settings=_PASSTHROUGH)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Run Celery beat (the periodic sweep). Run exactly one per deployment."""
    settings = load_settings()  # fail here, clearly, on an invalid setting
    exec_argv(beat_argv(loglevel=loglevel, extra=celery_args,
                        quiet=settings.log_format == "json"))


@cli.command(context_settings=_PASSTHROUGH)
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help=ADDRESS_HELP)
@click.option("--no-auth", is_flag=True, help="Allow running without basic auth (unsafe).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, no_auth: bool, flower_args: tuple[str, ...]) -> None:
    """Run Flower; requires JIDO_TASKS_FLOWER_BASIC_AUTH unless --no-auth."""
    settings = load_settings()
    argv, env = flower_command(settings, port=port, no_auth=no_auth, address=address,
                               extra=flower_args)
    if settings.flower_basic_auth is None:
        click.echo("warning: Flower runs WITHOUT authentication (--no-auth)", err=True)
    exec_argv(argv, env)


@cli.command()
@click.option("--workers", "ping_workers", is_flag=True,
              help="Also ping workers; exit 1 if none answers.")
def check(ping_workers: bool) -> None:
    """Check Redis (reachable, version, eviction policy) and the Celery broker (reachable,
    messages queued); exit 1 if either is unreachable."""
    c = client()
    c.layer.redis.ping()
    report: dict[str, Any] = {
        "redis_url": safe_url(c.settings.redis_dsn),
        "redis_version": c.layer.redis.info("server").get("redis_version"),
        "namespace": c.settings.namespace,
        "queue": c.settings.queue,
        "broker_url": safe_url(c.settings.broker),
        "result_backend": safe_url(c.settings.backend),
        "eviction_warning": check_eviction_policy(c.layer.redis),
        "broker": broker_status(c.celery, [c.settings.queue, c.settings.sweep_queue]),
    }
    if not report["broker"]["ok"]:
        print_json(report)
        click.echo(f"error: cannot reach the broker at {report['broker_url']}: "
                   f"{report['broker']['error']}", err=True)
        sys.exit(1)
    if ping_workers:
        report["workers"] = sorted(name for reply in c.celery.control.ping(timeout=1.0)
                                   for name in reply)
    print_json(report)  # an eviction warning is also logged on stderr
    if ping_workers and not report["workers"]:
        click.echo("error: no worker answered", err=True)
        sys.exit(1)


@cli.command()
def migrate() -> None:
    """Move data of the key layout before slot groups into groups (stop workers and clients
    first; safe to run again); print what moved."""
    layer = RedisLayer(load_settings())
    print_json(migrate_layout(layer).model_dump())


# -- sessions --------------------------------------------------------------------------------
@cli.group(invoke_without_command=True)
@click.pass_context
def sessions(ctx: click.Context) -> None:
    """Create, inspect and terminate sessions (alone: `sessions list`)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(sessions_list)


@sessions.command("list")
@click.option("--status", type=click.Choice([s.value for s in SessionStatus]),
              help="Only this status (default: every session not terminated).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many rows of the index (default: all).")
def sessions_list(status: str | None, offset: int, limit: int | None) -> None:
    """Sessions, most recent activity first. With a Redis Cluster node down: the live nodes'
    sessions, the missing slots on stderr, exit status 3."""
    listed = client().list_sessions(status, offset=offset, limit=limit)
    print_json(listed)
    if not listed.complete:
        click.echo(f"warning: incomplete: {len(listed.missing_slots)} slot group(s) could not "
                   f"be read (a Redis Cluster node down); missing slots: "
                   f"{', '.join(map(str, listed.missing_slots))}", err=True)
        sys.exit(PARTIAL)


@sessions.command("show")
@click.argument("session_id")
def sessions_show(session_id: str) -> None:
    """One session's registry entry."""
    print_json(client().get_session(session_id))


@sessions.command("create")
@click.option("--metadata", metavar="JSON", callback=json_object, help=_JSON_HELP)
@click.option("--llm-config", metavar="JSON", callback=json_object, help=_JSON_HELP)
@click.option("--config", metavar="JSON", callback=json_object,
              help="Session config (max_history, timeout_minutes, ...): " + _JSON_HELP)
def sessions_create(metadata: JsonObject | None, llm_config: JsonObject | None,
                    config: JsonObject | None) -> None:
    """Create an active session and print its entry."""
    print_json(client().create_session(metadata, llm_config, config))


@sessions.command("touch")
@click.argument("session_id")
def sessions_touch(session_id: str) -> None:
    """Record activity on a session (an idle one becomes active)."""
    print_json(client().touch(session_id))


@sessions.command("terminate")
@click.argument("session_id")
@click.option("--reason", default="requested", show_default=True)
@click.option("--drain", is_flag=True, help="Run pending actions first instead of cancelling.")
@click.option("--save", is_flag=True, help="Save a snapshot before terminating.")
def sessions_terminate(session_id: str, reason: str, drain: bool, save: bool) -> None:
    """Terminate a session; pending actions are cancelled unless --drain."""
    c = client()
    if save:
        print_json(c.terminate_session(session_id, reason, drain=drain, save=True))
    else:
        print_json(c.terminate_session(session_id, reason, drain=drain))


@sessions.command("state")
@click.argument("session_id")
def sessions_state(session_id: str) -> None:
    """A session's committed state document."""
    print_json(client().get_state(session_id))


# -- events and actions ----------------------------------------------------------------------
@cli.command()
@click.option("--session", "session_id", help="Only this session's events (default: all).")
@click.option("--after", default="0", show_default=True, help="Stream id to resume after.")
@click.option("--follow", is_flag=True, help="Wait for new events (until Ctrl-C or --block).")
@click.option("--block", type=Seconds(min=0.001), help="With --follow: stop after "
              "this many seconds without an event.")
def events(session_id: str | None, after: str, follow: bool, block: float | None) -> None:
    """Print events oldest first, one JSON object per line."""
    if block is not None and not follow:
        raise click.UsageError("--block needs --follow")
    if after != "0" and not _STREAM_ID.fullmatch(after):
        raise click.BadParameter(f"{after!r} is not a stream id (e.g. 1712345678901-0)",
                                 param_hint="--after")
    c = client()
    last = after
    try:
        while True:
            wait = (block or 5.0) if follow else None
            for event in c.events(session_id, last, wait):
                click.echo(event.model_dump_json())
                last = event.id
            if not follow or block is not None:
                return
    except KeyboardInterrupt:  # the normal end of --follow
        return


@cli.command()
@click.argument("session_id")
@click.argument("action")
@click.option("--params", metavar="JSON", callback=json_object, help=_JSON_HELP)
@click.option("--wait", is_flag=True, help="Wait for the result.")
@click.option("--timeout", type=Seconds(min=0.0), default=30.0, show_default=True,
              help="With --wait: seconds to wait.")
def send(session_id: str, action: str, params: JsonObject | None, wait: bool,
         timeout: float) -> None:
    """Send ACTION to a session; print its id (and with --wait, its result)."""
    handle = client().send(session_id, action, params)
    out: dict[str, Any] = {"id": handle.id, "session_id": handle.session_id,
                           "action": handle.action}
    if not wait:
        print_json({**out, "status": handle.status()})
        return
    try:
        result = _wait_showing_progress(handle, timeout)
    except TimeoutError:
        click.echo(f"error: action {handle.id} not finished after {timeout:g}s "
                   f"(see: jido-tasks action {session_id} {handle.id})", err=True)
        sys.exit(1)
    print_json({**out, "status": "succeeded", "result": result})


def _wait_showing_progress(handle: ActionHandle, timeout: float) -> Any:
    """`handle.get(timeout)`, printing the action's progress on stderr when it changes."""
    deadline = time.monotonic() + timeout
    shown: Any = None
    while True:
        left = deadline - time.monotonic()
        try:
            return handle.get(max(0.0, min(PROGRESS_EVERY, left)))
        except TimeoutError:
            if left <= PROGRESS_EVERY:
                raise
        progress = handle.progress()
        if progress and progress != shown:
            shown = progress
            click.echo(f"progress: {progress.get('fraction', 0.0):.0%} "
                       f"{progress.get('message', '')}".rstrip(), err=True)


@cli.command()
@click.argument("session_id")
@click.argument("action_id")
def action(session_id: str, action_id: str) -> None:
    """One action's record: status, attempts, result or error."""
    print_json(client().action(session_id, action_id))


@cli.command()
def sweep() -> None:
    """Run one sweep now (recover, expire idle, purge old) and print its report."""
    click.echo(client().sweep().model_dump_json(indent=2))


# -- snapshots -------------------------------------------------------------------------------
@cli.group()
def snapshot() -> None:
    """Save, restore, list and delete session snapshots."""


@snapshot.command("save")
@click.argument("session_id")
def snapshot_save(session_id: str) -> None:
    """Save a snapshot of a session (entry and full state)."""
    print_json(client().save_session(session_id))


@snapshot.command("restore")
@click.argument("saved_id")
def snapshot_restore(saved_id: str) -> None:
    """Create a new session from a saved snapshot and print its entry."""
    print_json(client().restore_session(saved_id))


@snapshot.command("list")
@click.option("--long", "long_", is_flag=True, help="Details of each snapshot, not just ids.")
def snapshot_list(long_: bool) -> None:
    """Saved snapshots."""
    c = client()
    print_json(c.saved_sessions() if long_ else c.list_saved_sessions())


@snapshot.command("delete")
@click.argument("saved_id")
def snapshot_delete(saved_id: str) -> None:
    """Delete a saved snapshot."""
    client().delete_saved_session(saved_id)
    print_json({"deleted": saved_id})


cli.add_command(metrics)
cli.add_command(up)


def main() -> None:
    """Console script entry point."""
    configure_cli()
    cli(prog_name="jido-tasks")


if __name__ == "__main__":
    main()
