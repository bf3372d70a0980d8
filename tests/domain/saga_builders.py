"""Definitions, a clock and small helpers shared by the domain's unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from sagalog.domain import RetryPolicy, Saga, SagaDefinition, SagalogError, SagaStatus, Step

#: The instant every test saga starts at.
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

#: A fixed saga id, so command ids and event dumps are reproducible.
SAGA_ID = UUID("12345678-1234-5678-1234-567812345678")

#: No jitter, so retry due times are exact.
NO_RETRY = RetryPolicy()
FLAT_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=3,
    initial_delay=timedelta(seconds=1),
    backoff_factor=2.0,
    max_delay=timedelta(seconds=10),
)


def at(seconds: float) -> datetime:
    """``seconds`` after :data:`T0`."""
    return T0 + timedelta(seconds=seconds)


def order_definition(
    *,
    payment_retry: RetryPolicy | None = None,
    compensation_retry: RetryPolicy = FLAT_COMPENSATION_RETRY,
    confirmation_retry: RetryPolicy | None = None,
) -> SagaDefinition:
    """Reserve (compensatable, 30 s timeout), charge (compensatable), ship (the pivot:
    no compensation), confirm (retriable)."""
    return SagaDefinition(
        "OrderFulfillment",
        [
            Step(
                name="reserve_inventory",
                action="Inventory.Reserve",
                compensation="Inventory.Release",
                timeout=timedelta(seconds=30),
                compensation_retry=compensation_retry,
            ),
            Step(
                name="charge_payment",
                action="Payment.Charge",
                compensation="Payment.Refund",
                retry=payment_retry or NO_RETRY,
                compensation_retry=compensation_retry,
                compensation_timeout=timedelta(seconds=20),
            ),
            Step(name="create_shipment", action="Shipping.Create"),
            Step(
                name="send_confirmation",
                action="Mail.SendConfirmation",
                retriable=True,
                retry=confirmation_retry
                or RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
            ),
        ],
    )


def start(
    definition: SagaDefinition | None = None,
    data: dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
) -> Saga:
    """A saga of ``definition`` (default :func:`order_definition`), its start collected."""
    saga = Saga.start(
        definition or order_definition(),
        {"order": 42} if data is None else data,
        saga_id=SAGA_ID,
        now=T0,
        message_id=message_id,
    )
    saga.collect_events()
    return saga


def event_names(events: list[Saga.Event] | Any) -> list[str]:
    """The class names of ``events``."""
    return [type(event).__name__ for event in events]


def collect(saga: Saga) -> list[Saga.Event]:
    """The events ``saga`` recorded since the last collection."""
    events: list[Saga.Event] = []
    for event in saga.collect_events():
        assert isinstance(event, Saga.Event)
        events.append(event)
    return events


def reach_compensation_of_payment(saga: Saga) -> None:
    """Complete reserve and charge, then fail the shipment: compensation begins."""
    saga.complete_step("reserve_inventory", {"reservation": "r-1"}, now=at(1))
    saga.complete_step("charge_payment", {"charge": "c-1"}, now=at(2))
    saga.fail_step("create_shipment", "no carrier", now=at(3))
    saga.collect_events()


def assert_refused_and_unchanged(
    saga: Saga,
    error: type[SagalogError],
    call: Callable[[], object],
    *,
    match: str | None = None,
) -> pytest.ExceptionInfo[SagalogError]:
    """``call`` raises ``error`` (message matching ``match``) and the saga records nothing."""
    before = copy.deepcopy(state_of(saga))
    version = saga.version
    pending = len(saga.pending_events)
    with pytest.raises(error, match=match) as info:
        call()
    assert saga.version == version
    assert len(saga.pending_events) == pending
    assert state_of(saga) == before
    return info


def state_of(saga: Saga) -> dict[str, Any]:
    """The saga's attributes, pending events aside."""
    return {key: value for key, value in vars(saga).items() if key != "_pending_events"}


def status(saga: Saga) -> SagaStatus:
    """``saga.status``, read afresh (so type checkers do not carry an earlier narrowing)."""
    return saga.status
