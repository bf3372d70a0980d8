"""Operators retry or resolve dead letters and abort running sagas; each act records who and why."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from saga_builders import (
    SAGA_ID,
    assert_refused_and_unchanged,
    at,
    collect,
    event_names,
    order_definition,
    reach_compensation_of_payment,
    start,
    status,
)

from sagalog.domain import (
    CommandKind,
    InvalidTransitionError,
    RetryPolicy,
    Saga,
    SagaStatus,
    StepStatus,
    command_id_for,
)


def dead_lettered_compensation() -> Saga:
    """Payment's refund failed its only attempt: dead-lettered while compensating."""
    saga = start(order_definition(compensation_retry=RetryPolicy(max_attempts=1)))
    reach_compensation_of_payment(saga)
    saga.fail_compensation("charge_payment", "refund refused", now=at(4))
    saga.collect_events()
    assert saga.status is SagaStatus.DEAD_LETTERED
    return saga


def dead_lettered_confirmation() -> Saga:
    """The retriable confirmation failed its only attempt: dead-lettered going forward."""
    saga = start(order_definition(confirmation_retry=RetryPolicy(max_attempts=1)))
    for second, name in enumerate(["reserve_inventory", "charge_payment", "create_shipment"], 1):
        saga.complete_step(name, now=at(second))
    saga.fail_step("send_confirmation", "smtp down", now=at(5))
    saga.collect_events()
    assert saga.status is SagaStatus.DEAD_LETTERED
    return saga


def test_retrying_a_dead_lettered_compensation_dispatches_a_new_attempt() -> None:
    saga = dead_lettered_compensation()
    saga.retry(actor="alice", reason="refund service fixed", now=at(60))
    events = collect(saga)
    assert event_names(events) == ["OperatorRetried", "CompensationDispatched"]
    retried = events[0]
    assert isinstance(retried, Saga.OperatorRetried)
    assert (retried.step, retried.kind, retried.actor, retried.reason) == (
        "charge_payment",
        "compensation",
        "alice",
        "refund service fixed",
    )
    dispatched = events[1]
    assert isinstance(dispatched, Saga.CompensationDispatched)
    assert dispatched.attempt == 2
    assert dispatched.command_id == command_id_for(
        SAGA_ID, "charge_payment", CommandKind.COMPENSATION, 2
    )
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.dead_letter is None


def test_resolving_a_dead_lettered_compensation_moves_on_to_the_next_one() -> None:
    saga = dead_lettered_compensation()
    saga.resolve(actor="bob", reason="refunded by hand", now=at(60))
    events = collect(saga)
    assert event_names(events) == ["OperatorResolved", "CompensationDispatched"]
    resolved = events[0]
    assert isinstance(resolved, Saga.OperatorResolved)
    assert (resolved.step, resolved.kind, resolved.actor, resolved.reason) == (
        "charge_payment",
        "compensation",
        "bob",
        "refunded by hand",
    )
    assert saga.steps["charge_payment"].status is StepStatus.COMPENSATION_RESOLVED
    assert saga.pending_command is not None
    assert saga.pending_command.step == "reserve_inventory"
    saga.complete_compensation("reserve_inventory", now=at(61))
    assert saga.status is SagaStatus.FAILED


def test_retrying_a_dead_lettered_retriable_step_dispatches_it_again() -> None:
    saga = dead_lettered_confirmation()
    saga.retry(actor="carol", reason="smtp back", now=at(60))
    events = collect(saga)
    assert event_names(events) == ["OperatorRetried", "StepDispatched"]
    dispatched = events[1]
    assert isinstance(dispatched, Saga.StepDispatched)
    assert (dispatched.step, dispatched.attempt) == ("send_confirmation", 2)
    assert saga.status is SagaStatus.PENDING
    saga.complete_step("send_confirmation", now=at(61))
    assert status(saga) is SagaStatus.COMPLETED


