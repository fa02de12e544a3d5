"""The rules of sessions and their work, shared by both clients and the worker.

Owns what is decided without I/O of its own: session rules and registry plans (`sessions`),
action registration (`actions`), send and record requests (`requests`), the one wait policy
of both clients (`waiter`), state parts (`state`), events decoding (`events`), bounds on
outside JSON (`bounds`), the key layout check (`layout`), the metrics counters' names
(`counters`), the Celery task names (`task_names`), the drain message (`drains`) and the
Celery configuration (`celery_config`). A core function runs its plan through the
layer or Celery app it is given; it never opens a connection of its own.

May import: the top-level base modules (`errors`, `models`, `settings`, `telemetry`) and
`store`. Never `client`, `worker`, `ops` or `cli`.
"""
