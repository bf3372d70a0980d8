"""Command ids are deterministic: the same (saga, step, kind, attempt) always gives the same id."""

from __future__ import annotations

from uuid import UUID, uuid5

from hypothesis import given
from hypothesis import strategies as st
from saga_builders import SAGA_ID, at, order_definition, start

from sagalog.domain import CommandKind, RetryPolicy, Saga, command_id_for
from sagalog.testing.strategies import step_names

OTHER_SAGA = UUID("87654321-4321-8765-4321-876543218765")


def test_the_same_inputs_give_the_same_command_id() -> None:
    first = command_id_for(SAGA_ID, "charge_payment", CommandKind.ACTION, 1)
    again = command_id_for(UUID(str(SAGA_ID)), "charge_payment", CommandKind.ACTION, 1)
    assert first == again
    assert first.version == 5


def test_each_input_changes_the_command_id() -> None:
    base = command_id_for(SAGA_ID, "charge_payment", CommandKind.ACTION, 1)
    variants = {
        command_id_for(OTHER_SAGA, "charge_payment", CommandKind.ACTION, 1),
        command_id_for(SAGA_ID, "reserve_inventory", CommandKind.ACTION, 1),
        command_id_for(SAGA_ID, "charge_payment", CommandKind.COMPENSATION, 1),
        command_id_for(SAGA_ID, "charge_payment", CommandKind.ACTION, 2),
    }
    assert base not in variants
    assert len(variants) == 4


@given(
    st.lists(
        st.tuples(step_names(), st.sampled_from(list(CommandKind)), st.integers(1, 50)),
        unique=True,
        max_size=30,
    )
)
def test_distinct_commands_of_a_saga_get_distinct_ids(
    commands: list[tuple[str, CommandKind, int]],
) -> None:
    ids = {command_id_for(SAGA_ID, step, kind, attempt) for step, kind, attempt in commands}
    assert len(ids) == len(commands)


def test_a_saga_dispatches_with_the_deterministic_ids_of_every_attempt() -> None:
    saga = start(order_definition(payment_retry=RetryPolicy(max_attempts=2)))
    saga.complete_step("reserve_inventory", now=at(1))
    saga.fail_step("charge_payment", "busy", now=at(2))
    saga.fire_due(at(3))
    saga.fail_step("charge_payment", "busy", now=at(4))
    dispatched = [
        (e.step, e.attempt, e.command_id)
        for e in saga.collect_events()
        if isinstance(e, Saga.StepDispatched | Saga.CompensationDispatched)
    ]
    assert dispatched == [
        ("charge_payment", 1, command_id_for(SAGA_ID, "charge_payment", CommandKind.ACTION, 1)),
        ("charge_payment", 2, command_id_for(SAGA_ID, "charge_payment", CommandKind.ACTION, 2)),
        (
            "reserve_inventory",
            1,
            command_id_for(SAGA_ID, "reserve_inventory", CommandKind.COMPENSATION, 1),
        ),
    ]


def test_replaying_a_saga_from_scratch_dispatches_the_same_ids() -> None:
    first = start()
    first.complete_step("reserve_inventory", now=at(1))
    second = start()
    second.complete_step("reserve_inventory", now=at(1))
    assert first.pending_command is not None
    assert second.pending_command is not None
    assert first.pending_command.command_id == second.pending_command.command_id


@given(
    saga_id=st.uuids(),
    step=st.text(min_size=1, max_size=30),
    kind=st.sampled_from(list(CommandKind)),
    attempt=st.integers(1, 10**9),
)
def test_a_command_id_is_the_uuid5_of_its_inputs(
    saga_id: UUID, step: str, kind: CommandKind, attempt: int
) -> None:
    # command_id_for computes uuid5 by hand; ids already stored must keep matching.
    expected = uuid5(saga_id, f"{step}\x1f{kind.value}\x1f{attempt}")
    found = command_id_for(saga_id, step, kind, attempt)
    assert found == expected
    assert (found.int, found.version, found.variant, str(found)) == (
        expected.int,
        expected.version,
        expected.variant,
        str(expected),
    )
    assert hash(found) == hash(expected)


def test_the_idempotency_key_is_shared_by_every_attempt_of_one_step_and_kind() -> None:
    from sagalog.domain import idempotency_key_for

    first = idempotency_key_for(SAGA_ID, "charge_payment", CommandKind.ACTION)
    assert first == uuid5(SAGA_ID, "charge_payment\x1faction")
    assert first != idempotency_key_for(SAGA_ID, "charge_payment", CommandKind.COMPENSATION)
    assert first != idempotency_key_for(OTHER_SAGA, "charge_payment", CommandKind.ACTION)
    command = start().pending_command
    assert command is not None
    key = idempotency_key_for(SAGA_ID, command.step, CommandKind.ACTION)
    assert command.idempotency_key == key
    assert command.to_message()["idempotency_key"] == str(key)
