"""kombu's Redis transport with a fetch a killed worker cannot lose: the workers' broker.

kombu's Redis transport takes a message off its queue with BRPOP and records it as
unacknowledged (the `unacked` hash, restored after `visibility_timeout`) only once the worker
has read the reply: a worker killed in between loses the message for good (kombu #305). For a
`jido_tasks.send` message that is an action lost before any session saw it.

Here a worker's channel takes a message by *moving* it, atomically, into a holding list of
its own (`LMOVE` in a script over the queue's priority lists, or `BLMOVE` on the queue's main
list while it waits), then records it as unacknowledged as kombu does and removes it from the
holding list in the same MULTI/EXEC: no round trip more than kombu's fetch. While the channel
lives it keeps a liveness key (`HOLDING_TTL`, refreshed by every fetch, every restore scan and
a thread of the worker's main process every `LIVENESS_EVERY`, so a worker busy in a long task
of its solo pool stays alive too).

The same record also names the liveness key of the channel that holds each unacknowledged
message (`UNACKED_OWNERS`), so kombu's periodic restore scan (`unacked_restore_interval`, under
kombu's restore mutex) gives back everything a dead worker held, within `HOLDING_TTL` and one
scan of its death (20-30 s with the defaults):
- the messages of every holding list whose liveness key has expired, to the list they came
  from (taken, not yet recorded);
- the unacknowledged messages whose holder's liveness key has expired (recorded, running or
  prefetched when it died: the app's own tasks as well as jido-tasks' drains and sends), to
  their queues, as kombu restores them after `visibility_timeout`.
A live holder's messages stay where they are: `visibility_timeout` stays the bound only while
the holder lives (a long task on a live worker is never given to another). Stock Celery on
Redis waits `visibility_timeout` (an hour by default) for both. A message can come twice only
if a worker's main process stalls past `HOLDING_TTL` while it holds one (another worker gives
it back, then the first runs it): acks_late tasks are at-least-once anyway, and
`jido_tasks.send` accepts an action id once.

Needs Redis 6.2 (LMOVE, BLMOVE): against an older server a channel fetches as kombu does, as
it does with `global_keyprefix`. Waiting blocks on the first queue's main list (`BLMOVE`, up
to `brpop_timeout`, 1 s, or `WAIT_OTHERS` when the channel consumes other lists too): a
message that arrives meanwhile on another queue or priority list is taken by the next fetch,
within `WAIT_OTHERS`.

Publishing is kombu's: any Celery client sends to these workers unchanged. `install()` makes
it kombu's transport for `redis://` URLs in this process (the URL keeps its scheme, so Flower,
Celery's banner and `as_uri` see a plain Redis broker); `make_app` calls it unless the
`reliable_fetch` setting is off.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
import types
import uuid
import weakref
from collections.abc import Iterator
from queue import Empty
from typing import Any

from kombu.utils.json import dumps, loads

kombu_redis: Any = importlib.import_module("kombu.transport.redis")  # untyped
kombu_transport: Any = importlib.import_module("kombu.transport")

TRANSPORT = "jido_tasks.store.transport:Transport"
log = logging.getLogger(__name__)

HOLDING_REGISTRY = "_kombu.holding"
"""Hash: holding list -> the queue list its messages came from."""
HOLDING_PREFIX = "_kombu.holding/"
OWNER_LENGTH = len(HOLDING_PREFIX) + 32  # the prefix and a uuid4's hex
HOLDING_TTL = 20
"""Seconds a channel's liveness key lives unrefreshed: every fetch refreshes it, and so does
the restore scan's timer (every `unacked_restore_interval`, 10 s) while the prefetch is full."""
LIVENESS_EVERY = 5.0
"""Seconds between two refreshes of a fetching channel's liveness key by its thread."""
UNACKED_OWNERS = "_kombu.unacked_owners"
"""Hash: delivery tag -> the liveness key of the channel that recorded the message as
unacknowledged (written and deleted with kombu's own `unacked` entry)."""

WAIT_OTHERS = 0.2
"""Longest a waiting worker blocks on its first queue's main list when it consumes other lists
too (another queue, kombu's priority lists): how late a message there can be taken."""

