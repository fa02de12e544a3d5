"""Session context: conversation history, active files, file index and `context.build`.

State layout: `conversation` (list of {role, content, timestamp}), `active_files` (list of
{path, added_at}), `file_index` (path -> metadata with last_accessed). Limits come from the
session's `SessionConfig` (max_history, max_files).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jido_tasks.core.actions import ActionContext, action
from jido_tasks.models import JsonObject

Section = Literal["conversation", "files", "file_index"]
State = MutableMapping[str, Any]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Empty(_Params):
    pass


class Message(_Params):
    role: Literal["user", "assistant", "system"]
    content: str


class FilePath(_Params):
    path: str = Field(min_length=1, max_length=4096)


class FileIndexUpdate(FilePath):
    metadata: JsonObject = Field(default_factory=dict)


class BuildContext(_Params):
    include: list[Section] = Field(
        default_factory=lambda: ["conversation", "files", "file_index"])  # type: ignore[arg-type]
    max_messages: int | None = Field(None, ge=0)
    max_files: int | None = Field(None, ge=0)


def conversation(state: State) -> list[JsonObject]:
    return state.setdefault("conversation", [])  # type: ignore[no-any-return]


def active_files(state: State) -> list[JsonObject]:
    return state.setdefault("active_files", [])  # type: ignore[no-any-return]


def file_index(state: State) -> dict[str, JsonObject]:
    return state.setdefault("file_index", {})  # type: ignore[no-any-return]


def add_message(ctx: ActionContext, role: str, content: str) -> JsonObject:
    """Append to the history, dropping the oldest beyond `max_history`; emits an event."""
    history = conversation(ctx.state)
    message = {"role": role, "content": content, "timestamp": time.time()}
    history.append(message)
    overflow = len(history) - ctx.session.config.max_history
    if overflow > 0:
        del history[:overflow]
    ctx.emit("context.message_added", {"role": role, "count": len(history)})
    return message


@action("context.add_message", params=Message)
def _add_message(ctx: ActionContext, params: Message) -> JsonObject:
    message = add_message(ctx, params.role, params.content)
    return {"count": len(conversation(ctx.state)), "timestamp": message["timestamp"]}


@action("context.history", params=Empty)
def _history(ctx: ActionContext, params: Empty) -> list[JsonObject]:
    return list(conversation(ctx.state))


@action("context.clear", params=Empty)
def _clear(ctx: ActionContext, params: Empty) -> JsonObject:
    cleared = len(conversation(ctx.state))
    ctx.state["conversation"] = []
    ctx.emit("context.cleared", {"cleared": cleared})
    return {"cleared": cleared}


@action("context.add_file", params=FilePath)
def _add_file(ctx: ActionContext, params: FilePath) -> JsonObject:
    files = active_files(ctx.state)
    if any(f["path"] == params.path for f in files):
        return {"added": False, "count": len(files), "dropped": []}
    files.append({"path": params.path, "added_at": time.time()})
    dropped = []
    while len(files) > ctx.session.config.max_files:
        dropped.append(files.pop(0)["path"])
    ctx.emit("context.file_added", {"path": params.path, "dropped": dropped})
    return {"added": True, "count": len(files), "dropped": dropped}


@action("context.remove_file", params=FilePath)
def _remove_file(ctx: ActionContext, params: FilePath) -> JsonObject:
    files = active_files(ctx.state)
    kept = [f for f in files if f["path"] != params.path]
    removed = len(kept) != len(files)
    ctx.state["active_files"] = kept
    indexed = file_index(ctx.state).pop(params.path, None) is not None
    if removed:
        ctx.emit("context.file_removed", {"path": params.path})
    return {"removed": removed, "index_removed": indexed, "count": len(kept)}


@action("context.active_files", params=Empty)
def _active_files(ctx: ActionContext, params: Empty) -> list[JsonObject]:
    return list(active_files(ctx.state))


@action("context.update_file_index", params=FileIndexUpdate)
def _update_file_index(ctx: ActionContext, params: FileIndexUpdate) -> JsonObject:
    index = file_index(ctx.state)
    merged = {**index.get(params.path, {}), **params.metadata, "last_accessed": time.time()}
    index[params.path] = merged
    return merged


@action("context.file_index", params=Empty)
def _file_index(ctx: ActionContext, params: Empty) -> dict[str, JsonObject]:
    return dict(file_index(ctx.state))


@action("context.build", params=BuildContext)
def _build(ctx: ActionContext, params: BuildContext) -> JsonObject:
    history = conversation(ctx.state)
    files = active_files(ctx.state)
    out: dict[str, Any] = {"session_id": ctx.session_id}
    if "conversation" in params.include:
        limit = params.max_messages
        out["conversation"] = history[-limit:] if limit else ([] if limit == 0 else history)
    if "files" in params.include:
        limit = params.max_files
        out["files"] = files[-limit:] if limit else ([] if limit == 0 else files)
    if "file_index" in params.include:
        out["file_index"] = file_index(ctx.state)
    out["metadata"] = {"conversation_count": len(history), "active_file_count": len(files),
                       "timestamp": time.time()}
    return out
