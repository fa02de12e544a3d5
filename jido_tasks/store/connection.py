"""Connections to Redis, and the translation of Redis failures into the project's typed errors.

`RedisLayer` bundles what every core service needs: the settings, one process-wide client, the
key schema and the loaded scripts (`jido_tasks.store.scripts`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterError, NoScriptError, RedisClusterException

from jido_tasks.errors import RedisAuthFailed, RedisOutOfMemory, RedisUnavailable
from jido_tasks.settings import Settings, safe_url
from jido_tasks.store.keys import KeySchema
from jido_tasks.store.protocols import SyncRedis
from jido_tasks.store.scripts import Op

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_pools: dict[tuple[int, str, tuple[tuple[str, str], ...], bool], Any] = {}
_pools_lock = threading.Lock()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for Redis's refusal of a write at `maxmemory` (also when raised inside a script)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM "))


def typed_redis_error(exc: BaseException, settings: Settings | None,
                      session_id: str | None) -> Exception | None:
    """The project's typed error for a Redis failure, or None if `exc` is not one we map."""
    where = safe_url(settings.redis_dsn) if settings is not None else "?"
    if isinstance(exc, redis.AuthenticationError):
        return RedisAuthFailed(where, str(exc) or type(exc).__name__, session_id)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ClusterError,
                        RedisClusterException)):  # a cluster node down: its slots fail
        return RedisUnavailable(where, str(exc) or type(exc).__name__, session_id)
    if is_out_of_memory(exc):
        return RedisOutOfMemory(where, str(exc), session_id)
    return None


def redis_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn Redis failures inside `fn` into typed errors (`RedisUnavailable`,
    `RedisOutOfMemory`) naming the URL (password hidden) and the session.

    For methods (plain or `async def`) of objects with a `settings` attribute. The session is
    the call's argument named `session_id`, when `fn` has one (bound by name, never guessed by
    position).
    """
    translate = _translator(fn)
    if inspect.iscoroutinefunction(fn):
        return cast(Callable[P, R], _async_redis_errors(fn, translate))

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            typed = translate(exc, args, kwargs)
            if typed is None:
                raise
            raise typed from exc
    return wrapper


_Translate = Callable[[redis.RedisError, Any, Any], Exception | None]


def _translator(fn: Callable[..., Any]) -> _Translate:
    """The typed error of a Redis failure in a call of method `fn` (args, kwargs), or None."""
    signature = inspect.signature(fn)
    has_session = "session_id" in signature.parameters

    def translate(exc: redis.RedisError, args: Any, kwargs: Any) -> Exception | None:
        sid = None
        if has_session:
            value = signature.bind_partial(*args, **kwargs).arguments.get("session_id")
            sid = value if isinstance(value, str) else None
        settings = getattr(args[0], "settings", None) if args else None
        return typed_redis_error(exc, settings, sid)
    return translate


def _async_redis_errors(fn: Callable[..., Any], translate: _Translate,
                        ) -> Callable[..., Awaitable[Any]]:
    """`redis_errors` of an `async def` method."""
    afn = cast(Callable[..., Awaitable[Any]], fn)

    @functools.wraps(fn)
    async def awrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await afn(*args, **kwargs)
        except redis.RedisError as exc:
            typed = translate(exc, args, kwargs)
            if typed is None:
                raise
            raise typed from exc
    return awrapper


class Layer(Protocol):
    """What I/O-free code needs of a Redis layer (sync or async): settings and key names."""

    settings: Settings
    keys: KeySchema


@dataclass(frozen=True)
class Read(Generic[T]):
    """Plain Redis commands read in one pipeline, and the decoder of their replies.

    Built by I/O-free code and run by `RedisLayer.read` or `AsyncRedisLayer.read`, so the
    sync and async clients read the same keys and decode the replies the same way.
    """

    commands: list[tuple[Any, ...]]
    decoder: Callable[[list[Any]], T]
    transaction: bool = False
    replies_with_errors: bool = False
    """The decoder gets a failed command's error in its place (instead of the read raising)."""
    partial: bool = False
    """On a Redis Cluster, a node that cannot be reached does not fail the whole read: the
    commands it serves get a `RedisUnavailable` in place of their replies (the decoder must
    take them) and the other nodes' replies are kept. Each command's first argument must be
    its key. Costs nothing while every node answers (one pipeline, as without it)."""

    def decode(self, replies: list[Any]) -> T:
        return self.decoder(replies)


Plan = Generator[Any, Any, T]
"""Logic of several round trips, written once: a generator that yields `Op`s and `Read`s and
is sent back each one's decoded reply; its return value is the result. `RedisLayer.run` and
`AsyncRedisLayer.run` drive it with their own I/O."""


def decode_many(layer: Layer, ops: list[Op[T]], replies: list[Any]) -> list[T | Exception]:
    """Decode pipelined script replies; a failed call comes back as its (typed) exception."""
    out: list[T | Exception] = []
    for op, reply in zip(ops, replies, strict=True):
        if isinstance(reply, Exception):
            out.append(typed_redis_error(reply, layer.settings, op.session_id) or reply)
            continue
        try:
            out.append(op.decode(reply))
        except Exception as exc:  # a typed refusal of this one call
            out.append(exc)
    return out


NODE_DOWN = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException)
"""What redis-py raises when a node (or, on a cluster, one of its nodes) cannot be reached."""


def by_node(client: Any, commands: list[tuple[Any, ...]]) -> dict[str, list[int]]:
    """The positions of `commands` by the name of the cluster node serving each one's key
    (its first argument), as `client` (a sync or asyncio `RedisCluster`) maps the slots now."""
    out: dict[str, list[int]] = {}
    for i, command in enumerate(commands):
        node = client.get_node_from_key(str(command[1]))
        out.setdefault(node.name if node is not None else "?", []).append(i)
    return out


