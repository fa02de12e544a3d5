"""Names shared by the client and the workers (Celery task names)."""

SWEEP_TASK = "jido_tasks.sweep"
DRAIN_TASK = "jido_tasks.drain"
PING_TASK = "jido_tasks.ping"
