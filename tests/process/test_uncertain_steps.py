"""Issue 14's one-process reproductions: a step whose outcome is unknown leaves no effect.

A money transfer (debit → credit → notify, 10 s step timeouts) and a trip (flight
→ hotel) run on a real manager with a manual clock, the real relay, and a bank (or
hotel) that is a real :class:`~sagalog.infrastructure.services.participant.Participant`
answered in process (``participant.answer``: its fences, on the same manual clock,
and an in-memory processed-command store). Between the relay and the participant
sits a :class:`Wire` that holds commands and replies until the test delivers
them, in the order the test chooses: a reply still queued when the deadline
passes, a command delivered after its deadline or after its compensation.

The participants key their effects on the idempotency key (the action's key for
a compensation), as docs/services.md asks: an action runs at most once, an undo
of an action that never ran is a no-op that answers success and leaves a ``void``
mark, and an action arriving after that mark does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from sagalog.domain import (
    Command,
    CommandKind,
    Outcome,
    ReplyOutcome,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagaStatus,
    Step,
    idempotency_key_for,
)
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.services.fencing import (
    FenceReason,
    Handling,
    InMemoryProcessedCommands,
    action_key,
)
from sagalog.infrastructure.services.participant import CommandFailed, Participant
from sagalog.process import Reply, SagaManager, explain
from sagalog.process.clock import ManualClock

TIMEOUT = timedelta(seconds=10)
PAST_THE_DEADLINE = TIMEOUT.total_seconds() + 1


def transfer(debit_attempts: int = 1) -> SagaDefinition:
    """The issue's money transfer: debit → credit → notify, 10 s step timeouts."""
    return SagaDefinition(
        "MoneyTransfer",
        [
            Step(
                name="debit",
                action="Bank.Debit",
                compensation="Bank.Refund",
                timeout=TIMEOUT,
                retry=RetryPolicy(max_attempts=debit_attempts, initial_delay=timedelta(seconds=1)),
            ),
            Step(
                name="credit",
                action="Bank.Credit",
                compensation="Bank.Reclaim",
                timeout=TIMEOUT,
            ),
            Step(name="notify", action="Mail.Notify", retriable=True, timeout=TIMEOUT),
        ],
    )


TRIP = SagaDefinition(
    "Trip",
    [
        Step(
            name="flight",
            action="Flights.Book",
            compensation="Flights.Cancel",
            timeout=TIMEOUT,
        ),
        Step(name="hotel", action="Hotels.Book", compensation="Hotels.Cancel", timeout=TIMEOUT),
    ],
)
DATA = {"source": "A", "target": "B", "amount": 100}


class Effects:
    """A participant's own database: effects keyed by their action's idempotency key.

    ``state[key]`` is ``done`` (the action's effect is in force), ``undone`` (it ran,
    then was compensated) or ``void`` (compensated before it ever ran: it never will).
    """

    def __init__(self) -> None:
        self.state: dict[UUID, str] = {}
        self.undo: dict[UUID, tuple[str, int]] = {}

    def act(self, command: Command, apply: tuple[str, int], into: dict[str, int]) -> None:
        key = command.idempotency_key
        state = self.state.get(key)
        if state in ("undone", "void"):
            raise CommandFailed(f"{command.step} already compensated; not done")
        if state is None:
            account, delta = apply
            into[account] = into.get(account, 0) + delta
            self.state[key] = "done"
            self.undo[key] = (account, -delta)

    def compensate(self, command: Command, into: dict[str, int]) -> None:
        key = action_key(command)
        state = self.state.get(key)
        if state is None:
            self.state[key] = "void"  # a refund of a debit never made: nothing to do
        elif state == "done":
            account, delta = self.undo[key]
            into[account] += delta
            self.state[key] = "undone"

    def in_force(self) -> set[UUID]:
        return {key for key, state in self.state.items() if state == "done"}


