"""Built-in actions (context, cache, coordinator), limits and events.

Pure action logic: drained in the test process (`burst`: real Redis, real Lua, the real
`runtime.drain`); the worker subprocess paths are covered by the session-work tests."""

from __future__ import annotations

from typing import Any

import pytest

from jido_tasks import ActionFailed, Client, InvalidParams
from tests.conftest import BurstClient


@pytest.fixture
def c(burst_client: BurstClient) -> Client:
    return burst_client


def types(c: Client, sid: str) -> list[str]:
    return [e.type for e in c.events(sid)]


def test_history_is_capped_oldest_dropped(c: Client) -> None:
    """add_message keeps at most max_history messages, dropping the oldest; one event each."""
    sid = c.create_session(config={"max_history": 3}).id
    for i in range(5):
        out = c.call(sid, "context.add_message", {"role": "user", "content": f"m{i}"})
    assert out["count"] == 3
    history = c.call(sid, "context.history")
    assert [m["content"] for m in history] == ["m2", "m3", "m4"]
    assert all(set(m) == {"role", "content", "timestamp"} for m in history)
    assert types(c, sid).count("context.message_added") == 5
    assert c.call(sid, "context.clear") == {"cleared": 3}
    assert c.call(sid, "context.history") == []
    assert "context.cleared" in types(c, sid)


def test_message_role_is_validated_at_send(c: Client) -> None:
    """An unknown role or a missing content is refused by send; nothing is queued."""
    sid = c.create_session().id
    with pytest.raises(InvalidParams):
        c.send(sid, "context.add_message", {"role": "robot", "content": "x"})
    with pytest.raises(InvalidParams):
        c.send(sid, "context.add_message", {"role": "user"})
    assert c.layer.redis.llen(c.layer.keys.session(sid).mailbox) == 0


def test_active_files_dedup_cap_and_events_only_on_change(c: Client) -> None:
    """add_file ignores duplicates (no event), drops the oldest past max_files; remove_file
    also drops the file's index entry."""
    sid = c.create_session(config={"max_files": 2}).id
    assert c.call(sid, "context.add_file", {"path": "a.py"})["added"] is True
    assert c.call(sid, "context.add_file", {"path": "a.py"})["added"] is False
    c.call(sid, "context.add_file", {"path": "b.py"})
    out = c.call(sid, "context.add_file", {"path": "c.py"})
    assert out["dropped"] == ["a.py"]
    assert [f["path"] for f in c.call(sid, "context.active_files")] == ["b.py", "c.py"]
    assert types(c, sid).count("context.file_added") == 3
    c.call(sid, "context.update_file_index", {"path": "b.py", "metadata": {"lang": "py"}})
    removed = c.call(sid, "context.remove_file", {"path": "b.py"})
    assert removed == {"removed": True, "index_removed": True, "count": 1}
    assert c.call(sid, "context.remove_file", {"path": "zzz"})["removed"] is False
    assert types(c, sid).count("context.file_removed") == 1
    assert "b.py" not in c.call(sid, "context.file_index")


def test_file_index_merges_and_stamps_access(c: Client) -> None:
    """update_file_index merges metadata and sets last_accessed."""
    sid = c.create_session().id
    first = c.call(sid, "context.update_file_index", {"path": "x", "metadata": {"a": 1}})
    second = c.call(sid, "context.update_file_index", {"path": "x", "metadata": {"b": 2}})
    assert second["a"] == 1 and second["b"] == 2
    assert second["last_accessed"] >= first["last_accessed"]
    assert c.call(sid, "context.file_index") == {"x": second}


def test_build_context(c: Client) -> None:
    """build returns the requested sections, limited, with counts in metadata."""
    sid = c.create_session().id
    for i in range(4):
        c.send(sid, "context.add_message", {"role": "user", "content": f"m{i}"})
    for p in ("a", "b", "c"):
        c.send(sid, "context.add_file", {"path": p})
    c.send(sid, "context.update_file_index", {"path": "a", "metadata": {"k": 1}})
    full: dict[str, Any] = c.call(sid, "context.build")
    assert set(full) == {"session_id", "conversation", "files", "file_index", "metadata"}
    assert full["session_id"] == sid
    assert (full["metadata"]["conversation_count"], full["metadata"]["active_file_count"]) == (4, 3)
    part = c.call(sid, "context.build", {"include": ["conversation", "files"],
                                         "max_messages": 2, "max_files": 1})
    assert [m["content"] for m in part["conversation"]] == ["m2", "m3"]
    assert [f["path"] for f in part["files"]] == ["c"]
    assert "file_index" not in part
    none = c.call(sid, "context.build", {"include": ["conversation"], "max_messages": 0})
    assert none["conversation"] == []
    with pytest.raises(InvalidParams):
        c.send(sid, "context.build", {"include": ["secrets"]})


def test_cache_put_get_invalidate(c: Client) -> None:
    """The session cache keeps file contents and analyses per path until invalidated."""
    sid, other = c.create_session().id, c.create_session().id
    c.call(sid, "cache.put_file", {"path": "f", "content": "print(1)"})
    c.call(sid, "cache.put_analysis", {"path": "f", "analysis": {"issues": 0}})
    assert c.call(sid, "cache.get_file", {"path": "f"})["content"] == "print(1)"
    assert c.call(sid, "cache.get_analysis", {"path": "f"})["analysis"] == {"issues": 0}
    assert c.call(other, "cache.get_file", {"path": "f"}) is None  # isolated per session
    assert c.call(sid, "cache.invalidate", {"path": "f"}) == {"path": "f", "file": True,
                                                              "analysis": True}
    assert c.call(sid, "cache.get_file", {"path": "f"}) is None


def test_coordinator_records_and_announces(c: Client) -> None:
    """analysis_complete, issue_found and chat_request are recorded in state with events."""
    sid = c.create_session().id
    c.call(sid, "coordinator.analysis_complete", {"analysis_type": "lint", "results": [1],
                                                  "duration_ms": 12})
    c.call(sid, "coordinator.issue_found", {"file": "a.py", "line": 3, "severity": "high"})
    task = c.call(sid, "coordinator.chat_request", {"message": "help"})
    assert task["type"] == "chat" and task["message"] == "help"
    state = c.get_state(sid)
    coord = state["coordinator"]
    assert coord["analyses"][0]["analysis_type"] == "lint"
    assert coord["issues"][0]["severity"] == "high"
    assert coord["active_tasks"][0]["message"] == "help"
    assert state["conversation"][-1]["content"] == "help"
    got = types(c, sid)
    for expected in ("analysis.complete", "issue.found", "chat.received",
                     "context.message_added"):
        assert expected in got
    with pytest.raises(InvalidParams):
        c.send(sid, "coordinator.analysis_complete", {"results": []})


def test_action_error_leaves_built_in_state_alone(c: Client) -> None:
    """A failing action between built-ins changes nothing they stored."""
    sid = c.create_session().id
    c.call(sid, "context.add_message", {"role": "user", "content": "kept"})
    before = c.get_state(sid)
    with pytest.raises(ActionFailed):
        c.call(sid, "test.fail")
    assert c.get_state(sid) == before
