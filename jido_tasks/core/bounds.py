"""Bounds on JSON from outside: nesting depth and size, checked before anything is parsed or
encoded deeply.

Python's json module and pydantic recurse once per nesting level, so a document nested
10,000 deep raises `RecursionError` (or pydantic's own limit) far from the edge that took it.
Every JSON-ish value from outside (metadata, llm_config, config, params, snapshot documents,
the command line's JSON options) is checked here first, by code that never recurses: a walk
with an explicit stack for Python values, a scan of the brackets outside strings for text.
A refusal is a `ValueError` naming the problem, which each edge turns into its own typed
error (`InvalidParams`, `InvalidArgument`, `SnapshotCorrupt`, ...).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _open, _close in (b"[]", b"{}"):
    _STEP[_open], _STEP[_close] = 1, -1


def depth_of(value: Any, limit: int, *, strict: bool = False) -> int:
    """Nesting depth of a Python value (a dict, list or tuple is one level more than its
    deepest item; anything else is 0), walked without recursion. The walk stops as soon as
    it is past `limit` and returns `limit + 1`, so a value that contains itself ends too.

    With `strict`, what JSON would not read back the same raises `ValueError`: a key that is
    not a string (it would come back as one) or a string holding a surrogate code point
    (written as an escape that a strict reader refuses or turns into another character)."""
    if not isinstance(value, (dict, list, tuple)):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            if strict:
                _check_keys(item)
            children: Any = item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth))
            elif strict and isinstance(child, str):
                _check_string(child)
    return deepest


def _check_keys(item: dict[Any, Any]) -> None:
    for key in item:
        if not isinstance(key, str):
            raise ValueError(f"not JSON: object keys must be strings, not {type(key).__name__}")
        _check_string(key)


def _check_string(text: str) -> None:
    if not text.isascii() and (found := _SURROGATE.search(text)):
        raise ValueError(f"not JSON: a string holds the surrogate U+{ord(found[0]):04X}")


def text_depth(raw: bytes) -> int:
    """Nesting depth of JSON text: brackets outside strings. Linear time in C loops, no
    recursion (text that is not JSON gets some depth here and fails its parse later).

    Backslashes occur only inside strings: dropping each escaped backslash, then each escaped
    quote, leaves the quotes that open and close strings, so every other piece between quotes
    is outside them."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[0::2])
    brackets = outside.translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def dumps(value: Any, *, max_depth: int, max_bytes: int) -> str:
    """Compact, strict JSON of `value` (no NaN or infinity), or `ValueError` naming the problem:
    nested deeper than `max_depth`, not JSON (or not read back the same: see `depth_of`), or
    longer than `max_bytes` once encoded."""
    if isinstance(value, str):
        _check_string(value)
    if depth_of(value, max_depth, strict=True) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:  # NaN/infinity, a non-JSON type, a cycle
        raise ValueError(f"not JSON: {exc}") from None
    if len(text) > max_bytes:  # ensure_ascii: one byte per character
        raise ValueError(f"{len(text)} bytes, over the limit of {max_bytes}")
    return text


def loads(raw: str | bytes, *, max_depth: int, max_bytes: int) -> Any:
    """Parse JSON text of at most `max_bytes` (UTF-8) nested at most `max_depth` deep, with no
    NaN or infinity; else `ValueError` naming the problem. Size and depth are checked before
    the parse."""
    if len(raw) > max_bytes:  # a str's UTF-8 is never shorter than its characters
        raise ValueError(f"{len(raw)} bytes or more, over the limit of {max_bytes}")
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes, over the limit of {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not JSON: not UTF-8 text ({exc.reason} at byte {exc.start})"
                         ) from None
    opening = data.count(b"[") + data.count(b"{")  # at most that deep: no scan needed
    if opening > max_depth and text_depth(data) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity constant
        raise ValueError(f"not JSON: {exc}") from None
