"""The money-transfer bank of docs/services.md runs as written, through its fence.

Its code block is executed in a fresh namespace (in a temporary directory, for its
``bank.db``); the test then feeds commands to ``bank.answer`` in-process and checks
the balances its own database keeps, with and without the fences in front.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from sagalog.domain import Command, CommandKind, command_id_for
from sagalog.infrastructure.services.participant import CommandFailed

SERVICES = Path(__file__).resolve().parents[2] / "docs" / "services.md"


def _bank_block() -> str:
    text = SERVICES.read_text(encoding="utf-8")
    after = text[text.index("## The idempotency key: the key for your own database") :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def _command(saga_id: UUID, kind: CommandKind, attempt: int = 1) -> Command:
    return Command(
        command_id=command_id_for(saga_id, "debit", kind, attempt),
        saga_id=saga_id,
        saga_type="Transfer",
        step="debit",
        kind=kind,
        name="Bank.Debit" if kind is CommandKind.ACTION else "Bank.Refund",
        attempt=attempt,
        payload={"data": {"source": "A", "target": "B", "amount": 100}, "results": {}},
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(_bank_block(), str(SERVICES), "exec"), namespace)
    namespace["db"].execute("INSERT INTO accounts VALUES ('A', 1000), ('B', 0)")
    yield namespace
    namespace["db"].close()
    namespace["bank"].store.close()


def _balance(example: dict[str, Any]) -> int:
    return int(example["db"].execute("SELECT balance FROM accounts WHERE id = 'A'").fetchone()[0])


def _answer(example: dict[str, Any], command: Command) -> str:
    return str(example["bank"].answer(command).reply.outcome)


def test_a_retried_debit_debits_once_and_its_refund_restores_the_balance(
    example: dict[str, Any],
) -> None:
    saga = uuid4()
    outcomes = [
        _answer(example, _command(saga, CommandKind.ACTION, 1)),
        _answer(example, _command(saga, CommandKind.ACTION, 2)),
    ]
    assert _balance(example) == 900
    outcomes.append(_answer(example, _command(saga, CommandKind.COMPENSATION, 1)))
    assert outcomes == ["completed", "completed", "completed"]
    assert _balance(example) == 1000


def test_its_own_database_keeps_the_contract_without_the_fences(example: dict[str, Any]) -> None:
    """Called directly (as after a crash before the store write): the handlers alone
    debit once, refund once, treat a refund of nothing as done and refuse a late debit."""
    debit, refund = example["debit"], example["refund"]
    once = uuid4()
    debit(_command(once, CommandKind.ACTION))
    debit(_command(once, CommandKind.ACTION))
    assert _balance(example) == 900
    refund(_command(once, CommandKind.COMPENSATION, 1))
    refund(_command(once, CommandKind.COMPENSATION, 2))
    assert _balance(example) == 1000
    never = uuid4()
    refund(_command(never, CommandKind.COMPENSATION))
    with pytest.raises(CommandFailed, match="already refunded"):
        debit(_command(never, CommandKind.ACTION))
    assert _balance(example) == 1000
