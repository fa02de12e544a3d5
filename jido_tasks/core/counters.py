"""The counters the scripts keep in the metrics hash (see `GroupKeys.metrics`): their names,
the histogram's buckets, and the increments a commit adds (the runtime's side; the readers
are in `jido_tasks.ops.monitoring`)."""

from __future__ import annotations

from collections.abc import Sequence

# Upper bounds (seconds) of the action-duration histogram buckets, as written in the fields.
DURATION_BUCKETS: tuple[str, ...] = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                                     "1", "2.5", "5", "10", "30", "60", "300", "+Inf")
ACTION_OUTCOMES = ("succeeded", "failed", "cancelled", "poison")
SESSION_EVENTS = ("created", "terminated", "expired", "purged", "recovered", "restored")
SNAPSHOT_OPS = ("saved", "restored", "deleted")
_BOUNDS = tuple((le, float(le)) for le in DURATION_BUCKETS)  # float("+Inf") is inf


def action_counts(finished: Sequence[tuple[str, str, float | None]],
                  ) -> tuple[dict[str, int], dict[str, float]]:
    """The metrics-hash increments (see `GroupKeys.metrics`) for finished actions, each as
    (action name, outcome, run time or None if it did not run): integer increments by field,
    and the float ones (run-time sums). Same fields are added up, so a commit of a group of
    one action costs a few HINCRBYs whatever its size."""
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for action, outcome, duration in finished:
        field_ = f"actions:{outcome}:{action}"
        counts[field_] = counts.get(field_, 0) + 1
        if duration is None:
            continue
        le = next(le for le, bound in _BOUNDS if duration <= bound)
        for field_ in (f"duration_bucket:{le}:{action}", f"duration_count:{action}"):
            counts[field_] = counts.get(field_, 0) + 1
        field_ = f"duration_sum:{action}"
        sums[field_] = sums.get(field_, 0.0) + duration
    return counts, sums