class Bank:
    """Accounts A and B, and a mailer, behind one fenced participant."""

    def __init__(self, clock: ManualClock) -> None:
        self.balances = {"A": 1000, "B": 0}
        self.effects = Effects()
        self.ran: list[str] = []
        self.store = InMemoryProcessedCommands()
        self.participant = Participant(
            "bank",
            {
                "Bank.Debit": self.debit,
                "Bank.Refund": self.undo,
                "Bank.Credit": self.credit,
                "Bank.Reclaim": self.undo,
                "Mail.Notify": self.notify,
            },
            store=self.store,
            clock=clock,
        )

    def debit(self, command: Command) -> dict[str, Any]:
        self.ran.append(command.name)
        data = command.payload["data"]
        self.effects.act(command, (data["source"], -data["amount"]), self.balances)
        return {"debited": data["amount"]}

    def credit(self, command: Command) -> dict[str, Any]:
        self.ran.append(command.name)
        data = command.payload["data"]
        self.effects.act(command, (data["target"], data["amount"]), self.balances)
        return {"credited": data["amount"]}

    def undo(self, command: Command) -> None:
        self.ran.append(command.name)
        self.effects.compensate(command, self.balances)

    def notify(self, command: Command) -> dict[str, Any]:
        self.ran.append(command.name)
        return {"sent": True}


class Hotel:
    """Flights and hotel rooms behind one fenced participant; ``bookings`` in force."""

    def __init__(self, clock: ManualClock) -> None:
        self.bookings: dict[str, int] = {}
        self.effects = Effects()
        self.store = InMemoryProcessedCommands()
        self.participant = Participant(
            "travel",
            {
                "Flights.Book": self.book,
                "Flights.Cancel": self.cancel,
                "Hotels.Book": self.book,
                "Hotels.Cancel": self.cancel,
            },
            store=self.store,
            clock=clock,
        )

    def book(self, command: Command) -> dict[str, Any]:
        self.effects.act(command, (command.step, 1), self.bookings)
        return {"booking": command.step}

    def cancel(self, command: Command) -> None:
        self.effects.compensate(command, self.bookings)

    def left(self) -> dict[str, int]:
        return {what: count for what, count in self.bookings.items() if count}


class Wire:
    """The network between the relay, a participant and the manager, held by the test.

    ``send`` (the relay's transport) queues a command; ``deliver`` hands a queued
    command to the participant and queues its reply; ``reply`` hands a queued reply
    to the manager.
    """

    def __init__(self, manager: SagaManager, participant: Participant) -> None:
        self.manager = manager
        self.participant = participant
        self.commands: list[Command] = []
        self.replies: list[Reply] = []
        self.handlings: list[tuple[str, Handling]] = []

    def send(self, command: Command) -> None:
        self.commands.append(command)

    def close(self) -> None:
        self.commands.clear()

    @staticmethod
    def _take(queue: list[Any], **match: object) -> Any:
        for index, item in enumerate(queue):
            if all(value is None or getattr(item, key) == value for key, value in match.items()):
                return queue.pop(index)
        raise AssertionError(f"nothing queued matches {match}: {queue}")

    def deliver(self, name: str | None = None) -> Command:
        """Hand the first queued command (named ``name``) to the participant."""
        command: Command = self._take(self.commands, name=name)
        answer = self.participant.answer(command)
        self.handlings.append((command.name, answer.handling))
        self.replies.append(answer.reply)
        return command

    def reply(self, step: str | None = None, kind: CommandKind | None = None) -> ReplyOutcome:
        """Hand the first queued reply (about ``step``'s ``kind``) to the manager."""
        reply: Reply = self._take(self.replies, step=step, kind=kind)
        return self.manager.handle(reply)

    def settle(self, relay: CommandRelay) -> None:
        """Deliver everything, in order, until nothing moves."""
        while relay.drain() or self.commands or self.replies:
            while self.commands:
                self.deliver()
            while self.replies:
                self.reply()


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager([transfer(), TRIP], database_url, clock=clock)
    yield app
    app.close()


