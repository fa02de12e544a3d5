"""A small app on jido-tasks: its own actions, sent alongside the built-in ones.

Run a worker that knows these actions, then this script (Redis on localhost:6379):

    JIDO_TASKS_ACTION_MODULES=examples.review_app .venv/bin/jido-tasks worker
    JIDO_TASKS_ACTION_MODULES=examples.review_app .venv/bin/python -m examples.review_app
"""

from __future__ import annotations

from pydantic import BaseModel

from jido_tasks import ActionContext, Client, action


class Review(BaseModel):
    path: str
    content: str


@action("review.file", params=Review, time_limit=30)
def review_file(ctx: ActionContext, params: Review) -> dict[str, object]:
    """Count TODOs in a file, remember the finding and announce it."""
    ctx.progress(0.5, f"reading {params.path}")
    todos = params.content.count("TODO")
    reviews = ctx.state.setdefault("reviews", {})
    reviews[params.path] = {"todos": todos}
    if todos:
        ctx.emit("review.todos_found", {"path": params.path, "todos": todos})
    return {"path": params.path, "todos": todos}


@action("review.summary")
def summary(ctx: ActionContext, params: dict[str, object]) -> dict[str, int]:
    """How many files were reviewed and how many TODOs they hold."""
    reviews = ctx.state.get("reviews", {})
    return {"files": len(reviews), "todos": sum(r["todos"] for r in reviews.values())}


def main() -> None:
    with Client() as client:
        session = client.create_session(metadata={"user": "demo"})
        client.send(session.id, "context.add_message",
                    {"role": "user", "content": "please review my files"})
        handles = client.send_many(session.id, [
            ("context.add_file", {"path": "app.py"}),
            ("review.file", {"path": "app.py", "content": "x = 1  # TODO: name"}),
            ("review.file", {"path": "lib.py", "content": "def f(): pass"}),
        ])
        for handle in handles:
            handle.get(timeout=30)
        print(client.call(session.id, "review.summary"))
        print([e.type for e in client.events(session.id)])
        client.terminate_session(session.id)


if __name__ == "__main__":
    main()
