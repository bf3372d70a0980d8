"""Fencing: a participant refuses actions that come too late, and runs a step at most once.

Each test drives a :class:`Fence` over both shipped stores (memory and a SQLite file),
with the participant's clock injected, and checks what the handler did (its calls)
and what was answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from sagalog.domain import Command, CommandKind, command_id_for, idempotency_key_for
from sagalog.infrastructure.services.fencing import (
    DEFAULT_SKEW_MARGIN,
    Fence,
    FenceReason,
    FenceStore,
    Fencing,
    Handling,
    InMemoryProcessedCommands,
    action_key,
)
from sagalog.infrastructure.services.participant import SQLiteProcessedCommands
from sagalog.process import Reply
from sagalog.process.clock import ManualClock

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Store = InMemoryProcessedCommands | SQLiteProcessedCommands


class Bank:
    """A participant with an effect: debits and refunds of one account, by action key."""

    def __init__(self) -> None:
        self.balance = 1000
        self.debited: set[UUID] = set()
        self.calls: list[tuple[str, int]] = []
        self.fail_next = False

    def execute(self, command: Command) -> Reply:
        self.calls.append((command.name, command.attempt))
        if self.fail_next:
            self.fail_next = False
            return Reply.to(command, error="ledger busy")
        key = action_key(command)
        if command.kind is CommandKind.ACTION:
            if key not in self.debited:
                self.debited.add(key)
                self.balance -= 100
            return Reply.to(command, result={"debited": 100})
        if key in self.debited:  # a refund of a debit never made is a no-op
            self.debited.discard(key)
            self.balance += 100
        return Reply.to(command)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield InMemoryProcessedCommands()
        return
    sqlite = SQLiteProcessedCommands(tmp_path / "bank.db")
    yield sqlite
    sqlite.close()


def command(
    saga_id: UUID,
    kind: CommandKind = CommandKind.ACTION,
    *,
    attempt: int = 1,
    deadline: datetime | None = NOW + timedelta(seconds=10),
    step: str = "debit",
) -> Command:
    return Command(
        command_id=command_id_for(saga_id, step, kind, attempt),
        saga_id=saga_id,
        saga_type="Transfer",
        step=step,
        kind=kind,
        name="Bank.Debit" if kind is CommandKind.ACTION else "Bank.Refund",
        attempt=attempt,
        payload={"data": {"amount": 100}, "results": {}},
        deadline=deadline,
    )


# -- the deadline fence ----------------------------------------------------------------------


def test_an_action_past_its_deadline_is_refused_and_never_executed(store: FenceStore) -> None:
    bank, clock = Bank(), ManualClock(NOW + timedelta(seconds=30))
    fence = Fence(store, clock=clock)
    answer = fence.answer(command(uuid4()), bank.execute)
    assert answer.handling is Handling.REFUSED
    assert answer.reason is FenceReason.DEADLINE_PASSED
    assert answer.reply.outcome == "failed"
    assert answer.reply.error is not None
    assert answer.reply.error.startswith("deadline 2026-03-01T12:00:10+00:00 passed")
    assert answer.reply.error.endswith("not executed")
    assert bank.calls == []
    assert bank.balance == 1000
    assert fence.refused == {FenceReason.DEADLINE_PASSED: 1}


def test_an_action_within_the_skew_margin_of_its_deadline_is_refused(store: FenceStore) -> None:
    """The manager times out at its own clock's deadline: the participant, whose clock may
    lag, refuses an action that would start within the margin of it."""
    bank = Bank()
    deadline = NOW + timedelta(seconds=10)
    fence = Fence(store, Fencing(skew_margin=timedelta(seconds=2)), clock=ManualClock(NOW))
    fence.clock = ManualClock(deadline - timedelta(seconds=2))  # the margin before: refused
    refused = fence.answer(command(uuid4(), deadline=deadline), bank.execute)
    fence.clock = ManualClock(deadline - timedelta(seconds=2, microseconds=1))  # before that: runs
    done = fence.answer(command(uuid4(), deadline=deadline), bank.execute)
    assert refused.reason is FenceReason.DEADLINE_PASSED
    assert "skew margin 2s" in (refused.reply.error or "")
    assert done.handling is Handling.EXECUTED
    assert done.reply.outcome == "completed"
    assert len(bank.calls) == 1


def test_the_default_margin_is_one_second_and_a_naive_deadline_reads_as_utc(
    store: FenceStore,
) -> None:
    bank = Bank()
    naive = (NOW + timedelta(seconds=10)).replace(tzinfo=None)
    fence = Fence(store, clock=ManualClock(NOW + timedelta(seconds=10) - DEFAULT_SKEW_MARGIN))
    answer = fence.answer(command(uuid4(), deadline=naive), bank.execute)
    assert Fencing().skew_margin == DEFAULT_SKEW_MARGIN == timedelta(seconds=1)
    assert answer.reason is FenceReason.DEADLINE_PASSED
    assert bank.calls == []


def test_a_compensation_is_never_fenced_by_its_deadline(store: FenceStore) -> None:
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    fence.answer(command(saga), bank.execute)
    fence.clock = ManualClock(NOW + timedelta(days=1))
    late = command(saga, CommandKind.COMPENSATION, deadline=NOW + timedelta(seconds=20))
    answer = fence.answer(late, bank.execute)
    assert answer.handling is Handling.EXECUTED
    assert answer.reply.outcome == "completed"
    assert bank.calls == [("Bank.Debit", 1), ("Bank.Refund", 1)]
    assert bank.balance == 1000


class Crash(BaseException):
    """Stands for the process dying inside the handler, after its effect."""


def test_an_action_started_before_a_crash_runs_again_past_its_deadline(
    tmp_path: Path,
) -> None:
    """Its effect is unknown: refusing it as 'not executed' could be a lie, so it runs
    again (the handler, keyed on the idempotency key, finds its own effect)."""
    bank, saga = Bank(), uuid4()
    path = tmp_path / "bank.db"
    first_life = SQLiteProcessedCommands(path)

    def debit_then_die(command: Command) -> Reply:
        bank.execute(command)
        raise Crash

    try:
        with pytest.raises(Crash):
            Fence(first_life, clock=ManualClock(NOW)).answer(command(saga), debit_then_die)
    finally:
        first_life.close()
    second_life = SQLiteProcessedCommands(path)
    try:
        fence = Fence(second_life, clock=ManualClock(NOW + timedelta(hours=1)))
        redelivered = fence.answer(command(saga), bank.execute)
        other = fence.answer(command(uuid4()), bank.execute)  # never started: refused
        assert not second_life.was_started(command(saga).command_id)  # cleared with the reply
    finally:
        second_life.close()
    assert redelivered.handling is Handling.EXECUTED
    assert redelivered.reply.outcome == "completed"
    assert other.reason is FenceReason.DEADLINE_PASSED
    assert bank.calls == [("Bank.Debit", 1), ("Bank.Debit", 1)]
    assert bank.balance == 900


def test_an_action_without_a_deadline_is_not_fenced_by_time(store: FenceStore) -> None:
    bank = Bank()
    fence = Fence(store, clock=ManualClock(datetime(2100, 1, 1, tzinfo=UTC)))
    assert fence.answer(command(uuid4(), deadline=None), bank.execute).reply.outcome == "completed"
    assert len(bank.calls) == 1


# -- the tombstone -------------------------------------------------------------------------


def test_a_debit_delivered_after_its_refund_is_refused(store: FenceStore) -> None:
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    refund = fence.answer(command(saga, CommandKind.COMPENSATION), bank.execute)
    debit = fence.answer(command(saga), bank.execute)
    again = fence.answer(command(saga, attempt=2), bank.execute)
    assert refund.reply.outcome == "completed"  # nothing to refund: a no-op answering success
    assert debit.handling is Handling.REFUSED
    assert debit.reason is FenceReason.COMPENSATED
    assert debit.reply.error == (
        f"step 'debit' of saga {saga} was already compensated here; action not executed"
    )
    assert again.reason is FenceReason.COMPENSATED
    assert bank.calls == [("Bank.Refund", 1)]
    assert bank.balance == 1000
    assert fence.refused == {FenceReason.COMPENSATED: 2}


def test_a_tombstone_is_written_before_the_compensation_runs(store: FenceStore) -> None:
    """A compensation whose handler crashes still fences the action out."""
    saga = uuid4()
    fence = Fence(store, clock=ManualClock(NOW))

    def crash(command: Command) -> Reply:
        raise RuntimeError("killed mid-refund")

    with pytest.raises(RuntimeError):
        fence.answer(command(saga, CommandKind.COMPENSATION), crash)
    bank = Bank()
    assert fence.answer(command(saga), bank.execute).reason is FenceReason.COMPENSATED
    assert store.get(command(saga, CommandKind.COMPENSATION).command_id) is None
    assert bank.calls == []


def test_a_tombstone_is_per_saga_and_step(store: FenceStore) -> None:
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    fence.answer(command(saga, CommandKind.COMPENSATION), bank.execute)
    other_step = fence.answer(command(saga, step="credit"), bank.execute)
    other_saga = fence.answer(command(uuid4()), bank.execute)
    assert other_step.handling is Handling.EXECUTED
    assert other_saga.handling is Handling.EXECUTED


# -- the idempotency key -------------------------------------------------------------------


def test_attempt_two_after_attempt_one_succeeded_gets_that_success_without_running(
    store: FenceStore,
) -> None:
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    first = fence.answer(command(saga, attempt=1), bank.execute)
    second = fence.answer(command(saga, attempt=2), bank.execute)
    assert second.handling is Handling.REPEATED
    assert second.reply.outcome == "completed"
    assert second.reply.result == first.reply.result == {"debited": 100}
    assert second.reply.attempt == 2
    assert second.reply.message_id == f"{command(saga, attempt=2).command_id}:reply"
    assert bank.calls == [("Bank.Debit", 1)]
    assert bank.balance == 900


def test_a_repeated_success_wins_over_an_expired_deadline(store: FenceStore) -> None:
    """The debit did happen: attempt 2 must say so, not 'failed', or it would not be undone."""
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    fence.answer(command(saga, attempt=1), bank.execute)
    fence.clock = ManualClock(NOW + timedelta(minutes=5))
    late = fence.answer(command(saga, attempt=2), bank.execute)
    assert late.handling is Handling.REPEATED
    assert late.reply.outcome == "completed"


def test_attempt_two_after_attempt_one_failed_runs(store: FenceStore) -> None:
    bank, saga = Bank(), uuid4()
    bank.fail_next = True
    fence = Fence(store, clock=ManualClock(NOW))
    first = fence.answer(command(saga, attempt=1), bank.execute)
    second = fence.answer(command(saga, attempt=2), bank.execute)
    assert first.reply.outcome == "failed"
    assert second.handling is Handling.EXECUTED
    assert second.reply.outcome == "completed"
    assert bank.calls == [("Bank.Debit", 1), ("Bank.Debit", 2)]
    assert bank.balance == 900


def test_a_compensation_retry_runs_after_a_failed_compensation_and_not_after_a_success(
    store: FenceStore,
) -> None:
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    fence.answer(command(saga), bank.execute)
    bank.fail_next = True
    answers = [
        fence.answer(command(saga, CommandKind.COMPENSATION, attempt=n), bank.execute)
        for n in (1, 2, 3)
    ]
    assert [a.reply.outcome for a in answers] == ["failed", "completed", "completed"]
    assert [a.handling for a in answers] == [
        Handling.EXECUTED,
        Handling.EXECUTED,
        Handling.REPEATED,
    ]
    assert bank.calls == [("Bank.Debit", 1), ("Bank.Refund", 1), ("Bank.Refund", 2)]
    assert bank.balance == 1000


def test_a_redelivered_command_gets_its_own_reply_again(store: FenceStore) -> None:
    bank, saga = Bank(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW + timedelta(hours=1)))
    refused = fence.answer(command(saga), bank.execute)
    fence.clock = ManualClock(NOW)
    again = fence.answer(command(saga), bank.execute)  # the same command id, redelivered
    assert again.handling is Handling.DUPLICATE
    assert again.reply == refused.reply
    assert bank.calls == []
    assert fence.counts == {Handling.REFUSED: 1, Handling.DUPLICATE: 1}


# -- turning fences off -----------------------------------------------------------------------


def test_each_fence_can_be_turned_off(store: FenceStore) -> None:
    bank, saga = Bank(), uuid4()
    expired = ManualClock(NOW + timedelta(hours=1))
    no_deadline = Fence(store, Fencing(deadline=False), clock=expired)
    assert no_deadline.answer(command(saga), bank.execute).handling is Handling.EXECUTED
    no_idempotency = Fence(store, Fencing(idempotency=False, deadline=False), clock=expired)
    assert no_idempotency.answer(command(saga, attempt=2), bank.execute).handling is (
        Handling.EXECUTED
    )
    no_deadline.answer(command(saga, CommandKind.COMPENSATION), bank.execute)
    no_tombstones = Fence(store, Fencing(tombstones=False, deadline=False), clock=expired)
    assert no_tombstones.answer(command(saga, attempt=3), bank.execute).handling is (
        Handling.REPEATED
    )
    everything_off = Fence(store, Fencing.off(), clock=expired)
    assert everything_off.answer(command(saga, attempt=4), bank.execute).handling is (
        Handling.EXECUTED
    )
    assert [attempt for _, attempt in bank.calls] == [1, 2, 1, 4]


def test_a_negative_skew_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="skew_margin must not be negative"):
        Fencing(skew_margin=timedelta(seconds=-1))


class RepliesOnly:
    """A store written for sagalog before fencing: replies by command id, nothing else."""

    def __init__(self) -> None:
        self.replies: dict[UUID, str] = {}

    def get(self, command_id: UUID) -> str | None:
        return self.replies.get(command_id)

    def put(self, command_id: UUID, reply_json: str) -> None:
        self.replies.setdefault(command_id, reply_json)


def test_a_store_that_cannot_keep_fences_is_refused_unless_they_are_off() -> None:
    with pytest.raises(TypeError, match=r"RepliesOnly cannot keep fences \(no record, success"):
        Fence(RepliesOnly())
    store = RepliesOnly()
    with pytest.raises(TypeError, match=r"turn fencing off with Fencing.off\(\)"):
        Fence(RepliesOnly(), Fencing(tombstones=False, idempotency=False))
    fence = Fence(store, Fencing.off(), clock=ManualClock(NOW))
    bank, saga = Bank(), uuid4()
    assert fence.answer(command(saga), bank.execute).handling is Handling.EXECUTED
    assert fence.answer(command(saga), bank.execute).handling is Handling.DUPLICATE
    assert list(store.replies) == [command(saga).command_id]


def test_a_reply_for_another_command_is_refused_and_nothing_recorded(store: FenceStore) -> None:
    saga = uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    with pytest.raises(ValueError, match="not command"):
        fence.answer(command(saga), lambda c: Reply.to(command(uuid4())))
    assert store.get(command(saga).command_id) is None
    assert store.success(idempotency_key_for(saga, "debit", CommandKind.ACTION)) is None


def test_actions_in_force_are_the_successes_not_compensated(store: Store) -> None:
    """What the crash tests count: actions a participant left done."""
    bank, kept, undone, refused = Bank(), uuid4(), uuid4(), uuid4()
    fence = Fence(store, clock=ManualClock(NOW))
    fence.answer(command(kept), bank.execute)
    fence.answer(command(undone), bank.execute)
    fence.answer(command(undone, CommandKind.COMPENSATION), bank.execute)
    fence.answer(command(refused, CommandKind.COMPENSATION), bank.execute)
    fence.answer(command(refused), bank.execute)
    assert store.actions_in_force() == {(kept, "debit")}
