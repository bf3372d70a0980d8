"""Time travel: the saga's state after each event equals the stored saga at that version."""

from __future__ import annotations

from uuid import uuid4

import pytest
from support.sagas import T0

from sagalog.domain import SagaNotFoundError
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.debugging.replay import VersionOutOfRangeError, replay, snapshot_of, state_at


def test_replay_gives_one_step_per_event_with_the_state_after_it(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Order", {"n": 1})
    clock.advance(1)
    manager.handle_step_completed(saga_id, "reserve", {"hold": 7})
    clock.advance(1)
    manager.handle_step_failed(saga_id, "charge", "declined")  # a retry in 10 s
    steps = replay(manager, saga_id)
    assert [s.event_type for s in steps] == [
        "SagaStarted",
        "StepDispatched",
        "StepCompleted",
        "StepDispatched",
        "StepFailed",
        "StepRetryScheduled",
    ]
    assert [s.version for s in steps] == list(range(1, 7))
    first_dispatch = steps[1].state
    assert first_dispatch.status == "PENDING"
    assert first_dispatch.pending is not None
    assert (first_dispatch.pending.name, first_dispatch.pending.attempt) == (
        "Inventory.Reserve",
        1,
    )
    assert first_dispatch.next_wakeup == T0.replace(second=30)
    assert steps[2].state.step("reserve").status == "COMPLETED"
    assert steps[2].state.pending is None
    last = steps[-1].state
    assert last.step("charge").status == "RETRY_SCHEDULED"
    assert last.step("charge").attempt == 1
    assert last.next_wakeup == clock.now.replace(second=12)
    assert last.last_error == "declined"
    assert steps[-1].timestamp == clock.now
    assert steps[0].state.step("ship").status == "NOT_STARTED"


def test_every_replayed_state_equals_the_stored_saga_at_that_version(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Order", {"n": 2})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_completed(saga_id, "charge")
    manager.handle_step_failed(saga_id, "ship", "no courier")
    manager.handle_compensation_completed(saga_id, "charge")
    manager.handle_compensation_completed(saga_id, "reserve")
    steps = replay(manager, saga_id)
    assert steps[-1].state.status == "FAILED"
    for step in steps:
        assert step.state == snapshot_of(manager.get(saga_id, step.version))
        assert state_at(manager, saga_id, step.version) == step.state


def test_state_at_and_replay_serialise_to_json(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"n": 3})
    data = replay(manager, saga_id)[-1].to_json()
    assert data["event_type"] == "StepDispatched"
    assert data["state"]["pending"]["kind"] == "action"
    assert data["state"]["saga_id"] == str(saga_id)
    assert state_at(manager, saga_id, 1).to_json()["pending"] is None


def test_unknown_saga_is_an_error(manager: SagaManager) -> None:
    with pytest.raises(SagaNotFoundError):
        replay(manager, uuid4())
    with pytest.raises(SagaNotFoundError):
        state_at(manager, uuid4(), 1)


@pytest.mark.parametrize("version", [0, -1, 3, 99])
def test_a_version_out_of_range_is_an_error(manager: SagaManager, version: int) -> None:
    saga_id = manager.start("Order", {"n": 4})
    with pytest.raises(VersionOutOfRangeError, match="versions 1 to 2"):
        state_at(manager, saga_id, version)
