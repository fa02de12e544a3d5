"""The metrics and sessions web server (`jido-tasks metrics`, also started by `jido-tasks up`)."""

from __future__ import annotations

import asyncio
import signal
import sys

from jido_tasks.cli.launch import FLOWER_AUTH_SETTING
from jido_tasks.client.sync import Client
from jido_tasks.errors import ConfigError
from jido_tasks.ops.web.app import make_app
from jido_tasks.settings import Settings


def serve(settings: Settings, port: int, address: str = "127.0.0.1",
          no_auth: bool = False) -> None:
    """Serve until SIGINT/SIGTERM. Refuses to start without basic auth unless `no_auth`."""
    if settings.flower_basic_auth is None and not no_auth:
        raise ConfigError(FLOWER_AUTH_SETTING, "not set; the metrics/sessions server requires "
                          "basic auth (user:password), or pass --no-auth")
    asyncio.run(_serve(settings, port, address, no_auth))


async def _serve(settings: Settings, port: int, address: str, no_auth: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with Client(settings) as client:
        server = make_app(client, require_auth=not no_auth).listen(port, address)
        print(f"jido-tasks metrics and sessions on http://{address}:{port}/ "
              "(/metrics, /sessions)", file=sys.stderr, flush=True)
        await stop.wait()
        server.stop()
