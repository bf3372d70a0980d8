"""A saga's timeline as a picture: a Gantt chart of its steps and compensations.

Two layers, so that the picture can be checked without looking at it:

* :func:`timeline_chart` turns a saga's events (``manager.history(saga_id)``,
  oldest first) into plain data — one :class:`ChartBar` per command sent
  (a step's action or compensation, each attempt), from its dispatch to its
  outcome, and one :class:`ChartMarker` per moment worth pointing at (a failure,
  a timeout, a scheduled retry, the start of compensation, a dead letter, an
  operator action, a late success). No plotting library is needed for this part.
* :func:`plot_timeline` draws that data with matplotlib: one row per step in the
  definition's order (steps that run in parallel overlap in time, each in its own
  row, its compensation in the lower half of the row), time on the x axis in
  seconds from the start, actions and compensations coloured by outcome,
  markers on top, and the saga's type, version, id and status in the title. It
  builds a bare ``Figure`` (no pyplot, no window, no global backend switch), so
  it runs headless and inside notebooks alike. matplotlib comes with the ``plot`` extra
  (``pip install 'sagalog[plot]'``); without it :class:`PlotUnavailableError`
  says so.

Both take the events rather than a manager, so a notebook, the CLI
(``sagalog show SAGA_ID --plot timeline.png``) and a test call the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from sagalog.domain import CommandKind, Saga, SagalogError, SagaStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ChartBar",
    "ChartMarker",
    "PlotUnavailableError",
    "TimelineChart",
    "plot_timeline",
    "timeline_chart",
]

BarKind = Literal["action", "compensation"]
#: How a command ended: ``open`` (no outcome yet) and ``abandoned`` (the saga
#: began compensating while it was in flight) besides the participant's answers.
BarOutcome = Literal["completed", "failed", "timed_out", "abandoned", "open"]
MarkerKind = Literal[
    "completed_late",
    "failed",
    "timed_out",
    "retry_scheduled",
    "compensation_requested",
    "dead_lettered",
    "operator",
]


class PlotUnavailableError(SagalogError, RuntimeError):
    """matplotlib is not installed: ``pip install 'sagalog[plot]'``."""


@dataclass(frozen=True)
class ChartBar:
    """One command of one step, from its dispatch to its outcome."""

    step: str
    kind: BarKind
    attempt: int
    command: str
    start: datetime
    #: When its outcome was recorded; for an ``open`` bar, its deadline or the chart's end.
    end: datetime
    outcome: BarOutcome


@dataclass(frozen=True)
class ChartMarker:
    """A moment worth pointing at; ``step`` is ``None`` for the whole saga.

    ``lane`` says whether it concerns the step's action or its compensation;
    ``until`` is when a scheduled retry is due (the picture joins the two).
    """

    at: datetime
    kind: MarkerKind
    step: str | None
    label: str
    lane: BarKind | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class TimelineChart:
    """Everything the picture shows, as data."""

    saga_id: UUID
    saga_type: str
    definition_version: int
    status: SagaStatus
    #: The definition's steps, in order: the rows of the chart, top to bottom.
    steps: tuple[str, ...]
    started_at: datetime
    ended_at: datetime
    bars: tuple[ChartBar, ...] = field(default=())
    markers: tuple[ChartMarker, ...] = field(default=())
    #: The step whose failure or timeout started the rollback, if any.
    failed_step: str | None = None

    @property
    def title(self) -> str:
        """Type, version, id and status, as the picture's title says them."""
        return (
            f"{self.saga_type} v{self.definition_version} — saga {self.saga_id}\n"
            f"{self.status.value}"
            + (f" (failed at {self.failed_step})" if self.failed_step else "")
        )

    def seconds(self, moment: datetime) -> float:
        """``moment`` as seconds since the saga started (the x axis)."""
        return (moment - self.started_at).total_seconds()