# KEYS: the liveness key, the registry, then the queue lists in kombu's priority order.
# ARGV: TTL, the list a BLMOVE would wait on and its holding list, then one holding list per
# queue list. The first message found is moved into its holding list: {queue list, message};
# nil if every list is empty. The holding lists that can receive a message are registered:
# the one it moved into, and the waiting list's (a BLMOVE into it may follow an empty fetch).
FETCH = """
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
for i = 3, #KEYS do
    local holding = ARGV[i + 1]
    local message = redis.call('LMOVE', KEYS[i], holding, 'RIGHT', 'LEFT')
    if message then
        if holding ~= ARGV[3] then
            redis.call('HSET', KEYS[2], holding, KEYS[i])
        end
        return {KEYS[i], message}
    end
end
return false
"""

# KEYS: the registry, the holding list, its queue list. Moves every message back to the end
# BRPOP takes from (the oldest last, so it is taken first), then forgets the holding list.
RESTORE = """
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do
    moved = moved + 1
end
redis.call('HDEL', KEYS[1], KEYS[2])
return moved
"""


class QoS(kombu_redis.QoS):  # type: ignore[misc]  # kombu is untyped (Any)
    """kombu's QoS; recording a message as unacknowledged also drops it from the holding list
    it was moved into (one MULTI/EXEC, as kombu's own record is), and its restore scan gives
    back what dead channels held."""

    def append(self, message: Any, delivery_tag: str) -> None:
        taking = getattr(self.channel, "_taking", None)
        if taking is None:
            super().append(message, delivery_tag)
            return
        self.channel._taking = None
        holding, raw = taking
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:  # kombu's record, its holder, and the drop
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}) \
                .hset(self.unacked_key, delivery_tag, record) \
                .hset(UNACKED_OWNERS, delivery_tag, self.channel._holding_owner) \
                .lrem(holding, 1, raw).execute()
        kombu_redis.virtual.QoS.append(self, message, delivery_tag)  # kombu's in-memory part

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's (acknowledged, rejected or restored: no longer unacknowledged), and its
        holder with it."""
        with self.pipe_or_acquire(pipe) as pipe:
            return super()._remove_from_indices(delivery_tag, pipe) \
                .hdel(UNACKED_OWNERS, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        scanning = not (self._vrestore_count % (interval or 1))
        channel = self.channel
        owner = getattr(channel, "_holding_owner", None)
        if owner is not None and getattr(channel, "_fetched", False):
            with channel.conn_or_acquire() as client:  # alive, even with the prefetch full
                client.set(owner, "1", ex=HOLDING_TTL)
        super().restore_visible(start, num, interval)
        if scanning:
            restore_dead_holdings(channel)


def restore_dead_holdings(channel: Any, *, everything: bool = False) -> int:
    """Move the messages of every holding list whose channel's liveness key has expired (or,
    with `everything`, of this channel's own, at its close) back to their queue lists; under
    kombu's restore mutex. How many messages were moved."""
    moved = 0
    with channel.conn_or_acquire() as client:
        try:
            with kombu_redis.Mutex(client, channel.unacked_mutex_key,
                                   channel.unacked_mutex_expire):
                for raw_holding, raw_source in client.hgetall(HOLDING_REGISTRY).items():
                    holding = raw_holding.decode() if isinstance(raw_holding, bytes) \
                        else raw_holding
                    owner = holding[:OWNER_LENGTH]
                    own = owner == getattr(channel, "_holding_owner", None)
                    if (own and not everything) or (not own and client.exists(owner)):
                        continue
                    back = int(client.eval(RESTORE, 3, HOLDING_REGISTRY, holding, raw_source))
                    if back:
                        log.warning("gave back %d message(s) that a %s held when it stopped "
                                    "(%s)", back, "closing channel" if own else "dead worker",
                                    holding)
                    moved += back
                if not everything:
                    moved += restore_dead_unacked(channel, client)
        except kombu_redis.MutexHeld:
            pass
    return moved


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def restore_dead_unacked(channel: Any, client: Any) -> int:
    """Give back the unacknowledged messages whose holder's liveness key has expired (a dead
    worker's running and prefetched messages), as kombu restores them after
    `visibility_timeout`; a live holder's stay. Called under kombu's restore mutex. How many
    were given back."""
    alive: dict[str, bool] = {channel._holding_owner: True}
    given_back = 0
    for raw_tag, raw_owner in client.hgetall(UNACKED_OWNERS).items():
        tag, owner = _text(raw_tag), _text(raw_owner)
        if owner not in alive:
            alive[owner] = bool(client.exists(owner))
        if alive[owner]:
            continue
        held = client.hexists(channel.unacked_key, tag)
        channel.qos.restore_by_tag(tag, client)  # requeued, and dropped from the indices
        if held:
            given_back += 1
            log.warning("gave back unacknowledged message %s: the worker that held it is "
                        "dead (%s)", tag, owner)
        else:  # acknowledged already: only the holder's entry was left
            client.hdel(UNACKED_OWNERS, tag)
    return given_back


