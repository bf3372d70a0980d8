"""``explain``: plain sentences on why a saga completed, failed, waits or is stuck."""

from __future__ import annotations

from datetime import timedelta

from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.debugging.explain import explain


def _text(manager: SagaManager, clock: ManualClock, saga_id: object) -> str:
    from uuid import UUID

    assert isinstance(saga_id, UUID)
    return "\n".join(explain(manager.get(saga_id), now=clock.now))


def test_a_completed_saga_says_so_and_names_its_retries(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_failed(s, "charge", "declined")
    manager.tick(clock.advance(10))
    for step in ("charge", "ship", "notify"):
        manager.handle_step_completed(s, step)
    text = _text(manager, clock, s)
    assert "is COMPLETED" in text
    assert "Every step succeeded" in text
    assert "'charge' took 2 attempts" in text
    assert "never changes again" in text


def test_a_failed_saga_names_the_step_error_attempts_and_compensations(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_completed(s, "charge")
    manager.handle_step_failed(s, "ship", "no courier")
    manager.handle_compensation_failed(s, "charge", "bank busy")
    manager.tick(clock.advance(5))
    manager.handle_compensation_completed(s, "charge")
    manager.handle_compensation_completed(s, "reserve")
    lines = explain(manager.get(s), now=clock.now)
    text = "\n".join(lines)
    assert lines[0].startswith(f"Order saga {s} (definition v1, 4 steps) is FAILED")
    assert "Step 'ship' failed on attempt 1 of 1 allowed, with error: no courier." in text
    assert "Compensated: 'charge' (2 attempts), 'reserve' (1 attempt)." in text
    assert "Not compensated" not in text


def test_a_saga_compensating_names_what_is_done_and_what_is_not(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_completed(s, "charge")
    manager.handle_step_failed(s, "ship", "no courier")
    text = _text(manager, clock, s)
    assert "is COMPENSATING" in text
    assert "Not compensated yet, newest first: charge (under way), reserve." in text
    assert "It waits for the reply to Payment.Refund" in text


def test_a_dead_lettered_compensation_points_to_retry_and_resolve(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    for step in ("reserve", "charge"):
        manager.handle_step_completed(s, step)
    manager.handle_step_completed(s, "ship")
    manager.handle_step_failed(s, "notify", "smtp down")
    manager.tick(clock.advance(2))
    manager.handle_step_failed(s, "notify", "smtp down")
    text = _text(manager, clock, s)
    assert "is DEAD_LETTERED" in text
    assert "Step 'notify' is past the pivot and failed 2 attempts" in text
    assert f"sagalog retry {s}" in text
    assert f"sagalog resolve {s}" in text
    assert "moves on to SagaCompleted" in text


def test_a_dead_lettered_compensation_says_which_compensations_ran(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    for step in ("reserve", "charge"):
        manager.handle_step_completed(s, step)
    manager.handle_step_failed(s, "ship", "no courier")
    manager.handle_compensation_completed(s, "charge")
    manager.handle_compensation_failed(s, "reserve", "ledger down")
    for _ in range(4):
        manager.tick(clock.advance(60))
        manager.handle_compensation_failed(s, "reserve", "ledger down")
    text = _text(manager, clock, s)
    assert "is DEAD_LETTERED" in text
    assert "The compensation of step 'reserve' failed 5 attempts" in text
    assert "ledger down" in text
    assert "Compensated: 'charge' (1 attempt)." in text
    assert "then moves on to SagaFailed" in text


def test_a_saga_past_its_deadline_asks_whether_the_worker_runs(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    clock.advance(3600)
    text = _text(manager, clock, s)
    assert "is PENDING" in text
    assert "It waits for the reply to Inventory.Reserve" in text
    assert "is the worker running" in text
    assert "59 min ago" in text
    assert f"sagalog abort {s}" in text


def test_a_running_saga_within_its_deadline_is_not_called_overdue(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_failed(s, "charge", "declined")
    text = _text(manager, clock, s)
    assert "attempt 2 is scheduled for" in text
    assert "worker" not in text
    clock.now += timedelta(seconds=11)
    assert "is the worker running" in _text(manager, clock, s)


def test_a_step_without_timeout_says_it_waits_as_long_as_it_takes(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_completed(s, "charge")
    text = _text(manager, clock, s)
    assert "2 of 4 steps completed: 'reserve' and 'charge'." in text
    assert "has no timeout" in text


def test_an_aborted_saga_names_who_aborted_it(manager: SagaManager, clock: ManualClock) -> None:
    s = manager.start("Order", {})
    manager.handle_step_completed(s, "reserve")
    manager.abort(s, actor="carol", reason="customer cancelled")
    manager.handle_compensation_completed(s, "charge")
    manager.handle_compensation_completed(s, "reserve")
    text = _text(manager, clock, s)
    assert "is FAILED" in text
    assert "aborted by carol" in text
    assert "charge: outcome unknown when rollback began (it was in flight); compensated" in text


def test_a_saga_past_the_pivot_cannot_be_aborted(manager: SagaManager, clock: ManualClock) -> None:
    s = manager.start("Order", {})
    for step in ("reserve", "charge", "ship"):
        manager.handle_step_completed(s, step)
    assert "cannot be aborted" in _text(manager, clock, s)


def test_a_timed_out_step_is_named_uncertain_and_compensated(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.tick(clock.advance(31))  # reserve never answers
    text = _text(manager, clock, s)
    assert "reserve: outcome unknown at timeout; its compensation is under way" in text
    manager.handle_compensation_completed(s, "reserve")
    assert "reserve: outcome unknown at timeout; compensated" in _text(manager, clock, s)


def test_a_success_after_the_compensation_is_flagged_for_a_check(
    manager: SagaManager, clock: ManualClock
) -> None:
    s = manager.start("Order", {})
    manager.tick(clock.advance(31))
    manager.handle_compensation_completed(s, "reserve")
    manager.handle_step_completed(s, "reserve", {"held": 1})  # late, after the release
    text = _text(manager, clock, s)
    assert (
        "reserve: succeeded late (attempt 1, after the saga stopped waiting); compensated" in text
    )
    assert "came after its compensation had completed" in text
