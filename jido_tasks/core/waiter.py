"""What a wait for an action does next, given the clock: written once, no I/O.

Both clients wait on pub/sub: the sync `Mailbox.wait` on its thread's connection, the asyncio
`WaitHub` on one connection for all of a client's waits. Each asks a `Waiter` what to do next
(`Listen` for a finish message up to N seconds, `Recheck` the outcome in case a message was
missed, `Reconnect` after a backoff delay, `GiveUp`), does it with its own I/O, and tells the
waiter what happened (`rechecked`, `lost`, `failed`, `connected`). So the recheck interval, the
backoff schedule and the outage limit are one policy (`WaitPolicy`, from the settings
`wait_recheck_interval`, `reconnect_backoff` and `redis_outage_limit`), the same for both.

A wait with no deadline gives up once Redis has stayed unreachable for `outage_limit` seconds
(counted from the start of the outage, or of the wait if it started during one); a wait with a
deadline keeps trying until its deadline. At the deadline it is `RedisUnavailable` if Redis is
unreachable then, `ActionTimeout` otherwise (`GiveUp.outage` tells which).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jido_tasks.settings import Settings


@dataclass(frozen=True)
class WaitPolicy:
    """When waits re-read, reconnect and give up (see the module doc)."""

    recheck_every: float
    """Seconds between two re-reads of an awaited outcome (`wait_recheck_interval`)."""
    outage_limit: float
    """Seconds a wait with no deadline keeps trying while Redis is unreachable
    (`redis_outage_limit`)."""
    backoff: tuple[float, ...]
    """Seconds before each reconnection attempt in a row, the last repeating
    (`reconnect_backoff`)."""

    @classmethod
    def of(cls, settings: Settings) -> WaitPolicy:
        return cls(settings.wait_recheck_interval, settings.redis_outage_limit,
                   tuple(settings.reconnect_backoff))

    def delay(self, failures: int) -> float:
        """Seconds before the next reconnection attempt after `failures` failed ones."""
        return self.backoff[min(failures, len(self.backoff) - 1)]


@dataclass(frozen=True)
class Listen:
    """Wait for a finish message up to `seconds`."""

    seconds: float


@dataclass(frozen=True)
class Recheck:
    """Re-read the outcome: a finish message may have been missed."""


@dataclass(frozen=True)
class Reconnect:
    """After `delay` seconds, a new connection: subscribe again, then re-read the outcome (a
    finish published while nobody listened is found there)."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """Stop waiting: `RedisUnavailable` with `outage` (Redis is unreachable), else
    `ActionTimeout` (the caller's deadline passed)."""

    outage: bool


Step = Listen | Recheck | Reconnect | GiveUp


@dataclass
class Link:
    """The state of one pub/sub connection, shared by everyone waiting on it."""

    down_since: float | None = None
    """When it was found lost (None while it is up)."""
    failures: int = 0
    """Reconnection attempts failed since."""
    retry_at: float = 0.0
    """When to try the next reconnection."""


class Waiter:
    """The schedule of one wait (or of the hub's connection: `deadline=math.inf`, it never
    gives up; its waits do, each on its own)."""

    def __init__(self, policy: WaitPolicy, now: float, deadline: float | None = None,
                 link: Link | None = None) -> None:
        self.policy = policy
        self.since = now
        self.deadline = deadline
        self.link = link if link is not None else Link()
        self.check_at = now + policy.recheck_every

    @property
    def down(self) -> bool:
        return self.link.down_since is not None

    def limit(self, now: float, timeout: float | None) -> None:
        """The caller's deadline: `timeout` seconds from `now` (None: no deadline)."""
        self.deadline = None if timeout is None else now + timeout

    def give_up_at(self) -> float | None:
        """When the wait stops: its deadline, or the outage limit while Redis is away."""
        if self.deadline is not None:
            return self.deadline
        if self.link.down_since is None:
            return None
        return max(self.link.down_since, self.since) + self.policy.outage_limit

    def next(self, now: float) -> Step:
        """What to do now."""
        give_up = self.give_up_at()
        until = math.inf if give_up is None else give_up
        if now >= until:
            return GiveUp(self.down)
        if self.down:  # the last attempt comes at the give-up time, not before it
            return Reconnect(max(0.0, min(self.link.retry_at, until) - now))
        if now >= self.check_at:
            return Recheck()
        return Listen(min(self.check_at, until) - now)

    def rechecked(self, now: float) -> None:
        """The outcome was re-read (still not finished)."""
        self.check_at = now + self.policy.recheck_every

    def lost(self, now: float) -> None:
        """The connection broke (or a read failed); nothing if it is known lost already."""
        if self.link.down_since is None:
            self.link.down_since = now
            self.link.failures = 0
            self.link.retry_at = now + self.policy.delay(0)

    def failed(self, now: float) -> None:
        """An attempt to (re)connect failed: the next one comes after the next delay."""
        if self.link.down_since is None:
            self.lost(now)
            return
        self.link.failures += 1
        self.link.retry_at = now + self.policy.delay(self.link.failures)

    def connected(self, now: float) -> None:
        """Subscribed again and the outcome re-read: the next re-read is a full interval
        away."""
        self.link.down_since = None
        self.link.failures = 0
        self.check_at = now + self.policy.recheck_every
