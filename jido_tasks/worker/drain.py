"""Worker side of session work: claim a session, apply its pending actions in order, release.

One drain: `claim` (lease + fencing token + first batch + state) -> run each action on a
private copy of the state, and `commit` each group of consecutive finished actions (token
check, new state, outcomes, mailbox pop, activity, events: one atomic Lua call; the last one
of a batch also releases the lease when the mailbox is empty) -> `release` (the next batch, or
drop the lease if nothing is left). The process's heartbeat thread renews the lease meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import billiard.common
from pydantic import BaseModel

from jido_tasks import telemetry
from jido_tasks.core.actions import (
    ActionContext,
    ActionSpec,
    get_action,
    is_registered,
    parse_params,
)
from jido_tasks.core.counters import action_counts
from jido_tasks.core.state import ActionState, Changes, Parts
from jido_tasks.errors import ActionTimeLimitExceeded, JidoTasksError, PoisonAction
from jido_tasks.models import (
    ActionError,
    ActionRequest,
    ActionStatus,
    Outcome,
    Progress,
    ReplyTo,
    SessionEntry,
    dumps,
    validate_session_id,
)
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer
from jido_tasks.worker import fleet
from jido_tasks.worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DrainReport(BaseModel):
    """What one drain did."""

    session_id: str
    outcome: str
    """'done', 'busy' (another worker holds the lease), 'empty', 'missing', 'stale',
    'handed_back' (this worker lacks the head action), 'yielded' (time slice over, work left)
    or 'error' (an unexpected failure; logged)."""
    applied: int = 0
    failed: int = 0
    retry_after: float | None = None
    requeue: bool = False
    """The lease was given back with work left: publish the session's drain again."""
    commits: int = 0
    """Atomic commits (each of one or more actions)."""
    state_bytes: int = 0
    """Bytes of state parts written by those commits (what the actions changed)."""


@dataclass
class Finished:
    """One action of a commit, as the drain's `CommitListener` sees it (after the commit)."""

    action_id: str
    action: str
    params: dict[str, Any]
    outcome: Outcome
    received: float
    """When it was sent (the sender's clock)."""
    started: float
    """When this worker started it (0.0 if it never ran: poison)."""
    runtime: float
    reply_to: ReplyTo | None = None


class CommitListener:
    """Told of every committed action, in order, after its commit (on the worker). The Celery
    side uses it to store by-name results and send Flower's task events; must not raise."""

    def committed(self, session_id: str, finished: list[Finished]) -> None:
        """`finished` were committed together."""


@dataclass
class _Applied:
    outcome: str  # JSON
    changes: Changes = field(default_factory=dict)  # empty: state unchanged or action failed
    events: list[list[str]] = field(default_factory=list)
    action: str = "?"
    error_type: str | None = None
    duration: float = 0.0
    finished: Finished | None = None

    @property
    def failed(self) -> bool:
        return self.error_type is not None

    def counted(self) -> tuple[str, str, float | None]:
        """(action, outcome, run time or None if it did not run) for the metrics counters."""
        if self.error_type == PoisonAction.__name__:
            return self.action, "poison", None
        return self.action, "failed" if self.failed else "succeeded", self.duration


# Longest time a finished action waits for more to share its commit (plus one action's run).
COMMIT_DELAY = 0.002


