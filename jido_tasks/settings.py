"""Settings from `JIDO_TASKS_*` environment variables and an optional TOML file under `config/`.

Order of sources (first wins): keyword arguments, environment, the TOML file named by
`JIDO_TASKS_CONFIG` (default `config/jido-tasks.toml` when it exists), defaults.
Durations are seconds. Invalid values fail at start with a `ConfigError` naming the setting.
"""

from __future__ import annotations

import os
import re
import ssl
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jido_tasks.errors import ConfigError

ENV_PREFIX = "JIDO_TASKS_"
DEFAULT_CONFIG_FILE = Path("config/jido-tasks.toml")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
MAX_JSON_DEPTH = 128
"""Upper bound of `max_json_depth`: params are stored inside a request document that pydantic
reads with a nesting limit of about 200."""
MAX_SNAPSHOT_DEPTH = 250
"""Upper bound of `max_snapshot_depth`: pydantic writes JSON nested at most about 255 deep."""
MAX_BATCH_SIZE = 1000
"""Upper bound of `batch_size`: a claim hands out at most this many actions in one reply."""
MAX_INDEX_SHARDS = 1024
"""Upper bound of `index_shards` (each group's hash tag is searched for its own slot range)."""
MAX_BACKOFF_STEPS = 16
"""Most steps of `reconnect_backoff` (its last one repeats)."""
# Never echoed in errors: they may hold passwords.
_SECRET_FIELDS = frozenset({"redis_url", "broker_url", "result_backend", "flower_basic_auth"})


