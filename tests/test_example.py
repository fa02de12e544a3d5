"""The example app in examples/ runs against real workers (so it cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.conftest import ROOT, WorkerGroup, free_port, wait_for, worker_env


def test_review_app_example(workers: Callable[..., WorkerGroup]) -> None:
    """examples/review_app.py: its actions load in the worker and its script prints the
    summary and the events."""
    group = workers(1, action_modules=["examples.review_app"])
    proc = subprocess.run([sys.executable, "-m", "examples.review_app"], cwd=ROOT,
                          env=worker_env(group.settings), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "{'files': 2, 'todos': 1}"
    assert "review.todos_found" in lines[1] and "context.file_added" in lines[1]


def test_fastapi_example_streams_events_over_sse(workers: Callable[..., WorkerGroup]) -> None:
    """examples/fastapi_app.py under a real uvicorn, driven by httpx against a real worker:
    create a session, post a message, read the events as server-sent events, resume after
    Last-Event-ID; typed errors come back as HTTP statuses."""
    import httpx

    group = workers(1)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port),
         "--log-level", "warning"], cwd=ROOT, env=worker_env(group.settings))
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/docs", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, 30, interval=0.1, message="uvicorn")
        with httpx.Client(base_url=base, timeout=30) as http:
            sid = http.post("/sessions").json()["id"]
            reply = http.post(f"/sessions/{sid}/messages", json={"content": "hello"})
            assert reply.status_code == 200, reply.text
            assert group.client.get_state(sid)["conversation"][-1]["content"] == "hello"
            events: list[tuple[str, str]] = []
            with http.stream("GET", f"/sessions/{sid}/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                event_id, added = "", 0
                for line in stream.iter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("event: "):
                        events.append((event_id, line[7:]))
                        added += line[7:] == "context.message_added"
                        if added == 1 and line[7:] == "context.message_added":
                            # a message sent while the stream is open arrives on it
                            http.post(f"/sessions/{sid}/messages",
                                      json={"content": "second"}, params={"wait": False})
                        elif added == 2:
                            break
            types = [t for _, t in events]
            assert types[0] == "session.created" and types.count("context.message_added") == 2
            resumed = http.get(f"/sessions/{sid}/events", params={"follow": False},
                               headers={"Last-Event-ID": events[0][0]})
            after = [line[7:] for line in resumed.text.splitlines()
                     if line.startswith("event: ")]
            # The stream above stopped at the second message; its action.succeeded came after.
            assert after[:len(types) - 1] == types[1:]
            assert after[len(types) - 1:] == ["action.succeeded"]
            missing = http.post(f"/sessions/session_{'0' * 32}/messages",
                                json={"content": "x"})
            assert (missing.status_code, missing.json()["error"]) == (404, "SessionNotFound")
            bad = http.get("/sessions/not-an-id/events")
            assert (bad.status_code, bad.json()["error"]) == (400, "InvalidSessionId")
    finally:
        server.terminate()
        server.wait(10)
