"""A participant's fence counts are Prometheus counters: refusals by reason, answers by how."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from sagalog.domain import Command, CommandKind, command_id_for
from sagalog.infrastructure.observability.metrics import SagaMetrics
from sagalog.infrastructure.services.fencing import Fence, InMemoryProcessedCommands
from sagalog.process import Reply

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _debit(attempt: int, deadline: datetime) -> Command:
    saga_id = uuid4()
    return Command(
        command_id=command_id_for(saga_id, "debit", CommandKind.ACTION, attempt),
        saga_id=saga_id,
        saga_type="Transfer",
        step="debit",
        kind=CommandKind.ACTION,
        name="Bank.Debit",
        attempt=attempt,
        payload={},
        deadline=deadline,
    )


def test_refused_commands_are_counted_by_reason_at_scrape_time() -> None:
    metrics = SagaMetrics()
    fence = Fence(InMemoryProcessedCommands(), clock=lambda: NOW)
    metrics.watch_fence("bank", fence)
    for deadline in (NOW - timedelta(seconds=5), NOW, NOW + timedelta(minutes=1)):
        fence.answer(_debit(1, deadline), lambda c: Reply.to(c, result="done"))

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"service": "bank", **labels})

    assert sample("sagalog_participant_commands_refused_total", reason="deadline_passed") == 2
    assert sample("sagalog_participant_commands_refused_total", reason="compensated") == 0
    assert sample("sagalog_participant_commands_total", handling="refused") == 2
    assert sample("sagalog_participant_commands_total", handling="executed") == 1
    assert sample("sagalog_participant_commands_total", handling="repeated") == 0
