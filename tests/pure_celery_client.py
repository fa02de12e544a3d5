"""A Celery client that knows nothing of jido_tasks: only task names and JSON (run as a script).

    python tests/pure_celery_client.py BROKER_URL QUEUE N

Creates a session, sends N `test.append` actions by task name, reads every result in order with
`AsyncResult.get`, delivers one send twice (the same task id), sends an unknown action and bad
params, and prints what it saw as JSON. It asserts that it never imported jido_tasks.
"""

from __future__ import annotations

import json
import sys
import uuid

from celery import Celery


def error_of(result: object) -> dict[str, str]:
    try:
        result.get(timeout=60)  # type: ignore[attr-defined]
    except Exception as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "none", "message": ""}


def main() -> None:
    broker, queue, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = Celery(broker=broker, backend=broker)
    app.conf.task_serializer = "json"
    app.conf.accept_content = ["json"]
    app.conf.result_accept_content = ["json"]

    def call(name: str, *args: object, task_id: str | None = None, **kwargs: object) -> object:
        return app.send_task(name, args=list(args), kwargs=kwargs, queue=queue, task_id=task_id)

    entry = call("jido_tasks.create_session", metadata={"client": "pure"}).get(  # type: ignore[attr-defined]
        timeout=60)
    sid = entry["id"]
    sent = [call("jido_tasks.send", sid, "test.append", {"value": i}) for i in range(n)]
    results = [r.get(timeout=120) for r in sent]  # type: ignore[attr-defined]
    ids_are_action_ids = [r.id for r in sent[:3]]  # type: ignore[attr-defined]

    dup_id = str(uuid.uuid4())
    first = call("jido_tasks.send", sid, "test.append", {"value": "dup"}, task_id=dup_id)
    first.get(timeout=60)  # type: ignore[attr-defined]
    again = call("jido_tasks.send", sid, "test.append", {"value": "dup"}, task_id=dup_id)
    dup_result = again.get(timeout=60)  # type: ignore[attr-defined]

    failed = call("jido_tasks.send", sid, "test.fail", {"message": "nope"})
    unknown = call("jido_tasks.send", sid, "no.such_action", {})
    bad_params = call("jido_tasks.send", sid, "test.greet", {"times": 2})
    bad_session = call("jido_tasks.send", "session_../../x", "test.append", {})
    state = call("jido_tasks.get_state", sid).get(timeout=60)  # type: ignore[attr-defined]
    got = call("jido_tasks.get_session", sid).get(timeout=60)  # type: ignore[attr-defined]
    listed = call("jido_tasks.list_sessions").get(timeout=60)  # type: ignore[attr-defined]
    assert "jido_tasks" not in sys.modules, "the pure client imported jido_tasks"
    print(json.dumps({
        "session_id": sid, "entry": entry, "results": results, "ids": ids_are_action_ids,
        "dup_id": dup_id, "dup_result": dup_result, "failed": error_of(failed),
        "failed_id": failed.id, "unknown": error_of(unknown),  # type: ignore[attr-defined]
        "bad_params": error_of(bad_params), "bad_session": error_of(bad_session),
        "state": state, "got": got, "listed": [e["id"] for e in listed],
    }))


if __name__ == "__main__":
    main()
