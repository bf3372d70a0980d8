"""A definition survives a JSON round trip, and its fingerprint tells definitions apart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given

from sagalog.domain import RetryPolicy, SagaDefinition, Step
from sagalog.testing.strategies import definitions


def build(**changes: Any) -> SagaDefinition:
    """The reference definition, with ``changes`` applied to its parts."""
    reserve: dict[str, Any] = {
        "name": "reserve",
        "action": "Inventory.Reserve",
        "compensation": "Inventory.Release",
        "timeout": timedelta(seconds=30),
        "retry": RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
    }
    reserve.update(changes.pop("reserve", {}))
    mail: dict[str, Any] = {"name": "mail", "action": "Mail.Send", "retriable": True}
    mail.update(changes.pop("mail", {}))
    steps = [Step(**reserve), Step(**mail)]
    if changes.pop("swap", False):
        steps = [Step(name="ship", action="Shipping.Create"), *steps[:1]]
    return SagaDefinition(changes.pop("name", "Order"), steps, changes.pop("version", 1))


def test_the_canonical_json_round_trips_to_an_equal_definition() -> None:
    definition = build()
    again = SagaDefinition.from_json(definition.canonical_json())
    assert again == definition
    assert again.fingerprint == definition.fingerprint


def test_pydantic_json_round_trips_to_an_equal_definition() -> None:
    definition = build()
    assert SagaDefinition.from_json(definition.model_dump_json()) == definition


def test_the_canonical_json_has_sorted_keys_and_no_spaces() -> None:
    text = build().canonical_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_the_fingerprint_is_the_sha256_of_the_canonical_json() -> None:
    definition = build()
    expected = hashlib.sha256(definition.canonical_json().encode("ascii")).hexdigest()
    assert definition.fingerprint == expected
    assert len(definition.fingerprint) == 64


def test_the_same_definition_built_twice_has_the_same_fingerprint() -> None:
    assert build().fingerprint == build().fingerprint


CHANGES: dict[str, Callable[[], SagaDefinition]] = {
    "saga name": lambda: build(name="Order2"),
    "version": lambda: build(version=2),
    "step name": lambda: build(reserve={"name": "reserve_items"}),
    "action": lambda: build(reserve={"action": "Inventory.Hold"}),
    "compensation": lambda: build(reserve={"compensation": "Inventory.Free"}),
    "timeout": lambda: build(reserve={"timeout": timedelta(seconds=31)}),
    "no timeout": lambda: build(reserve={"timeout": None}),
    "compensation timeout": lambda: build(reserve={"compensation_timeout": timedelta(seconds=5)}),
    "retry attempts": lambda: build(
        reserve={"retry": RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=1))}
    ),
    "retry jitter": lambda: build(
        reserve={
            "retry": RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1), jitter=0.5)
        }
    ),
    "compensation retry": lambda: build(reserve={"compensation_retry": RetryPolicy()}),
    "retriable": lambda: build(mail={"retriable": False}),
    "step order and steps": lambda: build(swap=True),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_gives_a_different_fingerprint(change: str) -> None:
    changed = CHANGES[change]()
    assert changed != build()
    assert changed.fingerprint != build().fingerprint


def test_all_the_changed_definitions_have_distinct_fingerprints() -> None:
    fingerprints = {make().fingerprint for make in CHANGES.values()} | {build().fingerprint}
    assert len(fingerprints) == len(CHANGES) + 1


@given(definitions())
def test_any_definition_round_trips_through_json_with_its_fingerprint(
    definition: SagaDefinition,
) -> None:
    again = SagaDefinition.from_json(definition.canonical_json())
    assert again == definition
    assert again.canonical_json() == definition.canonical_json()
    assert again.fingerprint == definition.fingerprint