def safe_url(url: str) -> str:
    """`url` with its password replaced, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class SecretUrl(SecretStr):
    """A URL that may hold a password: `repr`, `str` and dumps show it with the password
    masked; `get_secret_value()` gives the real one (for connecting, never for printing)."""

    def _display(self) -> str:
        return safe_url(self.get_secret_value())


def config_file() -> Path:
    """The TOML settings file in use: `JIDO_TASKS_CONFIG`, else `config/jido-tasks.toml`."""
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG", str(DEFAULT_CONFIG_FILE)))


class Settings(BaseSettings):
    """All jido-tasks settings; one instance is shared by the client, CLI and workers."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    redis_url: SecretUrl = SecretUrl("redis://localhost:6379/0")
    broker_url: SecretUrl | None = None
    """Celery broker; defaults to `redis_url`."""
    result_backend: SecretUrl | None = None
    """Celery result backend; defaults to `redis_url`."""
    redis_ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    """For a `rediss://` URL (registry, Redis broker, Redis result backend): whether Redis's
    certificate must verify (against `redis_ssl_ca_certs`, else the system's CAs)."""
    redis_ssl_ca_certs: FilePath | None = None
    """CA certificates (PEM) that verify Redis's certificate on `rediss://` URLs."""
    redis_ssl_certfile: FilePath | None = None
    """Client certificate (PEM) presented on `rediss://` URLs (Redis `tls-auth-clients`)."""
    redis_ssl_keyfile: FilePath | None = None
    """Private key (PEM) of `redis_ssl_certfile`."""
    amqp_ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    """For an `amqps://` broker: whether the broker's certificate must verify (against
    `amqp_ssl_ca_certs`, else the system's CAs)."""
    amqp_ssl_ca_certs: FilePath | None = None
    """CA certificates (PEM) that verify the broker's certificate on an `amqps://` URL."""
    amqp_ssl_certfile: FilePath | None = None
    """Client certificate (PEM) presented to an `amqps://` broker (RabbitMQ `verify_peer`)."""
    amqp_ssl_keyfile: FilePath | None = None
    """Private key (PEM) of `amqp_ssl_certfile`."""
    namespace: str = "jido"
    """Prefix of every Redis key, so several deployments can share one Redis."""
    redis_cluster: bool = False
    """`redis_url` names a node of a Redis Cluster (the session data is spread over its
    masters through redis-py's cluster client); the Celery broker and result backend stay on
    their own URLs (a single Redis or RabbitMQ: Celery's Redis transport does not speak
    Cluster)."""
    index_shards: int = Field(256, ge=1, le=MAX_INDEX_SHARDS)
    """Slot groups: each session belongs to one (by its id) and shares its group's hash tag
    with the group's indexes, event stream and counters. Fixed for the life of the data (the
    number is stored in Redis and checked at start)."""
    queue: str = "jido_tasks"
    """Celery queue for session work and sweeps (workers consume it by default)."""
    idle_after: Seconds = 300.0
    """An active session with no activity for this long becomes idle."""
    default_timeout: Seconds = 1800.0
    """Idle timeout of a session whose config sets none; past it the sweep may expire it."""
    lease_ttl: Seconds = 10.0
    """How long a worker's claim on a session lives without a heartbeat."""
    sweep_interval: Seconds = 30.0
    drain_time_slice: Seconds = 0.5
    """How long a drain keeps a session while work remains before handing it back and
    publishing its drain at the back of the queue, so busy sessions cannot starve the others."""
    liveness_ttl: Seconds = 1.0
    """Life of a worker process's liveness key, renewed 4 times per period while it holds
    leases: a holder whose key is gone is dead, and its sessions are taken over at once (the
    lease and its fencing token stay the safety net)."""
    recover_interval: Seconds = 2.0
    """How often a worker checks for sessions whose lease holder is dead (a light recovery,
    between full sweeps)."""
    retention: Seconds = 7 * 86400.0
    """How long terminated sessions are kept before the sweep purges them."""
    persistence: Literal["redis", "disk"] = "redis"
    persistence_dir: Path = Path("data/snapshots")
    action_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Modules a worker imports at start so that the app's actions register."""
    telemetry_hooks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Telemetry hook classes (`module:Class`) registered by workers and clients at start."""
    max_params_bytes: int = Field(256 * 1024, gt=0)
    """Largest accepted action params, as JSON bytes."""
    max_metadata_bytes: int = Field(64 * 1024, gt=0)
    """Largest accepted session metadata, and llm_config, each as JSON bytes (they live in the
    registry row, read by every listing)."""
    max_json_depth: int = Field(64, ge=1, le=MAX_JSON_DEPTH)
    """Deepest nesting of objects and arrays accepted in metadata, llm_config, config and
    params (checked before they are encoded or parsed; a scalar is depth 0, `{}` depth 1)."""
    max_snapshot_bytes: int = Field(64 * 1024 * 1024, gt=0)
    """Largest snapshot document saved or read (a larger file or key is never read whole:
    it is refused, and skipped by listings, as corrupt)."""
    max_snapshot_depth: int = Field(200, ge=8, le=MAX_SNAPSHOT_DEPTH)
    """Deepest nesting of a snapshot document (its state sits 2 levels below its root)."""
    action_time_limit: Seconds = 300.0
    """Default per-action time limit; an action may declare its own."""
    max_attempts: int = Field(3, ge=1)
    """Claims of one action (worker deaths) before it is failed as poison."""
    batch_size: int = Field(100, ge=1, le=MAX_BATCH_SIZE)
    """Actions a worker applies under one lease before it re-reads the mailbox."""
    commit_group: int = Field(20, ge=1)
    """Most consecutive actions a worker commits in one atomic step (1: each alone)."""
    keep_results: int = Field(100, ge=1, le=100_000)
    """Most finished action records kept per session (oldest dropped first). 100 covers what
    a caller follows (its actions in flight; a waiter subscribed before the finish gets the
    outcome from the finish message, not the record) at about 150 B each for small actions,
    and keeps a record lookup (LPOS, newest first) a scan of a few hundred list elements."""
    record_retention: Seconds = 3600.0
    """A finished action's record is dropped this long after it finished (like Celery's
    `result_expires`); a session's own event stream is trimmed to the same age, and a session
    with no finish for this long holds no records at all."""
    event_maxlen: int = Field(1000, ge=1)
    """Approximate length bound of each session's event stream."""
    terminated_events_ttl: Seconds = 86400.0
    """How long a terminated session keeps its own event stream (the global one keeps its
    events); the registry row stays for `retention`."""
    global_event_maxlen: int = Field(100_000, ge=1)
    """Approximate length bound of the global event stream: each slot group's stream keeps
    about this divided by `index_shards` (Redis trims whole nodes of 100 entries, so each
    keeps at least about 100)."""
    sweep_batch: int = Field(500, ge=1)
    """Candidates a sweep reads from an index per round trip."""
    result_expires: Seconds = 3600.0
    """How long Celery keeps task results (drain/sweep summaries)."""
    visibility_timeout: Seconds = 3600.0
    """Celery redis transport visibility timeout (redelivery of unacked messages)."""
    reliable_fetch: bool = True
    """On a `redis://` broker, workers take messages by moving them into a holding list of
    their own (`jido_tasks.store.transport`), so a worker killed while taking one does not lose
    it (kombu's BRPOP does). Needs Redis 6.2 (older: kombu's fetch). Process-wide: once an app
    built with it on is made, every `redis://` kombu connection of the process uses it."""
    action_events: bool = True
    """Send a Celery task event for every action a drain runs (received, started, succeeded or
    failed, with the action's id as the task id), so Flower shows each action as a task. Turn
    off if you do not run Flower or another event consumer."""
    unknown_action_grace: Seconds = 300.0
    """How long an action that the worker holding its session lacks stays pending while another
    live worker has it registered (a rolling deploy); past it, it fails with UnknownAction."""
    worker_ttl: Seconds = 30.0
    """A worker's record of its registered actions lives this long without a refresh (it is
    refreshed every third of it): past it the worker counts as gone."""
    flower_basic_auth: SecretStr | None = None
    """Flower's `user:password` (several separated by ','); `jido-tasks flower` requires it.
    The metrics/sessions server (`jido-tasks metrics`) uses the same credentials."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per log line (workers, beat, CLI), with session and action ids."""
    strict_settings: bool = False
    """Unknown `JIDO_TASKS_*` variables stop the program instead of a warning."""
    eviction_fatal: bool = False
    """A Redis that may evict keys stops a worker at start instead of a warning."""
    metrics_max_sessions: int = Field(1000, ge=1)
    """Sessions with pending work read per `/metrics` scrape (bounds the scrape's cost)."""
    metrics_counters: bool = True
    """The scripts keep the counters and the run-time histogram of `/metrics` in Redis (the
    `metrics` hash). Off: they stay where they are (the benchmark compares both)."""
    wait_recheck_interval: Seconds = 1.0
    """While a client waits for an action (pub/sub, no polling), it re-reads the outcome this
    often, in case a finish message was missed (e.g. while pub/sub reconnected)."""
    redis_outage_limit: Seconds = 60.0
    """How long a wait with no timeout keeps trying while Redis is unreachable before it
    raises `RedisUnavailable` (a wait with a timeout keeps trying until its timeout)."""
    reconnect_backoff: Annotated[tuple[Seconds, ...], NoDecode,
                                 Field(min_length=1, max_length=MAX_BACKOFF_STEPS)] = (
        0.05, 0.1, 0.2, 0.5, 1.0)
    """Seconds before each attempt in a row to reconnect a waiting client's pub/sub (the
    last one repeats until Redis answers or the wait gives up); comma-separated in the
    environment. The one backoff schedule of both clients' waits."""

    @field_validator("flower_basic_auth")
    @classmethod
    def _check_basic_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for pair in value.get_secret_value().split(","):
                user, _, password = pair.partition(":")
                if not user or not password:
                    raise ValueError("expected user:password (several separated by ',')")
        return value

    @field_validator("action_modules", "telemetry_hooks", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("reconnect_backoff", mode="before")
    @classmethod
    def _split_backoff(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("reconnect_backoff")
    @classmethod
    def _check_backoff(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(later < earlier for earlier, later in pairwise(value)):
            raise ValueError("each delay is at least the one before it")
        return value

    @field_validator("action_modules")
    @classmethod
    def _check_modules(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _MODULE.match(name):
                raise ValueError(f"{name!r} is not a dotted module name")
        return value

    @field_validator("telemetry_hooks")
    @classmethod
    def _check_hooks(cls, value: list[str]) -> list[str]:
        for path in value:
            module, _, name = path.partition(":")
            if not _MODULE.match(module) or not name.isidentifier():
                raise ValueError(f"{path!r} is not a 'module:Class' path")
        return value

    @field_validator("namespace", "queue")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError("use 1-64 characters from A-Z a-z 0-9 _ . -")
        return value

    @field_validator("redis_url", "broker_url", "result_backend")
    @classmethod
    def _check_url(cls, value: SecretUrl | None) -> SecretUrl | None:
        if value is not None and "://" not in value.get_secret_value():
            raise ValueError("not a URL (expected e.g. redis://host:6379/0)")
        return value

    @field_serializer("redis_url", "broker_url", "result_backend", when_used="json")
    def _masked_url(self, value: SecretUrl | None) -> str | None:
        return None if value is None else str(value)

    @model_validator(mode="after")
    def _defaults_from_redis_url(self) -> Settings:
        if self.broker_url is None:
            object.__setattr__(self, "broker_url", self.redis_url)
        if self.result_backend is None:
            object.__setattr__(self, "result_backend", self.redis_url)
        return self

    @property
    def redis_dsn(self) -> str:
        """The Redis URL with its password: for connecting only, never for printing."""
        return self.redis_url.get_secret_value()

    def redis_ssl(self, url: str) -> dict[str, str]:
        """redis-py's TLS arguments for `url`: the `redis_ssl_*` settings if it is a
        `rediss://` URL, else none (Celery takes the same keys as `broker_use_ssl` and
        `redis_backend_use_ssl`). Query parameters of the URL itself win in redis-py."""
        if urlsplit(url).scheme != "rediss":
            return {}
        options: dict[str, str] = {"ssl_cert_reqs": self.redis_ssl_cert_reqs}
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            path: Path | None = getattr(self, f"redis_{name}")
            if path is not None:
                options[name] = str(path)
        return options

    def amqp_ssl(self, url: str) -> dict[str, Any]:
        """py-amqp's TLS options (Celery's `broker_use_ssl`) for `url`: the `amqp_ssl_*`
        settings if it is an `amqps://` URL, else none."""
        if urlsplit(url).scheme != "amqps":
            return {}
        reqs = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
                "none": ssl.CERT_NONE}[self.amqp_ssl_cert_reqs]
        options: dict[str, Any] = {"cert_reqs": reqs}
        for name in ("ca_certs", "certfile", "keyfile"):
            path: Path | None = getattr(self, f"amqp_ssl_{name}")
            if path is not None:
                options[name] = str(path)
        return options

    @property
    def lease_ms(self) -> int:
        """`lease_ttl` in milliseconds, as the scripts take it."""
        return max(int(self.lease_ttl * 1000), 1)

    @property
    def liveness_ms(self) -> int:
        """`liveness_ttl` in milliseconds (at most the lease's: a liveness key outliving the
        lease would only delay takeovers)."""
        return max(int(min(self.liveness_ttl, self.lease_ttl) * 1000), 1)

    @property
    def stale_after(self) -> float:
        """Seconds after which a drain flag with no live lease is stale (its drain message or
        worker was lost) and recovery may publish a new drain: three lease periods, so a
        live worker's heartbeat (every third of a lease) is never mistaken for a dead one."""
        return self.lease_ttl * 3

    def to_env(self) -> dict[str, str]:
        """These settings as `JIDO_TASKS_*` environment variables, secrets included (to start
        a worker or another process with exactly these settings; never print it)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list | tuple):
                value = ",".join(str(part) for part in value)
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    @property
    def sweep_queue(self) -> str:
        """Queue of the beat's sweeps: never stuck behind a backlog of drains."""
        return f"{self.queue}.sweep"

    @property
    def broker(self) -> str:
        """The broker URL, resolved, with its password (never print it: see `safe_url`)."""
        return (self.broker_url or self.redis_url).get_secret_value()

    @property
    def backend(self) -> str:
        """The result backend URL, resolved, with its password (never print it)."""
        return (self.result_backend or self.redis_url).get_secret_value()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build `Settings`, turning a validation error into a `ConfigError` naming the setting;
    then check the environment (`jido_tasks.environment`: Celery overrides, unknown names)."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        name = f"{ENV_PREFIX}{field.upper()}" if field != "settings" else "settings"
        shown = "" if field in _SECRET_FIELDS else f" (got {first.get('input')!r})"
        raise ConfigError(name, f"{first['msg']}{shown}") from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML file
        raise ConfigError(str(config_file()), str(exc)) from exc
    from jido_tasks.environment import check_environment  # it imports this module

    check_environment(settings)
    return settings
