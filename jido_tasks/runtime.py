"""Worker side of session work: claim a session, apply its pending actions in order, release.

One drain: `claim` (lease + fencing token + first batch + state) -> run each action on a
private copy of the state, and `commit` each group of consecutive finished actions (token
check, new state, outcomes, mailbox pop, activity, events: one atomic Lua call; the last one
of a batch also releases the lease when the mailbox is empty) -> `release` (the next batch, or
drop the lease if nothing is left). The process's heartbeat thread renews the lease meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from jido_tasks import telemetry
from jido_tasks.actions import ActionContext, get_action, parse_params
from jido_tasks.errors import ActionTimeLimitExceeded, JidoTasksError, PoisonAction
from jido_tasks.heartbeat import Heartbeat
from jido_tasks.models import (
    ActionError,
    ActionRequest,
    ActionStatus,
    Outcome,
    Progress,
    SessionEntry,
    dumps,
)
from jido_tasks.store import scripts
from jido_tasks.store.connection import RedisLayer

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DrainReport(BaseModel):
    """What one drain did."""

    session_id: str
    outcome: str
    """'done', 'busy' (another worker holds the lease), 'empty', 'missing', 'stale',
    'yielded' (time slice over, work left) or 'error' (an unexpected failure; logged)."""
    applied: int = 0
    failed: int = 0
    retry_after: float | None = None
    requeue: bool = False
    """The lease was handed back with work left: publish the session's drain again."""


@dataclass
class _Applied:
    outcome: str  # JSON
    state_json: str | None  # None: state unchanged or action failed
    events: list[list[str]] = field(default_factory=list)
    action: str = "?"
    error_type: str | None = None
    duration: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error_type is not None


# Longest time a finished action waits for more to share its commit (plus one action's run).
COMMIT_DELAY = 0.002


class _Group:
    """Actions applied but not yet committed, and the state after them."""

    def __init__(self, state_json: str) -> None:
        self.committed = state_json
        self.state = state_json
        self.actions: list[tuple[str, _Applied]] = []
        self.started = 0.0

    def add(self, action_id: str, applied: _Applied) -> None:
        if not self.actions:
            self.started = time.perf_counter()
        self.actions.append((action_id, applied))
        if applied.state_json is not None:
            self.state = applied.state_json

    def age(self) -> float:
        return time.perf_counter() - self.started

    def events_json(self) -> str:
        events = [ev for _, applied in self.actions for ev in applied.events]
        return dumps(events) if events else "[]"

    def committed_now(self) -> None:
        self.committed = self.state
        self.actions = []


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


