"""The Redis layer: connections, the key schema and the Lua scripts (loaded once, run by SHA).

Every session script gets the same KEYS and leading ARGV (see `scripts/_lib.lua`), built here
from the key schema, so no other code and no script formats a key.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from jido_tasks.errors import RedisUnavailable
from jido_tasks.keys import KeySchema, SessionKeys
from jido_tasks.settings import Settings

log = logging.getLogger(__name__)


_pools: dict[tuple[int, str], redis.Redis] = {}
P = ParamSpec("P")
R = TypeVar("R")


def safe_url(url: str) -> str:
    """`url` with its password replaced, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redis_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost or timed-out Redis connection inside `fn` into `RedisUnavailable`.

    For methods of objects with a `settings` attribute (the URL is named, password hidden).
    """
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            settings = getattr(args[0], "settings", None) if args else None
            where = safe_url(settings.redis_url) if settings is not None else "?"
            sid = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            raise RedisUnavailable(where, str(exc) or type(exc).__name__, sid) from exc
    return wrapper
_pools_lock = threading.Lock()


def connect(url: str) -> redis.Redis:
    """A process-wide client for `url` (a fresh one after fork, so workers never share sockets)."""
    key = (os.getpid(), url)
    with _pools_lock:
        client = _pools.get(key)
        if client is None:
            client = redis.Redis.from_url(url, decode_responses=True,
                                          health_check_interval=30)
            _pools[key] = client
        return client


def _source(name: str) -> str:
    pkg = resources.files("jido_tasks") / "scripts"
    return (pkg / "_lib.lua").read_text() + "\n" + (pkg / f"{name}.lua").read_text()


class RedisLayer:
    """Redis access for one namespace: keys, scripts and the connection."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        # Typed Any on purpose: with decode_responses=True every reply is str, but redis-py's
        # annotations say `bytes | str` (or Awaitable) for each, which would need a cast per call.
        self.redis: Any = client if client is not None else connect(settings.redis_url)
        self.keys = KeySchema(settings.namespace)
        self._scripts: dict[str, Any] = {}

    def script(self, name: str) -> Any:
        found = self._scripts.get(name)
        if found is None:
            found = self.redis.register_script(_source(name))
            self._scripts[name] = found
        return found

    def session_keys(self, session_id: str) -> SessionKeys:
        return self.keys.session(session_id)

    def script_keys(self, session_id: str) -> list[str]:
        sk = self.keys.session(session_id)
        k = self.keys
        return [sk.entry, sk.state, sk.mailbox, sk.actions, sk.results, sk.finished, sk.lease,
                sk.events, k.events, k.activity, k.active, k.expiry, k.terminated, k.scheduled]

    def run(self, name: str, session_id: str, *argv: Any, client: Any = None) -> Any:
        """Run session script `name` for `session_id` (validated by the caller) in one round trip.

        `client` may be a pipeline, to batch several script calls in one round trip.
        """
        s = self.settings
        args = [session_id, s.event_maxlen, s.global_event_maxlen,
                self.keys.session(session_id).done_channel,
                int(s.terminated_events_ttl * 1000), *argv]
        return self.script(name)(keys=self.script_keys(session_id), args=args, client=client)

    def check_eviction_policy(self) -> str | None:
        """A warning if Redis may evict session keys under memory pressure, else None."""
        try:
            policy = self.redis.config_get("maxmemory-policy").get("maxmemory-policy", "")
        except redis.ResponseError:  # CONFIG may be disabled on managed Redis
            return None
        if policy and policy != "noeviction":
            msg = (f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis may evict "
                   "session keys and lose work; set it to 'noeviction'")
            log.warning(msg)
            return msg
        return None
