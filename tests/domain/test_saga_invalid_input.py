"""Input that can never be valid raises a typed error and records nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import pytest
from saga_builders import (
    SAGA_ID,
    T0,
    assert_refused_and_unchanged,
    at,
    order_definition,
    reach_compensation_of_payment,
    start,
)

from sagalog.domain import (
    InvalidPayloadError,
    Saga,
    SagalogError,
    UnexpectedReplyError,
    UnknownStepError,
)
from sagalog.domain.payload import MAX_PAYLOAD_BYTES, MAX_TEXT_LENGTH

NAIVE = datetime(2030, 1, 1, 12, 0)

#: Each case: the typed error, a fragment of its message, and the call on a saga that
#: has completed reserve_inventory and is charging the payment (attempt 1).
Case = tuple[type[SagalogError], str, Callable[[Saga], object]]

CASES: dict[str, Case] = {
    "unknown step (completed)": (
        UnknownStepError,
        "has no step 'teleport'",
        lambda s: s.complete_step("teleport", now=at(5)),
    ),
    "unknown step (failed)": (
        UnknownStepError,
        "has no step 'teleport'",
        lambda s: s.fail_step("teleport", "x", now=at(5)),
    ),
    "unknown step (compensation)": (
        UnknownStepError,
        "has no step 'teleport'",
        lambda s: s.complete_compensation("teleport", now=at(5)),
    ),
    "non-string step": (
        UnknownStepError,
        "has no step",
        lambda s: s.complete_step(cast(str, 3), now=at(5)),
    ),
    "compensation of a step without one": (
        UnexpectedReplyError,
        "has no compensation",
        lambda s: s.complete_compensation("create_shipment", now=at(5)),
    ),
    "step never dispatched": (
        UnexpectedReplyError,
        "was never dispatched",
        lambda s: s.complete_step("create_shipment", now=at(5)),
    ),
    "compensation never dispatched": (
        UnexpectedReplyError,
        "compensation of step 'reserve_inventory' was never dispatched",
        lambda s: s.fail_compensation("reserve_inventory", "x", now=at(5)),
    ),
    "attempt never sent": (
        UnexpectedReplyError,
        "attempt 2 of the action of step 'charge_payment' was never",
        lambda s: s.complete_step("charge_payment", now=at(5), attempt=2),
    ),
    "attempt zero": (
        UnexpectedReplyError,
        "attempt 0",
        lambda s: s.fail_step("charge_payment", "x", now=at(5), attempt=0),
    ),
    "attempt not a number": (
        UnexpectedReplyError,
        "attempt '1'",
        lambda s: s.complete_step("charge_payment", now=at(5), attempt=cast(int, "1")),
    ),
    "non-JSON result": (
        InvalidPayloadError,
        "result of step 'charge_payment' must be plain JSON",
        lambda s: s.complete_step("charge_payment", {"when": T0}, now=at(5)),
    ),
    "NaN result": (
        InvalidPayloadError,
        "must be plain JSON",
        lambda s: s.complete_step("charge_payment", float("nan"), now=at(5)),
    ),
    "oversized result": (
        InvalidPayloadError,
        f"the limit is {MAX_PAYLOAD_BYTES} bytes",
        lambda s: s.complete_step("charge_payment", "x" * MAX_PAYLOAD_BYTES, now=at(5)),
    ),
    "blank error": (
        InvalidPayloadError,
        "error of step 'charge_payment' must not be blank",
        lambda s: s.fail_step("charge_payment", " ", now=at(5)),
    ),
    "non-string error": (
        InvalidPayloadError,
        "must be a string, not int",
        lambda s: s.fail_step("charge_payment", cast(str, 500), now=at(5)),
    ),
    "overlong error": (
        InvalidPayloadError,
        f"the limit is {MAX_TEXT_LENGTH}",
        lambda s: s.fail_step("charge_payment", "e" * (MAX_TEXT_LENGTH + 1), now=at(5)),
    ),
    "blank message id": (
        InvalidPayloadError,
        "message_id must not be blank",
        lambda s: s.complete_step("charge_payment", now=at(5), message_id=""),
    ),
    "naive datetime in a reply": (
        InvalidPayloadError,
        "timezone-aware",
        lambda s: s.complete_step("charge_payment", now=NAIVE),
    ),
    "naive datetime in a compensation reply": (
        InvalidPayloadError,
        "timezone-aware",
        lambda s: s.complete_compensation("reserve_inventory", now=NAIVE),
    ),
    "naive datetime on the clock": (
        InvalidPayloadError,
        "timezone-aware",
        lambda s: s.fire_due(NAIVE),
    ),
    "naive datetime in an abort": (
        InvalidPayloadError,
        "timezone-aware",
        lambda s: s.abort(actor="ops", reason="r", now=NAIVE),
    ),
    "blank actor": (
        InvalidPayloadError,
        "actor must not be blank",
        lambda s: s.abort(actor="", reason="r", now=at(5)),
    ),
    "blank reason": (
        InvalidPayloadError,
        "reason must not be blank",
        lambda s: s.abort(actor="ops", reason="  ", now=at(5)),
    ),
}


def charging() -> Saga:
    saga = start()
    saga.complete_step("reserve_inventory", {"reservation": "r-1"}, now=at(1))
    saga.collect_events()
    return saga


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_input_raises_a_typed_error_and_records_nothing(case: str) -> None:
    error, fragment, call = CASES[case]
    saga = charging()
    assert_refused_and_unchanged(saga, error, lambda: call(saga), match=fragment)


def test_an_attempt_never_sent_of_a_compensation_is_refused() -> None:
    saga = start()
    reach_compensation_of_payment(saga)
    assert_refused_and_unchanged(
        saga,
        UnexpectedReplyError,
        lambda: saga.complete_compensation("charge_payment", now=at(5), attempt=3),
        match="attempt 3 of the compensation",
    )


def test_typed_errors_belong_to_one_family() -> None:
    for error, _, _ in CASES.values():
        assert issubclass(error, SagalogError)
        assert issubclass(error, ValueError | LookupError)


START_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "data not an object": ("saga data must be a JSON object", {"data": ["a"]}),
    "data with non-string keys": ("JSON object with string keys", {"data": {1: "a"}}),
    "non-JSON data": ("saga data must be plain JSON", {"data": {"f": object()}}),
    "oversized data": ("the limit is", {"data": {"x": "y" * MAX_PAYLOAD_BYTES}}),
    "naive datetime": ("timezone-aware", {"now": NAIVE}),
    "saga id not a UUID": ("saga_id must be a UUID", {"saga_id": str(SAGA_ID)}),
    "blank message id": ("message_id must not be blank", {"message_id": " "}),
}


@pytest.mark.parametrize("case", list(START_CASES))
def test_starting_with_invalid_input_raises_invalid_payload(case: str) -> None:
    fragment, override = START_CASES[case]
    arguments: dict[str, Any] = {
        "data": {"order": 1},
        "saga_id": SAGA_ID,
        "now": T0,
        "message_id": None,
        **override,
    }
    with pytest.raises(InvalidPayloadError, match=fragment):
        Saga.start(order_definition(), **arguments)


def test_starting_with_something_other_than_a_definition_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="definition must be a SagaDefinition"):
        Saga.start(cast(Any, {"name": "x"}), {}, saga_id=UUID(int=1), now=T0)
