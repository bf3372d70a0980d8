"""Compensation: newest first, one at a time, retried by its policy, then dead-lettered."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import assume, given
from hypothesis import strategies as st
from saga_builders import (
    SAGA_ID,
    T0,
    at,
    collect,
    event_names,
    order_definition,
    reach_compensation_of_payment,
    start,
)

from sagalog.domain import (
    CommandKind,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagaStatus,
    Step,
    StepStatus,
)
from sagalog.domain.saga import DeadLetter
from sagalog.testing.strategies import definitions


def test_compensation_runs_newest_first_and_one_at_a_time() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", {"reservation": "r-1"}, now=at(1))
    saga.complete_step("charge_payment", {"charge": "c-1"}, now=at(2))
    saga.collect_events()
    saga.fail_step("create_shipment", "no carrier", now=at(3))
    events = collect(saga)
    assert event_names(events) == ["StepFailed", "CompensationRequested", "CompensationDispatched"]
    assert saga.compensation_plan == ["charge_payment", "reserve_inventory"]
    first = events[2]
    assert isinstance(first, Saga.CompensationDispatched)
    assert (first.step, first.command_name) == ("charge_payment", "Payment.Refund")
    assert saga.step_state("reserve_inventory").status is StepStatus.COMPLETED  # still waiting
    saga.complete_compensation("charge_payment", now=at(4))
    events = collect(saga)
    assert event_names(events) == ["CompensationCompleted", "CompensationDispatched"]
    second = events[1]
    assert isinstance(second, Saga.CompensationDispatched)
    assert second.step == "reserve_inventory"
    saga.complete_compensation("reserve_inventory", now=at(5))
    events = collect(saga)
    assert event_names(events) == ["CompensationCompleted", "SagaFailed"]
    assert saga.status is SagaStatus.FAILED
    assert saga.steps["charge_payment"].status is StepStatus.COMPENSATED
    assert saga.steps["reserve_inventory"].status is StepStatus.COMPENSATED
    assert saga.steps["create_shipment"].status is StepStatus.FAILED


def test_a_compensation_carries_the_saga_data_and_the_step_result() -> None:
    saga = start(data={"order": 42})
    reach_compensation_of_payment(saga)
    command = saga.pending_command
    assert command is not None
    assert command.kind is CommandKind.COMPENSATION
    assert command.payload == {"data": {"order": 42}, "result": {"charge": "c-1"}}


def test_a_compensation_deadline_uses_its_own_timeout_or_else_the_step_timeout() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    assert saga.pending_command is not None
    assert saga.pending_command.deadline == at(3) + timedelta(seconds=20)  # its own
    saga.complete_compensation("charge_payment", now=at(4))
    assert saga.pending_command is not None
    assert saga.pending_command.deadline == at(4) + timedelta(seconds=30)  # the step's


def test_steps_without_a_compensation_are_skipped() -> None:
    definition = SagaDefinition(
        "Trip",
        [
            Step(name="book_hotel", action="Hotel.Book", compensation="Hotel.Cancel"),
            Step(name="notify", action="Mail.Send"),
            Step(name="book_flight", action="Flight.Book"),
        ],
    )
    saga = start(definition)
    saga.complete_step("book_hotel", now=at(1))
    saga.complete_step("notify", now=at(2))
    saga.fail_step("book_flight", "sold out", now=at(3))
    assert saga.compensation_plan == ["book_hotel"]
    assert saga.pending_command is not None
    assert saga.pending_command.step == "book_hotel"


def test_a_saga_with_nothing_to_compensate_fails_at_once() -> None:
    saga = start()
    saga.fail_step("reserve_inventory", "out of stock", now=at(1))
    assert event_names(collect(saga)) == ["StepFailed", "CompensationRequested", "SagaFailed"]
    assert saga.status is SagaStatus.FAILED
    assert saga.failure_reason == "step 'reserve_inventory' failed after 1 attempt: out of stock"


def test_a_failed_compensation_is_retried_after_its_policy_delay() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    saga.fail_compensation("charge_payment", "refund service down", now=at(4))
    events = collect(saga)
    assert event_names(events) == ["CompensationFailed", "CompensationRetryScheduled"]
    scheduled = events[1]
    assert isinstance(scheduled, Saga.CompensationRetryScheduled)
    assert (scheduled.attempt, scheduled.due_at) == (2, at(5))
    assert saga.steps["charge_payment"].status is StepStatus.COMPENSATION_RETRY_SCHEDULED
    assert saga.fire_due(at(4.5)) == 0
    assert saga.fire_due(at(5)) == 1
    dispatched = collect(saga)
    assert event_names(dispatched) == ["CompensationDispatched"]
    assert saga.pending_command is not None
    assert (saga.pending_command.step, saga.pending_command.attempt) == ("charge_payment", 2)


def test_a_compensation_that_keeps_failing_is_dead_lettered_for_an_operator() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    saga.fail_compensation("charge_payment", "down", now=at(4))
    saga.fire_due(at(5))
    saga.fail_compensation("charge_payment", "down", now=at(6))
    saga.fire_due(at(8))
    saga.collect_events()
    saga.fail_compensation("charge_payment", "down for good", now=at(9))
    events = collect(saga)
    assert event_names(events) == ["CompensationFailed", "SagaDeadLettered"]
    assert saga.status is SagaStatus.DEAD_LETTERED
    assert saga.dead_letter == DeadLetter(
        step="charge_payment", kind=CommandKind.COMPENSATION, error="down for good", attempts=3
    )
    assert saga.steps["reserve_inventory"].status is StepStatus.COMPLETED  # not yet undone
    assert saga.pending_command is None
    assert saga.next_wakeup is None


def test_a_compensation_that_times_out_is_retried() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    deadline = at(3) + timedelta(seconds=20)
    assert saga.fire_due(deadline - timedelta(microseconds=1)) == 0
    assert saga.fire_due(deadline) == 1
    events = collect(saga)
    assert event_names(events) == ["CompensationTimedOut", "CompensationRetryScheduled"]
    timed_out = events[0]
    assert isinstance(timed_out, Saga.CompensationTimedOut)
    assert (timed_out.step, timed_out.attempt, timed_out.deadline) == (
        "charge_payment",
        1,
        deadline,
    )


def test_the_default_compensation_policy_gives_five_attempts() -> None:
    definition = SagaDefinition(
        "Two",
        [
            Step(name="hold", action="Svc.Hold", compensation="Svc.Release"),
            Step(name="go", action="Svc.Go"),
        ],
    )
    saga = start(definition)
    saga.complete_step("hold", now=at(1))
    saga.fail_step("go", "no", now=at(2))
    now = at(2)
    for _ in range(4):
        saga.fail_compensation("hold", "still no", now=now)
        assert saga.next_wakeup is not None
        now = saga.next_wakeup
        assert saga.fire_due(now) == 1
    saga.fail_compensation("hold", "still no", now=now)
    assert saga.status is SagaStatus.DEAD_LETTERED
    assert saga.dead_letter is not None
    assert saga.dead_letter.attempts == 5


@given(definitions(), st.integers(0, 7), st.booleans())
def test_any_failure_compensates_the_completed_and_uncertain_compensatable_steps_newest_first(
    definition: SagaDefinition, failing_index: int, time_out: bool
) -> None:
    """Fail step k (by reply or timeout, retries exhausted); every compensation succeeds."""
    names = definition.step_names
    failing = names[failing_index % len(names)]
    assume(not definition.step(failing).retriable)  # never compensated: covered elsewhere
    saga = Saga.start(definition, {}, saga_id=SAGA_ID, now=T0)
    now = T0
    for name in names[: names.index(failing)]:
        saga.complete_step(name, {"of": name}, now=now)
    step = definition.step(failing)
    for _ in range(step.retry.max_attempts):
        if time_out and step.timeout is not None:
            now += step.timeout
            assert saga.fire_due(now) >= 1
        else:
            assert saga.fail_step(failing, "boom", now=now).applied
        if saga.status is not SagaStatus.PENDING:
            break
        if saga.pending_command is None:  # a retry is scheduled: let it come due
            assert saga.next_wakeup is not None
            now = saga.next_wakeup
            assert saga.fire_due(now) == 1
    assert saga.status is not SagaStatus.PENDING
    while saga.pending_command is not None:
        assert saga.pending_command.kind is CommandKind.COMPENSATION
        saga.complete_compensation(saga.pending_command.step, now=now)
    events = collect(saga)
    undone = [e.step for e in events if isinstance(e, Saga.CompensationCompleted)]
    done = names[: names.index(failing)]
    # A step that timed out may have been done: it is compensated first (uncertain).
    timed_out = time_out and step.timeout is not None and step.compensate_uncertain
    in_doubt = [failing] if timed_out else []
    assert undone == [n for n in reversed([*done, *in_doubt]) if definition.step(n).compensatable]
    assert saga.status is SagaStatus.FAILED
    assert not any(
        isinstance(e, Saga.StepDispatched)
        for e in events[
            next(i for i, e in enumerate(events) if isinstance(e, Saga.CompensationRequested)) :
        ]
    )


def test_compensation_retry_policies_are_independent_of_action_retry_policies() -> None:
    definition = order_definition(
        payment_retry=RetryPolicy(max_attempts=4),
        compensation_retry=RetryPolicy(max_attempts=1),
    )
    saga = start(definition)
    reach_compensation_of_payment(saga)
    saga.fail_compensation("charge_payment", "no", now=at(4))
    assert event_names(collect(saga)) == ["CompensationFailed", "SagaDeadLettered"]
