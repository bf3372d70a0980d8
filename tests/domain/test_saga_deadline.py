"""A saga deadline: before the pivot it rolls the saga back like a failure; past it, it is noted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from saga_builders import T0, at, collect, event_names, order_definition, start

from sagalog.domain import (
    InvalidDefinitionError,
    Saga,
    SagaDefinition,
    SagaStatus,
    StepStatus,
)


def with_deadline(seconds: float) -> SagaDefinition:
    return SagaDefinition(
        "OrderFulfillment", order_definition().steps, deadline=timedelta(seconds=seconds)
    )


def test_a_definition_without_a_deadline_keeps_its_json_and_fingerprint() -> None:
    plain = order_definition()
    assert "deadline" not in plain.canonical_json()
    timed = with_deadline(60)
    assert '"deadline":"PT1M"' in timed.canonical_json()
    assert timed.fingerprint != plain.fingerprint
    assert SagaDefinition.from_json(timed.canonical_json()) == timed


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(InvalidDefinitionError, match="deadline must be positive"):
        with_deadline(0)


def test_the_next_wakeup_is_the_earlier_of_the_step_timer_and_the_deadline() -> None:
    late = start(with_deadline(100))
    assert late.deadline == at(100)
    assert late.next_wakeup == at(30)  # reserve_inventory's timeout comes first
    early = start(with_deadline(10))
    assert early.next_wakeup == at(10)
    early.complete_step("reserve_inventory", now=at(1))
    assert early.next_wakeup == at(10)  # charge_payment has no timeout: only the deadline


def test_a_passed_deadline_compensates_completed_and_in_flight_steps() -> None:
    saga = start(with_deadline(10))
    saga.complete_step("reserve_inventory", now=at(1))
    saga.collect_events()
    assert saga.fire_due(at(9)) == 0
    assert saga.fire_due(at(10)) == 1
    events = collect(saga)
    assert event_names(events) == [
        "SagaDeadlinePassed",
        "CompensationRequested",
        "CompensationDispatched",
    ]
    passed, requested = events[0], events[1]
    assert isinstance(passed, Saga.SagaDeadlinePassed)
    assert (passed.deadline, passed.past_pivot) == (at(10), False)
    assert isinstance(requested, Saga.CompensationRequested)
    assert requested.failed_step is None
    assert requested.uncertain_steps == ["charge_payment"]  # in flight: uncertain
    assert "deadline" in requested.reason
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.compensation_plan == ["charge_payment", "reserve_inventory"]
    assert saga.deadline_passed
    assert saga.next_wakeup == at(30)  # the refund's 20 s timeout, not the deadline


def test_a_saga_that_ended_or_compensates_ignores_its_deadline() -> None:
    done = start(with_deadline(10))
    for second, name in enumerate(
        ["reserve_inventory", "charge_payment", "create_shipment", "send_confirmation"], 1
    ):
        done.complete_step(name, now=at(second))
    assert done.status is SagaStatus.COMPLETED
    assert done.next_wakeup is None
    assert done.fire_due(at(60)) == 0
    failing = start(with_deadline(10))
    failing.complete_step("reserve_inventory", now=at(1))
    failing.fail_step("charge_payment", "declined", now=at(2))
    assert failing.status is SagaStatus.COMPENSATING
    failing.collect_events()
    assert failing.fire_due(at(10)) == 0  # the release has no timeout; the deadline is moot
    assert collect(failing) == []


def test_past_the_pivot_a_deadline_is_recorded_and_the_saga_goes_on() -> None:
    saga = start(with_deadline(10))
    for second, name in enumerate(["reserve_inventory", "charge_payment", "create_shipment"], 1):
        saga.complete_step(name, now=at(second))
    saga.fail_step("send_confirmation", "smtp down", now=at(4))  # retry due at 9 s
    assert saga.fire_due(at(10)) == 2  # the retry, then the deadline
    events = collect(saga)
    assert event_names(events)[-2:] == ["StepDispatched", "SagaDeadlinePassed"]
    passed = events[-1]
    assert isinstance(passed, Saga.SagaDeadlinePassed)
    assert passed.past_pivot
    assert saga.status is SagaStatus.PENDING
    assert saga.steps["send_confirmation"].status is StepStatus.DISPATCHED
    assert saga.next_wakeup is None
    saga.complete_step("send_confirmation", now=at(11))
    assert saga.is_terminal


def test_a_rebuilt_saga_has_the_same_deadline_and_wakeup() -> None:
    saga = Saga.start(with_deadline(10), {}, saga_id=start().id, now=T0)
    saga.complete_step("reserve_inventory", now=at(1))
    saga.fire_due(at(12))
    events = saga.collect_events()
    rebuilt = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Saga)
    assert (rebuilt.deadline, rebuilt.deadline_passed, rebuilt.next_wakeup) == (
        saga.deadline,
        True,
        saga.next_wakeup,
    )
