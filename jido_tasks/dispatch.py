"""Celery task names shared by clients and workers, and publishing a session's drain.

A drain message is published by a send that newly scheduled its session and by the sweep's
recovery; both call `publish_drain`, so neither needs the other's machinery.
"""

from __future__ import annotations

import logging
from typing import Any

from jido_tasks.settings import Settings

log = logging.getLogger(__name__)

SWEEP_TASK = "jido_tasks.sweep"
DRAIN_TASK = "jido_tasks.drain"
PING_TASK = "jido_tasks.ping"
SEND_TASK = "jido_tasks.send"
CREATE_SESSION_TASK = "jido_tasks.create_session"
GET_SESSION_TASK = "jido_tasks.get_session"
GET_STATE_TASK = "jido_tasks.get_state"
LIST_SESSIONS_TASK = "jido_tasks.list_sessions"
TERMINATE_SESSION_TASK = "jido_tasks.terminate_session"


def publish_drain(celery: Any, settings: Settings, session_id: str) -> bool:
    """Publish a Celery drain message for the session; False (logged) if the broker refused.

    A failure is not raised: the session's actions are already accepted in Redis, and the next
    send or the sweep publishes again once the drain flag is stale.
    """
    try:
        celery.send_task(DRAIN_TASK, args=[session_id], queue=settings.queue)
    except Exception:  # broker down: recovery republishes
        log.exception("could not publish drain for session %s; recovery will retry",
                      session_id)
        return False
    return True
