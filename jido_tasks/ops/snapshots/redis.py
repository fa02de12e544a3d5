"""Redis snapshot store: `ns:{g}:snap:id` holds the document, its slot group's
`ns:{g}:idx:snapshots` indexes the ids by save time, so listing never scans the keyspace (it
reads every group's index). Both change in one MULTI/EXEC (one slot)."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from datetime import datetime

import redis

from jido_tasks.errors import InvalidSessionId, SnapshotCorrupt, SnapshotNotFound
from jido_tasks.models import validate_session_id
from jido_tasks.ops.snapshots.service import SnapshotLimits, SnapshotStore
from jido_tasks.store.connection import RedisLayer

log = logging.getLogger(__name__)

_Read = tuple[str, str | bytes | Exception]
"""An id with its document or the error reading it."""
_CHUNK = 32  # documents read per pipeline when listing (they may be megabytes each)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class RedisSnapshotStore(SnapshotStore):
    """Snapshots in the namespace's Redis."""

    name = "redis"

    def __init__(self, layer: RedisLayer) -> None:
        super().__init__(SnapshotLimits.of(layer.settings))
        self.redis = layer.redis
        self.keys = layer.keys

    def where(self, saved_id: str) -> str:
        return self.keys.snapshot(saved_id)

    def _write(self, saved_id: str, data: bytes, saved_at: datetime) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.snapshot(saved_id), data)
        pipe.zadd(self.keys.group_for(saved_id).snapshots, {saved_id: saved_at.timestamp()})
        pipe.execute()

    def _read(self, saved_id: str) -> str | bytes:
        """The document, read only once its length (STRLEN) is within the limit."""
        key = self.keys.snapshot(saved_id)
        try:
            self._check_size(saved_id, self.redis.strlen(key))
            raw: str | bytes | None = self.redis.get(key)
        except UnicodeDecodeError as exc:
            raise SnapshotCorrupt(saved_id, key, f"not JSON: not UTF-8 text ({exc})") from None
        except redis.ResponseError as exc:  # WRONGTYPE: someone else's key
            raise SnapshotCorrupt(saved_id, key, f"not a string key: {exc}") from None
        if raw is None:
            raise SnapshotNotFound(saved_id, key)
        return raw

    def _check_size(self, saved_id: str, size: int) -> None:
        problem = self.limits.too_large(size)
        if problem is not None:
            raise SnapshotCorrupt(saved_id, self.keys.snapshot(saved_id), problem)

    def _remove(self, saved_id: str) -> None:
        key = self.keys.snapshot(saved_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.zrem(self.keys.group_for(saved_id).snapshots, saved_id)
        deleted, unindexed = pipe.execute()
        if not deleted and not unindexed:
            raise SnapshotNotFound(saved_id, key)

    def _ids(self) -> list[str]:
        ids: list[str] = []
        groups = self.keys.groups()
        pipe = self.redis.pipeline(transaction=False)
        for group in groups:
            pipe.zrange(group.snapshots, 0, -1)
        for group, members in zip(groups, pipe.execute(), strict=True):
            for member in members:
                try:
                    ids.append(validate_session_id(member))
                except InvalidSessionId as exc:  # never build a key from a foreign member
                    log.warning("skipping snapshot index member of %s: %s", group.snapshots,
                                exc)
        return sorted(ids)

    def _read_many(self, ids: list[str]) -> Iterator[_Read]:
        for listed in _chunks(ids, _CHUNK):
            chunk = yield from self._small_enough(listed)
            pipe = self.redis.pipeline(transaction=False)
            for saved_id in chunk:
                pipe.get(self.keys.snapshot(saved_id))
            try:
                values = pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:  # one binary value spoils the batch: read one by one
                yield from super()._read_many(chunk)
                continue
            for saved_id, value in zip(chunk, values, strict=True):
                if value is None:  # deleted since the index was read
                    continue
                if isinstance(value, Exception):
                    key = self.keys.snapshot(saved_id)
                    yield saved_id, SnapshotCorrupt(saved_id, key, f"not a string key: {value}")
                else:
                    yield saved_id, value

    def _small_enough(self, ids: list[str]) -> Generator[_Read, None, list[str]]:
        """Yields the ids whose documents are too large (or not strings), each with its error;
        returns the others (their lengths read in one pipeline, no document read)."""
        pipe = self.redis.pipeline(transaction=False)
        for saved_id in ids:
            pipe.strlen(self.keys.snapshot(saved_id))
        kept: list[str] = []
        for saved_id, size in zip(ids, pipe.execute(raise_on_error=False), strict=True):
            key = self.keys.snapshot(saved_id)
            if isinstance(size, Exception):
                yield saved_id, SnapshotCorrupt(saved_id, key, f"not a string key: {size}")
                continue
            try:
                self._check_size(saved_id, size)
            except SnapshotCorrupt as exc:
                yield saved_id, exc
                continue
            kept.append(saved_id)
        return kept
