"""Prometheus exposition of the monitoring reads (prometheus_client's text format)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from jido_tasks.core.counters import SESSION_EVENTS, SNAPSHOT_OPS
from jido_tasks.ops.monitoring import Counters, Gauges, read_counters, read_gauges
from jido_tasks.store.connection import RedisLayer


class JidoCollector(Collector):
    """Reads Redis at each scrape: gauges from the indexes, counters from the metrics hash."""

    def __init__(self, layer: RedisLayer, max_sessions: int) -> None:
        self.layer = layer
        self.max_sessions = max_sessions

    def collect(self) -> Iterator[Metric]:
        yield from gauge_families(read_gauges(self.layer, self.max_sessions))
        yield from counter_families(read_counters(self.layer))


def gauge_families(g: Gauges) -> Iterator[Metric]:
    sessions = GaugeMetricFamily("jido_tasks_sessions", "Sessions by status.",
                                 labels=["status"])
    for status, count in g.sessions.items():
        sessions.add_metric([status], count)
    yield sessions
    yield GaugeMetricFamily("jido_tasks_pending_sessions",
                            "Sessions with pending work (a drain scheduled).",
                            value=g.pending_sessions)
    yield GaugeMetricFamily("jido_tasks_pending_actions", "Actions waiting in mailboxes.",
                            value=g.pending_actions)
    yield GaugeMetricFamily("jido_tasks_oldest_pending_action_seconds",
                            "Age of the oldest action at the head of a mailbox.",
                            value=g.oldest_pending_seconds)
    yield GaugeMetricFamily("jido_tasks_leases", "Live worker leases on sessions.",
                            value=g.leases)
    yield GaugeMetricFamily("jido_tasks_metrics_truncated",
                            "1 when more sessions had pending work than one scrape reads "
                            "(the pending gauges are then lower bounds).",
                            value=int(g.truncated))


def counter_families(c: Counters) -> Iterator[Metric]:
    actions = CounterMetricFamily("jido_tasks_actions", "Actions finished, by outcome.",
                                  labels=["action", "outcome"])
    for (name, outcome), value in sorted(c.actions.items()):
        actions.add_metric([name, outcome], value)
    yield actions
    sessions = CounterMetricFamily("jido_tasks_sessions", "Session lifecycle events.",
                                   labels=["event"])
    for event in sorted(set(SESSION_EVENTS) | set(c.sessions)):
        sessions.add_metric([event], c.sessions.get(event, 0.0))
    yield sessions
    snapshots = CounterMetricFamily("jido_tasks_snapshots", "Snapshot operations.",
                                    labels=["op"])
    for op in sorted(set(SNAPSHOT_OPS) | set(c.snapshots)):
        snapshots.add_metric([op], c.snapshots.get(op, 0.0))
    yield snapshots
    durations = HistogramMetricFamily("jido_tasks_action_duration_seconds",
                                      "Run time of actions.", labels=["action"])
    for name, hist in sorted(c.durations.items()):
        durations.add_metric([name], hist.cumulative(), sum_value=hist.sum)
    yield durations


def registry_for(layer: RedisLayer, max_sessions: int) -> CollectorRegistry:
    """A registry holding only the jido-tasks collector (no process metrics of the server)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JidoCollector(layer, max_sessions))
    return registry

