"""Session cache of file contents and analyses, kept in the session state under `cache`.

It lives and dies with the session: a purge deletes the state and so the cache.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from jido_tasks.builtins.context import Empty, FilePath
from jido_tasks.core.actions import ActionContext, action
from jido_tasks.models import JsonObject


class FileContent(FilePath):
    content: str


class Analysis(FilePath):
    analysis: Any = Field(default=None)


def _cache(ctx: ActionContext, kind: str) -> dict[str, JsonObject]:
    cache = ctx.state.setdefault("cache", {})
    return cache.setdefault(kind, {})  # type: ignore[no-any-return]


@action("cache.put_file", params=FileContent)
def _put_file(ctx: ActionContext, params: FileContent) -> JsonObject:
    _cache(ctx, "files")[params.path] = {"content": params.content, "cached_at": time.time()}
    return {"path": params.path, "size": len(params.content)}


@action("cache.get_file", params=FilePath)
def _get_file(ctx: ActionContext, params: FilePath) -> JsonObject | None:
    return _cache(ctx, "files").get(params.path)


@action("cache.put_analysis", params=Analysis)
def _put_analysis(ctx: ActionContext, params: Analysis) -> JsonObject:
    _cache(ctx, "analyses")[params.path] = {"analysis": params.analysis,
                                            "cached_at": time.time()}
    return {"path": params.path}


@action("cache.get_analysis", params=FilePath)
def _get_analysis(ctx: ActionContext, params: FilePath) -> JsonObject | None:
    return _cache(ctx, "analyses").get(params.path)


@action("cache.invalidate", params=FilePath)
def _invalidate(ctx: ActionContext, params: FilePath) -> JsonObject:
    files = _cache(ctx, "files").pop(params.path, None) is not None
    analyses = _cache(ctx, "analyses").pop(params.path, None) is not None
    return {"path": params.path, "file": files, "analysis": analyses}


@action("cache.clear", params=Empty)
def _clear(ctx: ActionContext, params: Empty) -> JsonObject:
    cache = ctx.state.pop("cache", {})
    return {"files": len(cache.get("files", {})), "analyses": len(cache.get("analyses", {}))}
