"""Durable timeouts, retries, dead letters and operator actions through the manager."""

from __future__ import annotations

import pytest
from support.sagas import ORDER

from sagalog.domain import Outcome, Saga, SagaStatus, StepStatus
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock


def test_tick_before_the_deadline_changes_nothing(manager: SagaManager, clock: ManualClock) -> None:
    saga_id = manager.start("Order", {})
    assert manager.tick(clock.advance(29)) == 0
    assert manager.get(saga_id).version == 2


def test_compensation_timeout_schedules_a_compensation_retry(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Order", {})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_completed(saga_id, "charge")
    assert manager.timers.count_timers() == 0  # "ship" has no timeout
    manager.handle_step_failed(saga_id, "ship", "no courier")
    assert manager.get(saga_id).status is SagaStatus.COMPENSATING
    assert manager.timers.count_timers() == 1  # charge's compensation inherits 30 s
    assert manager.tick(clock.advance(31)) == 1
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.steps["charge"].status is StepStatus.COMPENSATION_RETRY_SCHEDULED
    names = [type(e).__name__ for e in manager.history(saga_id)]
    assert names[-2:] == ["CompensationTimedOut", "CompensationRetryScheduled"]
    assert manager.tick(clock.advance(2)) == 1
    assert manager.get(saga_id).steps["charge"].compensation_attempt == 2


def test_step_timeout_then_retry_then_late_success_is_recorded_and_waits_for_the_retry(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Order", {})
    manager.handle_step_completed(saga_id, "reserve")
    assert manager.tick(clock.advance(31)) == 1  # charge attempt 1 timed out
    saga = manager.get(saga_id)
    assert saga.steps["charge"].status is StepStatus.RETRY_SCHEDULED
    late = manager.handle_step_completed(saga_id, "charge", attempt=1)
    assert late.outcome is Outcome.LATE  # a fact: attempt 1 did charge
    assert manager.get(saga_id).steps["charge"].late
    assert manager.get(saga_id).steps["charge"].status is StepStatus.RETRY_SCHEDULED
    assert manager.tick(clock.advance(10)) == 1  # retry due: attempt 2 dispatched
    saga = manager.get(saga_id)
    assert saga.steps["charge"].status is StepStatus.DISPATCHED
    assert saga.steps["charge"].attempt == 2
    assert manager.handle_step_completed(saga_id, "charge", attempt=2).applied


def test_timers_survive_a_restart(database_url: str, backend: str, clock: ManualClock) -> None:
    if backend == "memory":
        pytest.skip("an in-memory store does not survive a restart")
    first = SagaManager([ORDER], database_url, clock=clock)
    saga_id = first.start("Order", {})
    first.close()
    second = SagaManager([ORDER], database_url, clock=clock)
    try:
        assert second.tick(clock.advance(31)) == 1
        saga = second.get(saga_id)
        # The reserve timed out: it may have been done, so it is released.
        assert saga.status is SagaStatus.COMPENSATING
        assert saga.pending_command is not None
        assert saga.pending_command.name == "Inventory.Release"
        second.handle_compensation_completed(saga_id, "reserve")
        assert second.get(saga_id).status is SagaStatus.FAILED
        assert second.timers.count_timers() == 0
    finally:
        second.close()


def test_dead_lettered_compensation_waits_for_an_operator_retry(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Order", {})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_completed(saga_id, "charge")
    manager.abort(saga_id, actor="alice", reason="customer cancelled")
    assert manager.get(saga_id).status is SagaStatus.COMPENSATING
    manager.handle_compensation_completed(saga_id, "ship")  # in flight at the abort
    for _ in range(5):  # the default compensation policy: 5 attempts
        manager.handle_compensation_failed(saga_id, "charge", "psp down")
        manager.tick(clock.advance(120))
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.DEAD_LETTERED
    assert saga.dead_letter is not None
    assert (saga.dead_letter.step, saga.dead_letter.attempts) == ("charge", 5)
    manager.retry(saga_id, actor="bob", reason="psp is back")
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.steps["charge"].compensation_attempt == 6
    retried = [e for e in manager.history(saga_id) if isinstance(e, Saga.OperatorRetried)]
    assert [(e.actor, e.reason) for e in retried] == [("bob", "psp is back")]


def test_operator_resolve_moves_a_dead_lettered_saga_on(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Order", {})
    manager.handle_step_completed(saga_id, "reserve")
    manager.abort(saga_id, actor="alice", reason="fraud suspected")
    manager.handle_compensation_completed(saga_id, "charge")  # in flight at the abort
    for _ in range(5):  # reserve's compensation uses the default policy: 5 attempts
        manager.handle_compensation_failed(saga_id, "reserve", "warehouse offline")
        manager.tick(clock.advance(120))
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.DEAD_LETTERED
    manager.resolve(saga_id, actor="carol", reason="released by hand in the WMS")
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    resolved = [e for e in manager.history(saga_id) if isinstance(e, Saga.OperatorResolved)]
    assert [(e.actor, e.step) for e in resolved] == [("carol", "reserve")]
