"""A saga starts, dispatches its steps one after another, and completes."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from saga_builders import SAGA_ID, T0, at, collect, event_names, order_definition, start

from sagalog.domain import (
    CommandKind,
    Saga,
    SagaDefinition,
    SagaStatus,
    StepStatus,
    command_id_for,
)
from sagalog.testing.strategies import definitions, saga_data


def test_start_records_saga_started_then_dispatches_the_first_step() -> None:
    definition = order_definition()
    saga = Saga.start(definition, {"order": 42}, saga_id=SAGA_ID, now=T0)
    events = collect(saga)
    assert event_names(events) == ["SagaStarted", "StepDispatched"]
    dispatched = events[1]
    assert isinstance(dispatched, Saga.StepDispatched)
    assert (dispatched.step, dispatched.attempt) == ("reserve_inventory", 1)
    assert dispatched.command_name == "Inventory.Reserve"
    assert saga.status is SagaStatus.PENDING
    assert saga.current_step == "reserve_inventory"
    assert saga.steps["reserve_inventory"].status is StepStatus.DISPATCHED
    assert saga.version == 2


def test_saga_started_pins_the_whole_definition_and_its_fingerprint() -> None:
    definition = order_definition()
    saga = Saga.start(definition, {"order": 42}, saga_id=SAGA_ID, now=T0)
    started = collect(saga)[0]
    assert isinstance(started, Saga.SagaStarted)
    assert started.saga_type == "OrderFulfillment"
    assert started.definition_version == 1
    assert started.definition_fingerprint == definition.fingerprint
    assert SagaDefinition.model_validate(started.definition) == definition
    assert saga.definition == definition
    assert saga.definition_fingerprint == definition.fingerprint


def test_completing_each_step_dispatches_the_next_and_the_last_completes_the_saga() -> None:
    saga = start()
    for second, name in enumerate(order_definition().step_names, start=1):
        assert saga.pending_command is not None
        assert saga.pending_command.step == name
        assert saga.complete_step(name, {"done": name}, now=at(second)).applied
    assert event_names(collect(saga)) == [
        "StepCompleted",
        "StepDispatched",
        "StepCompleted",
        "StepDispatched",
        "StepCompleted",
        "StepDispatched",
        "StepCompleted",
        "SagaCompleted",
    ]
    assert saga.status is SagaStatus.COMPLETED
    assert saga.is_terminal
    assert saga.pending_command is None
    assert saga.current_step is None
    assert saga.next_wakeup is None
    assert all(st.status is StepStatus.COMPLETED for st in saga.steps.values())


def test_an_action_carries_the_saga_data_and_the_results_of_earlier_steps() -> None:
    saga = start(data={"order": 42, "items": ["book"]})
    saga.complete_step("reserve_inventory", {"reservation": "r-1"}, now=at(1))
    saga.complete_step("charge_payment", {"charge": "c-9"}, now=at(2))
    command = saga.pending_command
    assert command is not None
    assert command.step == "create_shipment"
    assert command.payload == {
        "data": {"order": 42, "items": ["book"]},
        "results": {
            "reserve_inventory": {"reservation": "r-1"},
            "charge_payment": {"charge": "c-9"},
        },
    }
    assert saga.results == command.payload["results"]


def test_a_dispatch_deadline_is_now_plus_the_step_timeout() -> None:
    saga = start()
    assert saga.pending_command is not None
    assert saga.pending_command.deadline == T0 + timedelta(seconds=30)
    assert saga.next_wakeup == T0 + timedelta(seconds=30)
    saga.complete_step("reserve_inventory", now=at(5))
    assert saga.pending_command is not None
    assert saga.pending_command.deadline is None
    assert saga.next_wakeup is None


def test_the_pending_command_describes_the_latest_dispatch() -> None:
    saga = start(message_id="start-1")
    command = saga.pending_command
    assert command is not None
    assert command.command_id == command_id_for(SAGA_ID, "reserve_inventory", CommandKind.ACTION, 1)
    assert (command.saga_id, command.saga_type, command.kind, command.name) == (
        SAGA_ID,
        "OrderFulfillment",
        CommandKind.ACTION,
        "Inventory.Reserve",
    )
    message = command.to_message()
    assert message["correlation_id"] == str(SAGA_ID)
    assert message["causation_id"] == "start-1"
    assert message["kind"] == "action"
    assert message["deadline"] == (T0 + timedelta(seconds=30)).isoformat()
    assert list(saga.commands()) == [command]


def test_a_single_step_saga_completes_on_its_only_reply() -> None:
    definition = SagaDefinition("One", [{"name": "only", "action": "Svc.Do"}])
    saga = start(definition)
    saga.complete_step("only", 7, now=at(1))
    assert event_names(collect(saga)) == ["StepCompleted", "SagaCompleted"]
    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps["only"].result == 7


@given(definitions(), saga_data())
def test_any_saga_whose_steps_all_succeed_completes_with_every_action_once(
    definition: SagaDefinition, data: dict[str, object]
) -> None:
    saga = Saga.start(definition, data, saga_id=SAGA_ID, now=T0)
    for name in definition.step_names:
        assert saga.complete_step(name, name, now=T0).applied
    events = collect(saga)
    completed = [e.step for e in events if isinstance(e, Saga.StepCompleted)]
    assert completed == list(definition.step_names)
    assert isinstance(events[-1], Saga.SagaCompleted)
    assert saga.status is SagaStatus.COMPLETED
    assert saga.data == data
