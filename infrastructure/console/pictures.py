"""The console's charts as shapes: activity bars, the timeline chart and the saga's path.

Each function returns a :class:`Picture` — rectangles, lines and labels with CSS classes
— which one template macro draws as inline SVG. Text goes through the template's
autoescaping like every other piece of saga data; nothing here writes markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sagalog.infrastructure.console.reading import Overview, SagaStory
from sagalog.process.debugging.timeline import TimelineChart

__all__ = ["Picture", "activity_picture", "path_picture", "timeline_picture"]


@dataclass(frozen=True)
class Shape:
    """A rectangle (``kind`` "rect"), a line ("line") or a label ("text")."""

    kind: str
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    css: str = ""
    text: str = ""
    title: str = ""
    anchor: str = "start"


@dataclass
class Picture:
    """Shapes in a ``width`` by ``height`` view box, with a name for screen readers."""

    width: float
    height: float
    name: str
    shapes: list[Shape] = field(default_factory=list)

    def rect(self, x: float, y: float, w: float, h: float, css: str, title: str = "") -> None:
        self.shapes.append(Shape("rect", x, y, max(w, 1.0), h, css, title=title))

    def line(self, x1: float, y1: float, x2: float, y2: float, css: str) -> None:
        self.shapes.append(Shape("line", x1, y1, x2, y2, css))

    def label(self, x: float, y: float, text: str, css: str = "", anchor: str = "start") -> None:
        self.shapes.append(Shape("text", x, y, css=css, text=text, anchor=anchor))


def activity_picture(overview: Overview) -> Picture:
    """Started / completed / failed per hour, three thin bars side by side per hour."""
    buckets = overview.activity
    top = max([1, *(max(b.started, b.completed, b.failed) for b in buckets)])
    width, height, base = 600.0, 160.0, 130.0
    slot = (width - 40) / max(1, len(buckets))
    picture = Picture(width, height, "sagas started, completed and failed per hour")
    picture.line(40, base, width, base, "axis")
    picture.label(36, 18, str(top), "small", "end")
    picture.label(36, base, "0", "small", "end")
    for i, bucket in enumerate(buckets):
        x = 40 + i * slot
        for j, (count, css) in enumerate(
            (
                (bucket.started, "started"),
                (bucket.completed, "completed"),
                (bucket.failed, "failed"),
            )
        ):
            h = (base - 14) * count / top
            picture.rect(
                x + 3 + j * (slot - 6) / 3,
                base - h,
                (slot - 6) / 3 - 1,
                h,
                css,
                f"{bucket.start:%H:%M} UTC: {count} {css}",
            )
        if i % 3 == 0:
            picture.label(x + 2, base + 16, f"{bucket.start:%H:%M}", "small")
    return picture


#: Bar colours of the timeline chart, by outcome (the CSS classes of the page).
_OUTCOME_CSS = {
    "completed": "done",
    "failed": "failed",
    "timed_out": "failed",
    "abandoned": "abandoned",
    "open": "inflight",
}


def timeline_picture(chart: TimelineChart) -> Picture:
    """The timeline chart (``sagalog show --plot``'s content): one row per step, bars per
    command from dispatch to outcome, compensations below their actions, markers on top."""
    left, width, row = 130.0, 720.0, 34.0
    height = 30 + row * len(chart.steps) + 20
    total = max(chart.seconds(chart.ended_at), 1e-3)
    picture = Picture(width, height, f"timeline of saga {chart.saga_id}")

    def x(seconds: float) -> float:
        return left + (width - left - 10) * seconds / total

    rows = {name: i for i, name in enumerate(chart.steps)}
    for name, i in rows.items():
        y = 24 + i * row
        picture.label(left - 6, y + 16, _cut(name, 18), "step", "end")
        picture.line(left, y + row - 2, width - 10, y + row - 2, "grid")
    for bar in chart.bars:
        i = rows.get(bar.step, 0)
        y = 24 + i * row + (3 if bar.kind == "action" else 17)
        css = _OUTCOME_CSS[bar.outcome] + (" comp" if bar.kind == "compensation" else "")
        start, end = chart.seconds(bar.start), chart.seconds(bar.end)
        picture.rect(
            x(start),
            y,
            x(end) - x(start),
            12,
            css,
            f"{bar.kind} {bar.command} #{bar.attempt}: {bar.outcome} "
            f"(+{start:.1f}s to +{end:.1f}s)",
        )
    for marker in chart.markers:
        i = rows.get(marker.step, 0) if marker.step else 0
        y = 24 + i * row
        at = x(chart.seconds(marker.at))
        picture.rect(
            at - 2, y, 4, row - 4, f"marker {marker.kind}", f"{marker.kind}: {marker.label}"
        )
    axis = 24 + row * len(chart.steps) + 12
    picture.label(left, axis, "+0s", "small")
    picture.label(width - 10, axis, f"+{total:.1f}s", "small", "end")
    return picture


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (the box's title has it whole)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state(status: str, uncertain: bool = False) -> str:
    """A step status as one of the path's states (an uncertain action reads ``uncertain``)."""
    if status == "NOT_STARTED":
        return "remaining"
    if status in ("COMPLETED", "RESOLVED"):
        return "done"
    if status in ("COMPENSATED", "COMPENSATION_RESOLVED"):
        return "compensated"
    if uncertain and status not in ("DISPATCHED", "ABANDONED"):
        return "uncertain"
    if status in ("FAILED", "TIMED_OUT", "COMPENSATION_FAILED"):
        return "failed"
    if status == "ABANDONED":
        return "abandoned"
    return "inflight"


def _layers(story: SagaStory) -> list[list[int]]:
    """The steps (by index) by dependency depth: a step stands one layer below its deepest
    dependency, so parallel branches share a layer; list order within a layer."""
    depth: dict[str, int] = {}
    layers: list[list[int]] = []
    for i, (name, _, _) in enumerate(story.steps):
        after = story.dependencies.get(name, (story.steps[i - 1][0],) if i else ())
        depth[name] = 1 + max((depth[d] for d in after if d in depth), default=-1)
        while len(layers) <= depth[name]:
            layers.append([])
        layers[depth[name]].append(i)
    return layers


def path_picture(story: SagaStory) -> Picture:
    """The definition as a graph of steps, each coloured by where this saga's step is:
    done, in flight, uncertain, failed, compensated, remaining.

    Steps are laid out in layers by dependency depth, parallel branches side by side,
    with an edge from each dependency. A plain list of steps is a chain, actions left
    and compensations right; with branches, each compensation stands under its action.
    """
    states = {step.name: step.status for step in story.snapshot.steps}
    compensated = {name for name, _, compensation in story.steps if compensation is not None}
    layers = _layers(story)
    widest = max((len(layer) for layer in layers), default=1)
    stacked = widest > 1
    # Branches share the chain's 600 units while each box stays readable (150 at least).
    cell, row = (max(150.0, 600.0 / widest), 108.0) if stacked else (600.0, 54.0)
    box = cell - 16 if stacked else 280.0
    chars = int(box / 6.2)
    width = max(600.0, 10 + cell * widest) if stacked else 600.0
    height = 10 + row * (len(layers) - 1) + 84 if stacked else 20 + row * len(layers)
    picture = Picture(width, height, f"path of saga {story.summary.saga_id}")
    place: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(layers):
        offset = (width - cell * len(layer)) / 2 if stacked else 0.0
        for k, i in enumerate(layer):
            place[story.steps[i][0]] = (10 + offset + k * cell, 10 + depth * row)
    for i, (name, action, compensation) in enumerate(story.steps):
        x, y = place[name]
        status = states.get(name, "NOT_STARTED")
        uncertain = name in story.uncertain
        compensating = "COMPENSAT" in status
        # While its compensation runs or has failed, the action's effect is still there
        # (or, for an action whose outcome never came, may be).
        if compensating and status not in ("COMPENSATED", "COMPENSATION_RESOLVED"):
            state = "uncertain" if uncertain else "done"
        else:
            state = _state(status, uncertain)
        after = story.dependencies.get(name, (story.steps[i - 1][0],) if i else ())
        for dep in after:
            dx, dy = place[dep]
            bottom = dy + ((74 if dep in compensated else 36) if stacked else 40)
            picture.line(dx + box / 2, bottom, x + box / 2, y, "edge")
        picture.rect(x, y, box, 36, f"node {state}", f"{name} ({action}): {status}")
        picture.label(x + 10, y + 15, _cut(name, int(box / 8.2)), "step")
        picture.label(x + 10, y + 30, _cut(f"{action} · {state}", chars), "small")
        if compensation is None:
            continue
        comp_state = _state(status) if compensating else "remaining"
        title = f"{compensation}: {status}"
        if stacked:
            picture.line(x + box / 2, y + 36, x + box / 2, y + 44, "edge dashed")
            picture.rect(x, y + 44, box, 30, f"node comp {comp_state}", title)
            picture.label(x + 10, y + 63, _cut(f"{compensation} · {comp_state}", chars), "small")
        else:
            picture.line(x + 280, y + 18, x + 310, y + 18, "edge dashed")
            picture.rect(x + 310, y, 270, 36, f"node comp {comp_state}", title)
            picture.label(x + 320, y + 15, _cut(compensation, 33), "step")
            picture.label(x + 320, y + 30, f"compensation · {comp_state}", "small")
    return picture
