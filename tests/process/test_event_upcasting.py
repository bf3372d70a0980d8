"""Old events keep loading after an event class evolves (eventsourcing's upcasting).

``Saga.SagaFailed`` gained ``failed_step`` in class version 2. A version-1
``SagaFailed`` — the shape written before, with no ``failed_step`` and no
``class_version`` in its state — is written here straight into the store through
the recorder, as an older sagalog left it, and then read back through every
reader: ``manager.get``, ``history``, replay and the projections.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from sagalog.domain import Saga, SagaDefinition, SagaStatus, Step
from sagalog.process import SagaManager, replay
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector, SagaViews

SHOP = SagaDefinition(
    "Shop",
    [
        Step(name="reserve", action="Inventory.Reserve", compensation="Inventory.Release"),
        Step(name="charge", action="Payment.Charge", compensation="Payment.Refund"),
    ],
)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager([SHOP], database_url, clock=clock)
    yield app
    app.close()


def _compensating_saga(manager: SagaManager) -> UUID:
    """A saga whose step ``charge`` failed and whose one compensation was dispatched."""
    saga_id = manager.start("Shop", {"order": 7})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_failed(saga_id, "charge", "card declined")
    return saga_id


def _raw(manager: SagaManager, event_class: type[Saga.Event], state: dict[str, Any]) -> StoredEvent:
    """A stored event with exactly ``state`` (no ``class_version``: version 1)."""
    return StoredEvent(
        originator_id=state["originator_id"],
        originator_version=state["originator_version"],
        topic=get_topic(event_class),
        state=manager.mapper.transcoder.encode(state),
    )


def _write_version_1_ending(manager: SagaManager, saga_id: UUID, clock: ManualClock) -> None:
    """Record the compensation's success and a version-1 ``SagaFailed``, raw."""
    saga = manager.get(saga_id)
    common = {"originator_id": saga_id, "correlation_id": saga_id, "causation_id": None}
    moment = clock.advance(3)
    manager.recorder.insert_events(
        [
            _raw(
                manager,
                Saga.CompensationCompleted,
                {
                    **common,
                    "originator_version": saga.version + 1,
                    "timestamp": moment,
                    "step": "reserve",
                    "attempt": 1,
                },
            ),
            _raw(
                manager,
                Saga.SagaFailed,
                {
                    **common,
                    "originator_version": saga.version + 2,
                    "timestamp": moment,
                    "reason": saga.failure_reason,
                },
            ),
        ]
    )


def test_a_version_1_saga_failed_loads_with_failed_step_none_everywhere(
    manager: SagaManager, clock: ManualClock, database_url: str
) -> None:
    saga_id = _compensating_saga(manager)
    _write_version_1_ending(manager, saga_id, clock)
    stored = manager.recorder.select_events(saga_id, desc=True, limit=1)[0]
    assert b"failed_step" not in stored.state
    assert b"class_version" not in stored.state

    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    assert saga.failure_reason == "step 'charge' failed after 1 attempt: card declined"
    last = manager.history(saga_id)[-1]
    assert isinstance(last, Saga.SagaFailed)
    assert last.failed_step is None
    assert last.reason == saga.failure_reason

    steps = replay(manager, saga_id)
    assert steps[-1].event_type == "SagaFailed"
    assert steps[-1].state.status == "FAILED"

    views = SagaViews(database_url)
    try:
        SagaProjector(manager, views).catch_up()
        summary = views.get(saga_id)
        assert summary is not None
        assert (summary.status, summary.failure_reason) == ("FAILED", saga.failure_reason)
        assert views.timeline(saga_id)[-1].event_type == "SagaFailed"
    finally:
        views.close()


def test_a_new_saga_failed_is_stored_as_version_2_with_its_failed_step(
    manager: SagaManager,
) -> None:
    saga_id = _compensating_saga(manager)
    manager.handle_compensation_completed(saga_id, "reserve")
    stored = manager.recorder.select_events(saga_id, desc=True, limit=1)[0]
    state = manager.mapper.transcoder.decode(stored.state)
    assert (state["class_version"], state["failed_step"]) == (2, "charge")
    last = manager.history(saga_id)[-1]
    assert isinstance(last, Saga.SagaFailed)
    assert last.failed_step == "charge"


def test_an_aborted_saga_fails_with_no_failed_step(manager: SagaManager) -> None:
    saga_id = manager.start("Shop", {"order": 8})
    manager.handle_step_completed(saga_id, "reserve")
    manager.abort(saga_id, actor="ops", reason="customer cancelled")
    manager.handle_compensation_completed(saga_id, "charge")  # in flight at the abort
    manager.handle_compensation_completed(saga_id, "reserve")
    last = manager.history(saga_id)[-1]
    assert isinstance(last, Saga.SagaFailed)
    assert last.failed_step is None
    assert manager.get(saga_id).status is SagaStatus.FAILED


def test_upcasting_fills_in_what_version_1_did_not_record() -> None:
    state: dict[str, Any] = {"reason": "r"}
    Saga.SagaFailed.upcast_v1_v2(state)
    assert state == {"reason": "r", "failed_step": None}
    assert Saga.SagaFailed.class_version == 2
