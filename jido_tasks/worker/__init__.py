"""What a Celery worker runs: the Celery app (`app`; `jido_tasks.celery_app` is its old
path), the task bodies (`tasks`), the per-process worker services (`services`), the drain
(`drain`), lease heartbeats (`heartbeat`), the fleet record (`fleet`), the light recovery
(`recovery`) and by-name results and Flower events (`reporting`). The broker transport with
the reliable fetch is `store.transport`.

May import: the base modules, `store`, `core`, `client` and `ops` (the sweep task, start-up
checks, log formats). Never `cli`.
"""
