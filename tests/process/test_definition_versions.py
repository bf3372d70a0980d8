"""Definition versions: each saga is pinned to the definition it started with.

Several versions of one saga type stay registered; new sagas start on the newest,
sagas in flight continue on theirs (also when the code no longer registers it),
and a different definition under a name and version already taken is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID

import pytest
from support.sagas import ORDER

from sagalog.domain import (
    InvalidDefinitionError,
    Saga,
    SagaDefinition,
    SagaStatus,
    Step,
    UnknownSagaTypeError,
)
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.registry import DefinitionRegistry

#: Version 2 of ``Order``: a fraud check between reserving and charging.
ORDER_V2 = SagaDefinition(
    "Order",
    [
        ORDER.steps[0],
        Step(name="check_fraud", action="Fraud.Check", timeout=timedelta(seconds=5)),
        *ORDER.steps[1:],
    ],
    version=2,
)

#: ``Order`` version 1 changed without a new version number: a deploy mistake.
ORDER_V1_CHANGED = SagaDefinition("Order", [*ORDER.steps[:3]], version=1)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager([ORDER, ORDER_V2], database_url, clock=clock)
    yield app
    app.close()


def _commands(manager: SagaManager, saga_id: UUID) -> list[str]:
    return [c.name for c in manager.get(saga_id).commands()]


def _started(manager: SagaManager, saga_id: UUID) -> Saga.SagaStarted:
    first = manager.history(saga_id)[0]
    assert isinstance(first, Saga.SagaStarted)
    return first


def test_a_saga_records_the_name_version_and_fingerprint_it_started_with(
    manager: SagaManager,
) -> None:
    old = manager.start("Order", {"n": 1}, version=1)
    new = manager.start("Order", {"n": 2})
    started_old, started_new = _started(manager, old), _started(manager, new)
    assert (started_old.saga_type, started_old.definition_version) == ("Order", 1)
    assert started_old.definition_fingerprint == ORDER.fingerprint
    assert started_new.definition_version == 2
    assert started_new.definition_fingerprint == ORDER_V2.fingerprint
    assert manager.get(old).definition_fingerprint == ORDER.fingerprint
    assert manager.get(new).definition == ORDER_V2


def test_new_sagas_start_on_the_newest_version_in_flight_ones_continue_on_theirs(
    manager: SagaManager,
) -> None:
    old = manager.start("Order", {"n": 1}, version=1)
    new = manager.start("Order", {"n": 2})
    manager.handle_step_completed(old, "reserve")
    manager.handle_step_completed(new, "reserve")
    assert _commands(manager, old) == ["Payment.Charge"]  # version 1 has no fraud check
    assert _commands(manager, new) == ["Fraud.Check"]


@pytest.mark.requires_database(reason="a second manager on the same store")
def test_a_saga_continues_on_its_version_after_the_code_stops_registering_it(
    database_url: str, clock: ManualClock
) -> None:
    first = SagaManager([ORDER], database_url, clock=clock)
    try:
        saga_id = first.start("Order", {"n": 1})
        first.handle_step_completed(saga_id, "reserve")
    finally:
        first.close()
    upgraded = SagaManager([ORDER_V2], database_url, clock=clock)  # version 1 retired
    try:
        upgraded.handle_step_completed(saga_id, "charge")
        upgraded.handle_step_completed(saga_id, "ship")
        upgraded.handle_step_completed(saga_id, "notify")
        saga = upgraded.get(saga_id)
        assert saga.status is SagaStatus.COMPLETED
        assert saga.definition.version == 1
        assert "check_fraud" not in saga.steps
        assert upgraded.get(upgraded.start("Order", {"n": 2})).definition.version == 2
    finally:
        upgraded.close()


def test_registering_a_different_definition_under_a_taken_version_is_refused() -> None:
    registry = DefinitionRegistry([ORDER, ORDER_V2])
    with pytest.raises(InvalidDefinitionError, match=r"'Order' version 1 .*new version"):
        registry.register(ORDER_V1_CHANGED)
    assert registry.get("Order", 1) is ORDER  # the registered one is kept
    registry.register(SagaDefinition.from_json(ORDER.canonical_json()))  # identical: no-op
    assert len(registry) == 2


def test_a_manager_refuses_two_definitions_under_one_version(database_url: str) -> None:
    with pytest.raises(InvalidDefinitionError, match="already registered"):
        SagaManager([ORDER, ORDER_V1_CHANGED], database_url)


def test_starting_an_unregistered_version_is_a_typed_error_and_writes_nothing(
    manager: SagaManager,
) -> None:
    with pytest.raises(UnknownSagaTypeError, match=r"'Order' version 3 .*Order v1, Order v2"):
        manager.start("Order", {"n": 1}, version=3)
    assert manager.recorder.max_notification_id() in (None, 0)
