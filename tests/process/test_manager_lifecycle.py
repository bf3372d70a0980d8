"""SagaManager end to end on the selected backend: start, replies, ends, reading."""

from __future__ import annotations

from uuid import UUID, uuid4

from sagalog.domain import CommandKind, Outcome, Saga, SagaStatus, StepStatus, command_id_for
from sagalog.process import Reply, SagaManager


def _names(manager: SagaManager, saga_id: UUID) -> list[str]:
    return [type(e).__name__ for e in manager.history(saga_id)]


def test_start_records_started_and_first_dispatch_together(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    assert _names(manager, saga_id) == ["SagaStarted", "StepDispatched"]
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.PENDING
    assert saga.pending_command is not None
    assert saga.pending_command.name == "Inventory.Reserve"


def test_start_is_idempotent_for_a_given_saga_id(manager: SagaManager) -> None:
    saga_id = uuid4()
    assert manager.start("Order", {"order": 1}, saga_id=saga_id) == saga_id
    head = manager.recorder.max_notification_id()
    assert manager.start("Order", {"order": 1}, saga_id=saga_id) == saga_id
    assert manager.recorder.max_notification_id() == head
    assert manager.get(saga_id).version == 2


def test_all_steps_completing_completes_the_saga(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    for step in ("reserve", "charge", "ship", "notify"):
        assert manager.handle_step_completed(saga_id, step, {"done": step}).applied
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.COMPLETED
    assert saga.results == {s: {"done": s} for s in ("reserve", "charge", "ship", "notify")}


def test_failure_compensates_completed_steps_newest_first(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_completed(saga_id, "charge")
    manager.handle_step_failed(saga_id, "ship", "no courier")
    assert manager.get(saga_id).status is SagaStatus.COMPENSATING
    dispatched = [
        e.step for e in manager.history(saga_id) if isinstance(e, Saga.CompensationDispatched)
    ]
    assert dispatched == ["charge"]
    manager.handle_compensation_completed(saga_id, "charge")
    manager.handle_compensation_completed(saga_id, "reserve")
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    dispatched = [
        e.step for e in manager.history(saga_id) if isinstance(e, Saga.CompensationDispatched)
    ]
    assert dispatched == ["charge", "reserve"]
    assert saga.steps["ship"].status is StepStatus.FAILED


def test_reply_message_form_is_validated_and_applied(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    outcome = manager.handle(
        {
            "message_id": "m-1",
            "saga_id": str(saga_id),
            "command_id": str(command_id_for(saga_id, "reserve", CommandKind.ACTION, 1)),
            "step": "reserve",
            "kind": "action",
            "outcome": "completed",
            "attempt": 1,
            "result": {"r": 1},
        }
    )
    assert outcome.applied
    again = manager.handle(
        Reply(
            message_id="m-1",
            saga_id=saga_id,
            command_id=command_id_for(saga_id, "reserve", CommandKind.ACTION, 1),
            step="reserve",
            outcome="completed",
        )
    )
    assert again.outcome is Outcome.DUPLICATE
    assert manager.get(saga_id).steps["reserve"].result == {"r": 1}


def test_get_at_a_version_equals_the_saga_rebuilt_to_it(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_failed(saga_id, "charge", "declined")
    assert manager.get(saga_id, version=2).status is SagaStatus.PENDING
    assert manager.get(saga_id, version=2).steps["reserve"].status is StepStatus.DISPATCHED
    assert manager.get(saga_id, version=3).steps["reserve"].status is StepStatus.COMPLETED
    latest = manager.get(saga_id)
    assert manager.get(saga_id, version=latest.version) == latest


def test_history_is_oldest_first_with_consecutive_versions(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    manager.handle_step_completed(saga_id, "reserve")
    versions = [e.originator_version for e in manager.history(saga_id)]
    assert versions == list(range(1, len(versions) + 1))
    assert all(e.correlation_id == saga_id for e in manager.history(saga_id))
