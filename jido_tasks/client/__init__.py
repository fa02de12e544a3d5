"""What an app's process runs: the sync `Client` (`sync`), the asyncio `AsyncClient` (`aio`),
the sync mailbox and action handles (`mailbox`), and waiting for actions (`waiting`: one
waiter whose recheck, reconnect and backoff states both clients drive).

May import: the base modules, `store`, `core` and the `ops` services the client API exposes
(the sweep, snapshots). Never `worker` (the drain engine, the transport, Flower events) or
`cli`, so an app's process never loads the worker side.
"""
