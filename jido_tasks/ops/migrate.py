"""The migration from the key layout before slot groups (`jido-tasks migrate`).

`migrate` moves version-1 data of a single Redis into slot groups, one session at a time (its
keys renamed and its index entries moved in one MULTI/EXEC, under WATCH), so it can be stopped
and run again: what moved is no longer in the old indexes. Run it with workers and clients
stopped. The old global event stream is copied entry by entry into the groups' streams with the
same ids (a copied entry is skipped when run again), the old counters are added to group 0's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from pydantic import BaseModel

from jido_tasks.core.layout import check_layout, describe
from jido_tasks.models import is_index_member
from jido_tasks.store.connection import RedisLayer
from jido_tasks.store.keys import INDEX_KEYS, LAYOUT_VERSION, LegacyKeys
from jido_tasks.store.scripts import group_event_maxlen

log = logging.getLogger(__name__)

_PAGE = 500


class MigrationReport(BaseModel):
    """What one `migrate` run moved."""

    sessions: int = 0
    snapshots: int = 0
    events: int = 0
    """Entries of the old global stream copied into the groups' streams."""
    counters: int = 0
    """Fields of the old metrics hash added to group 0's."""
    layout: str = ""


def migrate(layer: RedisLayer) -> MigrationReport:
    """Move the namespace's version-1 data into slot groups (idempotent, resumable)."""
    report = MigrationReport()
    for name in INDEX_KEYS:
        report.sessions += _move_index(layer, name)
    report.snapshots = _move_snapshots(layer)
    report.events = _copy_events(layer)
    report.counters = _add_counters(layer)
    wanted = {"version": LAYOUT_VERSION, "index_shards": layer.keys.shards}
    layer.redis.set(layer.keys.layout, json.dumps(wanted), nx=True)
    check_layout(layer)
    report.layout = describe(wanted)
    return report


def _move_index(layer: RedisLayer, name: str) -> int:
    """Move every session still in old index `name` (with all its keys and entries)."""
    old = LegacyKeys(layer.settings.namespace)
    moved = 0
    while True:
        ids = [str(sid) for sid in layer.redis.zrange(old.index(name), 0, _PAGE - 1)]
        if not ids:
            return moved
        for sid in ids:
            if is_index_member(old.index(name), sid):
                _move_session(layer, sid)
                moved += 1
            else:  # never build a key from a foreign member
                layer.redis.zrem(old.index(name), sid)


def _move_session(layer: RedisLayer, sid: str) -> None:
    """Rename one session's keys into its group and move its index entries, atomically."""
    old, new = LegacyKeys(layer.settings.namespace), layer.keys
    olds, news = old.session(sid).owned(), new.session(sid).owned()
    group = new.group_for(sid)
    indexes = [old.index(name) for name in INDEX_KEYS]
    raw: Any = layer.redis  # WATCH and reads inside it: the client's own pipeline
    with raw.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(*olds, *indexes)
                exists = [bool(pipe.exists(key)) for key in olds]
                scores = [pipe.zscore(index, sid) for index in indexes]
                pipe.multi()
                for src, dst, there in zip(olds, news, exists, strict=True):
                    if there:
                        pipe.rename(src, dst)
                for index, name, score in zip(indexes, INDEX_KEYS, scores, strict=True):
                    if score is not None:
                        pipe.zadd(getattr(group, name), {sid: score})
                        pipe.zrem(index, sid)
                pipe.execute()
                return
            except redis.WatchError:  # changed meanwhile: read again
                continue


def _move_snapshots(layer: RedisLayer) -> int:
    old, new = LegacyKeys(layer.settings.namespace), layer.keys
    index, moved = old.index("snapshots"), 0
    while True:
        found = layer.redis.zrange(index, 0, _PAGE - 1)
        if not found:
            return moved
        scores = layer.redis.zmscore(index, found)
        pipe = layer.redis.pipeline(transaction=True)
        for sid, score in zip(found, scores, strict=True):
            pipe.zrem(index, sid)
            if not is_index_member(index, sid) or score is None:
                continue
            pipe.execute_command("COPY", old.snapshot(sid), new.snapshot(sid), "REPLACE")
            pipe.delete(old.snapshot(sid))
            pipe.zadd(new.group_for(sid).snapshots, {sid: score})
            moved += 1
        pipe.execute()


def _copy_events(layer: RedisLayer) -> int:
    """Copy the old global stream into the groups' streams (same ids), then drop it."""
    old, new = LegacyKeys(layer.settings.namespace), layer.keys
    copied, start = 0, "-"
    while True:
        entries = layer.redis.xrange(old.events, start, "+", count=_PAGE)
        for stream_id, fields in entries:
            sid = fields.get("sid") or ""
            group = new.group_for(sid) if sid else new.group(0)
            try:
                layer.redis.xadd(group.events, fields, id=stream_id,
                                 maxlen=group_event_maxlen(layer.settings), approximate=True)
                copied += 1
            except redis.ResponseError as exc:  # copied by an earlier run
                if "equal or smaller" not in str(exc):
                    raise
        if len(entries) < _PAGE:
            layer.redis.delete(old.events)
            return copied
        start = "(" + entries[-1][0]


def _add_counters(layer: RedisLayer) -> int:
    """Add the old metrics hash to group 0's and drop it, in one MULTI/EXEC."""
    old = LegacyKeys(layer.settings.namespace)
    fields = layer.redis.hgetall(old.metrics)
    if not fields:
        return 0
    pipe = layer.redis.pipeline(transaction=True)
    for name, value in fields.items():
        pipe.execute_command("HINCRBYFLOAT", layer.keys.group(0).metrics, name, value)
    pipe.delete(old.metrics)
    pipe.execute()
    return len(fields)
