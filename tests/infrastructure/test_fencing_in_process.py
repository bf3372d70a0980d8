"""In-process participants are fenced too: a ``Fence`` between the transport and the bank.

A money transfer (debit → credit) runs on a real manager, the real relay and the
in-process transport; the bank answers through a :class:`Fence` on its own clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from sagalog.domain import (
    Command,
    CommandKind,
    SagaDefinition,
    SagaStatus,
    Step,
    command_id_for,
)
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.infrastructure.services.fencing import (
    Fence,
    FenceReason,
    InMemoryProcessedCommands,
    action_key,
)
from sagalog.process import Reply, SagaManager
from sagalog.process.clock import ManualClock

TRANSFER = SagaDefinition(
    "Transfer",
    [
        Step(
            name="debit",
            action="Bank.Debit",
            compensation="Bank.Refund",
            timeout=timedelta(seconds=10),
        ),
        Step(
            name="credit",
            action="Bank.Credit",
            compensation="Bank.Reverse",
            timeout=timedelta(seconds=10),
        ),
    ],
)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Bank:
    """Balances changed at most once per action key; an undo of nothing is a no-op."""

    def __init__(self) -> None:
        self.balances = {"A": 1000, "B": 0}
        self.applied: dict[UUID, tuple[str, int]] = {}
        self.ran: list[str] = []
        self.refuse_credits = False

    def execute(self, command: Command) -> Reply:
        self.ran.append(command.name)
        if command.name == "Bank.Credit" and self.refuse_credits:
            return Reply.to(command, error="account B closed")
        data = command.payload["data"]
        account = data["source"] if command.step == "debit" else data["target"]
        delta = -data["amount"] if command.step == "debit" else data["amount"]
        key = action_key(command)
        if command.kind is CommandKind.ACTION:
            if key not in self.applied:
                self.applied[key] = (account, delta)
                self.balances[account] += delta
            return Reply.to(command, result={"account": account})
        undo = self.applied.pop(key, None)
        if undo is not None:
            self.balances[undo[0]] -= undo[1]
        return Reply.to(command)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager([TRANSFER], database_url, clock=clock)
    yield app
    app.close()


def _wire(
    manager: SagaManager, fence: Fence, bank: Bank
) -> tuple[CommandRelay, InProcessTransport]:
    transport = InProcessTransport()
    transport.subscribe_all(lambda command: _answer(manager, fence, bank, command))
    return CommandRelay(manager, transport), transport


def _answer(manager: SagaManager, fence: Fence, bank: Bank, command: Command) -> None:
    manager.handle(fence.answer(command, bank.execute).reply)


def _run(relay: CommandRelay, transport: InProcessTransport) -> None:
    while relay.drain() or transport.pending():
        transport.deliver()


def test_a_fenced_in_process_bank_completes_a_transfer(
    manager: SagaManager, clock: ManualClock
) -> None:
    bank = Bank()
    fence = Fence(InMemoryProcessedCommands(), clock=clock)
    relay, transport = _wire(manager, fence, bank)
    saga_id = manager.start("Transfer", {"source": "A", "target": "B", "amount": 100})
    _run(relay, transport)
    assert manager.get(saga_id).status is SagaStatus.COMPLETED
    assert bank.balances == {"A": 900, "B": 100}
    assert fence.refused == {}


def test_a_command_delivered_after_its_deadline_is_refused_and_the_saga_fails_cleanly(
    manager: SagaManager, clock: ManualClock
) -> None:
    """The relay sends, after a restart, a command whose deadline passed: the bank,
    on its own clock, refuses it, and the saga learns the debit did not happen."""
    bank = Bank()
    bank_clock = ManualClock(START)
    fence = Fence(InMemoryProcessedCommands(), clock=bank_clock)
    relay, transport = _wire(manager, fence, bank)
    saga_id = manager.start("Transfer", {"source": "A", "target": "B", "amount": 100})
    bank_clock.now = START + timedelta(minutes=5)  # delivered five minutes late
    _run(relay, transport)
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    assert "deadline" in (saga.failure_reason or "")
    assert "not executed" in (saga.failure_reason or "")
    assert bank.ran == []
    assert bank.balances == {"A": 1000, "B": 0}
    assert fence.refused == {FenceReason.DEADLINE_PASSED: 1}


def test_after_a_refund_a_stray_debit_is_refused_in_process(
    manager: SagaManager, clock: ManualClock
) -> None:
    bank = Bank()
    bank.refuse_credits = True
    fence = Fence(InMemoryProcessedCommands(), clock=clock)
    relay, transport = _wire(manager, fence, bank)
    saga_id = manager.start("Transfer", {"source": "A", "target": "B", "amount": 100})
    _run(relay, transport)
    assert manager.get(saga_id).status is SagaStatus.FAILED
    assert bank.ran == ["Bank.Debit", "Bank.Credit", "Bank.Refund"]
    stray = Command(  # a second debit attempt, delivered after the refund
        command_id=command_id_for(saga_id, "debit", CommandKind.ACTION, 2),
        saga_id=saga_id,
        saga_type="Transfer",
        step="debit",
        kind=CommandKind.ACTION,
        name="Bank.Debit",
        attempt=2,
        payload={"data": {"source": "A", "target": "B", "amount": 100}, "results": {}},
        deadline=START + timedelta(seconds=10),
    )
    answer = fence.answer(stray, bank.execute)
    assert answer.reason is FenceReason.COMPENSATED
    assert bank.ran == ["Bank.Debit", "Bank.Credit", "Bank.Refund"]
    assert bank.balances == {"A": 1000, "B": 0}
