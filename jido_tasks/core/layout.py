"""The key layout's version and shape, checked at start by every process.

`ns:layout` holds `{"version": 2, "index_shards": N}`; it is written by the first process that
finds the namespace empty. A process whose settings ask for another `index_shards`, or that finds
data of the old layout (global `ns:idx:*`, `ns:events`, `ns:metrics` keys, version 1) and no
`ns:layout`, refuses to start (`LayoutMismatch`). The way out of version 1 is
`jido_tasks.ops.migrate` (`jido-tasks migrate`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jido_tasks.errors import LayoutMismatch
from jido_tasks.store.connection import Layer, Plan, Read, RedisLayer
from jido_tasks.store.keys import INDEX_KEYS, LAYOUT_VERSION, LegacyKeys

log = logging.getLogger(__name__)

_LEGACY_INDEXES = (*INDEX_KEYS, "snapshots")


def _legacy_keys(layer: Layer) -> list[str]:
    old = LegacyKeys(layer.settings.namespace)
    return [*(old.index(name) for name in _LEGACY_INDEXES), old.events, old.metrics]


def _legacy_present(replies: list[Any]) -> bool:
    return any(replies)


def describe(layout: dict[str, int]) -> str:
    return f"layout version {layout['version']} with index_shards={layout['index_shards']}"


def _get(key: str) -> Read[str | None]:
    return Read([("GET", key)], lambda replies: replies[0])


def layout_plan(layer: Layer) -> Plan[None]:
    """The layout check as a plan (see `check_layout`), for the sync and async layers."""
    ns, k = layer.settings.namespace, layer.keys
    wanted = {"version": LAYOUT_VERSION, "index_shards": k.shards}
    raw = yield _get(k.layout)
    if raw is None:
        # One key per command: fine on a cluster too.
        legacy = yield Read([("EXISTS", key) for key in _legacy_keys(layer)], _legacy_present)
        if legacy:
            raise LayoutMismatch(ns, "layout version 1 (before slot groups)", describe(wanted),
                                 "stop workers and clients, then run `jido-tasks migrate`")
        stored_now = yield Read([("SET", k.layout, json.dumps(wanted), "NX")],
                                lambda replies: bool(replies[0]))
        if stored_now:
            return
        raw = (yield _get(k.layout)) or "{}"
    stored = json.loads(raw)
    if stored != wanted:
        raise LayoutMismatch(ns, describe(stored), describe(wanted),
                             f"set index_shards={stored.get('index_shards')} (changing it "
                             "needs a re-keying that `jido-tasks migrate` does not do yet)")


def check_layout(layer: RedisLayer) -> None:
    """Refuse (`LayoutMismatch`) settings that do not match the stored layout; record the
    layout in a namespace that has none and holds no data of the old one. (`AsyncClient`
    runs the same `layout_plan` on its own layer.)"""
    layer.run(layout_plan(layer))
