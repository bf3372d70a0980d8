"""Failed and timed-out actions: retried by their policy, then compensated or dead-lettered."""

from __future__ import annotations

from datetime import timedelta

from saga_builders import T0, at, collect, event_names, order_definition, start

from sagalog.domain import CommandKind, Outcome, RetryPolicy, Saga, SagaStatus, StepStatus
from sagalog.domain.saga import DeadLetter

PAYMENT_RETRY = RetryPolicy(
    max_attempts=3,
    initial_delay=timedelta(seconds=2),
    backoff_factor=2.0,
    max_delay=timedelta(minutes=1),
)


def charging_saga(retry: RetryPolicy = PAYMENT_RETRY) -> Saga:
    """A saga whose payment is being charged (attempt 1, dispatched at 1 s)."""
    saga = start(order_definition(payment_retry=retry))
    saga.complete_step("reserve_inventory", {"reservation": "r-1"}, now=at(1))
    saga.collect_events()
    return saga


def test_a_failed_step_without_retries_starts_compensation_at_once() -> None:
    saga = charging_saga(RetryPolicy())
    saga.fail_step("charge_payment", "card declined", now=at(2))
    events = collect(saga)
    assert event_names(events) == ["StepFailed", "CompensationRequested", "CompensationDispatched"]
    requested = events[1]
    assert isinstance(requested, Saga.CompensationRequested)
    assert requested.failed_step == "charge_payment"
    assert requested.reason == "step 'charge_payment' failed after 1 attempt: card declined"
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.last_error == "card declined"
    assert saga.failure_reason == requested.reason


def test_a_failed_step_with_retries_left_schedules_its_next_attempt_after_the_delay() -> None:
    saga = charging_saga()
    assert saga.fail_step("charge_payment", "gateway busy", now=at(2)).applied
    events = collect(saga)
    assert event_names(events) == ["StepFailed", "StepRetryScheduled"]
    scheduled = events[1]
    assert isinstance(scheduled, Saga.StepRetryScheduled)
    assert (scheduled.step, scheduled.attempt) == ("charge_payment", 2)
    assert scheduled.due_at == at(2) + timedelta(seconds=2)
    assert saga.status is SagaStatus.PENDING
    assert saga.steps["charge_payment"].status is StepStatus.RETRY_SCHEDULED
    assert saga.steps["charge_payment"].retry_due_at == scheduled.due_at
    assert saga.next_wakeup == scheduled.due_at
    assert saga.pending_command is None


def test_a_scheduled_retry_is_dispatched_when_the_clock_reaches_its_due_time() -> None:
    saga = charging_saga()
    saga.fail_step("charge_payment", "gateway busy", now=at(2))
    saga.collect_events()
    assert saga.fire_due(at(3.999)) == 0
    assert collect(saga) == []
    assert saga.fire_due(at(4)) == 1
    events = collect(saga)
    assert event_names(events) == ["StepDispatched"]
    assert saga.pending_command is not None
    assert saga.pending_command.attempt == 2
    assert saga.steps["charge_payment"].status is StepStatus.DISPATCHED


def test_each_further_delay_grows_by_the_backoff_factor() -> None:
    saga = charging_saga()
    saga.fail_step("charge_payment", "busy", now=at(2))
    saga.fire_due(at(4))
    saga.fail_step("charge_payment", "busy", now=at(5))
    scheduled = collect(saga)[-1]
    assert isinstance(scheduled, Saga.StepRetryScheduled)
    assert (scheduled.attempt, scheduled.due_at) == (3, at(5) + timedelta(seconds=4))


def test_a_step_whose_retries_are_exhausted_starts_compensation() -> None:
    saga = charging_saga()
    saga.fail_step("charge_payment", "busy", now=at(2))
    saga.fire_due(at(4))
    saga.fail_step("charge_payment", "busy", now=at(5))
    saga.fire_due(at(9))
    saga.collect_events()
    saga.fail_step("charge_payment", "still busy", now=at(10))
    events = collect(saga)
    assert event_names(events) == ["StepFailed", "CompensationRequested", "CompensationDispatched"]
    requested = events[1]
    assert isinstance(requested, Saga.CompensationRequested)
    assert requested.reason == "step 'charge_payment' failed after 3 attempts: still busy"


