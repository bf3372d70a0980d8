"""Saga data and step results are stored as plain JSON, so a rebuild gives the same values."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from hypothesis import given
from saga_builders import SAGA_ID, T0, at, order_definition, start

from sagalog.domain import InvalidPayloadError, Saga
from sagalog.domain.payload import MAX_PAYLOAD_BYTES
from sagalog.testing.strategies import json_values, saga_data


def in_memory_application() -> Application[UUID]:
    return Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_data_is_stored_as_its_json_round_trip() -> None:
    saga = start(data={"items": ("book", "pen"), "by_id": {"x": {1: "one"}}})
    assert saga.data == {"items": ["book", "pen"], "by_id": {"x": {"1": "one"}}}


def test_a_result_is_stored_as_its_json_round_trip() -> None:
    saga = start()
    saga.complete_step("reserve_inventory", {"lines": (1, 2), 7: True}, now=at(1))
    assert saga.steps["reserve_inventory"].result == {"lines": [1, 2], "7": True}
    assert saga.pending_command is not None
    assert saga.pending_command.payload["results"] == {
        "reserve_inventory": {"lines": [1, 2], "7": True}
    }


def test_the_saga_does_not_share_the_callers_data() -> None:
    data: dict[str, Any] = {"items": ["book"]}
    result: dict[str, Any] = {"reservation": ["r-1"]}
    saga = start(data=data)
    saga.complete_step("reserve_inventory", result, now=at(1))
    data["items"].append("pen")
    result["reservation"].append("r-2")
    assert saga.data == {"items": ["book"]}
    assert saga.steps["reserve_inventory"].result == {"reservation": ["r-1"]}


def test_a_saga_with_python_shaped_data_rebuilds_equal_to_the_live_one() -> None:
    app = in_memory_application()
    saga = Saga.start(
        order_definition(), {"items": ("book",), "n": {2: 3}}, saga_id=SAGA_ID, now=T0
    )
    saga.complete_step("reserve_inventory", ({"a": (1,)},), now=at(1))
    app.save(saga)
    assert app.repository.get(SAGA_ID) == saga


@given(saga_data(python_forms=True), json_values(python_forms=True))
def test_any_data_and_result_survive_storage_unchanged(data: dict[str, Any], result: Any) -> None:
    app = in_memory_application()
    saga = Saga.start(order_definition(), data, saga_id=SAGA_ID, now=T0)
    saga.complete_step("reserve_inventory", result, now=at(1))
    app.save(saga)
    assert app.repository.get(SAGA_ID) == copy.deepcopy(saga)


@pytest.mark.parametrize(
    ("where", "call"),
    [
        ("saga data", lambda: start(data={"name": "caf\udce9"})),
        (
            "result of step",
            lambda: start().complete_step("reserve_inventory", ["\ud800"], now=at(1)),
        ),
        ("error of step", lambda: start().fail_step("reserve_inventory", "bad \udc80", now=at(1))),
        ("actor", lambda: start().abort(actor="op\ud800", reason="r", now=at(1))),
        (
            "message_id",
            lambda: start().complete_step("reserve_inventory", now=at(1), message_id="\udfff"),
        ),
    ],
)
def test_text_with_lone_surrogates_is_refused_because_it_cannot_be_stored(
    where: str, call: Any
) -> None:
    with pytest.raises(InvalidPayloadError, match=where):
        call()


def test_the_size_limit_counts_utf8_bytes() -> None:
    two_byte = "é"  # 2 bytes in UTF-8, 6 as an ASCII JSON escape
    fits = {"t": two_byte * ((MAX_PAYLOAD_BYTES - 20) // 2)}
    assert start(data=fits).data == fits
    with pytest.raises(InvalidPayloadError, match="bytes as JSON"):
        start(data={"t": two_byte * (MAX_PAYLOAD_BYTES // 2)})


@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), {"s": {1, 2}}, b"bytes"]
)
def test_values_that_are_not_json_are_refused(value: Any) -> None:
    with pytest.raises(InvalidPayloadError, match="must be plain JSON"):
        start().complete_step("reserve_inventory", value, now=at(1))


def test_self_referencing_and_absurdly_deep_values_are_refused() -> None:
    looped: list[Any] = []
    looped.append(looped)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (looped, deep):
        with pytest.raises(InvalidPayloadError, match="must be plain JSON"):
            start().complete_step("reserve_inventory", value, now=at(1))
