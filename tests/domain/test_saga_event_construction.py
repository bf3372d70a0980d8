"""Events a saga triggers are the objects eventsourcing's ``trigger_event`` would build.

``Saga._trigger`` sets an event's fields at once instead of through the frozen
dataclass ``__init__``; these tests hold it to building the same object: every
declared field, in declaration order (so the stored JSON is the same), equal to
the event ``__init__`` builds from the same values. ``Saga.Event.mutate`` skips
the aggregate's properties; it must refuse what eventsourcing's refuses.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from random import Random
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate, OriginatorIDError, OriginatorVersionError
from saga_builders import SAGA_ID, T0, at, collect, order_definition

from sagalog.domain import (
    CommandKind,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagalogError,
    Step,
)


def _events_of_every_path() -> list[Saga.Event]:
    """Sagas driven by seeded random replies, clock ticks, aborts and operator actions."""
    definition = order_definition(
        payment_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
        compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
    )
    events: list[Saga.Event] = []
    for seed in range(60):
        rng = Random(seed)
        saga = Saga.start(definition, {"order": seed}, saga_id=SAGA_ID, now=T0, message_id="m")
        now = T0
        for turn in range(40):
            if saga.is_terminal and saga.dead_letter is None:
                break
            now += timedelta(seconds=1)
            command = saga.pending_command
            roll = rng.random()
            message_id = f"m-{seed}-{turn}"
            try:
                if saga.dead_letter is not None:
                    if roll < 0.25:
                        saga.retry(actor="ops", reason="fixed", now=now, patch={"order": -seed})
                    elif roll < 0.5:
                        saga.retry(actor="ops", reason="again", now=now)
                    else:
                        saga.resolve(actor="ops", reason="by hand", now=now)
                elif command is None or roll < 0.15:
                    if saga.next_wakeup is not None:
                        now = max(now, saga.next_wakeup)
                    saga.fire_due(now)
                elif roll < 0.2:
                    saga.abort(actor="ops", reason="cancel", now=now)
                elif command.kind is CommandKind.ACTION:
                    if roll < 0.6:
                        saga.complete_step(
                            command.step, {"t": turn}, now=now, message_id=message_id
                        )
                    else:
                        saga.fail_step(command.step, "no", now=now, message_id=message_id)
                elif roll < 0.55:
                    saga.complete_compensation(command.step, now=now, message_id=message_id)
                else:
                    saga.fail_compensation(command.step, "down", now=now, message_id=message_id)
            except SagalogError:
                continue
        events += collect(saga)
    return (
        events
        + _events_of_a_late_effect_repaired()
        + _events_of_a_deadline_passed()
        + _events_of_a_forgotten_saga()
    )


def _events_of_a_late_effect_repaired() -> list[Saga.Event]:
    """A step that opted out of compensation when uncertain times out; its success comes
    after the saga failed (``StepCompletedLate``); an operator compensates it."""
    definition = SagaDefinition(
        "Late",
        [
            Step(
                name="hold",
                action="Svc.Hold",
                compensation="Svc.Release",
                timeout=timedelta(seconds=5),
                compensate_uncertain=False,
            )
        ],
    )
    saga = Saga.start(definition, {}, saga_id=SAGA_ID, now=T0)
    saga.fire_due(at(5))
    saga.complete_step("hold", {"h": 1}, now=at(6))
    saga.compensate(actor="ops", reason="late hold", now=at(7))
    saga.complete_compensation("hold", now=at(8))
    return collect(saga)


def _events_of_a_deadline_passed() -> list[Saga.Event]:
    """A saga whose deadline passes while its first step is in flight."""
    definition = SagaDefinition("Due", order_definition().steps, deadline=timedelta(seconds=5))
    saga = Saga.start(definition, {}, saga_id=SAGA_ID, now=T0)
    saga.fire_due(at(5))
    return collect(saga)


def _events_of_a_forgotten_saga() -> list[Saga.Event]:
    """A saga that completes, then whose data an operator erases (``SagaForgotten``)."""
    definition = SagaDefinition("Kept", [Step(name="only", action="Svc.Do")])
    saga = Saga.start(definition, {"iban": "x"}, saga_id=SAGA_ID, now=T0)
    saga.complete_step("only", {"r": 1}, now=at(1))
    saga.forget(actor="dpo", reason="erasure request", now=at(2))
    return collect(saga)


EVENTS = _events_of_every_path()


def test_the_paths_trigger_most_event_types() -> None:
    triggered = {type(event) for event in EVENTS}
    # (SagaStarted is built by eventsourcing's _create, the rest by _trigger.)
    every = {
        cls
        for cls in vars(Saga).values()
        if isinstance(cls, type)
        and issubclass(cls, Saga.Event)
        and cls not in (Saga.Event, Saga.Created)
    }
    assert triggered == every, sorted(cls.__name__ for cls in every - triggered)


def test_a_triggered_event_is_the_object_its_dataclass_init_builds() -> None:
    for event in EVENTS:
        names = [field.name for field in dataclasses.fields(event)]
        assert list(vars(event)) == names, type(event).__name__
        rebuilt = type(event)(**vars(event))
        assert rebuilt == event
        assert list(vars(rebuilt)) == list(vars(event))


def test_arguments_that_are_not_the_fields_go_through_trigger_event() -> None:
    saga = Saga.start(order_definition(), {"order": 5}, saga_id=SAGA_ID, now=T0)
    with pytest.raises(TypeError, match="Can't construct event"):
        saga._trigger(Saga.StepCompleted, at(1), None, step="reserve_inventory")
    with pytest.raises(TypeError, match="Can't construct event"):
        saga._trigger(Saga.StepCompleted, at(1), None, step="x", attempt=1, result=None, extra=1)


def test_an_event_of_another_saga_or_out_of_order_is_refused_as_eventsourcing_does() -> None:
    saga = Saga.start(order_definition(), {"order": 6}, saga_id=SAGA_ID, now=T0)
    saga.complete_step("reserve_inventory", {"r": 1}, now=at(1))
    events = collect(saga)
    rebuilt = events[0].mutate(None)
    assert rebuilt is not None
    with pytest.raises(OriginatorVersionError):
        events[2].mutate(rebuilt)  # the second event skipped
    assert rebuilt.version == 1
    other = Saga.start(order_definition(), {"order": 7}, saga_id=uuid4(), now=T0)
    with pytest.raises(OriginatorIDError):
        events[1].mutate(other)
    assert other.version == 2
    for event in events[1:]:
        event.mutate(rebuilt)
    assert rebuilt.version == saga.version
    assert rebuilt.modified_on == saga.modified_on == at(1)


def test_a_saga_rebuilt_from_its_start_is_the_one_eventsourcings_created_builds() -> None:
    saga = Saga.start(order_definition(), {"order": 8}, saga_id=SAGA_ID, now=T0, message_id="m")
    started = collect(saga)[0]
    assert isinstance(started, Saga.SagaStarted)
    ours = started.mutate(None)
    theirs: Any = Aggregate.Created.mutate(started, None)  # eventsourcing's own
    assert type(ours) is type(theirs) is Saga
    assert vars(ours) == vars(theirs)
    assert (ours.id, ours.version, ours.created_on, ours.modified_on) == (SAGA_ID, 1, T0, T0)
    assert ours.pending_events == []
