"""Send and record requests, shared by the sync and the async client (no I/O here).

Each function validates its input and returns the data or the script call (`scripts.Op`)
that a client runs on its own connection; the rules are written once, the I/O twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from jido_tasks.core.actions import action_spec_or_name, check_params
from jido_tasks.errors import (
    ActionCancelled,
    ActionExpired,
    ActionFailed,
    ActionNotFound,
    InvalidArgument,
)
from jido_tasks.models import (
    ActionRecord,
    ActionRequest,
    ActionStatus,
    Outcome,
    ReplyTo,
    new_action_id,
    request_digest,
    validate_action_id,
    validate_session_id,
)
from jido_tasks.settings import Settings
from jido_tasks.store import scripts

SendItem = tuple[str, Any] | tuple[str, Any, str | None] | str
"""A `send_many` item: `(name, params)`, `(name, params, action_id)` or a bare name."""


def _item(item: SendItem, session_id: str) -> tuple[str, Any, str | None]:
    if isinstance(item, str):
        return item, None, None
    if isinstance(item, tuple) and len(item) == 2:
        return item[0], item[1], None
    if isinstance(item, tuple) and len(item) == 3:
        return item
    raise InvalidArgument("send_many", "actions", "each item is a name, (name, params) or "
                          f"(name, params, action_id), not {item!r:.80}", session_id)


def normalize(actions: Iterable[SendItem], session_id: str) -> list[tuple[str, Any, str | None]]:
    """`send_many`'s items as (name, params, action_id or None); an id given twice is refused."""
    items = [_item(a, session_id) for a in actions]
    ids = [aid for _, _, aid in items if aid is not None]
    if len(ids) != len(set(ids)):
        raise InvalidArgument("send_many", "action_id", "the same id is given twice",
                              session_id)
    return items


def prepare(settings: Settings, session_id: str, action: str, params: Any,
            action_id: str | None = None, reply_to: ReplyTo | None = None,
            ) -> tuple[str, ActionRequest]:
    """The action id (caller-chosen and validated, or new) and its request, after validating
    the session id, the name and the params.

    An action registered in this process is validated here (name, params); one that is not
    is checked for form only (a valid name, params a JSON object within the size limit) and
    validated by the worker that runs it. Only a caller-chosen id can be sent again, so only
    its request carries the digest that tells a resend from a reuse (a record is kept per
    action: the digest's 39 bytes are not spent on ids nobody else knows).
    """
    validate_session_id(session_id)
    if action_id is not None:
        validate_action_id(action_id, session_id)
    clean, _ = check_params(action_spec_or_name(action, session_id), params, session_id,
                            settings.max_params_bytes, settings.max_json_depth)
    digest = None if action_id is None else request_digest(action, clean)
    return action_id or new_action_id(), ActionRequest(
        action=action, params=clean, created_at=time.time(), digest=digest,
        reply_to=reply_to)


def send_op(settings: Settings, session_id: str, action_id: str,
            request: ActionRequest, request_json: str | None = None,
            claim_for: scripts.ClaimFor | None = None) -> scripts.Op[scripts.Sent]:
    """The send script call (its reply says whether to publish a drain, and duplicates);
    `request_json` is `request.to_json()` when the caller has it already; `claim_for`: see
    `scripts.send`."""
    return scripts.send(session_id, action_id=action_id, action=request.action,
                        request=request_json or request.to_json(), digest=request.digest or "",
                        stale_after=settings.stale_after, claim_for=claim_for)


def send_many_op(settings: Settings, session_id: str,
                 prepared: list[tuple[str, ActionRequest]]) -> scripts.Op[scripts.SentMany]:
    """The send_many script call for prepared actions (all or none, ids checked first)."""
    return scripts.send_many(session_id, actions=[
        (action_id, request.action, request.to_json(), request.digest or "")
        for action_id, request in prepared], stale_after=settings.stale_after)


def check_timeout(operation: str, timeout: float | None, session_id: str) -> None:
    """A wait's timeout is None (no limit) or a number of seconds, never NaN; else
    `InvalidArgument` (checked before anything is sent)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout):
        raise InvalidArgument(operation, "timeout", f"must be a number of seconds or None, not "
                              f"{timeout!r:.40}", session_id)


def cancel_op(settings: Settings, session_id: str, action_id: str, reason: str,
              ) -> scripts.Op[scripts.Tag]:
    validate_session_id(session_id)
    return scripts.cancel(session_id, action_id=action_id, reason=reason,
                          keep=settings.keep_results)


def record_op(settings: Settings, session_id: str, action_id: str, sent: bool = False,
              ) -> scripts.Op[ActionRecord]:
    """The record of an action (one Lua read). With `sent` (the caller holds its handle, so
    it was accepted), a missing record raises `ActionExpired` (dropped by age or count), else
    `ActionNotFound`."""
    validate_session_id(session_id)
    op = scripts.record(session_id, action_id=action_id)
    stored_of = op.decoder

    def decode(reply: Any) -> ActionRecord:
        try:
            stored = stored_of(reply)
        except ActionNotFound:
            if sent:
                raise ActionExpired(session_id, action_id, settings.record_retention,
                                    settings.keep_results) from None
            raise
        return ActionRecord.build(session_id, action_id, stored.request, stored.outcome,
                                  running=stored.running, head_attempts=stored.head_attempts)
    return scripts.Op(op.script, op.session_id, op.args, decode)


def outcome_ops(actions: list[tuple[str, str]]) -> list[scripts.Op[Outcome | None]]:
    """Reads of the outcomes of (session id, action id) pairs, for one pipeline: the waiters'
    safety net. Each is None while the action is not finished (or its record is gone)."""
    def finished(op: scripts.Op[scripts.Stored]) -> scripts.Op[Outcome | None]:
        stored_of = op.decoder

        def decode(reply: Any) -> Outcome | None:
            try:
                outcome = stored_of(reply).outcome
            except ActionNotFound:
                return None
            return outcome if outcome is not None and outcome.status.finished else None
        return scripts.Op(op.script, op.session_id, op.args, decode)
    return [finished(scripts.record(sid, action_id=aid)) for sid, aid in actions]



def result_of(record: ActionRecord) -> Any:
    """The action's result, or the typed error it ended with."""
    if record.status is ActionStatus.SUCCEEDED:
        return record.result
    err_type = record.error.type if record.error else "Error"
    err_msg = record.error.message if record.error else ""
    if record.status is ActionStatus.CANCELLED:
        raise ActionCancelled(record.session_id, record.id, record.action, err_msg)
    raise ActionFailed(record.session_id, record.id, record.action, err_type, err_msg)