def timeline_chart(events: Sequence[Saga.Event]) -> TimelineChart:
    """The bars and markers of a saga's events (all of them, oldest first).

    Bars come in the order their commands were dispatched; markers in the order
    of the events they stand for.
    """
    if not events or not isinstance(events[0], Saga.SagaStarted):
        raise ValueError("a saga's events start with SagaStarted (pass the whole history)")
    started = events[0]
    saga: Any = None
    for event in events:
        saga = event.mutate(saga)
    assert isinstance(saga, Saga)
    end = events[-1].timestamp
    open_bars: dict[tuple[str, BarKind], tuple[Saga.Event, int, str, datetime | None]] = {}
    bars: list[tuple[int, ChartBar]] = []  # with the version of the dispatch, to order them
    markers: list[ChartMarker] = []

    def close(step: str, kind: BarKind, at: datetime, outcome: BarOutcome) -> None:
        opened = open_bars.pop((step, kind), None)
        if opened is not None:
            event, attempt, command, _ = opened
            bar = ChartBar(step, kind, attempt, command, event.timestamp, at, outcome)
            bars.append((event.originator_version, bar))

    for event in events[1:]:
        at = event.timestamp
        if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
            kind: BarKind = "action" if isinstance(event, Saga.StepDispatched) else "compensation"
            open_bars[(event.step, kind)] = (
                event,
                event.attempt,
                event.command_name,
                event.deadline,
            )
        elif isinstance(event, Saga.StepCompleted):
            close(event.step, "action", at, "completed")
        elif isinstance(event, Saga.CompensationCompleted):
            close(event.step, "compensation", at, "completed")
        elif isinstance(event, Saga.StepFailed | Saga.CompensationFailed):
            kind = "action" if isinstance(event, Saga.StepFailed) else "compensation"
            close(event.step, kind, at, "failed")
            what = "failed" if kind == "action" else "compensation failed"
            markers.append(ChartMarker(at, "failed", event.step, f"{what}: {event.error}", kind))
        elif isinstance(event, Saga.StepTimedOut | Saga.CompensationTimedOut):
            kind = "action" if isinstance(event, Saga.StepTimedOut) else "compensation"
            close(event.step, kind, at, "timed_out")
            what = "timed out" if kind == "action" else "compensation timed out"
            markers.append(ChartMarker(at, "timed_out", event.step, what, kind))
        elif isinstance(event, Saga.StepCompletedLate):
            # A sibling abandoned in flight (or a timed-out attempt) that did happen after all.
            label = f"attempt {event.attempt} succeeded late"
            markers.append(ChartMarker(at, "completed_late", event.step, label, "action"))
        elif isinstance(event, Saga.StepRetryScheduled | Saga.CompensationRetryScheduled):
            kind = "action" if isinstance(event, Saga.StepRetryScheduled) else "compensation"
            delay = (event.due_at - at).total_seconds()
            label = f"attempt {event.attempt} in {delay:g}s"
            markers.append(
                ChartMarker(at, "retry_scheduled", event.step, label, kind, event.due_at)
            )
        elif isinstance(event, Saga.CompensationRequested):
            for step, kind in [key for key in open_bars if key[1] == "action"]:
                close(step, kind, at, "abandoned")
            markers.append(ChartMarker(at, "compensation_requested", None, "compensation"))
        elif isinstance(event, Saga.SagaDeadLettered):
            label = f"dead-lettered after {event.attempts} attempts"
            markers.append(
                ChartMarker(at, "dead_lettered", event.step, label, _lane_of(event.kind))
            )
        elif isinstance(event, Saga.OperatorRetried | Saga.OperatorResolved | Saga.SagaAborted):
            verb = {
                Saga.OperatorRetried: "retried",
                Saga.OperatorResolved: "resolved",
                Saga.SagaAborted: "aborted",
            }[type(event)]
            step_name = getattr(event, "step", None)
            kind_name = getattr(event, "kind", None)
            lane = None if kind_name is None else _lane_of(kind_name)
            markers.append(ChartMarker(at, "operator", step_name, f"{verb} by {event.actor}", lane))
    for (step, kind), (event, attempt, command, deadline) in open_bars.items():
        until = max(end, deadline) if deadline is not None else end
        bar = ChartBar(step, kind, attempt, command, event.timestamp, until, "open")
        bars.append((event.originator_version, bar))
    ordered = tuple(bar for _, bar in sorted(bars, key=lambda item: item[0]))
    last = max([end, *(bar.end for bar in ordered), *(m.until for m in markers if m.until)])
    return TimelineChart(
        saga_id=started.originator_id,
        saga_type=saga.saga_type,
        definition_version=saga.definition.version,
        status=saga.status,
        steps=tuple(saga.definition.step_names),
        started_at=started.timestamp,
        ended_at=last,
        bars=ordered,
        markers=tuple(markers),
        failed_step=saga.failed_step,
    )


