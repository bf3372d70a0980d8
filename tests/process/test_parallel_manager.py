"""A definition with steps in parallel runs through ``SagaManager`` on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from support.sagas import T0

from sagalog.domain import Saga, SagaDefinition, SagaStatus, Step
from sagalog.domain.definition import parallel
from sagalog.process import SagaManager, explain
from sagalog.process.clock import ManualClock

TRIP = SagaDefinition(
    "ParallelTrip",
    [
        Step(name="budget", action="Budget.Check", compensation="Budget.Release"),
        parallel(
            Step(name="hotel", action="Hotel.Book", compensation="Hotel.Cancel"),
            Step(
                name="flight",
                action="Flight.Book",
                compensation="Flight.Cancel",
                timeout=timedelta(seconds=30),
            ),
            Step(name="car", action="Car.Rent", compensation="Car.Return"),
        ),
        Step(name="confirm", action="Trip.Confirm", retriable=True),
    ],
)


@pytest.fixture
def trips(database_url: str) -> Iterator[tuple[SagaManager, ManualClock]]:
    clock = ManualClock(T0)
    app = SagaManager([TRIP], database_url, clock=clock)
    yield app, clock
    app.close()


def dispatched(manager: SagaManager, saga_id: object, kind: type[Saga.Event]) -> list[str]:
    return [e.step for e in manager.history(saga_id) if isinstance(e, kind)]  # type: ignore[arg-type, attr-defined]


def test_a_parallel_saga_completes_through_the_manager(
    trips: tuple[SagaManager, ManualClock],
) -> None:
    manager, _ = trips
    saga_id = manager.start("ParallelTrip", {"traveller": "ada"})
    manager.handle_step_completed(saga_id, "budget", {"limit": 900})
    assert manager.get(saga_id).steps_in_flight == ["hotel", "flight", "car"]
    for step in ("car", "hotel", "flight"):
        manager.handle_step_completed(saga_id, step, {step: True})
    manager.handle_step_completed(saga_id, "confirm", "sent")
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.COMPLETED
    assert dispatched(manager, saga_id, Saga.StepDispatched) == [
        "budget",
        "hotel",
        "flight",
        "car",
        "confirm",
    ]


def test_a_timed_out_branch_rolls_back_its_siblings_first_then_the_budget(
    trips: tuple[SagaManager, ManualClock],
) -> None:
    manager, clock = trips
    saga_id = manager.start("ParallelTrip", {"traveller": "ada"})
    manager.handle_step_completed(saga_id, "budget", None)
    manager.handle_step_completed(saga_id, "hotel", None)
    clock.advance(timedelta(seconds=31))
    assert manager.tick() == 1
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.COMPENSATING
    assert sorted(saga.steps_in_flight) == ["car", "flight", "hotel"]
    manager.handle_compensation_completed(saga_id, "flight")
    manager.handle_compensation_completed(saga_id, "hotel")
    assert dispatched(manager, saga_id, Saga.CompensationDispatched) == ["car", "flight", "hotel"]
    manager.handle_compensation_completed(saga_id, "car")
    manager.handle_compensation_completed(saga_id, "budget")
    assert manager.get(saga_id).status is SagaStatus.FAILED
    assert dispatched(manager, saga_id, Saga.CompensationDispatched)[-1] == "budget"
    # the stored log rebuilds to the same saga
    assert manager.get(saga_id) == manager.get(saga_id, version=manager.get(saga_id).version)


def test_explain_says_which_branches_it_waits_for_and_which_completed(
    trips: tuple[SagaManager, ManualClock],
) -> None:
    manager, _ = trips
    saga_id = manager.start("ParallelTrip", {"traveller": "ada"})
    manager.handle_step_completed(saga_id, "budget", None)
    manager.handle_step_completed(saga_id, "hotel", None)
    text = " ".join(explain(manager.get(saga_id)))
    assert "It waits for 'flight' and 'car'; 'budget' and 'hotel' completed." in text