def test_resolving_a_dead_lettered_retriable_step_completes_the_saga() -> None:
    saga = dead_lettered_confirmation()
    saga.resolve(actor="dave", reason="mailed by hand", now=at(60))
    assert event_names(collect(saga)) == ["OperatorResolved", "SagaCompleted"]
    assert saga.steps["send_confirmation"].status is StepStatus.RESOLVED
    assert saga.status is SagaStatus.COMPLETED
    assert "send_confirmation" not in saga.results


def test_aborting_before_the_pivot_compensates_what_was_done() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", {"reservation": "r-1"}, now=at(1))
    saga.collect_events()
    saga.abort(actor="erin", reason="customer cancelled", now=at(2))
    events = collect(saga)
    assert event_names(events) == ["SagaAborted", "CompensationRequested", "CompensationDispatched"]
    aborted = events[0]
    assert isinstance(aborted, Saga.SagaAborted)
    assert (aborted.actor, aborted.reason) == ("erin", "customer cancelled")
    requested = events[1]
    assert isinstance(requested, Saga.CompensationRequested)
    assert requested.reason == "aborted by erin: customer cancelled"
    assert requested.failed_step is None
    assert saga.aborted_by == "erin"
    # The payment was in flight: it may have been charged, so it is refunded first.
    assert requested.uncertain_steps == ["charge_payment"]
    assert saga.steps["charge_payment"].status is StepStatus.COMPENSATION_DISPATCHED
    assert saga.steps["charge_payment"].uncertain
    assert saga.compensation_plan == ["charge_payment", "reserve_inventory"]
    assert saga.pending_command is not None
    assert saga.pending_command.step == "charge_payment"
    saga.complete_compensation("charge_payment", now=at(3))
    assert saga.pending_command is not None
    assert saga.pending_command.step == "reserve_inventory"


def test_abort_is_refused_once_the_saga_is_past_its_pivot() -> None:
    saga = start()
    for second, name in enumerate(["reserve_inventory", "charge_payment", "create_shipment"], 1):
        saga.complete_step(name, now=at(second))
    saga.collect_events()
    info = assert_refused_and_unchanged(
        saga,
        InvalidTransitionError,
        lambda: saga.abort(actor="erin", reason="too late", now=at(5)),
    )
    assert "past its pivot" in str(info.value)


def test_abort_is_refused_while_compensating() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    assert_refused_and_unchanged(
        saga,
        InvalidTransitionError,
        lambda: saga.abort(actor="erin", reason="again", now=at(5)),
        match="only a running saga can be aborted",
    )


@pytest.mark.parametrize("ending", ["completed", "failed"])
def test_abort_is_refused_on_an_ended_saga(ending: str) -> None:
    saga = start()
    if ending == "completed":
        for second, name in enumerate(order_definition().step_names, 1):
            saga.complete_step(name, now=at(second))
    else:
        saga.fail_step("reserve_inventory", "out of stock", now=at(1))
    saga.collect_events()
    assert saga.is_terminal
    assert_refused_and_unchanged(
        saga,
        InvalidTransitionError,
        lambda: saga.abort(actor="erin", reason="late", now=at(9)),
        match=f"is {ending.upper()}",
    )


@pytest.mark.parametrize("verb", ["retry", "resolve"])
def test_retry_and_resolve_are_refused_unless_the_saga_is_dead_lettered(verb: str) -> None:
    saga = start()
    act: Callable[[], None] = (
        (lambda: saga.retry(actor="ops", reason="why not", now=at(1)))
        if verb == "retry"
        else (lambda: saga.resolve(actor="ops", reason="why not", now=at(1)))
    )
    assert_refused_and_unchanged(
        saga, InvalidTransitionError, act, match="only a dead-lettered saga can be"
    )


def test_a_dead_lettered_saga_cannot_be_aborted() -> None:
    saga = dead_lettered_confirmation()
    assert_refused_and_unchanged(
        saga,
        InvalidTransitionError,
        lambda: saga.abort(actor="ops", reason="give up", now=at(60)),
        match="DEAD_LETTERED",
    )
