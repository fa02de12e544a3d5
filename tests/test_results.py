"""By-name results in Celery's result backend (`store.results`), written as Celery itself
would, on the Celery versions the pins allow and on backends shaped like older ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult

from jido_tasks import Client, Settings
from jido_tasks.models import ActionError, ActionStatus, Outcome
from jido_tasks.store.results import store_outcomes


@pytest.fixture
def celery_client(settings: Settings) -> Iterator[Client]:
    c = Client(settings)
    yield c
    c.close()


def _failed() -> Outcome:
    return Outcome(status=ActionStatus.FAILED,
                   error=ActionError(type="ValueError", message="no such file"))


@pytest.mark.parametrize("shape", ["current", "celery-5.6"])
def test_a_failed_by_name_result_is_stored_and_read_back(celery_client: Client,
                                                         shape: str) -> None:
    """Celery 5.6's RedisBackend has no `failure_expires` (5.7 added it): the write used to
    raise AttributeError there, be swallowed and retried forever, so `AsyncResult.get()`
    for a failed action never returned. Both shapes store the failure with its expiry."""
    backend = celery_client.celery.backend
    if shape == "celery-5.6":
        del backend.failure_expires  # the instance attribute 5.7's __init__ sets
        assert not hasattr(backend, "failure_expires")
    action_id = str(uuid.uuid4())
    store_outcomes(backend, [(action_id, _failed())])
    result = AsyncResult(action_id, app=celery_client.celery)
    with pytest.raises(Exception) as err:
        result.get(timeout=5)
    assert type(err.value).__name__ == "ValueError" and "no such file" in str(err.value)
    ttl = backend.client.ttl(backend.get_key_for_task(action_id))
    assert 0 < ttl <= int(backend.expires)


def test_a_succeeded_by_name_result_is_stored(celery_client: Client) -> None:
    backend = celery_client.celery.backend
    action_id = str(uuid.uuid4())
    store_outcomes(backend, [(action_id, Outcome(status=ActionStatus.SUCCEEDED,
                                                 result={"n": 1}))])
    assert AsyncResult(action_id, app=celery_client.celery).get(timeout=5) == {"n": 1}
