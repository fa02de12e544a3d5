"""The asyncio twin of `RedisLayer`: the same `Op`s, `Read`s and plans, run through
`redis.asyncio` (scripts registered once per layer, then run by SHA).

Only the I/O lives here: key names, script arguments and reply decoding come from
`jido_tasks.store.keys`, `jido_tasks.store.scripts` and the plans of the core services.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError

from jido_tasks.settings import Settings
from jido_tasks.store.connection import (
    NODE_DOWN,
    DownNodes,
    Plan,
    Read,
    by_node,
    decode_many,
)
from jido_tasks.store.keys import KeySchema
from jido_tasks.store.scripts import Op

T = TypeVar("T")

CLIENT_NAME = "jido-tasks-aio"
"""The name of every connection of an async layer, as `CLIENT LIST` shows it."""
DEFAULT_MAX_CONNECTIONS = 32
"""Connections one async layer opens at most; more concurrent commands wait for a free one
(so 1,000 concurrent calls never open 1,000 sockets)."""


class AsyncRedisLayer:
    """Redis access for one namespace from an event loop: a bounded pool, keys and scripts."""

    def __init__(self, settings: Settings, *,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.settings = settings
        self.keys = KeySchema(settings.namespace, settings.index_shards)
        self.cluster = settings.redis_cluster
        self._loaded: dict[str, Any] = {}
        self.down = DownNodes()
        self.pool: Any = None
        if self.cluster:  # the cluster client keeps a pool per node
            self.redis: Any = redis.asyncio.cluster.RedisCluster.from_url(
                settings.redis_dsn, decode_responses=True, max_connections=max_connections,
                client_name=CLIENT_NAME, **settings.redis_ssl(settings.redis_dsn))
            return
        self.pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis_dsn, decode_responses=True, max_connections=max_connections,
            timeout=None, health_check_interval=30, client_name=CLIENT_NAME,
            # A pool given to the client keeps its own retry policy: retry a command on a
            # connection that broke (e.g. Redis restarted) as the sync client does.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 3),
            **settings.redis_ssl(settings.redis_dsn))
        # Any for the same reason as `RedisLayer.redis`: replies are typed by the decoders.
        self.redis = redis.asyncio.Redis(connection_pool=self.pool)

    async def loaded(self, op: Op[Any]) -> Any:
        """The registered script of `op` (an `AsyncScript`, loaded once, run by SHA; on a
        cluster loaded on every master first, as `RedisLayer.loaded`)."""
        found = self._loaded.get(op.script.name)
        if found is None:
            found = self.redis.register_script(op.script.source())
            if self.cluster:
                await self._load_on_masters(found.script)
            self._loaded[op.script.name] = found
        return found

    async def _load_on_masters(self, script: str) -> None:
        """`RedisLayer._load_on_masters`, awaited."""
        for node in self.redis.get_primaries():
            if not self.down.skip(node.name):
                try:
                    await self.redis.execute_command("SCRIPT LOAD", script, target_nodes=node)
                except NODE_DOWN as exc:
                    self.down.mark(node.name, exc)

    async def call(self, op: Op[T]) -> T:
        """Run one script call in one round trip and return its typed reply."""
        keys, args = op._keys_and_args(self)
        return op.decode(await (await self.loaded(op))(keys=keys, args=args))

    async def call_many(self, ops: list[Op[T]], *, transaction: bool = False,
                        ) -> list[T | Exception]:
        """`RedisLayer.call_many`, awaited: one pipeline, failures returned in the list."""
        if not ops:
            return []
        pipe = self.redis.pipeline(transaction=transaction)
        for op in ops:
            keys, args = op._keys_and_args(self)
            script = await self.loaded(op)
            if self.cluster:  # a cluster pipeline routes a plain EVALSHA by its first key
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            else:
                await script(keys=keys, args=args, client=pipe)  # queued, not sent
        replies = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # not run: run it alone (loads it first)
                try:
                    keys, args = ops[i]._keys_and_args(self)
                    replies[i] = await (await self.loaded(ops[i]))(keys=keys, args=args)
                except redis.RedisError as exc:
                    replies[i] = exc
        return decode_many(self, ops, replies)

    async def read(self, read: Read[T]) -> T:
        """`RedisLayer.read`, awaited (a `partial` read on a cluster with a node down: one
        pipeline per node)."""
        partial = read.partial and self.cluster
        if not (partial and self.down.any()):
            try:
                return read.decode(await self._pipeline(read, read.commands))
            except NODE_DOWN:
                if not partial:
                    raise
        replies: list[Any] = [None] * len(read.commands)
        for node, positions in by_node(self.redis, read.commands).items():
            got = self.down.replies(self, node, len(positions))
            if not self.down.skip(node):
                try:
                    got = await self._pipeline(read, [read.commands[i] for i in positions])
                except NODE_DOWN as exc:
                    self.down.mark(node, exc)
            for i, reply in zip(positions, got, strict=True):
                replies[i] = reply
        return read.decode(replies)

    async def _pipeline(self, read: Read[Any], commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=read.transaction)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=not read.replies_with_errors))

    async def run(self, plan: Plan[T]) -> T:
        """Drive a plan (see `jido_tasks.store.connection.Plan`) with awaited I/O."""
        reply: Any = None
        try:
            while True:
                step = plan.send(reply)
                reply = await (self.call(step) if isinstance(step, Op) else self.read(step))
        except StopIteration as done:
            return cast(T, done.value)

    def pubsub(self) -> Any:
        """A new pub/sub object (its connection comes from the pool when it subscribes)."""
        return self.redis.pubsub(ignore_subscribe_messages=False)

    async def aclose(self) -> None:
        await self.redis.aclose()
        if self.pool is not None:
            await self.pool.disconnect()
