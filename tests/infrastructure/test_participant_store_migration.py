"""A participant store file written before fencing is migrated, and its history fences.

``fixtures/processed-commands-v0.sqlite`` was written by ``SQLiteProcessedCommands``
as it was before fencing (see ``fixtures/make_processed_commands_v0.py``): saga 1's
debit succeeded then was refunded; saga 2's credit failed on attempt 1 and succeeded
on attempt 2. Each test opens a copy.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from sagalog.domain import Command, CommandKind, command_id_for, idempotency_key_for
from sagalog.infrastructure.services.fencing import (
    SQLITE_STORE_VERSION,
    Fence,
    FenceReason,
    Handling,
    StoreSchemaError,
)
from sagalog.infrastructure.services.participant import SQLiteProcessedCommands
from sagalog.process import Reply

FIXTURE = Path(__file__).parent / "fixtures" / "processed-commands-v0.sqlite"
SAGA = UUID("11111111-1111-4111-8111-111111111111")
OTHER = UUID("22222222-2222-4222-8222-222222222222")
BEFORE = datetime(2025, 12, 31, tzinfo=UTC)


def _command(saga: UUID, step: str, kind: CommandKind, attempt: int) -> Command:
    return Command(
        command_id=command_id_for(saga, step, kind, attempt),
        saga_id=saga,
        saga_type="Transfer",
        step=step,
        kind=kind,
        name=f"Bank.{step}",
        attempt=attempt,
        payload={"data": {}, "results": {}},
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    copy = tmp_path / "bank.db"
    shutil.copyfile(FIXTURE, copy)
    return copy


def _schema(path: Path) -> tuple[int, list[str]]:
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    db.close()
    return int(version), sorted(tables)


def test_the_fixture_is_a_store_from_before_fencing() -> None:
    assert _schema(FIXTURE) == (0, ["processed_commands"])


def test_opening_an_old_store_migrates_it_and_keeps_its_replies(old_store: Path) -> None:
    store = SQLiteProcessedCommands(old_store)
    try:
        assert _schema(old_store) == (
            SQLITE_STORE_VERSION,
            ["fence_started", "fence_successes", "fence_tombstones", "processed_commands"],
        )
        assert len(store) == 4
        old_debit = store.get(_command(SAGA, "debit", CommandKind.ACTION, 1).command_id)
        assert old_debit is not None
        assert Reply.model_validate_json(old_debit).result == {"debited": 100}
        # the history became fences: the debit's and its refund's successes, the refund's
        # tombstone, and the credit's success from attempt 2 (attempt 1 failed: none)
        debit = store.success(idempotency_key_for(SAGA, "debit", CommandKind.ACTION))
        credit = store.success(idempotency_key_for(OTHER, "credit", CommandKind.ACTION))
        assert debit is not None
        assert credit is not None
        assert Reply.model_validate_json(credit).attempt == 2
        assert store.success(idempotency_key_for(SAGA, "debit", CommandKind.COMPENSATION))
        assert store.is_tombstoned(SAGA, "debit")
        assert not store.is_tombstoned(OTHER, "credit")
    finally:
        store.close()


def test_a_migrated_store_fences_commands_for_what_it_did_before(old_store: Path) -> None:
    store = SQLiteProcessedCommands(old_store)
    ran: list[str] = []

    def execute(command: Command) -> Reply:
        ran.append(command.name)
        return Reply.to(command, result="ran")

    try:
        fence = Fence(store, clock=lambda: BEFORE)
        late_debit = fence.answer(_command(SAGA, "debit", CommandKind.ACTION, 2), execute)
        credit_again = fence.answer(_command(OTHER, "credit", CommandKind.ACTION, 3), execute)
    finally:
        store.close()
    assert late_debit.reason is FenceReason.COMPENSATED
    assert credit_again.handling is Handling.REPEATED
    assert credit_again.reply.result == {"credited": 100}
    assert ran == []


def test_opening_a_migrated_store_again_changes_nothing(old_store: Path) -> None:
    SQLiteProcessedCommands(old_store).close()
    with sqlite3.connect(old_store) as db:
        before = db.execute("SELECT COUNT(*) FROM fence_successes").fetchone()[0]
    db.close()
    reopened = SQLiteProcessedCommands(old_store)
    try:
        with sqlite3.connect(old_store) as db:
            after = db.execute("SELECT COUNT(*) FROM fence_successes").fetchone()[0]
        db.close()
    finally:
        reopened.close()
    assert before == after == 3  # the debit, its refund, the credit
    assert _schema(old_store)[0] == SQLITE_STORE_VERSION


def test_a_store_from_a_newer_sagalog_is_refused_and_left_alone(old_store: Path) -> None:
    with sqlite3.connect(old_store) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreSchemaError, match="schema version 99 is newer"):
        SQLiteProcessedCommands(old_store)
    assert _schema(old_store) == (99, ["processed_commands"])


def test_an_unreadable_old_reply_gives_no_fence_and_stops_no_migration(
    old_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(old_store) as db:
        db.execute("INSERT INTO processed_commands (command_id, reply) VALUES ('x', '{not json')")
    db.close()
    store = SQLiteProcessedCommands(old_store)
    try:
        assert store.is_tombstoned(SAGA, "debit")
        assert store.actions_in_force() == {(OTHER, "credit")}
    finally:
        store.close()
    assert "store row x has an unreadable reply, no fence from it" in caplog.text
