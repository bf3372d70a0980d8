"""The RabbitMQ participant is fenced by default, against the real local broker.

Commands go through the real transport to a ``Participant`` with a SQLite store;
each test counts the handler's runs and reads the replies the participant published.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from support.broker import Background, wait_until

from sagalog.domain import (
    Command,
    CommandKind,
    SagaDefinition,
    SagaStatus,
    Step,
    command_id_for,
)
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.rabbitmq import (
    RabbitMQTransport,
    ReplyConsumer,
    Topology,
    read_dead_letters,
)
from sagalog.infrastructure.rabbitmq.topology import channel_to, queue_depth
from sagalog.infrastructure.services.fencing import FenceReason, Fencing
from sagalog.infrastructure.services.participant import (
    CommandFailed,
    Participant,
    SQLiteProcessedCommands,
)
from sagalog.process import Reply, SagaManager

TRANSFER = SagaDefinition(
    "Transfer",
    [
        Step(
            name="debit",
            action="Bank.Debit",
            compensation="Bank.Refund",
            timeout=timedelta(seconds=10),
        ),
        Step(name="credit", action="Bank.Credit", timeout=timedelta(seconds=10)),
    ],
)
COMMANDS = ("Bank.Debit", "Bank.Refund", "Bank.Credit")


class Bank:
    """The handlers; ``calls`` lists (command name, attempt) for each run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.decline_next = False

    def handlers(self) -> dict[str, Any]:
        return dict.fromkeys(COMMANDS, self.handle)

    def handle(self, command: Command) -> Any:
        self.calls.append((command.name, command.attempt))
        if self.decline_next:
            self.decline_next = False
            raise CommandFailed("ledger busy")
        return {"ok": command.attempt} if command.kind is CommandKind.ACTION else None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteProcessedCommands]:
    sqlite = SQLiteProcessedCommands(tmp_path / "bank.db")
    yield sqlite
    sqlite.close()


def _command(
    saga_id: UUID,
    kind: CommandKind = CommandKind.ACTION,
    *,
    attempt: int = 1,
    deadline: datetime | None = None,
) -> Command:
    return Command(
        command_id=command_id_for(saga_id, "debit", kind, attempt),
        saga_id=saga_id,
        saga_type="Transfer",
        step="debit",
        kind=kind,
        name="Bank.Debit" if kind is CommandKind.ACTION else "Bank.Refund",
        attempt=attempt,
        payload={"data": {"amount": 100}, "results": {}},
        deadline=deadline if deadline is not None else datetime.now(UTC) + timedelta(minutes=5),
    )


def _start(
    background: Background,
    broker_url: str,
    topology: Topology,
    bank: Bank,
    store: SQLiteProcessedCommands,
    **options: Any,
) -> Participant:
    participant = Participant(
        "bank", bank.handlers(), url=broker_url, topology=topology, store=store, **options
    )
    background.start("bank", participant.run)
    wait_until(participant.ready.is_set, message="the bank consuming")
    return participant


def _send(broker_url: str, topology: Topology, *commands: Command) -> list[Reply]:
    """Send ``commands`` one after the other, each once the previous one was answered;
    return every reply in the replies queue."""
    transport = RabbitMQTransport(broker_url, topology=topology)
    waiting = queue_depth(topology.replies_queue, broker_url)
    try:
        for n, command in enumerate(commands, start=waiting + 1):
            transport.send(command)
            wait_until(
                lambda n=n: queue_depth(topology.replies_queue, broker_url) == n,  # type: ignore[misc]
                message=f"reply {n}",
            )
    finally:
        transport.close()
    letters = read_dead_letters(topology.replies_queue, broker_url)  # a plain get of the queue
    return [Reply.model_validate_json(letter.body) for letter in letters]


def test_an_expired_action_is_answered_failed_and_its_handler_never_runs(
    broker_url: str,
    topology: Topology,
    background: Background,
    store: SQLiteProcessedCommands,
) -> None:
    bank = Bank()
    bank_participant = _start(background, broker_url, topology, bank, store)
    late = _command(uuid4(), deadline=datetime.now(UTC) - timedelta(seconds=30))
    [reply] = _send(broker_url, topology, late)
    assert reply.outcome == "failed"
    assert reply.attempt == 1
    assert "passed" in (reply.error or "")
    assert (reply.error or "").endswith("not executed")
    assert bank.calls == []
    assert bank_participant.refused == {FenceReason.DEADLINE_PASSED: 1}
    assert bank_participant.handled == 0


def test_an_action_within_the_skew_margin_is_refused_by_the_participants_clock(
    broker_url: str,
    topology: Topology,
    background: Background,
    store: SQLiteProcessedCommands,
) -> None:
    bank = Bank()
    frozen = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    bank_participant = _start(
        background,
        broker_url,
        topology,
        bank,
        store,
        clock=lambda: frozen,
        fencing=Fencing(skew_margin=timedelta(seconds=5)),
    )
    inside = _command(uuid4(), deadline=frozen + timedelta(seconds=4))
    outside = _command(uuid4(), deadline=frozen + timedelta(seconds=6))
    replies = _send(broker_url, topology, inside, outside)
    assert [r.outcome for r in replies] == ["failed", "completed"]
    assert bank.calls == [("Bank.Debit", 1)]
    assert bank_participant.refused == {FenceReason.DEADLINE_PASSED: 1}


