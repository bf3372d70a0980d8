"""Steps in parallel: dispatched when their dependencies completed, compensated in
reverse dependency order, independent compensations side by side."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from saga_builders import SAGA_ID, T0, at, status

from sagalog.domain import (
    InvalidDefinitionError,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagaStatus,
    Step,
    StepStatus,
)
from sagalog.domain.definition import parallel


def trip(*, car_timeout: timedelta | None = None, car_fenced: bool = False) -> SagaDefinition:
    """budget, then hotel, flight and car side by side, then confirm (retriable)."""
    return SagaDefinition(
        "Trip",
        [
            Step(name="budget", action="Budget.Reserve", compensation="Budget.Release"),
            parallel(
                Step(name="hotel", action="Hotel.Book", compensation="Hotel.Cancel"),
                Step(name="flight", action="Flight.Book", compensation="Flight.Cancel"),
                Step(
                    name="car",
                    action="Car.Rent",
                    compensation="Car.Return",
                    timeout=car_timeout,
                    compensate_uncertain=not car_fenced,
                ),
            ),
            Step(name="confirm", action="Trip.Confirm", retriable=True),
        ],
    )


def dispatched(events: Sequence[object], kind: type[Saga.Event]) -> list[str]:
    return [getattr(e, "step") for e in events if isinstance(e, kind)]  # noqa: B009


def started(definition: SagaDefinition) -> Saga:
    saga = Saga.start(definition, {"trip": 1}, saga_id=SAGA_ID, now=T0)
    saga.collect_events()
    return saga


def test_parallel_expands_to_after_and_keeps_a_linear_list_as_it_was() -> None:
    definition = trip()
    assert definition.dependencies == {
        "budget": (),
        "hotel": ("budget",),
        "flight": ("budget",),
        "car": ("budget",),
        "confirm": ("hotel", "flight", "car"),
    }
    assert not definition.is_linear
    plain = [Step(name="a", action="A.a"), Step(name="b", action="B.b")]
    assert SagaDefinition("L", plain).fingerprint == SagaDefinition("L", list(plain)).fingerprint
    assert SagaDefinition("L", plain).is_linear
    assert "after" not in SagaDefinition("L", plain).canonical_json()
    assert '"after":["budget"]' in definition.canonical_json()
    assert SagaDefinition.from_json(definition.canonical_json()) == definition


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([Step(name="a", action="A.a", after=("z",))], "waits for 'z', which is not a step"),
        (
            [Step(name="a", action="A.a"), Step(name="b", action="B.b", after=("a", "a"))],
            "waits for 'a' twice",
        ),
        ([Step(name="a", action="A.a", after=("a",))], "cannot wait for itself"),
        (
            [Step(name="a", action="A.a", after=("b",)), Step(name="b", action="B.b")],
            "stands later in the list",
        ),
        (
            [
                Step(name="a", action="A.a", compensation="A.undo"),
                Step(name="b", action="B.b", after=()),
                Step(name="r", action="R.r", retriable=True, after=("b",)),
            ],
            "step 'a' is compensatable but retriable step 'r' does not wait for it",
        ),
    ],
)
def test_bad_dependencies_are_refused_naming_the_step_and_rule(
    steps: list[Step], message: str
) -> None:
    with pytest.raises(InvalidDefinitionError, match=message):
        SagaDefinition("Bad", steps)


def test_every_ready_step_is_dispatched_in_one_transition_and_the_join_waits() -> None:
    saga = started(trip())
    saga.complete_step("budget", {"budget": 1}, now=at(1))
    events = saga.collect_events()
    assert dispatched(events, Saga.StepDispatched) == ["hotel", "flight", "car"]
    assert saga.steps_in_flight == ["hotel", "flight", "car"]
    saga.complete_step("flight", {"f": 1}, now=at(2))
    saga.complete_step("hotel", {"h": 1}, now=at(3))
    assert dispatched(saga.collect_events(), Saga.StepDispatched) == []
    assert saga.waiting_for == ["car"]
    saga.complete_step("car", {"c": 1}, now=at(4))
    events = saga.collect_events()
    assert dispatched(events, Saga.StepDispatched) == ["confirm"]
    assert events[-1].payload["results"] == {  # type: ignore[attr-defined]
        "budget": {"budget": 1},
        "hotel": {"h": 1},
        "flight": {"f": 1},
        "car": {"c": 1},
    }
    assert saga.past_pivot
    saga.complete_step("confirm", None, now=at(5))
    assert saga.status is SagaStatus.COMPLETED


def test_a_failed_branch_compensates_its_siblings_first_then_the_shared_step() -> None:
    saga = started(trip())
    saga.complete_step("budget", None, now=at(1))
    saga.complete_step("hotel", None, now=at(2))
    saga.collect_events()
    saga.fail_step("flight", "sold out", now=at(3))
    events = saga.collect_events()
    request = next(e for e in events if isinstance(e, Saga.CompensationRequested))
    assert request.uncertain_steps == ["car"]  # in flight when the rollback began
    assert dispatched(events, Saga.StepDispatched) == []
    # hotel and car undo side by side; budget waits for both; flight failed: not undone
    assert dispatched(events, Saga.CompensationDispatched) == ["car", "hotel"]
    saga.complete_compensation("hotel", now=at(4))
    assert dispatched(saga.collect_events(), Saga.CompensationDispatched) == []
    saga.complete_compensation("car", now=at(5))
    assert dispatched(saga.collect_events(), Saga.CompensationDispatched) == ["budget"]
    saga.complete_compensation("budget", now=at(6))
    assert saga.status is SagaStatus.FAILED
    assert saga.steps["flight"].status is StepStatus.FAILED


def test_an_abandoned_branch_still_running_blocks_the_compensation_of_what_it_waits_for() -> None:
    saga = started(trip(car_timeout=timedelta(seconds=30), car_fenced=True))
    saga.complete_step("budget", None, now=at(1))
    saga.complete_step("hotel", None, now=at(2))
    saga.fail_step("flight", "sold out", now=at(3))
    events = saga.collect_events()
    assert dispatched(events, Saga.CompensationDispatched) == ["hotel"]
    saga.complete_compensation("hotel", now=at(4))
    assert dispatched(saga.collect_events(), Saga.CompensationDispatched) == []
    assert saga.waiting_for == ["car"]
    assert saga.next_wakeup == at(31)
    # the car's late success is its outcome: its compensation, then the budget's
    saga.complete_step("car", {"c": 1}, now=at(5))
    events = saga.collect_events()
    assert [type(e).__name__ for e in events] == ["StepCompletedLate", "CompensationDispatched"]
    saga.complete_compensation("car", now=at(6))
    assert dispatched(saga.collect_events(), Saga.CompensationDispatched) == ["budget"]


def test_an_abandoned_branch_unblocks_by_failing_or_timing_out() -> None:
    saga = started(trip(car_timeout=timedelta(seconds=30), car_fenced=True))
    saga.complete_step("budget", None, now=at(1))
    saga.fail_step("flight", "sold out", now=at(2))
    saga.complete_compensation("hotel", now=at(3))
    saga.collect_events()
    assert saga.fire_due(at(31)) == 1
    events = saga.collect_events()
    assert [type(e).__name__ for e in events] == ["StepTimedOut", "CompensationDispatched"]
    assert events[-1].step == "budget"  # type: ignore[attr-defined]

    saga = started(trip(car_timeout=timedelta(seconds=30), car_fenced=True))
    saga.complete_step("budget", None, now=at(1))
    saga.fail_step("flight", "sold out", now=at(2))
    saga.complete_compensation("hotel", now=at(3))
    saga.collect_events()
    saga.fail_step("car", "no cars", now=at(4))
    events = saga.collect_events()
    assert [type(e).__name__ for e in events] == ["StepFailed", "CompensationDispatched"]


def test_timeouts_are_per_step_and_the_earliest_fires_first() -> None:
    definition = SagaDefinition(
        "Two",
        [
            Step(name="a", action="A.a", compensation="A.u", timeout=timedelta(seconds=50)),
            Step(
                name="b", action="B.b", compensation="B.u", timeout=timedelta(seconds=10), after=()
            ),
        ],
    )
    saga = started(definition)
    assert saga.next_wakeup == at(10)
    saga.complete_step("b", None, now=at(5))
    assert saga.next_wakeup == at(50)
    saga.collect_events()
    assert saga.fire_due(at(50)) >= 1
    events = saga.collect_events()
    assert [type(e).__name__ for e in events][:2] == ["StepTimedOut", "CompensationRequested"]
    assert dispatched(events, Saga.CompensationDispatched) == ["b", "a"]


def test_a_parallel_saga_rebuilds_to_the_live_state() -> None:
    replayed = Saga.start(trip(), {"trip": 1}, saga_id=SAGA_ID, now=T0)
    replayed.complete_step("budget", None, now=at(1))
    replayed.fail_step("hotel", "full", now=at(2))
    log = replayed.collect_events()
    rebuilt = None
    for event in log:
        rebuilt = event.mutate(rebuilt)
    assert rebuilt is not None
    assert rebuilt.steps == replayed.steps
    assert rebuilt.compensation_plan == replayed.compensation_plan == ["car", "flight", "budget"]


def test_two_branches_that_give_up_are_dead_lettered_one_after_the_other() -> None:
    once = RetryPolicy(max_attempts=1)
    definition = SagaDefinition(
        "Twice",
        [
            Step(name="a", action="A.a", compensation="A.u", compensation_retry=once),
            Step(name="b", action="B.b", compensation="B.u", compensation_retry=once, after=()),
            Step(name="c", action="C.c", after=("a", "b")),
        ],
    )
    saga = started(definition)
    saga.complete_step("a", None, now=at(1))
    saga.complete_step("b", None, now=at(2))
    saga.fail_step("c", "no", now=at(3))
    saga.fail_compensation("a", "down", now=at(4))
    saga.fail_compensation("b", "down too", now=at(5))
    assert saga.dead_letter is not None
    assert saga.dead_letter.step == "a"
    saga.resolve(actor="ops", reason="undone by hand", now=at(6))
    assert saga.status is SagaStatus.DEAD_LETTERED
    assert saga.dead_letter is not None
    assert saga.dead_letter.step == "b"
    saga.resolve(actor="ops", reason="undone by hand", now=at(7))
    assert status(saga) is SagaStatus.FAILED