class _Group:
    """Actions applied but not yet committed: their outcomes and the state parts they changed
    (already applied to the drain's `Parts`, with what they replaced, to undo them should the
    commit not happen)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.actions: list[tuple[str, _Applied]] = []
        self.changes: Changes = {}
        self.undo: Changes = {}
        self.started = 0.0

    def add(self, action_id: str, applied: _Applied) -> None:
        if not self.actions:
            self.started = time.perf_counter()
        self.actions.append((action_id, applied))
        replaced = self.parts.apply(applied.changes)
        for name, raw in replaced.items():
            self.undo.setdefault(name, raw)
        self.changes.update(applied.changes)

    def age(self) -> float:
        return time.perf_counter() - self.started

    def events_json(self) -> str:
        events = [ev for _, applied in self.actions for ev in applied.events]
        return dumps(events) if events else "[]"

    def to_write(self) -> Changes:
        """The parts the commit writes: the changed ones, or all of them for a migration."""
        if self.parts.migrate:
            return {**self.parts.all_parts(), **self.changes}
        return self.changes

    def committed_now(self) -> None:
        self.parts.migrate = False
        self.actions, self.changes, self.undo = [], {}, {}

    def rolled_back(self) -> None:
        """The commit did not happen: the view goes back to the committed parts."""
        self.parts.undo(self.undo)
        self.actions, self.changes, self.undo = [], {}, {}


def stopping() -> bool:
    """True once billiard's terminate-signal handler ran in this process: the SystemExit it
    raises (Celery cancels running tasks with SIGTERM when the broker connection drops) means
    the process is stopping, and is no failure of the action it interrupted."""
    fired = getattr(billiard.common, "terminate_handler_fired", None)
    if fired is not None:
        return bool(fired())
    flag: list[bool] = getattr(billiard.common, "_should_have_exited", [False])  # older
    return bool(flag[0])


class _TimeLimit(BaseException):
    """Raised inside an action by SIGALRM; a BaseException so actions cannot swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (main thread only; elsewhere no soft limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TimeLimit()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    # Fires again every second: an action that swallows the first alarm is interrupted again.
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_limited(spec: ActionSpec, ctx: ActionContext, params: Any, limit: float) -> Any:
    """Run the action within `limit` seconds (`_TimeLimit` past it); its result."""
    run_started = time.perf_counter()
    with time_limit(limit):
        result = spec.fn(ctx, params)
    # An action that swallowed the alarm (catching BaseException) still fails.
    if time.perf_counter() - run_started > limit:
        raise _TimeLimit()
    return result


class Drainer:
    """Applies one session's pending actions under a lease."""

    def __init__(self, layer: RedisLayer, session_id: str, worker: str | None = None,
                 listener: CommitListener | None = None) -> None:
        self.layer = layer
        self.settings = layer.settings
        self.session_id = session_id
        self.worker = worker or worker_id()
        self.token = ""
        self.entry: SessionEntry | None = None
        self.listener = listener
        self._elsewhere: dict[str, bool] = {}  # action name -> a live worker has it

    def drain(self, claimed: scripts.Claimed | None = None) -> DrainReport:
        """Claim the session (unless `claimed`: the lease is ours already) and drain it."""
        started = time.perf_counter()
        report = self._drain(claimed)
        telemetry.dispatch.drain_finished(self.session_id, report.outcome, report.applied,
                                          report.failed, time.perf_counter() - started)
        return report

    def _drain(self, held: scripts.Claimed | None) -> DrainReport:
        claimed = held or self._claim()
        if isinstance(claimed, scripts.Busy):
            return DrainReport(session_id=self.session_id, outcome="busy",
                               retry_after=claimed.retry_after)
        if not isinstance(claimed, scripts.Claimed):
            return DrainReport(session_id=self.session_id, outcome=claimed.value)
        self.token = claimed.token
        report = DrainReport(session_id=self.session_id, outcome="done")
        with Heartbeat(self.layer, self.session_id, self.token, self.worker) as beat:
            try:
                self.entry = SessionEntry.from_redis(
                    self.session_id, self.layer.keys.session(self.session_id).entry,
                    claimed.row)
                parts = Parts(self.layer, self.session_id, claimed.legacy_state,
                              claimed.parts)
                self._run(claimed.batch, parts, report, beat)
            except Exception:
                # A bug or a Redis failure: give the lease up now rather than let it expire
                # (the next claim counts as another attempt of the head: see give_back.lua).
                log.exception("session %s: drain failed; lease given back", self.session_id)
                report.outcome = "error"
                self._give_back(report, clean=False)
        return report

    def _claim(self) -> scripts.ClaimReply:
        """Claim the session; if a worker holds it, take it over when that worker's liveness
        key is gone (it died: its lease would otherwise block the session until it expires)."""
        s, keys = self.settings, self.layer.keys
        alive = keys.alive(self.worker, self.session_id)
        claimed = self.layer.call(scripts.claim(
            self.session_id, worker=self.worker, lease_ms=s.lease_ms, batch_size=s.batch_size,
            alive_key=alive, alive_ms=s.liveness_ms))
        if not isinstance(claimed, scripts.Busy) or not claimed.holder:
            return claimed
        return self.layer.call(scripts.takeover(
            self.session_id, worker=self.worker, lease_ms=s.lease_ms, batch_size=s.batch_size,
            alive_key=alive, alive_ms=s.liveness_ms, expected=claimed.lease,
            holder_alive_key=keys.alive(claimed.holder, self.session_id)))

    def _run(self, batch: scripts.Batch, parts: Parts, report: DrainReport,
             beat: Heartbeat) -> None:
        """Apply batches until the mailbox is empty, the lease is lost or the time slice is
        over (then the session goes to the back of the queue: `_give_back`)."""
        s = self.settings
        deadline = time.monotonic() + s.drain_time_slice
        while True:
            end = self._batch(batch, parts, report, beat, deadline)
            if end is scripts.Tag.MORE and time.monotonic() >= deadline:
                end = scripts.Tag.YIELDED
            if end is scripts.Tag.YIELDED:
                self._give_back(report, clean=True)
                return
            if end is not scripts.Tag.MORE:
                if end is scripts.Tag.STALE:
                    report.outcome = "stale"
                elif end is scripts.Tag.HANDED:
                    report.outcome, report.retry_after = "handed_back", 0.0
                return
            nxt = self.layer.call(scripts.release(
                self.session_id, token=self.token, batch_size=s.batch_size,
                lease_ms=s.lease_ms))
            if not isinstance(nxt, scripts.Batch):
                if nxt is scripts.Tag.STALE:
                    report.outcome = "stale"
                return
            batch = nxt

    def _give_back(self, report: DrainReport, clean: bool) -> None:
        """Give the lease up with work left; `report.requeue` tells the caller to publish the
        session's drain again (at the back of the queue)."""
        try:
            tag = self.layer.call(scripts.give_back(self.session_id, token=self.token,
                                                    clean=clean))
        except Exception:  # Redis is gone too: the lease expires on its own
            log.warning("session %s: could not give the lease back", self.session_id,
                        exc_info=True)
            return
        if tag is scripts.Tag.YIELDED:
            report.requeue = True
            if clean:
                report.outcome = "yielded"
        elif tag is scripts.Tag.STALE:
            report.outcome = "stale"

    def _batch(self, batch: scripts.Batch, parts: Parts, report: DrainReport,
               beat: Heartbeat, deadline: float) -> scripts.Tag:
        """Apply a batch; returns how it ended: MORE (ask release for the next batch),
        RELEASED (mailbox empty, lease dropped), STALE, HANDED (given back: this worker lacks
        the head action) or YIELDED (the time slice ended at `deadline` with actions of the
        batch left: what ran is committed, the rest waits for the session's next turn).
        `parts` is left as committed.

        Consecutive actions are committed together (up to `commit_group` of them, and no
        action waits more than COMMIT_DELAY plus one action's run for its commit), each group
        in one atomic step. After a reclaim (the previous holder died) every action is
        committed alone, so a poison action is told apart from the innocent ones before it.
        """
        attempts = batch.attempts
        size = self._group_size(attempts)
        group = _Group(parts)
        last = len(batch.actions) - 1
        for i, pending in enumerate(batch.actions):
            if beat.lost.is_set():
                group.rolled_back()
                return scripts.Tag.STALE
            stop = i > 0 and time.monotonic() >= deadline  # time slice over: yield
            if stop or (group.actions and group.age() >= COMMIT_DELAY):
                end = self._flush(group, report)
                if end is not scripts.Tag.OK or stop:
                    return scripts.Tag.YIELDED if end is scripts.Tag.OK else end
            if i == 0 and attempts > self.settings.max_attempts:
                applied: _Applied | None = self._poison(pending, attempts)
            else:
                applied = self._apply(pending, parts, attempts if i == 0 else 1)
            if applied is None:  # an action this worker lacks and another may have
                end = self._flush(group, report)
                return self._hand_back(pending.id) if end is scripts.Tag.OK else end
            group.add(pending.id, applied)
            if len(group.actions) >= size or i == last:
                end = self._commit(group, report, i == last)
                if end is not scripts.Tag.OK:
                    return end
        return scripts.Tag.MORE

    def _group_size(self, attempts: int) -> int:
        """Most actions of one commit: one after a reclaim (or with no retries at all)."""
        if attempts > 1 or self.settings.max_attempts < 2:
            return 1
        return self.settings.commit_group

    def _flush(self, group: _Group, report: DrainReport) -> scripts.Tag:
        """Commit what the group holds (OK when it holds nothing); see `_commit`."""
        return self._commit(group, report, False) if group.actions else scripts.Tag.OK

    def _commit(self, group: _Group, report: DrainReport, last: bool) -> scripts.Tag:
        """Commit the group: OK, RELEASED, STALE or MORE (an action was cancelled
        meanwhile: nothing of the group was written, the mailbox must be read again)."""
        changes = group.to_write()
        counts, sums = (action_counts([applied.counted() for _, applied in group.actions])
                        if self.settings.metrics_counters else ({}, {}))
        res = self.layer.call(scripts.commit(
            self.session_id, token=self.token, changes=changes, migrate=group.parts.migrate,
            events=group.events_json(), keep=self.settings.keep_results, last=last,
            outcomes=[(action_id, applied.outcome) for action_id, applied in group.actions],
            counts=counts, sums=sums))
        if res is scripts.Tag.STALE:
            log.warning("session %s: lease lost; drain stops", self.session_id)
            group.rolled_back()
            return res
        if res is scripts.Tag.MOVED:
            group.rolled_back()
            return scripts.Tag.MORE
        report.commits += 1
        report.state_bytes += sum(len(raw) for raw in changes.values() if raw is not None)
        for action_id, applied in group.actions:
            report.applied += 1
            report.failed += int(applied.failed)
            telemetry.dispatch.action_finished(
                self.session_id, action_id, applied.action,
                "failed" if applied.failed else "succeeded", applied.duration,
                applied.error_type)
        if self.listener is not None:
            self.listener.committed(self.session_id, [applied.finished for _, applied
                                                      in group.actions if applied.finished])
        group.committed_now()
        return res

    def _hand_back(self, action_id: str) -> scripts.Tag:
        """Give the session back (this worker lacks the head action): HANDED, STALE, or
        MORE (the action was cancelled meanwhile: read the mailbox again)."""
        res = self.layer.call(scripts.handback(self.session_id, token=self.token,
                                               action_id=action_id))
        if res is scripts.Tag.OK:
            return scripts.Tag.HANDED
        return scripts.Tag.MORE if res is scripts.Tag.MOVED else res

    def _lacks(self, name: str, req: ActionRequest, action_id: str) -> bool:
        """True if this worker should hand back an action it has not registered: a live
        worker has it and the grace period since it was sent has not passed."""
        if time.time() - req.created_at > self.settings.unknown_action_grace:
            return False
        if name not in self._elsewhere:
            self._elsewhere[name] = fleet.someone_has(self.layer, name)
        if self._elsewhere[name]:
            log.warning("worker %s lacks action %r (session %s, action %s); another live "
                        "worker has it: handing the session back", self.worker, name,
                        self.session_id, action_id)
        return self._elsewhere[name]
    def _poison(self, pending: scripts.PendingAction, attempts: int) -> _Applied:
        try:
            name = _request(pending).action
        except ValueError:  # a vanished or corrupt request is failed all the same
            name = "?"
        err = PoisonAction(self.session_id, pending.id, name, attempts - 1)
        try:
            req = _request(pending)
        except ValueError:
            req = ActionRequest(action=name)
        return self._failure(pending.id, req, err, attempts - 1, 0.0, 0.0)

    def _failure(self, action_id: str, req: ActionRequest, exc: BaseException, attempts: int,
                 started: float, duration: float) -> _Applied:
        name = req.action
        error = ActionError(type=type(exc).__name__, message=str(exc))
        # The finish time is stored by the commit (Redis TIME), not in the outcome JSON.
        outcome = Outcome(status=ActionStatus.FAILED, error=error, attempts=attempts)
        # An action's own exception comes with its traceback; our typed errors say it all.
        log.warning("session %s: action %s (%s) failed: %s: %s", self.session_id, name,
                    action_id, error.type, error.message,
                    exc_info=None if isinstance(exc, JidoTasksError) else exc)
        event = dumps({"action_id": action_id, "action": name, "error": error.model_dump()})
        return _Applied(outcome.to_json(), {}, [["action.failed", event]], name, error.type,
                        duration, Finished(action_id, name, req.params, outcome,
                                           req.created_at, started, duration, req.reply_to))

    def _apply(self, pending: scripts.PendingAction, parts: Parts, attempts: int,
               ) -> _Applied | None:
        """Run one action on its own view of the state (copy on access); never raises. None:
        this worker lacks the action and should hand the session back (see `_lacks`). A
        failure while preparing it or running it (under its time limit) fails the action."""
        action_id = pending.id
        started, wall = time.perf_counter(), time.time()
        req = ActionRequest(action="?")
        limit = 0.0
        try:
            req = _request(pending)
            if not is_registered(req.action) and self._lacks(req.action, req, action_id):
                return None
            spec, params, ctx, state = self._prepare(action_id, req, parts)
            limit = spec.time_limit or self.settings.action_time_limit
            result = _run_limited(spec, ctx, params, limit)
            changes = state.changes()
            # The result must be JSON: an action returning anything else fails.
            done = Outcome(status=ActionStatus.SUCCEEDED, result=result, attempts=attempts)
            outcome = done.to_json()
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, GeneratorExit...: the action's own failure, recorded
            # with its real type; the process goes on (only os._exit or a signal kills it).
            if isinstance(exc, SystemExit) and stopping():
                raise  # the process is stopping: the action runs again elsewhere
            if isinstance(exc, _TimeLimit):
                exc = ActionTimeLimitExceeded(self.session_id, action_id, req.action, limit)
            return self._failure(action_id, req, exc, attempts, wall,
                                 time.perf_counter() - started)
        return self._succeeded(action_id, req, ctx.events, done, outcome, changes, started,
                               wall)

    def _prepare(self, action_id: str, req: ActionRequest, parts: Parts,
                 ) -> tuple[ActionSpec, Any, ActionContext, ActionState]:
        """The action's spec, its parsed params, its context and its view of the state."""
        spec = get_action(req.action, self.session_id)
        params = parse_params(spec, req.params, self.session_id)
        assert self.entry is not None
        state = ActionState(parts)
        ctx = ActionContext(session=self.entry, state=state, settings=self.settings,
                            action_id=action_id, action=req.action,
                            _progress=self._reporter(action_id, req.action))
        return spec, params, ctx, state

    def _succeeded(self, action_id: str, req: ActionRequest, emitted: list[tuple[str, Any]],
                   done: Outcome, outcome: str, changes: Changes, started: float, wall: float,
                   ) -> _Applied:
        """What the commit writes of an action that returned: its outcome, the state parts it
        changed, the events it emitted and `action.succeeded`."""
        duration = time.perf_counter() - started
        name = req.action
        events = [[etype, dumps({"action_id": action_id, **data})] for etype, data in emitted]
        events.append(["action.succeeded", dumps({"action_id": action_id, "action": name,
                                                  "attempts": done.attempts,
                                                  "duration": round(duration, 6)})])
        return _Applied(outcome, changes, events, name, duration=duration,
                        finished=Finished(action_id, name, req.params, done, req.created_at,
                                          wall, duration, req.reply_to))

    def _reporter(self, action_id: str, name: str) -> Any:
        def report(fraction: float, message: str) -> None:
            progress = Progress(fraction=fraction, message=message)
            outcome = Outcome(status=ActionStatus.RUNNING, progress=progress)
            data = dumps({"action_id": action_id, "action": name, **progress.model_dump()})
            self.layer.call(scripts.progress(self.session_id, token=self.token,
                                             action_id=action_id, outcome=outcome.to_json(),
                                             event_data=data))
        return report


def _request(pending: scripts.PendingAction) -> ActionRequest:
    """The stored request of a handed-out action (a vanished or corrupt one raises)."""
    return ActionRequest.model_validate_json(pending.request or "{}")


def drain(layer: RedisLayer, session_id: str, worker: str | None = None,
          listener: CommitListener | None = None,
          claimed: scripts.Claimed | None = None) -> DrainReport:
    """Apply the session's pending actions (the body of the Celery drain task); `claimed`:
    the lease was taken already (by the send this worker accepted), with this first batch."""
    return Drainer(layer, session_id, worker, listener).drain(claimed)


def claim_for(layer: RedisLayer, session_id: str, worker: str | None = None,
              ) -> scripts.ClaimFor:
    """What a send to `session_id` needs to claim its lease for this worker (see
    `scripts.send`); the liveness key is the one of the session's slot group."""
    s, worker = layer.settings, worker or worker_id()
    validate_session_id(session_id)
    return scripts.ClaimFor(worker, s.lease_ms, s.batch_size,
                            layer.keys.alive(worker, session_id), s.liveness_ms)
