"""Every event carries the saga id as correlation id, its cause, and the time passed in."""

from __future__ import annotations

from datetime import timedelta

from saga_builders import SAGA_ID, T0, at, collect, order_definition
from saga_builders import start as start_saga

from sagalog.domain import RetryPolicy, Saga


def all_events_of_a_long_saga() -> list[Saga.Event]:
    """A saga through start, replies with and without message ids, a retry fired by the
    clock, an abort and its compensation."""
    definition = order_definition(
        payment_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1))
    )
    saga = Saga.start(definition, {"order": 1}, saga_id=SAGA_ID, now=T0, message_id="start")
    saga.complete_step("reserve_inventory", {"r": 1}, now=at(1), message_id="m-1")
    saga.fail_step("charge_payment", "busy", now=at(2), message_id="m-2")
    saga.fire_due(at(3))
    saga.abort(actor="ops", reason="cancel", now=at(4))
    saga.complete_compensation("charge_payment", now=at(5))  # in flight: uncertain
    saga.complete_compensation("reserve_inventory", now=at(6))
    return collect(saga)


def test_every_event_is_correlated_to_its_saga() -> None:
    events = all_events_of_a_long_saga()
    assert len(events) > 10
    assert all(event.correlation_id == SAGA_ID for event in events)
    assert all(event.originator_id == SAGA_ID for event in events)


def test_events_caused_by_a_message_carry_its_id_as_causation_id() -> None:
    events = all_events_of_a_long_saga()
    causes = [(type(e).__name__, e.causation_id) for e in events]
    assert causes == [
        ("SagaStarted", "start"),
        ("StepDispatched", "start"),
        ("StepCompleted", "m-1"),
        ("StepDispatched", "m-1"),
        ("StepFailed", "m-2"),
        ("StepRetryScheduled", "m-2"),
        ("StepDispatched", None),  # fired by the clock
        ("SagaAborted", None),  # an operator's act
        ("CompensationRequested", None),
        ("CompensationDispatched", None),
        ("CompensationCompleted", None),  # a reply without a message id
        ("CompensationDispatched", None),
        ("CompensationCompleted", None),
        ("SagaFailed", None),
    ]


def test_events_are_stamped_with_the_time_passed_in() -> None:
    events = all_events_of_a_long_saga()
    stamps = [(type(e).__name__, e.timestamp) for e in events]
    assert stamps[0] == ("SagaStarted", T0)
    assert ("StepDispatched", at(3)) in stamps  # the retry, when the clock reached it
    assert stamps[-1] == ("SagaFailed", at(6))
    assert [t for _, t in stamps] == sorted(t for _, t in stamps)


def test_the_versions_count_the_events_one_by_one() -> None:
    events = all_events_of_a_long_saga()
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))


def test_dispatched_commands_carry_the_saga_type_and_cause() -> None:
    saga = start_saga(message_id="start")
    saga.complete_step("reserve_inventory", now=at(1), message_id="m-1")
    command = saga.pending_command
    assert command is not None
    assert (command.saga_type, command.causation_id) == ("OrderFulfillment", "m-1")
