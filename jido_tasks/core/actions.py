"""Registering actions: `@action("name")` on `fn(ctx, params)`, and the context they get.

An action receives `ctx` (`ActionContext`: the session entry, a private copy of the state to
mutate, the settings, progress and event reporting) and its params (a dict, or an instance of the
pydantic model it declares), and returns a JSON-serializable result.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jido_tasks import telemetry
from jido_tasks.core import bounds
from jido_tasks.errors import ConfigError, InvalidEvent, InvalidParams, UnknownAction
from jido_tasks.models import JsonObject, SessionEntry
from jido_tasks.settings import Settings

ACTION_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
EVENT_TYPE = ACTION_NAME
"""Event types an action may emit: dotted lowercase words, like action names."""
BUILTIN_MODULES = ("jido_tasks.builtins.context", "jido_tasks.builtins.cache",
                   "jido_tasks.builtins.coordinator")

F = TypeVar("F", bound=Callable[..., Any])
ProgressFn = Callable[[float, str], None]


@dataclass
class ActionContext:
    """What an action sees: `state` is its own copy; it is committed only if the action returns."""

    session: SessionEntry
    state: MutableMapping[str, Any]
    """The session's state for this action (`jido_tasks.state.ActionState` on a worker: parts
    are read on first access; a plain dict works too)."""
    settings: Settings
    action_id: str
    action: str
    _progress: ProgressFn | None = None
    events: list[tuple[str, JsonObject]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.session.id

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1); visible through `ActionHandle.status()` and as an event."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, got {fraction}")
        if self._progress is not None:
            self._progress(fraction, message)

    def emit(self, event_type: str, data: JsonObject | None = None) -> None:
        """Append an event, committed atomically with the action (dropped if it fails).

        `event_type` is dotted lowercase words (like action names); `data` a JSON object of at
        most `max_params_bytes`. Anything else raises `InvalidEvent`, which fails the action
        (checked here, so a commit never meets an event it cannot write).
        """
        if not isinstance(event_type, str) or len(event_type) > 100 \
                or not EVENT_TYPE.fullmatch(event_type):
            raise InvalidEvent(event_type, "the type must be dotted lowercase words "
                               "(at most 100 characters)", self.session_id)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidEvent(event_type, f"data must be a JSON object, not "
                               f"{type(data).__name__}", self.session_id)
        try:
            encoded = json.dumps(data, separators=(",", ":"), allow_nan=False,
                                 ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:  # UnicodeError: a ValueError
            raise InvalidEvent(event_type, f"data is not JSON: {exc}", self.session_id) from None
        if len(encoded) > self.settings.max_params_bytes:
            raise InvalidEvent(event_type, f"data is {len(encoded)} bytes, over the limit of "
                               f"{self.settings.max_params_bytes}", self.session_id)
        self.events.append((event_type, json.loads(encoded)))


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: Callable[[ActionContext, Any], Any]
    params_model: type[BaseModel] | None = None
    time_limit: float | None = None


_REGISTRY: dict[str, ActionSpec] = {}


def action(name: str, *, params: type[BaseModel] | None = None,
           time_limit: float | None = None) -> Callable[[F], F]:
    """Register `fn(ctx, params)` as action `name` (dotted lowercase, e.g. "context.add_message").

    `params`: a pydantic model the params must satisfy (checked at send and before running).
    `time_limit`: seconds, overriding the `action_time_limit` setting.
    """
    if not is_action_name(name):
        raise ValueError(f"invalid action name {name!r}: use dotted lowercase words")

    def register(fn: F) -> F:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"action {name!r} is already registered by {existing.fn!r}")
        _REGISTRY[name] = ActionSpec(name, fn, params, time_limit)
        return fn

    return register


def get_action(name: str, session_id: str | None = None) -> ActionSpec:
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownAction(str(name), session_id)
    return spec


def _not_here(ctx: ActionContext, params: Any) -> Any:
    raise UnknownAction(ctx.action, ctx.session_id)


def action_spec_or_name(name: str, session_id: str | None = None) -> ActionSpec:
    """The registered spec, or, for a well-formed name registered elsewhere (a worker that
    imports the app's modules), a spec with no params model: the worker validates it.
    A malformed name raises `UnknownAction`."""
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is not None:
        return spec
    if not is_action_name(name):
        raise UnknownAction(str(name)[:100], session_id)
    return ActionSpec(name, _not_here)


def is_action_name(name: object) -> bool:
    """True for a well-formed action name (dotted lowercase words, at most 100 characters)."""
    return isinstance(name, str) and len(name) <= 100 and bool(ACTION_NAME.fullmatch(name))


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def registered_actions() -> list[str]:
    return sorted(_REGISTRY)


def load_action_modules(settings: Settings) -> None:
    """Import the built-in actions and the app's `action_modules` so their actions register,
    and register the `telemetry_hooks`."""
    telemetry.load_hooks(settings.telemetry_hooks)
    for module in (*BUILTIN_MODULES, *settings.action_modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError("JIDO_TASKS_ACTION_MODULES",
                              f"cannot import {module!r}: {exc}") from exc


def check_params(spec: ActionSpec, params: Any, session_id: str | None,
                 max_bytes: int, max_depth: int) -> tuple[JsonObject, str]:
    """Validate params at the edge (a JSON object, nested at most `max_depth` deep, at most
    `max_bytes` once encoded, no NaN or infinity; the action's model if it has one); return
    them with their JSON encoding. The depth is checked before anything recurses."""
    if params is None:
        params = {}
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json")
    if not isinstance(params, dict):
        raise InvalidParams(session_id, spec.name,
                            f"params must be a JSON object, not {type(params).__name__}")
    try:
        encoded = bounds.dumps(params, max_depth=max_depth, max_bytes=max_bytes)
    except ValueError as exc:
        raise InvalidParams(session_id, spec.name, f"params are {exc}") from None
    if spec.params_model is not None:
        parse_params(spec, params, session_id)
    return params, encoded


def parse_params(spec: ActionSpec, params: JsonObject, session_id: str | None) -> Any:
    """The params as the action receives them (a model instance if it declared one)."""
    if spec.params_model is None:
        return params
    try:
        return spec.params_model.model_validate(params)
    except ValidationError as exc:
        raise InvalidParams(session_id, spec.name, str(exc)) from exc
