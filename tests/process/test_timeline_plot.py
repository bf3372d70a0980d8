"""The timeline chart: the bars and markers match the saga's history; the PNG is a PNG."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from sagalog.domain import RetryPolicy, SagaDefinition, SagaStatus, Step
from sagalog.process import SagaManager, plot_timeline, timeline_chart
from sagalog.process.clock import ManualClock
from sagalog.process.debugging.timeline import ChartBar

TRIP = SagaDefinition(
    "Trip",
    [
        Step(
            name="hotel",
            action="Hotel.Book",
            compensation="Hotel.Cancel",
            compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=4)),
        ),
        Step(
            name="flight",
            action="Flight.Book",
            compensation="Flight.Cancel",
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=2)),
        ),
        Step(
            name="car", action="Car.Rent", compensation="Car.Return", timeout=timedelta(seconds=30)
        ),
    ],
)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager([TRIP], database_url, clock=clock)
    yield app
    app.close()


def _eventful_saga(manager: SagaManager, clock: ManualClock) -> UUID:
    """hotel ok; flight fails, is retried and succeeds; car times out (uncertain, so it is
    returned); compensation of the flight succeeds, the hotel's fails once and succeeds on
    its retry: FAILED."""
    saga_id = manager.start("Trip", {"trip": 1})
    clock.advance(1)
    manager.handle_step_completed(saga_id, "hotel")
    clock.advance(1)
    manager.handle_step_failed(saga_id, "flight", "sold out")
    manager.tick(clock.advance(2))
    clock.advance(1)
    manager.handle_step_completed(saga_id, "flight")
    manager.tick(clock.advance(31))  # the car rental never answers: it may have rented
    clock.advance(1)
    manager.handle_compensation_completed(saga_id, "car")
    clock.advance(1)
    manager.handle_compensation_completed(saga_id, "flight")
    clock.advance(1)
    manager.handle_compensation_failed(saga_id, "hotel", "front desk closed")
    manager.tick(clock.advance(4))
    clock.advance(1)
    manager.handle_compensation_completed(saga_id, "hotel")
    return saga_id


def _shape(bars: tuple[ChartBar, ...]) -> list[tuple[str, str, int, str, float]]:
    return [(b.step, b.kind, b.attempt, b.outcome, (b.end - b.start).total_seconds()) for b in bars]


def test_every_command_is_one_bar_from_dispatch_to_outcome(
    manager: SagaManager, clock: ManualClock
) -> None:
    chart = timeline_chart(manager.history(_eventful_saga(manager, clock)))
    assert _shape(chart.bars) == [
        ("hotel", "action", 1, "completed", 1.0),
        ("flight", "action", 1, "failed", 1.0),
        ("flight", "action", 2, "completed", 1.0),
        ("car", "action", 1, "timed_out", 31.0),
        ("car", "compensation", 1, "completed", 1.0),
        ("flight", "compensation", 1, "completed", 1.0),
        ("hotel", "compensation", 1, "failed", 1.0),
        ("hotel", "compensation", 2, "completed", 1.0),
    ]
    assert chart.bars[0].command == "Hotel.Book"
    assert chart.bars[-1].command == "Hotel.Cancel"
    assert chart.steps == ("hotel", "flight", "car")
    assert (chart.status, chart.failed_step) == (SagaStatus.FAILED, "car")
    assert chart.seconds(chart.ended_at) == 44.0


def test_failures_timeouts_retries_and_the_rollback_are_marked(
    manager: SagaManager, clock: ManualClock
) -> None:
    chart = timeline_chart(manager.history(_eventful_saga(manager, clock)))
    marks = [(m.kind, m.step, m.lane, chart.seconds(m.at)) for m in chart.markers]
    assert marks == [
        ("failed", "flight", "action", 2.0),
        ("retry_scheduled", "flight", "action", 2.0),
        ("timed_out", "car", "action", 36.0),
        ("compensation_requested", None, None, 36.0),
        ("failed", "hotel", "compensation", 39.0),
        ("retry_scheduled", "hotel", "compensation", 39.0),
    ]
    retries = [m for m in chart.markers if m.until is not None]
    assert [chart.seconds(m.until) for m in retries if m.until] == [4.0, 43.0]
    assert "sold out" in chart.markers[0].label
    assert chart.title.startswith(f"Trip v1 — saga {chart.saga_id}\nFAILED (failed at car)")


def test_a_waiting_command_is_an_open_bar_up_to_its_deadline_and_operators_are_marked(
    manager: SagaManager, clock: ManualClock
) -> None:
    saga_id = manager.start("Trip", {"trip": 2})
    manager.handle_step_completed(saga_id, "hotel")
    manager.handle_step_completed(saga_id, "flight")
    chart = timeline_chart(manager.history(saga_id))
    assert _shape(chart.bars)[-1] == ("car", "action", 1, "open", 30.0)
    assert chart.status is SagaStatus.PENDING
    manager.abort(saga_id, actor="ops", reason="customer cancelled")
    chart = timeline_chart(manager.history(saga_id))
    assert ("car", "action", 1, "abandoned", 0.0) in _shape(chart.bars)
    assert [m.label for m in chart.markers if m.kind == "operator"] == ["aborted by ops"]
    assert chart.bars[-1].outcome == "open"  # the compensation of the flight, waiting


def test_the_chart_refuses_a_history_that_does_not_begin_with_the_start(
    manager: SagaManager,
) -> None:
    events = manager.history(manager.start("Trip", {"trip": 3}))
    with pytest.raises(ValueError, match="start with SagaStarted"):
        timeline_chart(events[1:])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_timeline_writes_a_png_of_plausible_size(
    manager: SagaManager, clock: ManualClock, tmp_path: Path
) -> None:
    target = tmp_path / "timeline.png"
    figure = plot_timeline(manager.history(_eventful_saga(manager, clock)), target)
    width, height = _png_size(target)
    assert 1000 <= width <= 2000
    assert 250 <= height <= 800
    assert 10_000 < target.stat().st_size < 500_000
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["hotel", "flight", "car"]
    assert len(axes.patches) == 8  # one rectangle per bar
    assert axes.get_title(loc="left").startswith("Trip v1")
