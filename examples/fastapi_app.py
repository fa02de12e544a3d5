"""A small FastAPI app on `AsyncClient`: create a session, post a message, stream events.

FastAPI and uvicorn come with the `dev` extra (they are not runtime dependencies). Run a worker,
then the app (Redis on localhost:6379):

    .venv/bin/jido-tasks worker
    .venv/bin/uvicorn examples.fastapi_app:app --port 8000

    curl -X POST localhost:8000/sessions
    curl -X POST localhost:8000/sessions/<id>/messages -H 'content-type: application/json' \\
         -d '{"content": "hello"}'
    curl -N localhost:8000/sessions/<id>/events          # server-sent events, resumable

No endpoint blocks the event loop: one `AsyncClient` per app (opened and closed by the
lifespan) serves every request, and waiting for a result is one pub/sub message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from jido_tasks import (
    ActionFailed,
    ActionTimeout,
    AsyncClient,
    InvalidArgument,
    InvalidParams,
    InvalidSessionId,
    JidoTasksError,
    RedisUnavailable,
    SessionNotActive,
    SessionNotFound,
    Settings,
    UnknownAction,
)

_STATUS: list[tuple[type[JidoTasksError], int]] = [
    (SessionNotFound, 404), (SessionNotActive, 409), (ActionTimeout, 504),
    (RedisUnavailable, 503), (InvalidSessionId, 400), (InvalidArgument, 400),
    (InvalidParams, 400), (UnknownAction, 400), (ActionFailed, 502),
]


class NewMessage(BaseModel):
    content: str
    role: Literal["user", "assistant", "system"] = "user"


async def sse(client: AsyncClient, session_id: str, after: str,
              follow: bool) -> AsyncIterator[str]:
    """A session's events after stream id `after`, formatted as server-sent events."""
    last = after
    while True:
        async for event in client.events(session_id, after=last,
                                         block=5.0 if follow else None):
            data = json.dumps({"type": event.type, "data": event.data,
                               "ts": event.ts.isoformat()})
            yield f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"
            last = event.id
        if not follow:
            return
        yield ": keep-alive\n\n"  # lets the server notice a client that left


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; `settings` default to the environment (`JIDO_TASKS_*`)."""
    clients: dict[str, AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncClient(settings) as client:
            clients["client"] = client
            yield

    app = FastAPI(title="jido-tasks example", lifespan=lifespan)

    def jido() -> AsyncClient:
        return clients["client"]

    @app.exception_handler(JidoTasksError)
    async def typed_errors(_: Request, exc: JidoTasksError) -> JSONResponse:
        """The project's typed errors as JSON with a fitting HTTP status."""
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status)

    @app.post("/sessions", status_code=201)
    async def create_session() -> dict[str, Any]:
        entry = await jido().create_session(metadata={"via": "fastapi"})
        return {"id": entry.id, "status": entry.status.value}

    @app.get("/sessions/{session_id}")
    async def get_session(session_id: str) -> dict[str, Any]:
        entry = await jido().get_session(session_id)
        return json.loads(entry.model_dump_json())

    @app.post("/sessions/{session_id}/messages")
    async def post_message(session_id: str, message: NewMessage,
                           wait: bool = True) -> dict[str, Any]:
        """Add a message to the session's history; by default wait for it to be applied."""
        params = {"role": message.role, "content": message.content}
        if not wait:
            handle = await jido().send(session_id, "context.add_message", params)
            return {"action_id": handle.id, "status": "pending"}
        result = await jido().call(session_id, "context.add_message", params, timeout=30)
        return {"result": result}

    @app.get("/sessions/{session_id}/events")
    async def events(session_id: str, after: str = "0", follow: bool = True,
                     last_event_id: str | None = Header(None)) -> StreamingResponse:
        """The session's events as server-sent events; a reconnecting browser resumes after
        `Last-Event-ID`. With `follow`, the stream stays open for new events."""
        jido().events(session_id, after=last_event_id or after)  # bad arguments: 400 now
        await jido().get_session(session_id)  # an unknown session: 404 now

        return StreamingResponse(sse(jido(), session_id, last_event_id or after, follow),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.delete("/sessions/{session_id}")
    async def terminate(session_id: str) -> dict[str, Any]:
        entry = await jido().terminate_session(session_id)
        return {"id": entry.id, "status": entry.status.value}

    return app


app = create_app()
