"""Publishing a session's drain: the Celery message that asks a worker to apply its actions.

A drain message is published by a send that newly scheduled its session and by the sweep's
recovery; both call `publish_drain`, so neither needs the other's machinery.
"""

from __future__ import annotations

import logging
from typing import Any

from jido_tasks.core.task_names import DRAIN_TASK
from jido_tasks.settings import Settings

log = logging.getLogger(__name__)

def publish_drain(celery: Any, settings: Settings, session_id: str) -> bool:
    """Publish a Celery drain message for the session; False (logged) if the broker refused.

    A failure is not raised: the session's actions are already accepted in Redis, and the next
    send or the sweep publishes again once the drain flag is stale.
    """
    # ignore_result: nobody reads a drain's result, so the result backend need not subscribe
    # to (and later unsubscribe from) its channel on every publish
    try:
        celery.send_task(DRAIN_TASK, args=[session_id], queue=settings.queue,
                         ignore_result=True)
    except Exception:  # broker down: recovery republishes
        log.exception("could not publish drain for session %s; recovery will retry",
                      session_id)
        return False
    return True


def publish_drains(celery: Any, settings: Settings, session_ids: list[str]) -> None:
    """Publish a drain for each session, as one batch where the transport can (kombu's
    `Producer.batch`: one pipeline on Redis), so many publishes cost one round trip.

    If the batch fails, each session is published on its own (`publish_drain`: a failure is
    logged and left to recovery), so a batch never loses a drain that could be published (a
    drain published twice is harmless: the second finds the mailbox empty or the lease held).
    """
    try:  # ignore_result: as in publish_drain
        if len(session_ids) == 1:  # a batch of one only adds the batch's own overhead
            celery.send_task(DRAIN_TASK, args=session_ids, queue=settings.queue,
                             ignore_result=True)
            return
        with celery.producer_or_acquire() as producer, producer.batch():
            for session_id in session_ids:
                celery.send_task(DRAIN_TASK, args=[session_id], queue=settings.queue,
                                 producer=producer, ignore_result=True)
    except Exception:  # broker trouble mid-batch: one by one (publish_drain logs failures)
        log.warning("batched drain publishing failed; publishing %d one by one",
                    len(session_ids), exc_info=True)
        for session_id in session_ids:
            publish_drain(celery, settings, session_id)
