"""Reading the views: list, get, timeline, counts."""

from __future__ import annotations

from uuid import uuid4

import pytest
from support.sagas import run_scenarios

from sagalog.domain import SagaStatus
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector


@pytest.fixture
def scenarios(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> dict[str, object]:
    ids = run_scenarios(manager, clock)
    projector.catch_up()
    return dict(ids)


def test_list_shows_the_most_recently_changed_first(
    scenarios: dict[str, object], projector: SagaProjector
) -> None:
    rows = projector.views.list_sagas(limit=100)
    assert len(rows) == len(scenarios)
    stamps = [(r.updated_at, r.saga_id) for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    assert len(projector.views.list_sagas(limit=3)) == 3
    assert projector.views.list_sagas(limit=0) == []


def test_list_filters_by_status_and_type(
    scenarios: dict[str, object], projector: SagaProjector
) -> None:
    views = projector.views
    failed = views.list_sagas(status=SagaStatus.FAILED)
    assert {r.saga_id for r in failed} == {
        scenarios[name]
        for name in (
            "compensated",
            "timed_out",
            "compensation_dead_letter_retried",
            "compensation_dead_letter_resolved",
            "aborted",
            "late_effect_repaired",
            "deadline_passed",
        )
    }
    assert views.list_sagas(status="DEAD_LETTERED")[0].saga_id == scenarios["dead_lettered"]
    slow = views.list_sagas(saga_type="Slow")
    assert {r.saga_id for r in slow} == {scenarios["running"], scenarios["compensating"]}
    both = views.list_sagas(saga_type="Slow", status="COMPENSATING")
    assert [r.saga_id for r in both] == [scenarios["compensating"]]
    assert views.list_sagas(saga_type="Nope") == []
    assert sum(views.count_by_status().values()) == views.count_sagas() == len(scenarios)


def test_list_refuses_an_unknown_status_and_a_negative_limit(projector: SagaProjector) -> None:
    with pytest.raises(ValueError, match="BOGUS"):
        projector.views.list_sagas(status="BOGUS")
    with pytest.raises(ValueError, match="limit"):
        projector.views.list_sagas(limit=-1)


def test_get_and_timeline_of_one_saga(
    scenarios: dict[str, object], manager: SagaManager, projector: SagaProjector
) -> None:
    saga_id = scenarios["aborted"]
    assert isinstance(saga_id, type(uuid4()))
    summary = projector.views.get(saga_id)
    assert summary is not None
    assert summary.status == "FAILED"
    assert summary.failure_reason == "aborted by dave: customer cancelled"
    timeline = projector.views.timeline(saga_id)
    assert [e.event_type for e in timeline] == [type(e).__name__ for e in manager.history(saga_id)]
    assert timeline[-1].event_type == "SagaFailed"
    assert any(e.detail == "by dave: customer cancelled" for e in timeline)
    assert summary.event_count == len(timeline)


def test_an_unknown_saga_has_no_summary_and_no_timeline(projector: SagaProjector) -> None:
    assert projector.views.get(uuid4()) is None
    assert projector.views.timeline(uuid4()) == []