#: Fill colour of a bar by (kind, outcome).
_COLOURS: dict[tuple[BarKind, BarOutcome], str] = {
    ("action", "completed"): "#4c9a2a",
    ("action", "failed"): "#d62728",
    ("action", "timed_out"): "#ff7f0e",
    ("action", "abandoned"): "#9e9e9e",
    ("action", "open"): "#8fbcdb",
    ("compensation", "completed"): "#7b4fa8",
    ("compensation", "failed"): "#d62728",
    ("compensation", "timed_out"): "#ff7f0e",
    ("compensation", "abandoned"): "#9e9e9e",
    ("compensation", "open"): "#c9b3e0",
}
#: Marker style by kind: (matplotlib marker, colour, legend text).
_MARKERS: dict[MarkerKind, tuple[str, str, str]] = {
    "completed_late": ("*", "#2d6a12", "succeeded late"),
    "failed": ("X", "#a50f15", "failure"),
    "timed_out": ("v", "#e6550d", "timeout"),
    "retry_scheduled": ("o", "#1f77b4", "retry (due)"),
    "dead_lettered": ("s", "#000000", "dead-lettered"),
    "operator": ("^", "#2ca02c", "operator action"),
}


def plot_timeline(
    source: Sequence[Saga.Event] | TimelineChart,
    path: str | Path | None = None,
    *,
    width: float = 11.0,
) -> Figure:
    """Draw a saga's timeline (its events, or a :class:`TimelineChart`); save it to ``path``.

    The format follows ``path``'s suffix (``.png``, ``.svg``, ``.pdf``). Returns the
    ``Figure`` (display it in a notebook, or save it again elsewhere).
    """
    chart = source if isinstance(source, TimelineChart) else timeline_chart(source)
    figure_class = _figure_class()
    rows = len(chart.steps)
    figure = figure_class(figsize=(width, 1.6 + 0.55 * rows), layout="constrained")
    ax = figure.add_subplot()
    row_of = {step: index for index, step in enumerate(chart.steps)}
    span = max(chart.seconds(chart.ended_at), 1e-3)
    min_width = span / 300  # a reply in the same instant still shows as a sliver
    kinds_shown: set[tuple[BarKind, BarOutcome]] = set()
    for bar in chart.bars:
        y = _lane_y(row_of[bar.step], bar.kind)
        left = chart.seconds(bar.start)
        ax.barh(
            y,
            max(chart.seconds(bar.end) - left, min_width),
            left=left,
            height=2 * _LANE_OFFSET - 0.02,
            color=_COLOURS[(bar.kind, bar.outcome)],
            edgecolor="#333333",
            linewidth=0.6,
            hatch="//" if bar.outcome == "open" else None,
        )
        if bar.attempt > 1:  # in the gap between rows: above actions, below compensations
            above = bar.kind == "action"
            ax.annotate(
                f"#{bar.attempt}",
                (left, y + (-_LANE_OFFSET if above else _LANE_OFFSET)),
                xytext=(0, 1 if above else -1),
                textcoords="offset points",
                va="bottom" if above else "top",
                fontsize=7,
                color="#333333",
            )
        kinds_shown.add((bar.kind, bar.outcome))
    marker_kinds: set[MarkerKind] = set()
    for marker in chart.markers:
        x = chart.seconds(marker.at)
        if marker.kind == "compensation_requested":
            ax.axvline(x, color="#7b4fa8", linestyle="--", linewidth=1)
            late = x > span * 0.7
            ax.annotate(
                "compensation begins",
                (x, -0.6),
                xytext=(-3 if late else 3, 0),
                textcoords="offset points",
                fontsize=8,
                color="#7b4fa8",
                va="center",
                ha="right" if late else "left",
            )
            continue
        style, colour, _ = _MARKERS[marker.kind]
        # A dead letter sits between the lanes, so it never hides the failure beside it.
        lane = None if marker.kind == "dead_lettered" else marker.lane
        y = _lane_y(row_of[marker.step], lane) if marker.step in row_of else -0.6
        if marker.until is not None:  # a retry: dotted from the failure to when it is due
            due = chart.seconds(marker.until)
            ax.plot([x, due], [y, y], color=colour, linestyle=":", linewidth=1.2, zorder=4)
            ax.plot(
                [due],
                [y],
                marker=style,
                markerfacecolor="white",
                color=colour,
                markersize=7,
                linestyle="none",
                zorder=5,
            )
        else:
            if marker.kind == "completed_late":  # dotted from where the wait was given up
                since = _given_up_at(chart, marker)
                if since is not None and since < x:
                    ax.plot([since, x], [y, y], color=colour, linestyle=":", linewidth=1.2)
            ax.plot([x], [y], marker=style, color=colour, markersize=9, linestyle="none", zorder=5)
        marker_kinds.add(marker.kind)
    ax.set_yticks(range(rows), list(chart.steps))
    ax.set_ylim(rows - 0.4, -0.9)
    ax.set_xlim(-span * 0.02, span * 1.04)
    ax.set_xlabel(f"seconds since the start ({chart.started_at:%Y-%m-%d %H:%M:%S} UTC)")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(chart.title, fontsize=10, loc="left")
    _legend(ax, kinds_shown, marker_kinds)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def _given_up_at(chart: TimelineChart, marker: ChartMarker) -> float | None:
    """Where the step's last action bar before ``marker`` ended (abandoned or timed out)."""
    ends = [
        chart.seconds(bar.end)
        for bar in chart.bars
        if bar.step == marker.step
        and bar.kind == "action"
        and bar.outcome in ("abandoned", "timed_out")
        and bar.end <= marker.at
    ]
    return max(ends) if ends else None


