"""What-if replay: a saga's recorded inputs through another definition, in memory only."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.sagas import ORDER

from sagalog.domain import (
    CommandKind,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaNotFoundError,
)
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.debugging.whatif import (
    CommandRecord,
    DefinitionImportError,
    DefinitionMismatchError,
    load_definition,
    recorded_inputs,
    what_if,
    what_if_events,
    what_if_many,
)
from sagalog.testing.strategies import (
    EPOCH,
    AdvanceClock,
    AnswerCommand,
    Move,
    OperatorAction,
    OperatorVerb,
    Redeliver,
    StrayReply,
    definitions,
    reply_schedules,
    saga_data,
)


def _with_charge_retry(policy: RetryPolicy, version: int = 2) -> SagaDefinition:
    steps = list(ORDER.steps)
    steps[1] = steps[1].model_copy(update={"retry": policy})
    return SagaDefinition("Order", steps, version=version)


#: Three attempts at charging, the third at once: a charge failing twice is tried again.
MORE_RETRIES = _with_charge_retry(RetryPolicy(max_attempts=3, initial_delay=timedelta(0)))
#: One attempt at charging: the first failure compensates.
NO_RETRY = _with_charge_retry(RetryPolicy(max_attempts=1))
#: A new version that changes nothing these sagas exercise (the shipment's compensation).
COSMETIC = SagaDefinition(
    "Order",
    [
        *ORDER.steps[:2],
        ORDER.steps[2].model_copy(update={"compensation_timeout": timedelta(minutes=5)}),
        ORDER.steps[3],
    ],
    version=3,
)


def _charge_fails_twice(manager: SagaManager, clock: ManualClock) -> UUID:
    """reserve ok; charge fails, is retried 10 s later by the clock, fails again; rolled back."""
    s = manager.start("Order", {"order": 1}, saga_id=uuid4())
    clock.advance(1)
    manager.handle_step_completed(s, "reserve", {"hold": 1}, message_id="m-reserve")
    clock.advance(1)
    manager.handle_step_failed(s, "charge", "declined", message_id="m-charge-1")
    manager.tick(clock.advance(10))
    clock.advance(1)
    manager.handle_step_failed(s, "charge", "declined again", message_id="m-charge-2")
    clock.advance(1)
    manager.handle_compensation_completed(s, "reserve", message_id="m-release")
    assert manager.get(s).status.value == "FAILED"
    return s


def _charge_succeeds_on_retry(manager: SagaManager, clock: ManualClock) -> UUID:
    """charge fails once, is retried by the clock and succeeds; the saga completes."""
    s = manager.start("Order", {"order": 2})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_failed(s, "charge", "busy")
    manager.tick(clock.advance(10))
    manager.handle_step_completed(s, "charge", {"paid": True})
    manager.handle_step_completed(s, "ship")
    manager.handle_step_completed(s, "notify")
    assert manager.get(s).status.value == "COMPLETED"
    return s


def _dead_lettered_then_retried_and_timed_out(manager: SagaManager, clock: ManualClock) -> UUID:
    """Timeouts, compensation retries, a dead letter and an operator retry."""
    s = manager.start("Order", {"order": 3})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_completed(s, "charge")
    manager.handle_step_failed(s, "ship", "no courier")
    manager.tick(clock.advance(31))  # the refund times out
    manager.tick(clock.advance(60))  # its retry fires
    manager.handle_compensation_completed(s, "charge")
    for _ in range(5):
        manager.handle_compensation_failed(s, "reserve", "ledger down")
        manager.tick(clock.advance(60))
    assert manager.get(s).status.value == "DEAD_LETTERED"
    manager.retry(s, actor="alice", reason="ledger back")
    manager.handle_compensation_completed(s, "reserve")
    assert manager.get(s).status.value == "FAILED"
    return s


@pytest.mark.parametrize(
    "scenario",
    [_charge_fails_twice, _charge_succeeds_on_retry, _dead_lettered_then_retried_and_timed_out],
)
def test_the_same_definition_makes_the_same_decisions(
    manager: SagaManager, clock: ManualClock, scenario: object
) -> None:
    assert callable(scenario)
    saga_id = scenario(manager, clock)
    report = what_if(manager, saga_id, ORDER)
    assert report.skipped == ()
    assert not report.diverged
    assert report.first_difference is None
    assert report.original_tail == report.other_tail == ()
    assert not report.ends_differently
    assert report.other_commands == report.original_commands
    assert report.other_end.status == report.original_end.status
    assert report.other_end.steps == report.original_end.steps
    assert "Same decisions" in " ".join(report.summary())


def test_a_definition_that_changes_nothing_used_ends_the_same(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = _charge_succeeds_on_retry(manager, clock)
    report = what_if(manager, saga_id, COSMETIC)
    assert not report.diverged
    assert not report.ends_differently
    assert report.other_definition.startswith("Order v3")
    assert report.original_definition.startswith("Order v1")


def test_more_retries_on_the_failing_step_try_again_instead_of_compensating(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = _charge_fails_twice(manager, clock)
    report = what_if(manager, saga_id, MORE_RETRIES)
    assert report.diverged
    assert report.first_difference == (
        CommandRecord("reserve", CommandKind.COMPENSATION, 1, "Inventory.Release"),
        CommandRecord("charge", CommandKind.ACTION, 3, "Payment.Charge"),
    )
    assert report.divergence_index == 3  # reserve #1, charge #1, charge #2 were the same
    assert report.original_tail == (report.first_difference[0],)
    assert report.other_tail == (report.first_difference[1],)
    assert report.original_end.status == "FAILED"
    assert report.other_end.status == "PENDING"
    assert report.other_end.pending is not None
    assert (report.other_end.pending.step, report.other_end.pending.attempt) == ("charge", 3)
    assert report.ends_differently
    # The retry is immediate, so the clock tick that fired it finds nothing due; and the
    # release's completion answers a command the other run never sent: both reported.
    tick, skipped = report.skipped
    assert tick.input.kind == "tick"
    assert tick.reason == "nothing was due at that moment"
    assert skipped.input.kind == "reply"
    assert skipped.input.step == "reserve"
    assert "never dispatched" in skipped.reason
    text = " ".join(report.summary())
    assert "First difference at command 4" in text
    assert "ends differently" in text
    data = report.to_json()
    assert data["first_difference"]["other"]["attempt"] == 3
    assert data["skipped"][1]["version"] == skipped.input.version


def test_fewer_retries_compensate_a_saga_that_completed(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = _charge_succeeds_on_retry(manager, clock)
    report = what_if(manager, saga_id, NO_RETRY)
    assert report.first_difference == (
        CommandRecord("charge", CommandKind.ACTION, 2, "Payment.Charge"),
        CommandRecord("reserve", CommandKind.COMPENSATION, 1, "Inventory.Release"),
    )
    assert report.original_end.status == "COMPLETED"
    assert report.other_end.status == "COMPENSATING"
    skipped_steps = [s.input.describe() for s in report.skipped]
    assert skipped_steps[0] == "clock tick at " + (report.inputs[2].at.isoformat())
    assert any("'charge' #2 completed" in d for d in skipped_steps)
    assert len(report.other_tail) == 1
    assert [c.step for c in report.original_tail] == ["charge", "ship", "notify"]


def test_what_if_writes_nothing(manager: SagaManager, clock: ManualClock) -> None:
    saga_id = _charge_fails_twice(manager, clock)
    before = manager.history(saga_id)
    what_if(manager, saga_id, MORE_RETRIES)
    assert len(manager.history(saga_id)) == len(before)
    assert manager.recorder.max_notification_id() == len(before)


def test_recorded_inputs_are_replies_ticks_and_operator_actions_in_order(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = _dead_lettered_then_retried_and_timed_out(manager, clock)
    inputs = recorded_inputs(manager.history(saga_id))
    kinds = [i.kind for i in inputs]
    assert kinds[:5] == ["reply", "reply", "reply", "tick", "tick"]
    assert "operator" in kinds
    operator = next(i for i in inputs if i.kind == "operator")
    assert (operator.action, operator.actor, operator.reason) == ("retry", "alice", "ledger back")
    versions = [i.version for i in inputs]
    assert versions == sorted(versions)
    first = inputs[0]
    assert (first.step, first.outcome, first.attempt) == ("reserve", "completed", 1)


def test_what_if_many_counts_the_sagas_that_would_end_differently(
    manager: SagaManager, clock: ManualClock
) -> None:
    failing = _charge_fails_twice(manager, clock)
    succeeding = _charge_succeeds_on_retry(manager, clock)
    missing = uuid4()
    summary = what_if_many(manager, [failing, succeeding, missing], MORE_RETRIES)
    assert summary.total == 2
    assert summary.missing == (missing,)
    assert summary.diverged == 1
    assert summary.ended_differently == 1
    assert summary.transitions == {("FAILED", "PENDING"): 1, ("COMPLETED", "COMPLETED"): 1}
    same = what_if_many(manager, [failing, succeeding], ORDER)
    assert (same.diverged, same.ended_differently) == (0, 0)


def test_an_unknown_saga_is_an_error(manager: SagaManager) -> None:
    with pytest.raises(SagaNotFoundError):
        what_if(manager, uuid4(), ORDER)


def test_a_definition_of_another_saga_type_is_refused(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = _charge_succeeds_on_retry(manager, clock)
    other = SagaDefinition("Warehouse", list(ORDER.steps), version=ORDER.version)
    with pytest.raises(DefinitionMismatchError, match="defines 'Warehouse' sagas"):
        what_if(manager, saga_id, other)
    with pytest.raises(DefinitionMismatchError):
        what_if_events(manager.history(saga_id), other)
    summary = what_if_many(manager, [saga_id], other)
    assert (summary.total, summary.other_type) == (0, (saga_id,))


def test_a_definition_must_be_a_saga_definition(manager: SagaManager, clock: ManualClock) -> None:
    saga_id = _charge_succeeds_on_retry(manager, clock)
    with pytest.raises(TypeError, match="SagaDefinition"):
        what_if(manager, saga_id, "Order")  # type: ignore[arg-type]


def test_load_definition_imports_module_attribute() -> None:
    assert load_definition("support.sagas:ORDER") is ORDER
    assert load_definition("test_whatif:MORE_RETRIES") is MORE_RETRIES


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("support.sagas", "module:attribute"),
        (":ORDER", "module:attribute"),
        ("no_such_module_xyz:ORDER", "cannot import module 'no_such_module_xyz'"),
        ("support.sagas:NOPE", "has no attribute 'NOPE'"),
        ("support.sagas:ManualClock", "is a type, not a SagaDefinition"),
        ("support.sagas:T0", "is a datetime, not a SagaDefinition"),
    ],
)
def test_load_definition_errors_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(DefinitionImportError, match=message) as info:
        load_definition(spec)
    assert "\n" not in str(info.value)


def _play(saga: Saga, schedule: list[Move]) -> None:
    """Interpret ``schedule`` against ``saga``: replies to what it sent, time, operators."""
    now = EPOCH
    sent: list[tuple[str, CommandKind, int]] = []
    delivered: list[tuple[str, CommandKind, bool, int, str]] = []
    counter = 0
    for move in schedule:
        for event in saga.pending_events:
            if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                kind = (
                    CommandKind.ACTION
                    if isinstance(event, Saga.StepDispatched)
                    else CommandKind.COMPENSATION
                )
                if (event.step, kind, event.attempt) not in sent:
                    sent.append((event.step, kind, event.attempt))
        try:
            if isinstance(move, AnswerCommand) and sent:
                step, kind, attempt = sent[-1 - (move.pick % len(sent))]
                counter += 1
                message_id = f"m{counter}" if move.with_message_id else None
                cited = attempt if move.cite_attempt else None
                _deliver(saga, step, kind, move.succeeded, cited, message_id, now)
                if message_id is not None:
                    delivered.append((step, kind, move.succeeded, attempt, message_id))
            elif isinstance(move, Redeliver) and delivered:
                step, kind, ok, attempt, message_id = delivered[-1 - (move.pick % len(delivered))]
                _deliver(saga, step, kind, ok, attempt, message_id, now)
            elif isinstance(move, StrayReply) and move.step_index is not None:
                names = saga.definition.step_names
                step = names[move.step_index % len(names)]
                _deliver(saga, step, move.kind, move.succeeded, move.attempt, None, now)
            elif isinstance(move, AdvanceClock):
                if move.to_next_wakeup and saga.next_wakeup is not None:
                    now = max(now, saga.next_wakeup)
                else:
                    now += timedelta(seconds=move.seconds)
                saga.fire_due(now)
            elif isinstance(move, OperatorAction):
                act = {
                    OperatorVerb.RETRY: saga.retry,
                    OperatorVerb.RESOLVE: saga.resolve,
                    OperatorVerb.ABORT: saga.abort,
                }[move.verb]
                act(actor=move.actor, reason=move.reason, now=now)
        except SagalogError:
            pass  # refused: records nothing, as in production


def _events(saga: Saga) -> list[Saga.Event]:
    return [e for e in saga.pending_events if isinstance(e, Saga.Event)]


def _deliver(
    saga: Saga,
    step: str,
    kind: CommandKind,
    succeeded: bool,
    attempt: int | None,
    message_id: str | None,
    now: datetime,
) -> None:
    if kind is CommandKind.ACTION:
        if succeeded:
            saga.complete_step(step, {"ok": step}, now=now, attempt=attempt, message_id=message_id)
        else:
            saga.fail_step(step, "boom", now=now, attempt=attempt, message_id=message_id)
    elif succeeded:
        saga.complete_compensation(step, now=now, attempt=attempt, message_id=message_id)
    else:
        saga.fail_compensation(step, "boom", now=now, attempt=attempt, message_id=message_id)


@given(
    definition=definitions(max_steps=5),
    data=saga_data(),
    schedule=reply_schedules(min_size=20, max_size=50),
)
def test_replaying_against_the_same_definition_reproduces_every_decision(
    definition: SagaDefinition, data: dict[str, object], schedule: list[Move]
) -> None:
    saga = Saga.start(definition, data, saga_id=uuid4(), now=EPOCH)
    _play(saga, schedule)
    report = what_if_events(_events(saga), definition)
    assert report.skipped == ()
    assert not report.diverged
    assert report.other_end == report.original_end
    assert report.other_commands == report.original_commands


@given(schedule=reply_schedules(min_size=10, max_size=40), extra=st.integers(1, 3))
def test_any_definition_replays_without_error_and_reports_what_did_not_apply(
    schedule: list[Move], extra: int
) -> None:
    saga = Saga.start(ORDER, {}, saga_id=uuid4(), now=EPOCH)
    _play(saga, schedule)
    other = _with_charge_retry(RetryPolicy(max_attempts=extra, initial_delay=timedelta(0)))
    report = what_if_events(_events(saga), other)
    assert len(report.skipped) <= len(report.inputs)
    if not report.diverged:
        assert report.first_difference is None