DOWN_MEMORY = 10.0
"""Seconds a cluster node found unreachable is left out of partial reads and script loads
before it is tried again (each try of a dead node costs redis-py's connect retries)."""


class DownNodes:
    """The cluster nodes of one layer found unreachable lately (`DOWN_MEMORY`)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def any(self) -> bool:
        now = time.monotonic()
        return any(until > now for until in self._until.values())

    def skip(self, node: str) -> bool:
        return self._until.get(node, 0.0) > time.monotonic()

    def mark(self, node: str, exc: BaseException) -> None:
        if not self.skip(node):
            log.warning("Redis Cluster node %s unreachable (%s): left out of listings, sweeps "
                        "and script loads for %.0f s", node, exc, DOWN_MEMORY)
        self._until[node] = time.monotonic() + DOWN_MEMORY

    def replies(self, layer: Layer, node: str, count: int) -> list[Any]:
        """The replies of `count` commands of a partial read that node `node` could not
        answer: each a `RedisUnavailable` naming the node."""
        problem = f"cluster node {node} unreachable"
        return [RedisUnavailable(safe_url(layer.settings.redis_dsn), problem)] * count


def connect(url: str, ssl: dict[str, str] | None = None, cluster: bool = False) -> Any:
    """A process-wide client for `url` (a fresh one after fork, so workers never share
    sockets): a `redis.Redis`, or with `cluster` a `redis.cluster.RedisCluster` that found the
    cluster's nodes from the one `url` names (it follows MOVED/ASK redirections and failovers);
    `ssl`: redis-py's TLS arguments for a `rediss://` URL (`Settings.redis_ssl`)."""
    options = ssl or {}
    key = (os.getpid(), url, tuple(sorted(options.items())), cluster)
    with _pools_lock:
        client = _pools.get(key)
        if client is None:
            if cluster:
                client = RedisCluster.from_url(url, decode_responses=True,
                                               health_check_interval=30, **options)
            else:
                client = redis.Redis.from_url(url, decode_responses=True,
                                              health_check_interval=30, **options)
            _pools[key] = client
        return client


class RedisLayer:
    """Redis access for one namespace: the connection, the key schema and the scripts."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        raw = client if client is not None else connect(settings.redis_dsn,
                                                        settings.redis_ssl(settings.redis_dsn),
                                                        settings.redis_cluster)
        self.redis: SyncRedis = cast(SyncRedis, raw)
        self.cluster = isinstance(raw, RedisCluster)
        self.keys = KeySchema(settings.namespace, settings.index_shards)
        self._loaded: dict[str, Any] = {}
        self.down = DownNodes()

    def loaded(self, name: str, source: Callable[[], str]) -> Any:
        """The registered script `name` (loaded once per layer, then run by SHA). On a
        cluster it is loaded on every master at once: a cluster pipeline does not load the
        scripts it runs (a master that still lacks one, e.g. after a failover, is answered by
        `call_many`)."""
        found = self._loaded.get(name)
        if found is None:
            found = self.redis.register_script(source())
            if self.cluster:
                self._load_on_masters(found.script)
            self._loaded[name] = found
        return found

    def _load_on_masters(self, script: str) -> None:
        """SCRIPT LOAD on every master that answers (one that is down gets the script when
        it first answers NOSCRIPT, as after a failover)."""
        cluster: Any = self.redis
        for node in cluster.get_primaries():
            if not self.down.skip(node.name):
                try:
                    cluster.execute_command("SCRIPT LOAD", script, target_nodes=node)
                except NODE_DOWN as exc:
                    self.down.mark(node.name, exc)

    def call(self, op: Op[T]) -> T:
        """Run one script call in one round trip and return its typed reply."""
        return op.run(self)

    def call_many(self, ops: list[Op[T]], *, transaction: bool = False,
                  ) -> list[T | Exception]:
        """Run script calls in one pipeline (a MULTI/EXEC with `transaction`). A call that
        failed comes back as its exception in the list, so one bad call cannot hide the
        others; typed errors of the replies (e.g. `SessionNotFound`) come back the same way."""
        if not ops:
            return []
        pipe = self.redis.pipeline(transaction=transaction)
        for op in ops:
            op.queue(self, pipe)
        replies = pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # not run: run it alone (loads it first)
                try:
                    replies[i] = ops[i].run_raw(self)
                except redis.RedisError as exc:
                    replies[i] = exc
        return decode_many(self, ops, replies)

    def read(self, read: Read[T]) -> T:
        """Run plain commands in one pipeline (one round trip) and decode their replies (a
        `partial` read on a cluster with a node down: one pipeline per node, see `Read`)."""
        partial = read.partial and self.cluster
        if not (partial and self.down.any()):
            try:
                return read.decode(self._pipeline(read, read.commands))
            except NODE_DOWN:
                if not partial:
                    raise
        replies: list[Any] = [None] * len(read.commands)
        for node, positions in by_node(self.redis, read.commands).items():
            got = self.down.replies(self, node, len(positions))
            if not self.down.skip(node):
                try:
                    got = self._pipeline(read, [read.commands[i] for i in positions])
                except NODE_DOWN as exc:
                    self.down.mark(node, exc)
            for i, reply in zip(positions, got, strict=True):
                replies[i] = reply
        return read.decode(replies)

    def _pipeline(self, read: Read[Any], commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=read.transaction)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=not read.replies_with_errors))

    def run(self, plan: Plan[T]) -> T:
        """Drive a plan: run each `Op` / `Read` it yields and send it the reply."""
        reply: Any = None
        try:
            while True:
                step = plan.send(reply)
                reply = self.call(step) if isinstance(step, Op) else self.read(step)
        except StopIteration as done:
            return cast(T, done.value)
