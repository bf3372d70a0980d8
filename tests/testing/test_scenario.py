"""Given / when / then on a real manager, including expectations that do not hold."""

from __future__ import annotations

from typing import Any

import pytest
from shop import ORDER

from sagalog.domain import SagaStatus, UnexpectedReplyError
from sagalog.testing import (
    EPOCH,
    aborted,
    compensated,
    compensation_failed,
    completed,
    failed,
    resolved,
    scenario,
    time_passes,
)
from sagalog.testing.scenarios import Happening

DATA: dict[str, Any] = {"order_id": "o-1", "items": {"apple": 1}, "amount": 42}

#: The release fails past its retry policy (five attempts, each retried within a minute).
FIVE_FAILED_RELEASES: list[Happening] = [
    happening
    for _ in range(5)
    for happening in (compensation_failed("reserve_inventory", "db down"), time_passes(60))
]


def test_before_any_when_the_then_methods_look_at_the_start() -> None:
    started = scenario(ORDER, DATA)
    started.then_dispatched("InventoryService.ReserveItems").then_status(SagaStatus.PENDING)
    started.then_events("SagaStarted", "StepDispatched")
    assert started.history[0].timestamp == EPOCH


def test_a_failed_step_after_the_charge_dispatches_the_refund() -> None:
    (
        scenario(ORDER, DATA)
        .given(completed("reserve_inventory", {"reservation": "r-1"}))
        .given(completed("process_payment", {"charge": 42}))
        .when(failed("create_shipment", "no courier"))
        .then_dispatched("PaymentService.RefundPayment")
        .then_events("StepFailed", "CompensationRequested", "CompensationDispatched")
        .then_status("COMPENSATING")
        .when(compensated("process_payment"))
        .then_dispatched("InventoryService.ReleaseItems")
        .when(compensated("reserve_inventory"))
        .then_nothing_dispatched()
        .then_status(SagaStatus.FAILED)
    )


def test_a_declined_charge_is_retried_when_its_delay_has_passed() -> None:
    (
        scenario(ORDER, DATA)
        .given(completed("reserve_inventory"))
        .when(failed("process_payment", "card declined"))
        .then_events("StepFailed", "StepRetryScheduled")
        .then_nothing_dispatched()
        .when(time_passes(4.9))
        .then_nothing_dispatched()
        .when(time_passes(0.1))
        .then_dispatched("PaymentService.ChargePayment")
    )


def test_a_redelivered_reply_is_a_duplicate_and_changes_nothing() -> None:
    (
        scenario(ORDER, DATA)
        .given(completed("reserve_inventory", message_id="m-1"))
        .when(completed("reserve_inventory", message_id="m-1"))
        .then_outcome("duplicate")
        .then_events()
        .then_status(SagaStatus.PENDING)
    )


def test_operators_abort_and_resolve() -> None:
    (
        scenario(ORDER, DATA)
        .given(completed("reserve_inventory"))
        .when(aborted(by="ops.ann", reason="customer cancelled"))
        .then_dispatched("PaymentService.RefundPayment")  # the charge in flight is uncertain
        .given(compensated("process_payment"), *FIVE_FAILED_RELEASES)
        .then_status(SagaStatus.DEAD_LETTERED)
        .when(resolved(by="ops.ann"))
        .then_status(SagaStatus.FAILED)
        .then_events("OperatorResolved", "SagaFailed")
    )


def test_an_unmet_expectation_shows_expected_and_actual_side_by_side() -> None:
    shipped = (
        scenario(ORDER, DATA)
        .given(completed("reserve_inventory"), completed("process_payment", {"charge": 42}))
        .when(failed("create_shipment", "no courier"))
    )
    with pytest.raises(AssertionError) as caught:
        shipped.then_dispatched("InventoryService.ReleaseItems")
    message = str(caught.value)
    assert message.startswith(
        "when failed('create_shipment', 'no courier'): the commands dispatched differ"
    )
    assert "- InventoryService.ReleaseItems" in message
    assert "+ PaymentService.RefundPayment" in message
    assert "CompensationRequested failed_step='create_shipment'" in message  # the history
    with pytest.raises(AssertionError, match=r"expected: FAILED\n  actual:   COMPENSATING"):
        shipped.then_status(SagaStatus.FAILED)


def test_a_given_that_is_not_applied_says_the_scenario_is_not_where_it_claims() -> None:
    twice = scenario(ORDER, DATA).given(completed("reserve_inventory"))
    not_applied = r"given completed\('reserve_inventory', attempt=1\): the reply was not applied"
    with pytest.raises(AssertionError, match=not_applied):
        twice.given(completed("reserve_inventory", attempt=1))


def test_a_reply_about_a_command_never_sent_raises_the_managers_typed_error() -> None:
    with pytest.raises(UnexpectedReplyError):
        scenario(ORDER, DATA).when(compensated("reserve_inventory"))