def test_a_zero_delay_retry_is_dispatched_in_the_same_call() -> None:
    saga = charging_saga(RetryPolicy(max_attempts=2, initial_delay=timedelta(0)))
    saga.fail_step("charge_payment", "busy", now=at(2))
    assert event_names(collect(saga)) == ["StepFailed", "StepRetryScheduled", "StepDispatched"]
    assert saga.pending_command is not None
    assert saga.pending_command.attempt == 2


def test_a_step_times_out_when_the_clock_reaches_its_deadline_not_before() -> None:
    saga = start()
    deadline = T0 + timedelta(seconds=30)
    assert saga.fire_due(deadline - timedelta(microseconds=1)) == 0
    assert collect(saga) == []
    assert saga.fire_due(deadline) == 1
    events = collect(saga)
    # The timed-out step may have been done: it is compensated (uncertain).
    assert event_names(events) == [
        "StepTimedOut",
        "CompensationRequested",
        "CompensationDispatched",
    ]
    timed_out = events[0]
    assert isinstance(timed_out, Saga.StepTimedOut)
    assert (timed_out.step, timed_out.attempt, timed_out.deadline) == (
        "reserve_inventory",
        1,
        deadline,
    )
    requested = events[1]
    assert isinstance(requested, Saga.CompensationRequested)
    assert requested.uncertain_steps == ["reserve_inventory"]
    assert saga.steps["reserve_inventory"].status is StepStatus.COMPENSATION_DISPATCHED
    assert saga.steps["reserve_inventory"].uncertain
    assert saga.status is SagaStatus.COMPENSATING


def test_a_late_success_after_a_timeout_is_recorded_and_compensated() -> None:
    saga = start()
    saga.fire_due(at(30))
    saga.collect_events()
    outcome = saga.complete_step("reserve_inventory", {"held": 3}, now=at(31))
    assert outcome.outcome is Outcome.LATE
    events = collect(saga)
    assert event_names(events) == ["StepCompletedLate"]
    assert saga.steps["reserve_inventory"].late
    assert saga.status.value == "COMPENSATING"
    saga.complete_compensation("reserve_inventory", now=at(32))
    compensation = collect(saga)[0]
    assert isinstance(compensation, Saga.CompensationCompleted)
    assert saga.status.value == "FAILED"
    again = saga.complete_step("reserve_inventory", {"held": 3}, now=at(33))
    assert again.outcome is Outcome.DUPLICATE
    assert collect(saga) == []


def test_a_retriable_step_is_retried_then_dead_lettered_never_compensated() -> None:
    saga = start()
    for second, name in enumerate(["reserve_inventory", "charge_payment", "create_shipment"], 1):
        saga.complete_step(name, now=at(second))
    saga.collect_events()
    saga.fail_step("send_confirmation", "smtp down", now=at(10))
    assert event_names(collect(saga)) == ["StepFailed", "StepRetryScheduled"]
    saga.fire_due(at(15))
    saga.fail_step("send_confirmation", "smtp still down", now=at(16))
    events = collect(saga)
    assert event_names(events) == ["StepDispatched", "StepFailed", "SagaDeadLettered"]
    assert saga.status is SagaStatus.DEAD_LETTERED
    assert saga.dead_letter == DeadLetter(
        step="send_confirmation", kind=CommandKind.ACTION, error="smtp still down", attempts=2
    )
    assert saga.pending_command is None
    assert saga.next_wakeup is None
    assert saga.fire_due(at(10_000)) == 0
    assert all(st.status is not StepStatus.COMPENSATED for st in saga.steps.values())


def test_fire_due_does_nothing_once_the_saga_has_ended() -> None:
    saga = start()
    saga.fire_due(at(30))
    saga.complete_compensation("reserve_inventory", now=at(31))
    saga.collect_events()
    assert saga.status is SagaStatus.FAILED
    assert saga.fire_due(at(100_000)) == 0
    assert collect(saga) == []