class Liveness(threading.Thread):
    """Refreshes a fetching channel's liveness key every `LIVENESS_EVERY` from the worker's
    main process, whatever its event loop is doing, until the channel closes or is gone."""

    def __init__(self, channel: Any) -> None:
        super().__init__(daemon=True, name="jido-fetch-liveness")
        self.owner = channel._holding_owner
        self.client = channel._create_client()
        self.channel = weakref.ref(channel)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(LIVENESS_EVERY):
            channel = self.channel()
            if channel is None or getattr(channel, "closed", False):
                return
            del channel
            try:
                self.client.set(self.owner, "1", ex=HOLDING_TTL)
            except Exception:  # Redis away: the next refresh tries again
                log.debug("could not refresh the liveness key %s", self.owner, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()


@contextlib.contextmanager
def shared_client(channel: Any, client: Any = None) -> Iterator[Any]:
    """kombu's `conn_or_acquire`, but one redis client for the channel's commands, not a new
    one for each (kombu builds a `redis.Redis` per record, ack and publish: ~60 us of CPU
    each); it shares the channel's connection pool either way. `Channel`'s own, and given to
    other kombu Redis channels by `share_client`."""
    if client:
        yield client
        return
    if channel._shared is None:
        channel._shared = channel._create_client()
    yield channel._shared


def share_client(channel: Any) -> None:
    """Give kombu's Redis channel `channel` (e.g. an event dispatcher's, when the broker is
    not this transport) the one client of `shared_client`. Other transports are left as they
    are."""
    if isinstance(channel, Channel) or not hasattr(channel, "_create_client") \
            or not hasattr(channel, "conn_or_acquire"):
        return
    channel._shared = None
    channel.conn_or_acquire = types.MethodType(shared_client, channel)


class Channel(kombu_redis.Channel):  # type: ignore[misc]  # kombu is untyped (Any)
    """kombu's Redis channel; fetches by moving into holding lists (see module doc)."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._shared: Any = None  # conn_or_acquire's client (kombu's __init__ may use it)
        super().__init__(*args, **kwargs)
        self._holding_owner = f"{HOLDING_PREFIX}{uuid.uuid4().hex}"
        self._waiting_on: str | None = None  # the queue list of a BLMOVE in flight
        self._fetching = False  # a FETCH is in flight
        self._fetch_queues: dict[str, str] = {}  # queue list -> queue
        self._fetch_timeout: Any = None
        self._wait_key = ""  # the list a BLMOVE waits on after an empty fetch
        self._fetched = False  # this channel has consumed (its holdings may need a restore)
        self._can_move: bool | None = None
        self._taking: tuple[str, Any] | None = None  # (holding list, message) being delivered
        self._liveness: Liveness | None = None

    conn_or_acquire = shared_client

    def _disconnect_pools(self) -> None:
        self._shared = None  # its pool is going: the next command builds one on the new pool
        super()._disconnect_pools()

    def _holding(self, key: str) -> str:
        return f"{self._holding_owner}/{key}"

    def _moves(self) -> bool:
        """Whether this channel fetches by moving (no global key prefix, Redis >= 6.2)."""
        if self._can_move is None:
            with self.conn_or_acquire() as client:
                version = str(client.info("server").get("redis_version", "0"))
            parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
            self._can_move = not self.global_keyprefix and parts >= (6, 2)
        return bool(self._can_move)

    def _brpop_start(self, timeout: Any = None) -> None:
        if not self._moves():
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        keys = list(dict.fromkeys(keys))
        self._waiting_on = None
        self._fetched = True
        if self._liveness is None:
            self._liveness = Liveness(self)
            self._liveness.start()
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self._fetching = True
        self._fetch_queues = {self._q_for_pri(q, pri): q for pri in self.priority_steps
                              for q in queues}
        self._fetch_timeout = self.brpop_timeout if timeout is None else timeout
        # The list to wait on when all are empty: the first queue's main list (not the
        # cycle's first: that rotates onto the sweep queue).
        wait = self.active_queues[0] if self.active_queues else keys[0]
        self._wait_key = wait if wait in keys else keys[0]
        self.client.connection.send_command(
            "EVAL", FETCH, 2 + len(keys), self._holding_owner, HOLDING_REGISTRY, *keys,
            HOLDING_TTL, self._wait_key, self._holding(self._wait_key),
            *(self._holding(key) for key in keys))
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if not self._fetching and self._waiting_on is None:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        try:
            return self._read_fetch(**options)
        finally:
            # As kombu 5.7's own: once the connection is idle (no FETCH or BLMOVE in flight),
            # send a pending streaming re-auth token's AUTH on it (a no-op while `_in_poll`).
            self._flush_brpop_reauth()

    def _read_fetch(self, **options: Any) -> bool:
        """Read the reply of the FETCH or BLMOVE in flight; take its message, or wait."""
        connection = self.client.connection
        try:
            try:
                reply = self.client.parse_response(connection, "EVAL", **options)
            except self.connection_errors:
                connection.disconnect()
                raise
        except BaseException:
            self._fetching, self._waiting_on = False, None
            self._in_poll = None
            raise
        if self._waiting_on is not None:  # the BLMOVE's reply: the message, or nil
            key, self._waiting_on = self._waiting_on, None
            self._in_poll = None
            if reply is None:
                raise Empty()
            return self._take(key, reply)
        self._fetching = False
        if reply:
            self._in_poll = None
            key = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            return self._take(key, reply[1])
        if getattr(self, "_closing", False):
            self._in_poll = None
            raise Empty()
        # Every list empty: wait on the first queue's main list, moving what comes into its
        # holding list; a message on another list is taken by the next fetch, after at most
        # WAIT_OTHERS.
        wait = self._wait_key
        timeout = self._fetch_timeout or 0
        if len(self._fetch_queues) > 1:  # other lists than the one waited on
            timeout = min(timeout, WAIT_OTHERS) if timeout else WAIT_OTHERS
        self._waiting_on = wait
        self._brpop_sent_at = time.monotonic()
        connection.send_command("BLMOVE", wait, self._holding(wait), "RIGHT", "LEFT", timeout)
        raise Empty()

    def _take(self, key: str, raw: Any) -> bool:
        """Deliver a moved message (kombu records it as unacknowledged), then drop it from
        the holding list."""
        queue = self._fetch_queues.get(key, key)
        self._queue_cycle.rotate(queue)
        self._taking = (self._holding(key), raw)  # for QoS.append's record
        try:
            self.connection._deliver(loads(raw.decode() if isinstance(raw, bytes) else raw),
                                     queue)
        finally:
            if self._taking is not None:  # not recorded (a no_ack consumer): drop it here
                self._taking = None
                self.client.lrem(self._holding(key), 1, raw)
        return True

    def close(self) -> None:
        self._closing = True
        if self._liveness is not None:
            self._liveness.stop()
        if self._in_poll:  # a fetch in flight: take its reply first (as kombu's close does)
            with contextlib.suppress(Empty):
                self._brpop_read()
        if self._fetched and not self.closed:  # give back what it holds (normally nothing)
            try:
                restore_dead_holdings(self, everything=True)
                with self.conn_or_acquire() as client:
                    client.delete(self._holding_owner)
            except Exception:  # its liveness key expires: another worker gives them back
                log.debug("could not give back the holding lists at close", exc_info=True)
        super().close()


class Transport(kombu_redis.Transport):  # type: ignore[misc]  # kombu is untyped (Any)
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel


def install() -> None:
    """Make `Transport` kombu's transport for `redis://` in this process (idempotent)."""
    kombu_transport.TRANSPORT_ALIASES["redis"] = TRANSPORT