def _lane_of(command_kind: str) -> BarKind:
    """The lane of a ``CommandKind`` value as stored in events (``ACTION``, ``COMPENSATION``)."""
    return "action" if CommandKind(command_kind) is CommandKind.ACTION else "compensation"


def _lane_y(row: int, lane: BarKind | None) -> float:
    """Actions in the upper half of a step's row, compensations in the lower."""
    if lane is None:
        return float(row)
    return row + (-_LANE_OFFSET if lane == "action" else _LANE_OFFSET)


_LANE_OFFSET = 0.17


def _legend(
    ax: Any, bars: Iterable[tuple[BarKind, BarOutcome]], markers: Iterable[MarkerKind]
) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = []
    for lane, outcome in sorted(bars):
        text = f"{lane} {outcome.replace('_', ' ')}"
        handles.append(
            Patch(
                facecolor=_COLOURS[(lane, outcome)],
                edgecolor="#333333",
                hatch="//" if outcome == "open" else None,
                label=text,
            )
        )
    for mark in sorted(markers):
        style, colour, text = _MARKERS[mark]
        face = "white" if mark == "retry_scheduled" else colour
        handles.append(
            Line2D(
                [],
                [],
                marker=style,
                color=colour,
                markerfacecolor=face,
                linestyle="none",
                label=text,
            )
        )
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError(
            "plotting needs matplotlib: pip install 'sagalog[plot]'"
        ) from None
    return Figure
