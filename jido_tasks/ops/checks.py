"""Start-up checks of the Redis server (like celery-redbeat's `checks.py`).

Broker: `jido-tasks check` also connects to the Celery broker (Redis or RabbitMQ) and reads
how many messages wait in each jido-tasks queue.

Credentials: a Redis that refuses the URL's user or password stops a worker at start with a
message naming the URL (password hidden), instead of failing every task later.

Eviction: with `maxmemory` 0 Redis never evicts, so any policy is fine. With a limit, an
`allkeys-*` policy may evict any key and a `volatile-*` one any key with a TTL (leases, a
terminated session's stream): session work could be lost or doubled, so warn, or stop the
worker at start with the `eviction_fatal` setting.

A worker stopped at start exits with `EX_CONFIG` (78): a configuration error that starting it
again cannot fix, which `jido-tasks up` and `jido-tasks worker --restart` do not restart.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import redis
from kombu.exceptions import ChannelError

from jido_tasks.errors import ConfigError, RedisAuthFailed
from jido_tasks.settings import ENV_PREFIX, Settings, safe_url

log = logging.getLogger(__name__)
EX_CONFIG = 78  # sysexits.h: a configuration error (systemd: RestartPreventExitStatus=78)


def eviction_warning(client: Any) -> str | None:
    """A warning if Redis may evict keys under memory pressure, else None."""
    try:
        config = client.config_get("maxmemory*")
    except redis.ResponseError:  # CONFIG may be disabled on managed Redis
        return None
    maxmemory = int(config.get("maxmemory", "0") or 0)
    policy = str(config.get("maxmemory-policy", "noeviction"))
    if maxmemory == 0 or not policy.startswith(("allkeys-", "volatile-")):
        return None
    return (f"Redis maxmemory-policy is {policy!r} with maxmemory {maxmemory}: under memory "
            "pressure Redis may evict jido-tasks keys and lose or repeat work; set it to "
            "'noeviction'")


def check_eviction_policy(client: Any, fatal: bool = False) -> str | None:
    """Log the eviction warning (and return it); with `fatal`, raise `ConfigError` instead."""
    warning = eviction_warning(client)
    if warning is None:
        return None
    if fatal:
        raise ConfigError(f"{ENV_PREFIX}EVICTION_FATAL", f"is on and {warning}")
    log.warning(warning)
    return warning


def stop_worker(exc: Exception) -> NoReturn:
    """Stop a starting worker for a configuration error: log it, print `error: <exc>` on
    stderr and exit `EX_CONFIG` (SystemExit: Celery's signal dispatch logs and swallows
    ordinary exceptions)."""
    log.critical("%s", exc)
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG) from exc


def enforce_eviction_policy(client: Any, fatal: bool) -> None:
    """At worker start: warn, or with `fatal` stop the worker (`stop_worker`)."""
    try:
        check_eviction_policy(client, fatal)
    except ConfigError as exc:
        stop_worker(exc)


def check_credentials(client: Any, settings: Settings) -> None:
    """Raise `RedisAuthFailed` (naming the URL, password hidden) if Redis refuses the URL's
    credentials; other failures (Redis not up yet) are left to the calls that follow."""
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisAuthFailed(safe_url(settings.redis_dsn), str(exc)) from exc
    except redis.RedisError:
        return


def enforce_start_checks(client: Any, settings: Settings) -> None:
    """At worker start: stop (`stop_worker`) if Redis refuses the credentials, then check
    the eviction policy."""
    try:
        check_credentials(client, settings)
    except RedisAuthFailed as exc:
        stop_worker(exc)
    enforce_eviction_policy(client, settings.eviction_fatal)


def broker_status(celery: Any, queues: list[str], timeout: float = 5.0) -> dict[str, Any]:
    """Whether the Celery broker accepts a connection (`ok`, else `error`: one line, no
    password) and the messages waiting in each of `queues` (`queued`), read by a passive
    declare, which both Redis and RabbitMQ answer; a queue not declared yet holds none."""
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            queued = {name: _queued(conn, name) for name in queues}
    except Exception as exc:  # kombu, py-amqp and socket errors: all mean "not usable"
        return {"ok": False, "error": str(exc) or type(exc).__name__}
    return {"ok": True, "queued": queued}


def _queued(conn: Any, queue: str) -> int:
    # A channel per queue: on RabbitMQ a refused passive declare closes its channel.
    with conn.channel() as channel:
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except (ChannelError, *conn.channel_errors):  # not declared yet (no worker, no send)
            return 0
