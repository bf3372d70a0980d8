"""The row rules: each summary row follows from the event and the row before it alone,
and agrees with the aggregate rebuilt at the same version."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from support.sagas import DEFINITIONS, T0, TRIP, run_parallel_scenarios, run_scenarios

from sagalog.domain import Saga, SagaStatus
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.store.encryption import new_key
from sagalog.projections import ProjectionIntegrityError, SagaSummary
from sagalog.projections.rows import (
    ACTIVE_STATUSES,
    HANDLED_EVENT_TYPES,
    MAX_DETAIL,
    evolve_summary,
    timeline_entry,
)

#: One pytest-xdist worker runs this module: its tests share its scenario log (a module fixture).
pytestmark = pytest.mark.xdist_group("test_projection_rows")


@pytest.fixture(scope="module")
def scenario_log() -> Iterator[tuple[SagaManager, dict[str, Any]]]:
    """One in-memory manager driven through every scenario (pure tests need no database).

    Encrypted, so that one more saga, ended, can be forgotten (``SagaForgotten``).
    """
    clock = ManualClock(T0)
    manager = SagaManager(
        [*DEFINITIONS, TRIP],
        "memory://",
        clock=clock,
        env={"SAGALOG_ENCRYPTION_KEYS": new_key("k1")},
    )
    ids = run_scenarios(manager, clock)
    ids.update(run_parallel_scenarios(manager, clock))
    ids["forgotten"] = forgotten = manager.start("Shop", {"order": 99})
    for name in ("reserve", "charge", "ship", "notify"):
        manager.handle_step_completed(forgotten, name, {"ok": name})
    manager.forget(forgotten, actor="dpo", reason="erasure request")
    yield manager, ids
    manager.close()


def _fold(events: list[Saga.Event]) -> list[SagaSummary]:
    rows: list[SagaSummary] = []
    row: SagaSummary | None = None
    for event in events:
        row = evolve_summary(row, event)
        rows.append(row)
    return rows


def _expected_attempt(saga: Saga) -> int | None:
    return saga.pending_command.attempt if saga.pending_command is not None else None


def test_the_scenarios_record_every_kind_of_saga_event(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    seen = {type(e) for saga_id in ids.values() for e in manager.history(saga_id)}
    every = {
        value
        for value in vars(Saga).values()
        if isinstance(value, type) and issubclass(value, Saga.Event) and value is not Saga.Event
    }
    # eventsourcing defines a default ``Created`` event on every aggregate; sagas use SagaStarted.
    every.discard(Saga.Created)
    assert every - seen == set()
    assert every - set(HANDLED_EVENT_TYPES) == set()


def test_summary_equals_the_aggregate_at_every_version(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    for name, saga_id in ids.items():
        events = manager.history(saga_id)
        for version, row in enumerate(_fold(events), start=1):
            saga = manager.get(saga_id, version=version)
            context = f"{name} at version {version}"
            assert row.saga_id == saga.id, context
            assert row.saga_type == saga.saga_type, context
            assert row.definition_version == saga.definition.version, context
            assert row.status == saga.status.value, context
            assert row.current_step == saga.current_step, context
            assert row.next_deadline == saga.next_wakeup, context
            assert row.steps_in_flight == saga.steps_in_flight, context
            assert row.parallel == saga.parallel, context
            assert row.last_error == saga.last_error, context
            assert row.failure_reason == saga.failure_reason, context
            assert row.event_count == version == row.last_version, context
            assert row.updated_at == events[version - 1].timestamp, context
            assert row.started_at == events[0].timestamp, context
            if saga.dead_letter is not None:
                assert row.dead_letter_step == saga.dead_letter.step, context
                assert row.dead_letter_kind == saga.dead_letter.kind.value, context
            else:
                assert row.dead_letter_step is None, context
                assert row.dead_letter_kind is None, context
            attempt = _expected_attempt(saga)
            if attempt is not None:
                assert row.attempt == attempt, context
            assert row.in_force_steps == (",".join(saga.effects_in_force) or None), context
            assert (row.in_force_since is None) == (row.in_force_steps is None), context


def test_a_parallel_sagas_wakeup_is_its_earliest_timer_not_its_latest_events(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    rows = _fold(manager.history(ids["trip_in_flight"]))
    # hotel (30s) and car (90s) are in flight; the latest event (flight's success) sets
    # no timer, and car was dispatched last: the next wake-up is still hotel's deadline.
    last = rows[-1]
    assert last.steps_in_flight == ["hotel", "car"]
    assert last.current_step == "car"
    hotel = manager.get(ids["trip_in_flight"]).steps["hotel"]
    assert (last.next_deadline, last.wakeup_kind, last.wakeup_step) == (
        hotel.deadline,
        "deadline",
        "hotel",
    )
    # While one branch waits for a retry, the others' deadlines still count.
    rolled = _fold(manager.history(ids["trip_rolled_back"]))
    retry = next(row for row in rolled if row.wakeup_kind == "retry")
    assert retry.wakeup_step == "hotel"
    assert retry.steps_in_flight == ["flight", "car"]


def test_stuck_candidate_columns_are_set_only_in_their_state(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    for saga_id in ids.values():
        for row in _fold(manager.history(saga_id)):
            status = SagaStatus(row.status)
            assert (row.last_progress_at is not None) == (status in ACTIVE_STATUSES)
            if row.last_progress_at is not None:
                assert row.last_progress_at == row.updated_at
            assert (row.compensating_since is not None) == (status is SagaStatus.COMPENSATING)
            assert (row.dead_lettered_at is not None) == (status is SagaStatus.DEAD_LETTERED)
            assert (row.wakeup_kind is None) == (row.next_deadline is None)


def test_an_operator_retry_restarts_the_compensation_clock(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    events = manager.history(ids["compensation_dead_letter_retried"])
    rows = _fold(events)
    retried = next(i for i, e in enumerate(events) if isinstance(e, Saga.OperatorRetried))
    requested = next(i for i, e in enumerate(events) if isinstance(e, Saga.CompensationRequested))
    assert rows[requested].compensating_since == events[requested].timestamp
    assert rows[retried].compensating_since == events[retried].timestamp
    assert rows[retried].compensation_started_at == events[requested].timestamp


def test_timeline_rows_say_what_happened(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    entries = [timeline_entry(e) for e in manager.history(ids["compensation_dead_letter_retried"])]
    assert [e.version for e in entries] == list(range(1, len(entries) + 1))
    by_type = {e.event_type: e for e in entries}
    assert by_type["SagaStarted"].detail.startswith("Shop v1 data=")
    assert by_type["StepFailed"].detail == "declined"
    assert by_type["StepFailed"].step == "charge"
    assert by_type["CompensationDispatched"].detail.startswith("Inventory.Release, deadline ")
    assert by_type["CompensationTimedOut"].detail.startswith("no reply by ")
    assert by_type["SagaDeadLettered"].detail.startswith(
        "compensation gave up after 2 attempts: compensation timed out at "
    )
    assert by_type["OperatorRetried"].detail == (
        'compensation by alice with data {"order":40,"site":"B"}: warehouse back'
    )
    assert by_type["OperatorRetried"].step == "reserve"
    assert by_type["OperatorRetried"].attempt is None
    assert all(e.time.tzinfo is not None for e in entries)


def test_timeline_detail_is_short(scenario_log: tuple[SagaManager, dict[str, Any]]) -> None:
    manager, _ = scenario_log
    saga_id = manager.start("Shop", {"blob": "x" * 5000})
    entry = timeline_entry(manager.history(saga_id)[0])
    assert len(entry.detail) == MAX_DETAIL
    assert entry.detail.endswith("…")


def test_an_event_without_a_row_before_it_is_an_integrity_error(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    events = manager.history(ids["completed"])
    with pytest.raises(ProjectionIntegrityError, match="no summary row"):
        evolve_summary(None, events[1])


def test_a_version_gap_is_an_integrity_error(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    events = manager.history(ids["completed"])
    first = evolve_summary(None, events[0])
    with pytest.raises(ProjectionIntegrityError, match="does not follow"):
        evolve_summary(first, events[2])
    with pytest.raises(ProjectionIntegrityError, match="does not follow"):
        evolve_summary(evolve_summary(first, events[1]), events[1])


def test_rows_round_trip_through_json_friendly_dicts(
    scenario_log: tuple[SagaManager, dict[str, Any]],
) -> None:
    manager, ids = scenario_log
    row = _fold(manager.history(ids["dead_lettered"]))[-1]
    data = row.to_json()
    assert data["saga_id"] == str(row.saga_id)
    assert data["status"] == "DEAD_LETTERED"
    assert data["dead_lettered_at"] == row.updated_at.isoformat()
    assert SagaSummary.from_row(row.as_row()) == row
    assert row.next_deadline is None
    assert row.updated_at - row.started_at >= timedelta(0)
