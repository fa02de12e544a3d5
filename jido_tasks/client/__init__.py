"""What an app's process runs: the sync `Client` (`sync`), the asyncio `AsyncClient` (`aio`),
the sync mailbox, its waits and action handles (`mailbox`), and the asyncio waits (`waiting`:
one pub/sub connection for all of a client's waits). Both clients' waits do what the one
`core.waiter` decides (recheck, reconnect after the backoff, give up), with their own I/O.

May import: the base modules, `store`, `core` and the `ops` services the client API exposes
(the sweep, snapshots). Never `worker` (the drain engine, the transport, Flower events) or
`cli`, so an app's process never loads the worker side.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jido_tasks.client.aio import AsyncClient
    from jido_tasks.client.sync import Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    """`jido_tasks.client.Client` (where `Client` lived before the package) and
    `AsyncClient`, imported on first use."""
    if name == "Client":
        from jido_tasks.client.sync import Client
        return Client
    if name == "AsyncClient":
        from jido_tasks.client.aio import AsyncClient
        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
