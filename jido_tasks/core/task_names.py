"""The Celery task names of jido-tasks: the wire names any Celery client sends by (they
never change with the modules that implement them)."""

SWEEP_TASK = "jido_tasks.sweep"
DRAIN_TASK = "jido_tasks.drain"
PING_TASK = "jido_tasks.ping"
SEND_TASK = "jido_tasks.send"
CREATE_SESSION_TASK = "jido_tasks.create_session"
GET_SESSION_TASK = "jido_tasks.get_session"
GET_STATE_TASK = "jido_tasks.get_state"
LIST_SESSIONS_TASK = "jido_tasks.list_sessions"
TERMINATE_SESSION_TASK = "jido_tasks.terminate_session"
