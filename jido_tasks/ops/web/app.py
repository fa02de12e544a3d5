"""The metrics and sessions server: `/metrics`, `/sessions`, `/sessions/<id>` (read-only).

A small Tornado app (Tornado ships with Flower). Every path is behind the same basic auth as
Flower (`JIDO_TASKS_FLOWER_BASIC_AUTH`); only GET is served. Handlers are synchronous: each
request is a few bounded, pipelined Redis reads.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections import deque
from typing import TYPE_CHECKING, Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from jido_tasks.errors import InvalidArgument, InvalidParams, InvalidSessionId, SessionNotFound
from jido_tasks.models import SESSION_ID, SessionStatus
from jido_tasks.ops.monitoring import recent_actions, session_rows
from jido_tasks.ops.web.metrics import registry_for
from jido_tasks.ops.web.pages import EVENTS_JS, LOADER

if TYPE_CHECKING:
    from jido_tasks.client.sync import Client

PAGE_SIZE = 50
STATE_LIMIT = 64 * 1024  # characters of pretty state JSON shown
EVENTS_SHOWN = 100
_SID = SESSION_ID.pattern


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def short_json(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Base(tornado.web.RequestHandler):
    """Basic auth on every request; plain-text errors."""

    client: Client
    credentials: list[str] | None

    def initialize(self, client: Client, credentials: list[str] | None) -> None:
        self.client = client
        self.credentials = credentials

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        if self.credentials is not None and not self._authorized():
            self.set_header("WWW-Authenticate", 'Basic realm="jido-tasks"')
            raise tornado.web.HTTPError(401)

    def _authorized(self) -> bool:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Compare against every pair (no early exit) so timing says nothing.
        return any([hmac.compare_digest(given, pair) for pair in self.credentials or []])

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        exc = kwargs.get("exc_info", (None, None))[1]
        reason = exc.log_message if isinstance(exc, tornado.web.HTTPError) else None
        self.finish(f"{status_code} {reason or self._reason}\n")

    def get_template_namespace(self) -> dict[str, Any]:
        ns = super().get_template_namespace()
        ns.update(pretty=pretty, short_json=short_json)
        return ns


class MetricsHandler(_Base):
    def initialize(self, client: Client, credentials: list[str] | None,  # type: ignore[override]
                   registry: CollectorRegistry) -> None:
        super().initialize(client, credentials)
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


class SessionsHandler(_Base):
    def get(self) -> None:
        status = self.get_query_argument("status", "") or None
        try:
            page = max(0, int(self.get_query_argument("page", "0")))
        except ValueError:
            raise tornado.web.HTTPError(400, "page must be a number") from None
        try:
            entries = self.client.list_sessions(status, offset=page * PAGE_SIZE,
                                                limit=PAGE_SIZE + 1)
        except (InvalidArgument, InvalidParams) as exc:
            raise tornado.web.HTTPError(400, exc.message) from None
        rows = session_rows(self.client.layer, entries[:PAGE_SIZE])
        self.render("list.html", rows=rows, status=status or "", page=page,
                    more=len(entries) > PAGE_SIZE, missing=entries.missing_slots,
                    statuses=["", *(s.value for s in SessionStatus)])


class SessionHandler(_Base):
    def get(self, session_id: str) -> None:
        try:
            entry = self.client.get_session(session_id)
        except (SessionNotFound, InvalidSessionId):
            raise tornado.web.HTTPError(404, "no such session") from None
        state = pretty(self.client.get_state(session_id))
        events = deque(self.client.events(session_id), maxlen=EVENTS_SHOWN)
        self.render("session.html", entry=entry,
                    row=session_rows(self.client.layer, [entry])[0],
                    actions=recent_actions(self.client.layer, session_id),
                    state=state[:STATE_LIMIT], truncated=len(state) > STATE_LIMIT,
                    state_limit=STATE_LIMIT, events=list(events),
                    last_event=events[-1].id if events else "0")


class EventsHandler(_Base):
    """New events of one session after `?after=<stream id>`, as a JSON list (for polling)."""

    def get(self, session_id: str) -> None:
        after = self.get_query_argument("after", "0")
        try:
            events = list(self.client.events(session_id, after))
        except (InvalidArgument, InvalidParams, InvalidSessionId):
            raise tornado.web.HTTPError(400, "bad session id or stream id") from None
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps([json.loads(e.model_dump_json()) for e in events[:500]]))


class AssetHandler(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.write(EVENTS_JS)


def make_app(client: Client, *, require_auth: bool = True) -> tornado.web.Application:
    """The Tornado application. Raises nothing: `require_auth` is checked by the caller."""
    secret = client.settings.flower_basic_auth
    credentials = secret.get_secret_value().split(",") if secret is not None else None
    if credentials is None and require_auth:
        credentials = []  # nobody gets in: the caller should have refused to start
    common = {"client": client, "credentials": credentials}
    registry = registry_for(client.layer, client.settings.metrics_max_sessions)
    return tornado.web.Application([
        (r"/", tornado.web.RedirectHandler, {"url": "/sessions"}),
        (r"/metrics", MetricsHandler, {**common, "registry": registry}),
        (r"/sessions/?", SessionsHandler, common),
        (rf"/sessions/({_SID})", SessionHandler, common),
        (rf"/sessions/({_SID})/events", EventsHandler, common),
        (r"/assets/events\.js", AssetHandler, common),
    ], template_loader=LOADER, compress_response=True)
