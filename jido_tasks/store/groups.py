"""Reading one index of every slot group as if it were one sorted set (no SCAN, no global key).

The groups' copies of an index (`GroupKeys.activity`, `expiry`, ...) are merged by score,
newest first, in the order one sorted set would give (score, then member, both descending).
Each group is read a chunk at a time and only when the merge needs its next member, all the
groups that need one in one pipeline, so a page of `n` costs about `n` entries plus one chunk
per group, whatever the number of sessions.

On a Redis Cluster with a node down, the groups that node serves are left out (their slots in
`NewestFirst.missing`) and the others are merged as usual: a listing says what it lacks rather
than failing whole.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jido_tasks.store.connection import Layer, Plan, Read
from jido_tasks.store.keys import GroupKeys, group_tag, key_slot

MIN_CHUNK = 8
"""Fewest members read from one group at a time."""
MAX_CHUNK = 500
"""Most members read from one group at a time."""


@dataclass(order=True, frozen=True, slots=True)
class _Head:
    """A group's next member, ordered so that the heap's smallest is the newest."""

    neg_score: float
    member: _Desc
    group: int = field(compare=False)


@dataclass(frozen=True, slots=True)
class _Desc:
    """A member compared in descending order (ZREVRANGE's order among equal scores)."""

    value: str

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value


@dataclass
class _Cursor:
    start: int = 0
    buffer: list[tuple[str, float]] = field(default_factory=list)
    done: bool = False


class NewestFirst:
    """The members of one index across all groups, newest first (a plan reads them)."""

    def __init__(self, layer: Layer, index: Callable[[GroupKeys], str], want: int) -> None:
        self.layer = layer
        self.keys = [index(group) for group in layer.keys.groups()]
        self.chunk = min(MAX_CHUNK, max(MIN_CHUNK, 2 * want // len(self.keys) + 1))
        self.cursors = [_Cursor() for _ in self.keys]
        self.heap: list[_Head] = []
        self.started = False
        self.missing: set[int] = set()
        """Groups that could not be read (a cluster node down): left out of the merge."""

    def take(self, n: int) -> Plan[list[str]]:
        """The next `n` members (fewer at the end)."""
        out: list[str] = []
        while len(out) < n:
            if not self.started:
                yield from self._fill(list(range(len(self.cursors))))
            if not self.heap:
                break
            head = heapq.heappop(self.heap)
            out.append(head.member.value)
            cursor = self.cursors[head.group]
            cursor.buffer.pop(0)
            if cursor.buffer:
                self._push(head.group)
            elif not cursor.done:
                yield from self._fill([head.group])
        return out

    def _fill(self, groups: list[int]) -> Plan[None]:
        commands = [("ZREVRANGE", self.keys[g], self.cursors[g].start,
                     self.cursors[g].start + self.chunk - 1, "WITHSCORES") for g in groups]
        replies: list[Any] = yield Read(commands, _all, partial=True)
        self.started = True
        for g, reply in zip(groups, replies, strict=True):
            cursor = self.cursors[g]
            if isinstance(reply, Exception):
                cursor.buffer, cursor.done = [], True
                self.missing.add(g)
                continue
            cursor.buffer = scored(reply)
            cursor.start += len(cursor.buffer)
            cursor.done = len(cursor.buffer) < self.chunk
            if cursor.buffer:
                self._push(g)
        self.chunk = min(MAX_CHUNK, self.chunk * 2)  # a deep page: fewer round trips

    def _push(self, group: int) -> None:
        member, score = self.cursors[group].buffer[0]
        heapq.heappush(self.heap, _Head(-score, _Desc(member), group))


def _all(replies: list[Any]) -> list[Any]:
    return replies


def scored(reply: list[Any]) -> list[tuple[str, float]]:
    """A WITHSCORES reply (flat or in pairs) as (member, score) pairs."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(str(m), float(s)) for m, s in reply]
    return [(str(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]


def group_slots(layer: Layer, groups: set[int]) -> tuple[int, ...]:
    """The Redis Cluster hash slots of slot groups `groups`, in order."""
    return tuple(sorted(key_slot(group_tag(g, layer.keys.shards)) for g in groups))


def index_total(layer: Layer, index: Callable[[GroupKeys], str]) -> Read[int]:
    """The number of members of one index over all groups (one pipeline)."""
    return Read([("ZCARD", index(group)) for group in layer.keys.groups()],
                lambda replies: sum(int(r) for r in replies))
