"""Duplicate and stale replies say so and record nothing (law 4)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta

import pytest
from saga_builders import (
    at,
    order_definition,
    reach_compensation_of_payment,
    start,
    state_of,
)

from sagalog.domain import Outcome, ReplyOutcome, RetryPolicy, Saga, SagaStatus


def judged_without_change(saga: Saga, reply: Callable[[], ReplyOutcome]) -> ReplyOutcome:
    """Run ``reply``; it must not be applied and must leave the saga exactly as it was."""
    saga.collect_events()
    before = copy.deepcopy(state_of(saga))
    outcome = reply()
    assert not outcome.applied
    assert outcome.reason
    assert saga.pending_events == []
    assert state_of(saga) == before
    return outcome


def test_a_redelivered_message_is_a_duplicate() -> None:
    saga = start()
    assert saga.complete_step("reserve_inventory", {"r": 1}, now=at(1), message_id="m-1").applied
    outcome = judged_without_change(
        saga, lambda: saga.complete_step("reserve_inventory", {"r": 1}, now=at(2), message_id="m-1")
    )
    assert outcome.outcome is Outcome.DUPLICATE
    assert "m-1" in outcome.reason


def test_a_message_id_is_a_duplicate_whatever_it_claims_to_answer() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", now=at(1), message_id="m-1")
    outcome = judged_without_change(
        saga, lambda: saga.fail_step("charge_payment", "late", now=at(2), message_id="m-1")
    )
    assert outcome.outcome is Outcome.DUPLICATE
    assert saga.pending_command is not None
    assert saga.pending_command.step == "charge_payment"


def test_the_start_message_id_counts_as_handled() -> None:
    saga = start(message_id="start-1")
    outcome = judged_without_change(
        saga, lambda: saga.complete_step("reserve_inventory", now=at(1), message_id="start-1")
    )
    assert outcome.outcome is Outcome.DUPLICATE


def test_a_second_success_for_a_completed_step_is_a_duplicate() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", {"r": 1}, now=at(1))
    outcome = judged_without_change(
        saga, lambda: saga.complete_step("reserve_inventory", {"r": 2}, now=at(2))
    )
    assert outcome.outcome is Outcome.DUPLICATE
    assert saga.steps["reserve_inventory"].result == {"r": 1}


def test_a_failure_after_a_success_is_stale() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", now=at(1))
    outcome = judged_without_change(
        saga, lambda: saga.fail_step("reserve_inventory", "late failure", now=at(2))
    )
    assert outcome.outcome is Outcome.STALE
    assert saga.status is SagaStatus.PENDING


def test_a_second_failure_of_the_same_attempt_is_a_duplicate() -> None:
    saga = start(order_definition(compensation_retry=RetryPolicy(max_attempts=1)))
    reach_compensation_of_payment(saga)
    outcome = judged_without_change(
        saga, lambda: saga.fail_step("create_shipment", "no carrier", now=at(4))
    )
    assert outcome.outcome is Outcome.DUPLICATE


def test_a_reply_for_a_superseded_attempt_is_stale() -> None:
    saga = start(order_definition(payment_retry=RetryPolicy(max_attempts=2)))
    saga.complete_step("reserve_inventory", now=at(1))
    saga.fail_step("charge_payment", "busy", now=at(2))
    saga.fire_due(at(3))
    assert saga.pending_command is not None
    assert saga.pending_command.attempt == 2
    outcome = judged_without_change(
        saga, lambda: saga.complete_step("charge_payment", now=at(4), attempt=1)
    )
    assert outcome.outcome is Outcome.STALE
    assert "superseded by attempt 2" in outcome.reason
    assert saga.complete_step("charge_payment", now=at(5), attempt=2).applied


def test_a_reply_while_a_retry_is_scheduled_is_stale() -> None:
    saga = start(
        order_definition(
            payment_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5))
        )
    )
    saga.complete_step("reserve_inventory", now=at(1))
    saga.fail_step("charge_payment", "busy", now=at(2))
    outcome = judged_without_change(saga, lambda: saga.complete_step("charge_payment", now=at(3)))
    assert outcome.outcome is Outcome.STALE


def test_a_late_failure_for_a_step_abandoned_by_an_abort_is_stale() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", now=at(1))
    saga.abort(actor="ops", reason="cancel", now=at(2))
    outcome = judged_without_change(
        saga, lambda: saga.fail_step("charge_payment", "declined", now=at(3))
    )
    assert outcome.outcome is Outcome.STALE
    assert saga.status is SagaStatus.COMPENSATING


def test_a_late_success_for_a_step_abandoned_by_an_abort_is_a_recorded_fact() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", now=at(1))
    saga.abort(actor="ops", reason="cancel", now=at(2))
    saga.collect_events()
    outcome = saga.complete_step("charge_payment", {"charge": "c-1"}, now=at(3))
    assert outcome.outcome is Outcome.LATE
    (late,) = saga.collect_events()
    assert isinstance(late, Saga.StepCompletedLate)
    assert (late.step, late.attempt, late.result) == ("charge_payment", 1, {"charge": "c-1"})
    assert saga.steps["charge_payment"].late
    assert saga.status is SagaStatus.COMPENSATING


def test_compensation_replies_are_judged_the_same_way() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    saga.complete_compensation("charge_payment", now=at(4), message_id="c-1")
    again = judged_without_change(
        saga, lambda: saga.complete_compensation("charge_payment", now=at(5))
    )
    assert again.outcome is Outcome.DUPLICATE
    late_failure = judged_without_change(
        saga, lambda: saga.fail_compensation("charge_payment", "late", now=at(6))
    )
    assert late_failure.outcome is Outcome.STALE
    redelivered = judged_without_change(
        saga, lambda: saga.complete_compensation("reserve_inventory", now=at(7), message_id="c-1")
    )
    assert redelivered.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize("ending", ["completed", "failed"])
def test_replies_after_the_saga_ended_change_nothing(ending: str) -> None:
    saga = start()
    if ending == "completed":
        for second, name in enumerate(order_definition().step_names, 1):
            saga.complete_step(name, now=at(second))
    else:
        saga.fail_step("reserve_inventory", "out of stock", now=at(1))
    status, version = saga.status, saga.version
    for reply in (
        lambda: saga.complete_step("reserve_inventory", now=at(10)),
        lambda: saga.fail_step("reserve_inventory", "late", now=at(10)),
        lambda: saga.complete_step("reserve_inventory", now=at(10), attempt=1, message_id="x"),
    ):
        outcome = judged_without_change(saga, reply)
        assert outcome.outcome in (Outcome.DUPLICATE, Outcome.STALE)
    assert saga.fire_due(at(100_000)) == 0
    assert (saga.status, saga.version) == (status, version)