@pytest.fixture
def bank(clock: ManualClock) -> Bank:
    return Bank(clock)


@pytest.fixture
def wire(manager: SagaManager, bank: Bank) -> Wire:
    return Wire(manager, bank.participant)


@pytest.fixture
def relay(manager: SagaManager, wire: Wire) -> Iterator[CommandRelay]:
    relay = CommandRelay(manager, wire)
    yield relay
    relay.close()


def _names(events: list[Saga.Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def _assert_nothing_left(manager: SagaManager, saga_id: UUID, bank: Bank) -> None:
    """Law 1 from the participant's side: a FAILED saga leaves no action in force."""
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    assert saga.effects_in_force == []
    assert bank.effects.in_force() == set()
    assert bank.store.actions_in_force() == set()
    assert bank.balances == {"A": 1000, "B": 0}


def test_the_transfer_completes_when_every_reply_is_on_time(
    manager: SagaManager, bank: Bank, wire: Wire, relay: CommandRelay
) -> None:
    """The reference run: the same wiring moves the money once."""
    saga_id = manager.start("MoneyTransfer", DATA)
    wire.settle(relay)
    assert manager.get(saga_id).status is SagaStatus.COMPLETED
    assert bank.balances == {"A": 900, "B": 100}
    assert bank.ran == ["Bank.Debit", "Bank.Credit", "Mail.Notify"]


@pytest.mark.parametrize("late_reply", ["before the refund", "after the refund"])
def test_a_debit_done_in_time_whose_reply_comes_after_the_timeout_is_refunded(
    manager: SagaManager,
    bank: Bank,
    wire: Wire,
    relay: CommandRelay,
    clock: ManualClock,
    late_reply: str,
) -> None:
    """Issue 14, steps 1 to 3: the reply is still queued when the deadline passes."""
    saga_id = manager.start("MoneyTransfer", DATA)
    relay.drain()
    wire.deliver("Bank.Debit")  # within the deadline: the bank debits A
    assert bank.balances == {"A": 900, "B": 0}
    assert wire.replies[0].outcome == "completed"

    clock.advance(PAST_THE_DEADLINE)
    assert manager.tick() == 1
    history = manager.history(saga_id)
    timed_out = [e for e in history if isinstance(e, Saga.StepTimedOut)]
    assert [e.step for e in timed_out] == ["debit"]
    [requested] = [e for e in history if isinstance(e, Saga.CompensationRequested)]
    assert requested.uncertain_steps == ["debit"]
    assert manager.get(saga_id).status is SagaStatus.COMPENSATING

    if late_reply == "after the refund":
        relay.drain()
        wire.deliver("Bank.Refund")
        assert bank.balances == {"A": 1000, "B": 0}
        assert wire.reply("debit", CommandKind.COMPENSATION).outcome is Outcome.APPLIED
        assert manager.get(saga_id).status is SagaStatus.FAILED
    outcome = wire.reply("debit")  # the debit's own reply, at last
    assert outcome.outcome is Outcome.LATE
    wire.settle(relay)

    history = manager.history(saga_id)
    [late] = [e for e in history if isinstance(e, Saga.StepCompletedLate)]
    assert (late.step, late.attempt, late.result) == ("debit", 1, {"debited": 100})
    compensated = [e.step for e in history if isinstance(e, Saga.CompensationCompleted)]
    assert compensated == ["debit"]
    names = _names(history)
    assert names.count("SagaFailed") == 1
    # The late fact is recorded where it came: before the refund, or after the end.
    if late_reply == "before the refund":
        assert names.index("StepCompletedLate") < names.index("CompensationCompleted")
        assert names[-1] == "SagaFailed"
    else:
        assert names[-2:] == ["SagaFailed", "StepCompletedLate"]
    assert bank.ran == ["Bank.Debit", "Bank.Refund"]  # no credit, one refund
    _assert_nothing_left(manager, saga_id, bank)
    told = explain(manager.get(saga_id), now=clock.now)
    assert "debit: succeeded late (attempt 1, after the saga stopped waiting); compensated." in told


def test_a_refund_sent_for_a_debit_that_never_ran_is_a_no_op_and_the_debit_stays_out(
    manager: SagaManager, bank: Bank, wire: Wire, relay: CommandRelay, clock: ManualClock
) -> None:
    """The debit is lost on the way: the saga cannot know, so it refunds anyway."""
    saga_id = manager.start("MoneyTransfer", DATA)
    relay.drain()
    lost = wire.commands.pop()  # never delivered
    assert lost.name == "Bank.Debit"
    clock.advance(PAST_THE_DEADLINE)
    assert manager.tick() == 1
    wire.settle(relay)
    assert bank.ran == ["Bank.Refund"]
    assert bank.effects.state == {action_key(lost): "void"}
    _assert_nothing_left(manager, saga_id, bank)


def test_an_abort_while_the_hotel_books_leaves_no_booking(
    manager: SagaManager, clock: ManualClock
) -> None:
    """Issue 14: ``abort`` while ``Hotels.Book`` is in flight; the hotel books afterwards."""
    hotel = Hotel(clock)
    wire = Wire(manager, hotel.participant)
    relay = CommandRelay(manager, wire)
    try:
        saga_id = manager.start("Trip", {"traveller": "ada"})
        relay.drain()
        wire.deliver("Flights.Book")
        assert wire.reply("flight").outcome is Outcome.APPLIED
        relay.drain()
        assert [c.name for c in wire.commands] == ["Hotels.Book"]  # in flight

        manager.abort(saga_id, actor="ada", reason="changed plans")
        [requested] = [
            e for e in manager.history(saga_id) if isinstance(e, Saga.CompensationRequested)
        ]
        assert requested.uncertain_steps == ["hotel"]
        wire.deliver("Hotels.Book")  # the hotel books afterwards, within its deadline
        assert hotel.left() == {"flight": 1, "hotel": 1}
        wire.settle(relay)

        history = manager.history(saga_id)
        assert [e.step for e in history if isinstance(e, Saga.CompensationCompleted)] == [
            "hotel",
            "flight",
        ]
        assert [e.step for e in history if isinstance(e, Saga.StepCompletedLate)] == ["hotel"]
        saga = manager.get(saga_id)
        assert saga.status is SagaStatus.FAILED
        assert saga.effects_in_force == []
        assert hotel.left() == {}
        assert hotel.store.actions_in_force() == set()
    finally:
        relay.close()


def test_an_abort_whose_cancel_overtakes_the_booking_leaves_no_booking(
    manager: SagaManager, clock: ManualClock
) -> None:
    """The cancellation reaches the hotel first; the booking delivered after it is fenced."""
    hotel = Hotel(clock)
    wire = Wire(manager, hotel.participant)
    relay = CommandRelay(manager, wire)
    try:
        saga_id = manager.start("Trip", {"traveller": "ada"})
        relay.drain()
        wire.deliver("Flights.Book")
        wire.reply("flight")
        relay.drain()
        manager.abort(saga_id, actor="ada", reason="changed plans")
        relay.drain()
        assert [c.name for c in wire.commands] == ["Hotels.Book", "Hotels.Cancel"]
        wire.deliver("Hotels.Cancel")
        wire.deliver("Hotels.Book")
        assert wire.handlings[-1] == ("Hotels.Book", Handling.REFUSED)
        assert hotel.participant.refused == {FenceReason.COMPENSATED: 1}
        wire.settle(relay)
        saga = manager.get(saga_id)
        assert saga.status is SagaStatus.FAILED
        assert hotel.left() == {}
        assert hotel.store.actions_in_force() == set()
    finally:
        relay.close()


def test_a_debit_delivered_after_its_refund_is_refused_by_the_tombstone(
    manager: SagaManager, bank: Bank, wire: Wire, relay: CommandRelay, clock: ManualClock
) -> None:
    """Out of order: the debit timed out undelivered, its refund overtook it."""
    saga_id = manager.start("MoneyTransfer", DATA)
    relay.drain()
    clock.advance(PAST_THE_DEADLINE)
    manager.tick()
    relay.drain()
    assert [c.name for c in wire.commands] == ["Bank.Debit", "Bank.Refund"]
    wire.deliver("Bank.Refund")
    # Fenced even without the deadline fence: the tombstone speaks first.
    debit = wire.deliver("Bank.Debit")
    assert wire.handlings == [
        ("Bank.Refund", Handling.EXECUTED),
        ("Bank.Debit", Handling.REFUSED),
    ]
    assert bank.participant.refused == {FenceReason.COMPENSATED: 1}
    assert "already compensated" in (wire.replies[-1].error or "")
    wire.settle(relay)
    assert bank.ran == ["Bank.Refund"]
    assert bank.effects.state == {debit.idempotency_key: "void"}
    _assert_nothing_left(manager, saga_id, bank)


@pytest.mark.parametrize("manager_ticks_first", [False, True])
def test_a_debit_delivered_after_its_deadline_is_refused_and_never_runs(
    manager: SagaManager,
    bank: Bank,
    wire: Wire,
    relay: CommandRelay,
    clock: ManualClock,
    manager_ticks_first: bool,
) -> None:
    """The relay sends it late (after a restart): the bank's clock says it expired."""
    saga_id = manager.start("MoneyTransfer", DATA)
    clock.advance(PAST_THE_DEADLINE)
    if manager_ticks_first:
        assert manager.tick() == 1  # the timeout and the uncertain debit's refund
    relay.drain()
    assert wire.commands[0].name == "Bank.Debit"
    wire.deliver("Bank.Debit")
    assert wire.handlings == [("Bank.Debit", Handling.REFUSED)]
    assert bank.participant.refused == {FenceReason.DEADLINE_PASSED: 1}
    assert "not executed" in (wire.replies[0].error or "")
    wire.settle(relay)
    assert "Bank.Debit" not in bank.ran
    history = manager.history(saga_id)
    refunds = [e.step for e in history if isinstance(e, Saga.CompensationCompleted)]
    # Refused before the saga timed it out, the debit is known not done: no refund.
    assert refunds == (["debit"] if manager_ticks_first else [])
    _assert_nothing_left(manager, saga_id, bank)


def test_a_retry_after_a_timeout_does_not_debit_twice(
    database_url: str, clock: ManualClock
) -> None:
    """Attempt 1 debits in time, its reply is late; attempt 2 gets attempt 1's success."""
    manager = SagaManager([transfer(debit_attempts=2)], database_url, clock=clock)
    bank = Bank(clock)
    wire = Wire(manager, bank.participant)
    relay = CommandRelay(manager, wire)
    try:
        saga_id = manager.start("MoneyTransfer", DATA)
        relay.drain()
        wire.deliver("Bank.Debit")  # attempt 1 runs; its reply waits
        clock.advance(PAST_THE_DEADLINE)
        manager.tick()  # timed out: a retry is scheduled
        clock.advance(1)
        manager.tick()  # attempt 2 dispatched
        relay.drain()
        [second] = wire.commands
        assert (second.name, second.attempt) == ("Bank.Debit", 2)
        assert second.idempotency_key == idempotency_key_for(saga_id, "debit", CommandKind.ACTION)
        wire.deliver("Bank.Debit")
        assert wire.handlings[-1] == ("Bank.Debit", Handling.REPEATED)
        assert wire.reply("debit").outcome is Outcome.LATE  # attempt 1's success, recorded
        wire.settle(relay)
        assert manager.get(saga_id).status is SagaStatus.COMPLETED
        assert bank.ran == ["Bank.Debit", "Bank.Credit", "Mail.Notify"]
        assert bank.balances == {"A": 900, "B": 100}
    finally:
        relay.close()
        manager.close()
