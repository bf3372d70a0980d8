"""A saga with steps in parallel, debugged: overlapping bars, late siblings, what ran at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from support.sagas import T0

from sagalog.domain import SagaDefinition, Step, parallel
from sagalog.process import SagaManager, plot_timeline, timeline_chart
from sagalog.process.clock import ManualClock
from sagalog.process.debugging.replay import concurrent_spans, replay, state_at

TRIP = SagaDefinition(
    "ParallelTripChart",
    [
        Step(name="budget", action="Budget.Check"),
        parallel(
            Step(name="hotel", action="Hotel.Book", compensation="Hotel.Cancel"),
            Step(name="flight", action="Flight.Book", compensation="Flight.Cancel"),
            Step(name="car", action="Car.Rent", compensation="Car.Return"),
        ),
    ],
)


@pytest.fixture
def trips(database_url: str) -> Iterator[tuple[SagaManager, ManualClock]]:
    clock = ManualClock(T0)
    app = SagaManager([TRIP], database_url, clock=clock)
    yield app, clock
    app.close()


def _car_declined(manager: SagaManager, clock: ManualClock) -> UUID:
    """budget ok; hotel, flight and car out at once; the car is declined while the hotel
    has booked and the flight is still out; the flight then succeeds late: both are
    cancelled."""
    saga_id = manager.start("ParallelTripChart", {"trip": 1})
    clock.advance(1)
    manager.handle_step_completed(saga_id, "budget")
    clock.advance(1)
    manager.handle_step_completed(saga_id, "hotel")
    clock.advance(1)
    manager.handle_step_failed(saga_id, "car", "no cars left")
    clock.advance(1)
    manager.handle_compensation_completed(saga_id, "hotel")
    clock.advance(2)
    manager.handle_step_completed(saga_id, "flight")  # late: the rollback had begun
    clock.advance(1)
    manager.handle_compensation_completed(saga_id, "flight")
    return saga_id


def _bars(manager: SagaManager, saga_id: UUID) -> list[tuple[str, str, str, float, float]]:
    chart = timeline_chart(manager.history(saga_id))
    return [
        (b.step, b.kind, b.outcome, chart.seconds(b.start), chart.seconds(b.end))
        for b in chart.bars
    ]


def test_parallel_branches_are_overlapping_bars_one_row_each_with_their_compensations(
    trips: tuple[SagaManager, ManualClock],
) -> None:
    manager, clock = trips
    saga_id = _car_declined(manager, clock)
    chart = timeline_chart(manager.history(saga_id))
    assert chart.steps == ("budget", "hotel", "flight", "car")
    assert _bars(manager, saga_id) == [
        ("budget", "action", "completed", 0.0, 1.0),
        ("hotel", "action", "completed", 1.0, 2.0),
        ("flight", "action", "abandoned", 1.0, 3.0),
        ("car", "action", "failed", 1.0, 3.0),
        # The flight was in flight (uncertain): its cancellation goes out at once too.
        ("flight", "compensation", "completed", 3.0, 7.0),
        ("hotel", "compensation", "completed", 3.0, 4.0),
    ]
    assert chart.failed_step == "car"


def test_a_sibling_that_succeeds_after_the_rollback_began_is_marked_on_its_row(
    trips: tuple[SagaManager, ManualClock], tmp_path: Path
) -> None:
    manager, clock = trips
    chart = timeline_chart(manager.history(_car_declined(manager, clock)))
    late = [
        (m.step, m.lane, chart.seconds(m.at)) for m in chart.markers if m.kind == "completed_late"
    ]
    assert late == [("flight", "action", 6.0)]
    figure = plot_timeline(chart, tmp_path / "trip.png")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["budget", "hotel", "flight", "car"]
    assert len(axes.patches) == 6  # one rectangle per bar
    # The dotted wait from where the flight was given up (3 s) to its late success (6 s).
    dotted = [
        [float(x) for x in line.get_xdata(orig=True)]  # type: ignore[arg-type, union-attr]
        for line in axes.get_lines()
        if line.get_linestyle() == ":"
    ]
    assert [3.0, 6.0] in dotted
    legend_box = axes.get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert "succeeded late" in legend
    assert (tmp_path / "trip.png").read_bytes().startswith(b"\x89PNG")


def test_replay_says_which_steps_were_in_flight_together(
    trips: tuple[SagaManager, ManualClock],
) -> None:
    manager, clock = trips
    saga_id = _car_declined(manager, clock)
    steps = replay(manager, saga_id)
    by_event = [(s.event_type, s.state.in_flight) for s in steps]
    assert by_event[:7] == [
        ("SagaStarted", ()),
        ("StepDispatched", ("budget",)),
        ("StepCompleted", ()),
        ("StepDispatched", ("hotel",)),
        ("StepDispatched", ("hotel", "flight")),
        ("StepDispatched", ("hotel", "flight", "car")),
        ("StepCompleted", ("flight", "car")),
    ]
    spans = concurrent_spans(steps)
    assert (spans[0].first_version, spans[0].steps) == (5, ("hotel", "flight", "car"))
    assert all(
        len(step.state.in_flight) < 2 for step in steps if step.version > spans[-1].last_version
    )
    assert state_at(manager, saga_id, 6).to_json()["in_flight"] == ["hotel", "flight", "car"]


def test_a_linear_saga_has_no_concurrent_span(trips: tuple[SagaManager, ManualClock]) -> None:
    manager, _ = trips
    saga_id = manager.start("ParallelTripChart", {"trip": 2})
    assert concurrent_spans(replay(manager, saga_id)) == []
    assert concurrent_spans([]) == []
