"""Reactions that read the event (``when=``) and ``AbortSaga``, inside an eventsourcing System.

One upstream event class that carries its outcome as data serves a ``CompleteStep``
and a ``FailStep``; an upstream event aborts a running saga with itself as the cause,
and leaves an ended saga alone without stopping the follower.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import SingleThreadedRunner, System
from support.sagas import ORDER

from sagalog.domain import CommandKind, Saga, SagaDefinition, SagaStatus, StepStatus
from sagalog.process import (
    AbortSaga,
    CompleteCompensation,
    CompleteStep,
    FailCompensation,
    FailStep,
    Reaction,
    SagaManager,
    StartSaga,
    saga_id_for,
)
from sagalog.process.reactions import event_message_id


class Order(Aggregate):
    @event("Placed")
    def __init__(self, items: int) -> None:
        self.items = items

    @event("Cancelled")
    def cancel(self, reason: str) -> None:
        self.reason = reason


class Reservation(Aggregate):
    """One event class for both outcomes: ``ok`` says which."""

    @event("Answered")
    def __init__(self, order_id: UUID, ok: bool, reason: str = "") -> None:
        self.order_id = order_id
        self.ok = ok
        self.reason = reason


class Orders(Application[UUID]):
    def place(self, items: int) -> UUID:
        order = Order(items)
        self.save(order)
        return order.id

    def cancel(self, order_id: UUID, reason: str) -> None:
        order: Order = self.repository.get(order_id)
        order.cancel(reason)
        self.save(order)


class Inventory(Application[UUID]):
    def answer(self, order_id: UUID, ok: bool, reason: str = "") -> None:
        self.save(Reservation(order_id, ok, reason))


Answered = Reservation.Answered  # type: ignore[attr-defined]  # made by @event


class OrderSagas(SagaManager):
    definitions: ClassVar[list[SagaDefinition]] = [ORDER]
    reactions: ClassVar[list[Reaction]] = [
        StartSaga(Order.Placed, "Order", data=lambda e: {"items": e.items}),  # type: ignore[attr-defined]
        CompleteStep(Answered, "Order", "reserve", key=lambda e: e.order_id, when=lambda e: e.ok),
        FailStep(
            Answered,
            "Order",
            "reserve",
            key=lambda e: e.order_id,
            error=lambda e: e.reason,
            when=lambda e: not e.ok,
        ),
        AbortSaga(
            Order.Cancelled,  # type: ignore[attr-defined]
            "Order",
            reason=lambda e: e.reason,
            actor=lambda e: "customer",
        ),
    ]


@pytest.fixture
def system(database_url: str) -> Iterator[SingleThreadedRunner[UUID]]:
    runner: SingleThreadedRunner[UUID] = SingleThreadedRunner(
        System(pipes=[[Orders, OrderSagas], [Inventory, OrderSagas]]),
        env={"SAGALOG_DATABASE_URL": database_url},
    )
    runner.start()
    yield runner
    runner.stop()


def test_one_event_class_completes_or_fails_a_step_by_its_data(
    system: SingleThreadedRunner[UUID],
) -> None:
    orders, inventory, sagas = system.get(Orders), system.get(Inventory), system.get(OrderSagas)
    good, bad = orders.place(items=1), orders.place(items=2)
    inventory.answer(good, ok=True)
    inventory.answer(bad, ok=False, reason="out of stock")
    completed = sagas.get(saga_id_for("Order", good))
    failed = sagas.get(saga_id_for("Order", bad))
    assert completed.steps["reserve"].status is StepStatus.COMPLETED
    assert failed.steps["reserve"].status is StepStatus.FAILED
    assert failed.last_error == "out of stock"
    # each event was decided once: by the reaction whose predicate held
    assert [type(e).__name__ for e in sagas.history(completed.id)].count("StepCompleted") == 1
    assert "StepFailed" not in [type(e).__name__ for e in sagas.history(completed.id)]


def test_an_upstream_event_aborts_a_running_saga_with_itself_as_the_cause(
    system: SingleThreadedRunner[UUID],
) -> None:
    orders, inventory, sagas = system.get(Orders), system.get(Inventory), system.get(OrderSagas)
    order_id = orders.place(items=3)
    inventory.answer(order_id, ok=True)  # reserve completed; charge is pending
    orders.cancel(order_id, reason="changed my mind")
    saga_id = saga_id_for("Order", order_id)
    saga = sagas.get(saga_id)
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.aborted_by == "customer"
    history = sagas.history(saga_id)
    aborted = next(e for e in history if isinstance(e, Saga.SagaAborted))
    cause = event_message_id(list(orders.events.get(order_id))[-1])
    assert aborted.causation_id == cause
    assert aborted.reason == "changed my mind"
    assert isinstance(history[-1], Saga.CompensationDispatched)
    assert history[-1].step == "charge"  # in flight at the abort: uncertain, undone first
    assert history[-1].causation_id == cause


def test_an_abort_event_for_an_ended_saga_changes_nothing_and_the_follower_goes_on(
    system: SingleThreadedRunner[UUID],
) -> None:
    orders, inventory, sagas = system.get(Orders), system.get(Inventory), system.get(OrderSagas)
    first = orders.place(items=1)
    inventory.answer(first, ok=False, reason="none left")  # the saga fails at once
    ended = sagas.get(saga_id_for("Order", first))
    assert ended.status is SagaStatus.FAILED
    orders.cancel(first, reason="too late")
    assert sagas.get(ended.id).version == ended.version
    assert sagas.recorder.max_tracking_id("Orders") == orders.recorder.max_notification_id()
    second = orders.place(items=2)  # the follower still works
    assert sagas.get(saga_id_for("Order", second)).status is SagaStatus.PENDING


def test_the_four_reply_declarations_each_name_one_kind_and_outcome() -> None:
    declared = {
        (r.kind, r.succeeded)
        for r in (
            CompleteStep(Answered, "Order", "reserve"),
            FailStep(Answered, "Order", "reserve"),
            CompleteCompensation(Answered, "Order", "reserve"),
            FailCompensation(Answered, "Order", "reserve"),
        )
    }
    assert declared == {
        (CommandKind.ACTION, True),
        (CommandKind.ACTION, False),
        (CommandKind.COMPENSATION, True),
        (CommandKind.COMPENSATION, False),
    }
