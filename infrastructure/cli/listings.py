"""The listings: ``list``, ``stuck`` and ``show``.

Each catches the projections up before reading them and has ``--json``. Below
``output.WIDE`` columns the tables stack related facts in one cell rather than
cut ids, types or statuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sagalog.domain import Saga, SagaStatus
from sagalog.infrastructure.cli.app import app, fail
from sagalog.infrastructure.cli.opening import catch_up, opened
from sagalog.infrastructure.cli.options import (
    AppOption,
    DatabaseUrlOption,
    DefinitionsOption,
    JsonOption,
    SagaIdArgument,
    parse_saga_id,
)
from sagalog.infrastructure.cli.output import (
    EVENT_STYLE,
    WIDE,
    console,
    err_console,
    escape,
    instant,
    print_json,
    status_text,
)
from sagalog.process.debugging.timeline import plot_timeline
from sagalog.process.store.shredding import ERASED
from sagalog.projections import SagaSummary, StuckPolicy, StuckSaga, TimelineEntry
from sagalog.projections.quarantine import QuarantinedEvent
from sagalog.projections.rows import timeline_entry
from sagalog.projections.stuck import format_duration, parse_duration


@app.command("list")
def list_sagas(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only sagas in this status (STARTED, PENDING, COMPENSATING, "
            "COMPLETED, FAILED, DEAD_LETTERED)."
        ),
    ] = None,
    saga_type: Annotated[
        str | None, typer.Option("--type", help="Only sagas of this type.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """List sagas, most recently changed first."""
    wanted = _status(status)
    with opened(database_url, app, definitions) as (_, projector):
        catch_up(projector)
        rows = projector.views.list_sagas(status=wanted, saga_type=saga_type, limit=limit)
    if json_output:
        print_json([row.to_json() for row in rows])
        return
    if not rows:
        console.print("no sagas" + (" matching the filters" if wanted or saga_type else ""))
        return
    console.print(_sagas_table(rows, wide=_sagas_fit_wide(rows)))


def _status(text: str | None) -> SagaStatus | None:
    if text is None:
        return None
    try:
        return SagaStatus(text.strip().upper())
    except ValueError:
        choices = ", ".join(s.value for s in SagaStatus)
        raise fail(f"unknown status {text!r}; choose one of {choices}") from None


def _fits(*widths: int) -> bool:
    """Whether columns of these minimum widths fit the console side by side (with borders)."""
    return sum(widths) + 3 * len(widths) + 1 <= console.width


def _longest(texts: Iterable[str], at_least: int = 0) -> int:
    return max([at_least, *(len(text) for text in texts)])


def _sagas_fit_wide(rows: list[SagaSummary]) -> bool:
    """Whether the one-fact-per-column ``list`` table fits without cutting an id, type or status."""
    return console.width >= WIDE and _fits(
        36,
        _longest(row.saga_type for row in rows),
        _longest(row.status for row in rows),
        10,  # step (attempt), wrapped
        10,  # updated: date over time
        10,  # next wake-up: date over time
        6,
        10,  # last error, cut first
    )


def _sagas_table(rows: list[SagaSummary], *, wide: bool) -> Table:
    """The ``list`` table; a narrow one stacks two facts per cell (ids, types, statuses whole)."""
    table = Table(title=f"sagas ({len(rows)} shown, newest first)")
    types = _longest((row.saga_type for row in rows), 4)
    statuses = _longest((row.status for row in rows), 6)
    table.add_column(
        "saga id" if wide else "saga id / type",
        no_wrap=True,
        min_width=max(36, 0 if wide else types),
    )
    if wide:
        table.add_column("type", no_wrap=True, min_width=types)
    table.add_column("status" if wide else "status / step", min_width=statuses, no_wrap=wide)
    if wide:
        table.add_column("step (attempt)", min_width=10)
    table.add_column("updated (UTC)", no_wrap=not wide, min_width=10)
    if wide:
        table.add_column("next wake-up", min_width=10)
        table.add_column("events", justify="right", min_width=6)
        table.add_column("last error", overflow="fold", max_width=40, min_width=10)
    for row in rows:
        step = _step_cell(row)
        if wide:
            table.add_row(
                str(row.saga_id),
                row.saga_type,
                status_text(row.status),
                step,
                instant(row.updated_at),
                instant(row.next_deadline),
                str(row.event_count),
                row.last_error or "-",
            )
        else:
            status = status_text(row.status)
            if step != "-":
                status.append(f"\n{step}", style="dim")
            table.add_row(
                Text(str(row.saga_id)).append(f"\n{row.saga_type}", style="dim"),
                status,
                instant(row.updated_at).replace(" ", "\n"),
            )
    return table


def _step_cell(row: SagaSummary) -> str:
    """Where a saga is: its step and attempt, or every step in flight of a parallel saga."""
    if row.parallel:
        return ", ".join(row.steps_in_flight) or "-"
    return f"{row.current_step} ({row.attempt})" if row.current_step else "-"


@app.command()
def stuck(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
    deadline_grace: Annotated[
        str, typer.Option(help="How late a deadline may be before it counts as missed.")
    ] = "30s",
    no_progress_after: Annotated[
        str, typer.Option(help="A running saga with no event for this long is stuck.")
    ] = "1h",
    no_progress_for: Annotated[
        list[str] | None,
        typer.Option(
            "--no-progress-for",
            metavar="TYPE=DURATION",
            help="The no-progress threshold of one saga type (repeatable), e.g. TravelBooking=4h.",
        ),
    ] = None,
    compensation_too_long: Annotated[
        str, typer.Option(help="A saga compensating for longer than this is stuck.")
    ] = "15m",
    at: Annotated[
        str | None,
        typer.Option(
            help="Judge at this ISO-8601 instant instead of now (e.g. for sagas on a "
            "simulated clock).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List stuck sagas with why: DEAD_LETTERED, DEADLINE_MISSED, COMPENSATION_TOO_LONG,
    NO_PROGRESS (durations like 90s, 15m, 1h30m, 2d)."""
    by_type = {}
    for item in no_progress_for or []:
        saga_type, equals, duration = item.partition("=")
        if not equals or not saga_type.strip():
            raise fail(f"--no-progress-for takes TYPE=DURATION, not {item!r}")
        by_type[saga_type.strip()] = _duration(duration, f"--no-progress-for {saga_type}")
    try:
        policy = StuckPolicy(
            deadline_grace=_duration(deadline_grace, "--deadline-grace"),
            no_progress_after=_duration(no_progress_after, "--no-progress-after"),
            no_progress_after_by_type=by_type,
            compensation_too_long=_duration(compensation_too_long, "--compensation-too-long"),
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    now = _at(at)
    with opened(database_url, app, definitions) as (_, projector):
        catch_up(projector)
        found = projector.views.stuck(now=now, policy=policy, limit=limit)
        held = projector.views.quarantine_log().events()
    if json_output:
        print_json([item.to_json() for item in found])
        _note_quarantine(held)
        return
    if not found:
        console.print("[green]no stuck sagas[/]")
    else:
        _print_stuck(found)
    _note_quarantine(held)


def _duration(text: str, option: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from None


def _note_quarantine(held: list[QuarantinedEvent]) -> None:
    """Say on stderr that poison events wait in quarantine (see ``sagalog quarantine``)."""
    if not held:
        return
    sagas = {item.saga_id for item in held}
    note = (
        f"quarantined: {len(held)} events of {len(sagas)} sagas wait "
        "(sagalog quarantine list; retry with sagalog quarantine retry)"
    )
    err_console.print(f"[bold yellow]{note}[/]", highlight=False, soft_wrap=True)


def _at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"--at: {text!r} is not an ISO-8601 instant (e.g. 2026-05-01T12:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _print_stuck(found: list[StuckSaga]) -> None:
    title = f"stuck sagas ({len(found)}, most urgent first)"
    if console.width < WIDE + 40:
        # One block per saga, so the detail gets the whole width.
        console.print(Text(title, style="italic"))
        for item in found:
            head = Text.assemble(
                (item.reason.value, "bold red"),
                *[(f" +{r.value}", "bold") for r in item.reasons[1:]],
                f"  {item.summary.saga_id}",
            )
            console.print(head)
            detail = Text.assemble(
                f"{item.summary.saga_type} ",
                status_text(item.summary.status),
                f", since {instant(item.since)} UTC: {item.detail}",
            )
            console.print(Padding(detail, (0, 0, 0, 4)))
        return
    table = Table(title=title)
    table.add_column("saga id", no_wrap=True, min_width=36)
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("reason", style="bold", no_wrap=True)
    table.add_column("since (UTC)")
    table.add_column("detail")
    for item in found:
        reasons = item.reason.value + "".join(f"\n+{r.value}" for r in item.reasons[1:])
        table.add_row(
            str(item.summary.saga_id),
            item.summary.saga_type,
            status_text(item.summary.status),
            reasons,
            instant(item.since),
            item.detail,
        )
    console.print(table)


@app.command()
def show(
    saga_id: SagaIdArgument,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Also draw the saga's timeline as a Gantt chart into FILE (.png, .svg or "
            ".pdf; needs the plot extra).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show one saga: its summary and its timeline, event by event."""
    wanted = parse_saga_id(saga_id)
    if plot is not None:
        _check_plot_target(plot)
    erased_by: str | None = None
    with opened(database_url, app, definitions) as (manager, projector):
        catch_up(projector)
        summary = projector.views.get(wanted)
        timeline = projector.views.timeline(wanted)
        if summary is not None and manager.encrypted:
            # The views hold no saga data when encryption is on: read it from the log.
            saga = manager.get(wanted)
            erased_by = saga.forgotten_by
            timeline = [timeline_entry(event) for event in manager.history(wanted)]
            summary = replace(
                summary, last_error=saga.last_error, failure_reason=saga.failure_reason
            )
        branches: list[str] = []
        if summary is not None:
            branches = _parallel_lines(manager.get(wanted))
        if summary is not None and plot is not None:
            _draw(manager.history(wanted), plot)
    if summary is None:
        raise fail(f"no saga with id {wanted}")
    if json_output:
        print_json(
            {
                "summary": summary.to_json(),
                "timeline": [e.to_json() for e in timeline],
                **({"data_erased_by": erased_by} if erased_by is not None else {}),
            }
        )
    else:
        _print_summary(summary, branches)
        if erased_by is not None:
            console.print(
                f"  its data was erased by {escape(erased_by)}: payloads read as {ERASED}",
                highlight=False,
            )
        _print_timeline(summary, timeline)
    if plot is not None:
        err_console.print(f"timeline chart written to {plot}", highlight=False, soft_wrap=True)


#: The formats ``show --plot`` writes, by file suffix.
_PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _check_plot_target(path: Path) -> None:
    """Refuse, before reading anything, a plot that could not be drawn or written."""
    if path.suffix.lower() not in _PLOT_SUFFIXES:
        raise fail(escape(f"--plot {path}: give a file ending in {', '.join(_PLOT_SUFFIXES)}"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise fail(escape("--plot needs matplotlib: pip install 'sagalog[plot]'")) from None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise fail(escape(f"--plot {path}: no directory {parent}"))
    if path.is_dir():
        raise fail(escape(f"--plot {path}: is a directory"))


def _draw(events: list[Any], path: Path) -> None:
    """Draw the chart into a file beside ``path``, then move it there (no half-written file)."""
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        plot_timeline(events, partial)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise fail(escape(f"--plot {path}: cannot write: {exc.strerror or exc}")) from None


def _parallel_lines(saga: Saga) -> list[str]:
    """For a saga with steps in parallel: each group of steps that start together (and
    what they wait for), then which of them are out at once now; nothing for a plain list."""
    definition = saga.definition
    if definition.is_linear:
        return []
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, after in definition.dependencies.items():
        groups.setdefault(after, []).append(name)
    lines = [
        f"{', '.join(names)} ({'after ' + ', '.join(after) if after else 'at the start'})"
        for after, names in groups.items()
        if len(names) > 1
    ]
    waiting = saga.waiting_for
    if len(waiting) > 1:
        lines.append(f"waiting for {', '.join(waiting)} at once")
    return lines


def _print_summary(summary: SagaSummary, parallel: list[str] | None = None) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("saga", str(summary.saga_id))
    table.add_row("type", f"{summary.saga_type} v{summary.definition_version}")
    table.add_row("status", status_text(summary.status))
    if summary.parallel:
        table.add_row("in flight", ", ".join(summary.steps_in_flight) or "-")
    elif summary.current_step:
        table.add_row("step", f"{summary.current_step} (attempt {summary.attempt})")
    table.add_row("started", instant(summary.started_at) + " UTC")
    took = format_duration(summary.updated_at - summary.started_at)
    table.add_row("updated", f"{instant(summary.updated_at)} UTC ({took} after start)")
    if summary.next_deadline:
        table.add_row(
            "next wake-up", f"{instant(summary.next_deadline)} UTC ({summary.wakeup_kind})"
        )
    if summary.dead_letter_step:
        table.add_row("dead letter", f"{summary.dead_letter_kind} of {summary.dead_letter_step}")
    if summary.last_error:
        table.add_row("last error", summary.last_error)
    if summary.failure_reason:
        table.add_row("failure", summary.failure_reason)
    if parallel:
        table.add_row("in parallel", "\n".join(parallel))
    notes = _uncertain_steps(summary)
    if notes:
        table.add_row("uncertain", "\n".join(notes))
    if summary.in_force_steps:
        table.add_row(
            "in force",
            f"{summary.in_force_steps} may still be in force, uncompensated: "
            f"sagalog compensate {summary.saga_id} --actor NAME --reason TEXT",
        )
    console.print(table)


def _uncertain_steps(summary: SagaSummary) -> list[str]:
    """One line per step whose outcome was unknown or came late, and what became of it."""
    in_force = set((summary.in_force_steps or "").split(","))
    lines = []
    for name, letters in (summary.step_marks or {}).items():
        if "l" in letters:
            what = "succeeded late"
        elif "d" in letters:
            what = "outcome unknown at timeout" if "t" in letters else "outcome unknown (in flight)"
        else:
            continue
        if "x" in letters:
            done = "compensated" if "c" in letters or "l" in letters else "compensation run"
        elif name in in_force:
            done = "NOT compensated"
        else:
            done = "not compensated (the step opts out)" if "o" in letters else "to be compensated"
        lines.append(f"{name}: {what}; {done}")
    return lines


def _print_timeline(summary: SagaSummary, timeline: list[TimelineEntry]) -> None:
    wide = console.width >= WIDE
    table = Table(title=f"timeline ({len(timeline)} events, times in UTC)")
    table.add_column("#", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("+", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=not wide)
    if wide:
        table.add_column("step")
        table.add_column("att.", justify="right")
    table.add_column("detail", overflow="fold")
    for entry in timeline:
        when = entry.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        event = Text(entry.event_type, style=EVENT_STYLE.get(entry.event_type, ""))
        attempt = str(entry.attempt) if entry.attempt is not None else ""
        if wide:
            cells: list[str | Text] = [event, entry.step or "", attempt]
        else:
            if entry.step:
                event.append(f"\n{entry.step}" + (f" #{attempt}" if attempt else ""), style="dim")
            cells = [event]
            when = when[11:] if when[:10] == instant(summary.started_at)[:10] else when
        offset = format_duration(entry.time - summary.started_at)
        table.add_row(str(entry.version), when, offset, *cells, entry.detail)
    console.print(table)
