"""Definitions and a settable clock shared by the process tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from sagalog.domain import CommandKind, RetryPolicy, SagaDefinition, Step
from sagalog.process import SagaManager

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move forward and return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now


ORDER = SagaDefinition(
    "Order",
    [
        Step(
            name="reserve",
            action="Inventory.Reserve",
            compensation="Inventory.Release",
            timeout=timedelta(seconds=30),
        ),
        Step(
            name="charge",
            action="Payment.Charge",
            compensation="Payment.Refund",
            timeout=timedelta(seconds=30),
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=10)),
        ),
        Step(
            name="ship",
            action="Shipping.Create",
            compensation="Shipping.Cancel",
            compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
        ),
        Step(
            name="notify",
            action="Mail.Send",
            retriable=True,
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
        ),
    ],
)


def finish_compensations(manager: SagaManager, saga_id: UUID) -> list[str]:
    """Answer every compensation ``saga_id`` dispatches with success; the steps, in order."""
    undone: list[str] = []
    while (command := manager.get(saga_id).pending_command) is not None:
        assert command.kind is CommandKind.COMPENSATION, command
        manager.handle_compensation_completed(saga_id, command.step)
        undone.append(command.step)
    return undone
