"""Coordinator actions: analysis results, issues found and chat requests for a session.

Recorded in the state under `coordinator` and announced as events (`analysis.complete`,
`issue.found`, `chat.received`) on the session's and the global stream.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jido_tasks.builtins.context import add_message
from jido_tasks.core.actions import ActionContext, action
from jido_tasks.models import JsonObject

MAX_RECORDS = 100  # per list in the coordinator state; oldest dropped


class AnalysisComplete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analysis_type: str = Field(min_length=1)
    results: Any = None
    duration_ms: float | None = Field(None, ge=0)


class IssueFound(BaseModel):
    model_config = ConfigDict(extra="allow")  # upstream: an open-ended issue description


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str


def _record(ctx: ActionContext, kind: str, item: JsonObject) -> None:
    items: list[JsonObject] = ctx.state.setdefault("coordinator", {}).setdefault(kind, [])
    items.append(item)
    if len(items) > MAX_RECORDS:
        del items[: len(items) - MAX_RECORDS]


def _announce(ctx: ActionContext, params: BaseModel, kind: str, event: str) -> JsonObject:
    """Record `params` (stamped) under `kind` and emit `event` with it."""
    item = {**params.model_dump(), "session_id": ctx.session_id, "at": time.time()}
    _record(ctx, kind, item)
    ctx.emit(event, item)
    return item


@action("coordinator.analysis_complete", params=AnalysisComplete)
def _analysis_complete(ctx: ActionContext, params: AnalysisComplete) -> JsonObject:
    return _announce(ctx, params, "analyses", "analysis.complete")


@action("coordinator.issue_found", params=IssueFound)
def _issue_found(ctx: ActionContext, params: IssueFound) -> JsonObject:
    return _announce(ctx, params, "issues", "issue.found")


@action("coordinator.chat_request", params=ChatRequest)
def _chat_request(ctx: ActionContext, params: ChatRequest) -> JsonObject:
    task = {"id": ctx.action_id, "type": "chat", "message": params.message, "at": time.time()}
    _record(ctx, "active_tasks", task)
    add_message(ctx, "user", params.message)
    ctx.emit("chat.received", {"message": params.message, "task_id": ctx.action_id})
    return task