class Drainer:
    """Applies one session's pending actions under a lease."""

    def __init__(self, layer: RedisLayer, session_id: str, worker: str | None = None) -> None:
        self.layer = layer
        self.settings = layer.settings
        self.session_id = session_id
        self.worker = worker or worker_id()
        self.token = ""
        self.entry: SessionEntry | None = None

    def drain(self) -> DrainReport:
        started = time.perf_counter()
        report = self._drain()
        telemetry.dispatch.drain_finished(self.session_id, report.outcome, report.applied,
                                          report.failed, time.perf_counter() - started)
        return report

    def _drain(self) -> DrainReport:
        claimed = self._claim()
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
                self._run(claimed.batch, claimed.state or "{}", report, beat)
            except Exception:
                # A bug or a Redis failure: give the lease up now rather than let it expire
                # (the next claim counts as another attempt of the head: see hand_back.lua).
                log.exception("session %s: drain failed; lease handed back", self.session_id)
                report.outcome = "error"
                self._hand_back(report, clean=False)
        return report

    def _claim(self) -> scripts.ClaimReply:
        """Claim the session; if a worker holds it, take it over when that worker's liveness
        key is gone (it died: its lease would otherwise block the session until it expires)."""
        s, keys = self.settings, self.layer.keys
        alive = keys.alive(self.worker)
        claimed = self.layer.call(scripts.claim(
            self.session_id, worker=self.worker, lease_ms=s.lease_ms, batch_size=s.batch_size,
            alive_key=alive, alive_ms=s.liveness_ms))
        if not isinstance(claimed, scripts.Busy) or not claimed.holder:
            return claimed
        return self.layer.call(scripts.takeover(
            self.session_id, worker=self.worker, lease_ms=s.lease_ms, batch_size=s.batch_size,
            alive_key=alive, alive_ms=s.liveness_ms, expected=claimed.lease,
            holder_alive_key=keys.alive(claimed.holder)))

    def _run(self, batch: scripts.Batch, state_json: str, report: DrainReport,
             beat: Heartbeat) -> None:
        """Apply batches until the mailbox is empty, the lease is lost or the time slice is
        over (then the session goes to the back of the queue: `_hand_back`)."""
        s = self.settings
        deadline = time.monotonic() + s.drain_time_slice
        while True:
            state_json, end = self._batch(batch, state_json, report, beat, deadline)
            if end is scripts.Tag.MORE and time.monotonic() >= deadline:
                end = scripts.Tag.YIELDED
            if end is scripts.Tag.YIELDED:
                self._hand_back(report, clean=True)
                return
            if end is not scripts.Tag.MORE:
                if end is scripts.Tag.STALE:
                    report.outcome = "stale"
                return
            nxt = self.layer.call(scripts.release(
                self.session_id, token=self.token, batch_size=s.batch_size,
                lease_ms=s.lease_ms))
            if not isinstance(nxt, scripts.Batch):
                if nxt is scripts.Tag.STALE:
                    report.outcome = "stale"
                return
            batch = nxt

    def _hand_back(self, report: DrainReport, clean: bool) -> None:
        """Give the lease up with work left; `report.requeue` tells the caller to publish the
        session's drain again (at the back of the queue)."""
        try:
            tag = self.layer.call(scripts.hand_back(self.session_id, token=self.token,
                                                    clean=clean))
        except Exception:  # Redis is gone too: the lease expires on its own
            log.warning("session %s: could not hand the lease back", self.session_id,
                        exc_info=True)
            return
        if tag is scripts.Tag.YIELDED:
            report.requeue = True
            if clean:
                report.outcome = "yielded"
        elif tag is scripts.Tag.STALE:
            report.outcome = "stale"

    def _batch(self, batch: scripts.Batch, state_json: str, report: DrainReport,
               beat: Heartbeat, deadline: float) -> tuple[str, scripts.Tag]:
        """Apply a batch; returns the committed state JSON and how it ended: MORE (ask
        release for the next batch), RELEASED (mailbox empty, lease dropped), STALE, or
        YIELDED (the time slice ended at `deadline` with actions of the batch left: what ran
        is committed, the rest waits for the session's next turn).

        Consecutive actions are committed together (up to `commit_group` of them, and no
        action waits more than COMMIT_DELAY plus one action's run for its commit), each group
        in one atomic step. After a reclaim (the previous holder died) every action is
        committed alone, so a poison action is told apart from the innocent ones before it.
        """
        size = self.settings.commit_group
        attempts = batch.attempts
        if attempts > 1 or self.settings.max_attempts < 2:
            size = 1
        group = _Group(state_json)
        last = len(batch.actions) - 1
        for i, pending in enumerate(batch.actions):
            if beat.lost.is_set():
                return group.committed, scripts.Tag.STALE
            if i > 0 and time.monotonic() >= deadline:
                if group.actions:
                    end = self._commit(group, report, False)
                    if end is not scripts.Tag.OK:
                        return group.committed, end
                return group.committed, scripts.Tag.YIELDED
            if group.actions and group.age() >= COMMIT_DELAY:
                end = self._commit(group, report, False)
                if end is not scripts.Tag.OK:
                    return group.committed, end
            if i == 0 and attempts > self.settings.max_attempts:
                applied = self._poison(pending, attempts)
            else:
                applied = self._apply(pending, group.state, attempts if i == 0 else 1)
            group.add(pending.id, applied)
            if len(group.actions) >= size or i == last:
                end = self._commit(group, report, i == last)
                if end is not scripts.Tag.OK:
                    return group.committed, end
        return group.committed, scripts.Tag.MORE

    def _commit(self, group: _Group, report: DrainReport, last: bool) -> scripts.Tag:
        """Commit the group: OK, RELEASED, STALE or MORE (an action was cancelled
        meanwhile: nothing of the group was written, the mailbox must be read again)."""
        res = self.layer.call(scripts.commit(
            self.session_id, token=self.token,
            state=group.state if group.state != group.committed else "",
            events=group.events_json(), keep=self.settings.keep_results, last=last,
            outcomes=[(action_id, applied.outcome) for action_id, applied in group.actions]))
        if res is scripts.Tag.STALE:
            log.warning("session %s: lease lost; drain stops", self.session_id)
            return res
        if res is scripts.Tag.MOVED:
            return scripts.Tag.MORE
        for action_id, applied in group.actions:
            report.applied += 1
            report.failed += int(applied.failed)
            telemetry.dispatch.action_finished(
                self.session_id, action_id, applied.action,
                "failed" if applied.failed else "succeeded", applied.duration,
                applied.error_type)
        group.committed_now()
        return res

    def _poison(self, pending: scripts.PendingAction, attempts: int) -> _Applied:
        try:
            name = _request(pending).action
        except ValueError:  # a vanished or corrupt request is failed all the same
            name = "?"
        err = PoisonAction(self.session_id, pending.id, name, attempts - 1)
        return self._failure(pending.id, name, err, attempts - 1)

    def _failure(self, action_id: str, name: str, exc: BaseException, attempts: int,
                 ) -> _Applied:
        error = ActionError(type=type(exc).__name__, message=str(exc))
        outcome = Outcome(status=ActionStatus.FAILED, error=error, attempts=attempts,
                          finished_at=time.time())
        event = dumps({"action_id": action_id, "action": name, "error": error.model_dump()})
        return _Applied(outcome.to_json(), None, [["action.failed", event]], name, error.type)

    def _apply(self, pending: scripts.PendingAction, state_json: str, attempts: int,
               ) -> _Applied:
        """Run one action on a private copy of the state; never raises."""
        name = "?"
        action_id = pending.id
        started = time.perf_counter()
        limit = 0.0
        try:
            req = _request(pending)
            name = req.action
            spec = get_action(name, self.session_id)
            params = parse_params(spec, req.params, self.session_id)
            assert self.entry is not None
            ctx = ActionContext(session=self.entry, state=json.loads(state_json),
                                settings=self.settings, action_id=action_id, action=name,
                                _progress=self._reporter(action_id, name))
            limit = spec.time_limit or self.settings.action_time_limit
            run_started = time.perf_counter()
            with time_limit(limit):
                result = spec.fn(ctx, params)
            # An action that swallowed the alarm (catching BaseException) still fails.
            if time.perf_counter() - run_started > limit:
                raise _TimeLimit()
            new_state = dumps(ctx.state)
            # The result must be JSON: an action returning anything else fails.
            outcome = Outcome(status=ActionStatus.SUCCEEDED, result=result, attempts=attempts,
                              finished_at=time.time()).to_json()
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, GeneratorExit...: the action's own failure, recorded
            # with its real type; the process goes on (only os._exit or a signal kills it).
            if isinstance(exc, _TimeLimit):
                exc = ActionTimeLimitExceeded(self.session_id, action_id, name, limit)
            if not isinstance(exc, JidoTasksError):
                log.info("session %s: action %s failed:\n%s", self.session_id, name,
                         traceback.format_exc())
            failure = self._failure(action_id, name, exc, attempts)
            failure.duration = time.perf_counter() - started
            return failure
        events = [[etype, dumps({"action_id": action_id, **data})]
                  for etype, data in ctx.events]
        return _Applied(outcome, None if new_state == state_json else new_state, events, name,
                        duration=time.perf_counter() - started)

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


def drain(layer: RedisLayer, session_id: str, worker: str | None = None) -> DrainReport:
    """Apply the session's pending actions (the body of the Celery drain task)."""
    return Drainer(layer, session_id, worker).drain()