def test_a_compensation_long_past_its_deadline_still_runs(
    broker_url: str,
    topology: Topology,
    background: Background,
    store: SQLiteProcessedCommands,
) -> None:
    bank = Bank()
    _start(background, broker_url, topology, bank, store)
    refund = _command(
        uuid4(), CommandKind.COMPENSATION, deadline=datetime.now(UTC) - timedelta(hours=1)
    )
    [reply] = _send(broker_url, topology, refund)
    assert reply.outcome == "completed"
    assert bank.calls == [("Bank.Refund", 1)]


def test_a_debit_delivered_after_its_refund_is_refused_even_after_a_restart(
    broker_url: str, topology: Topology, tmp_path: Path
) -> None:
    bank, saga = Bank(), uuid4()
    refused: list[int] = []
    for life, command in enumerate([_command(saga, CommandKind.COMPENSATION), _command(saga)]):
        store = SQLiteProcessedCommands(tmp_path / "bank.db")
        runner = Background()
        try:
            participant = _start(runner, broker_url, topology, bank, store)
            _send(broker_url, topology, command)
            refused.append(participant.refused[FenceReason.COMPENSATED])
        finally:
            runner.close()
            store.close()
        assert len(bank.calls) == 1, f"life {life}"
    replies = [
        Reply.model_validate_json(r.body)
        for r in read_dead_letters(topology.replies_queue, broker_url)
    ]
    assert [r.outcome for r in replies] == ["completed", "failed"]
    assert replies[1].error == (
        f"step 'debit' of saga {saga} was already compensated here; action not executed"
    )
    assert bank.calls == [("Bank.Refund", 1)]
    assert refused == [0, 1]


def test_attempt_two_after_attempt_one_succeeded_is_answered_with_that_success(
    broker_url: str,
    topology: Topology,
    background: Background,
    store: SQLiteProcessedCommands,
) -> None:
    bank, saga = Bank(), uuid4()
    bank_participant = _start(background, broker_url, topology, bank, store)
    first, second = _command(saga, attempt=1), _command(saga, attempt=2)
    replies = _send(broker_url, topology, first, second)
    assert [r.outcome for r in replies] == ["completed", "completed"]
    assert [r.message_id for r in replies] == [
        f"{first.command_id}:reply",
        f"{second.command_id}:reply",
    ]
    assert [r.attempt for r in replies] == [1, 2]
    assert [r.result for r in replies] == [{"ok": 1}, {"ok": 1}]
    assert bank.calls == [("Bank.Debit", 1)]
    assert (bank_participant.handled, bank_participant.repeated) == (1, 1)


def test_attempt_two_after_attempt_one_failed_runs(
    broker_url: str,
    topology: Topology,
    background: Background,
    store: SQLiteProcessedCommands,
) -> None:
    bank, saga = Bank(), uuid4()
    bank.decline_next = True
    bank_participant = _start(background, broker_url, topology, bank, store)
    replies = _send(broker_url, topology, _command(saga, attempt=1), _command(saga, attempt=2))
    assert [r.outcome for r in replies] == ["failed", "completed"]
    assert bank.calls == [("Bank.Debit", 1), ("Bank.Debit", 2)]
    assert (bank_participant.handled, bank_participant.repeated) == (2, 0)


@pytest.fixture
def late_manager(database_url: str) -> Iterator[SagaManager]:
    """A manager whose clock is an hour behind: every deadline it sets is already past."""
    app = SagaManager(
        [TRANSFER], database_url, clock=lambda: datetime.now(UTC) - timedelta(hours=1)
    )
    yield app
    app.close()


def test_a_saga_whose_command_arrives_expired_fails_without_an_effect(
    broker_url: str,
    topology: Topology,
    background: Background,
    late_manager: SagaManager,
    store: SQLiteProcessedCommands,
) -> None:
    bank = Bank()
    with channel_to(broker_url) as channel:
        topology.declare_service(channel, "bank", COMMANDS)
    bank_participant = Participant(
        "bank", bank.handlers(), url=broker_url, topology=topology, store=store
    )
    replies = ReplyConsumer(late_manager, broker_url, topology=topology)
    relay = CommandRelay(late_manager, RabbitMQTransport(broker_url, topology=topology))
    background.start("bank", bank_participant.run)
    background.start("replies", replies.run)
    saga_id = late_manager.start("Transfer", {"amount": 100})
    try:
        relay.drain()
    finally:
        relay.transport.close()
    wait_until(lambda: late_manager.get(saga_id).is_terminal, message="the saga to end")
    saga = late_manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    assert "not executed" in (saga.failure_reason or "")
    assert bank.calls == []
    assert bank_participant.refused == {FenceReason.DEADLINE_PASSED: 1}
