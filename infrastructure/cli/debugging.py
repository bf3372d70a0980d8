"""The debugging commands: ``replay`` (time travel; ``--against`` for what-if) and ``explain``.

They read the saga's own log, not the projections, so they work on a store whose
projections lag or were never built.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table
from rich.text import Text

from sagalog.infrastructure.cli.actions import _json_object
from sagalog.infrastructure.cli.app import app, errors_as_one_line, fail
from sagalog.infrastructure.cli.opening import reading
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
    escape,
    instant,
    print_json,
    status_text,
)
from sagalog.infrastructure.messaging.relay import outbox_of
from sagalog.process.debugging.explain import explain as explain_saga
from sagalog.process.debugging.replay import (
    ReplayStep,
    SagaSnapshot,
    concurrent_spans,
    state_at,
)
from sagalog.process.debugging.replay import replay as replay_saga
from sagalog.process.debugging.whatif import load_definition, what_if


@app.command()
def replay(
    saga_id: SagaIdArgument,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    at: Annotated[
        int | None,
        typer.Option("--at", metavar="VERSION", help="Only the state right after this event."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="MODULE:ATTRIBUTE|newest",
            help="What-if: replay the saga's recorded inputs through this SagaDefinition "
            "(in memory; nothing is written) and show where its decisions diverge. "
            "'newest': the newest version of the saga's type in --definitions / --app.",
        ),
    ] = None,
    patch: Annotated[
        str | None,
        typer.Option(
            "--patch",
            metavar="JSON|@FILE",
            help="What-if with corrected data: a JSON object (or @FILE) whose top-level keys "
            "replace or add those of the saga's data, as `retry --patch` would; without "
            "--against, through the saga's own definition.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Replay a saga from its log: its state after each event (time travel).

    With --against, replay its inputs through another definition instead (what-if);
    with --patch, with corrected data.
    """
    wanted = parse_saga_id(saga_id)
    if against is not None or patch is not None:
        if at is not None:
            raise fail(f"--at and {'--against' if against else '--patch'} do not go together")
        changes = _json_object(patch, "--patch") if patch is not None else None
        _what_if(
            wanted,
            against or "own",
            (database_url, app, definitions),
            json_output=json_output,
            patch=changes,
        )
        return
    with reading(database_url, app, definitions) as manager:
        if at is not None:
            state = state_at(manager, wanted, at)
            if json_output:
                print_json(state.to_json())
                return
            _print_state(state)
            return
        steps = replay_saga(manager, wanted)
    if json_output:
        print_json([step.to_json() for step in steps])
        return
    _print_replay(steps)


def _what_if(
    saga_id: UUID,
    spec: str,
    store: tuple[str | None, str | None, str | None],
    *,
    json_output: bool,
    patch: dict[str, Any] | None = None,
) -> None:
    """What-if against ``spec``, the newest registered version of its type, or (``own``)
    the saga's own definition; with ``patch``, on corrected data."""
    named = spec.strip() not in ("newest", "own")
    with errors_as_one_line():
        definition = load_definition(spec) if named else None
    with reading(*store) as manager:
        if definition is None:
            saga = manager.get(saga_id)
            own = spec.strip() == "own"
            definition = saga.definition if own else manager.registry.get(saga.saga_type)
        report = what_if(manager, saga_id, definition, patch=patch)
    if json_output:
        print_json(report.to_json())
        return
    for line in report.summary():
        console.print(escape(line), highlight=False, soft_wrap=True)
    if report.diverged:
        table = Table(title="commands from the first difference on")
        table.add_column("#", justify="right")
        table.add_column(f"originally ({report.original_definition})")
        table.add_column(f"under {report.other_definition}")
        start = report.divergence_index or 0
        longest = max(len(report.original_tail), len(report.other_tail))
        for offset in range(longest):
            was = report.original_tail[offset] if offset < len(report.original_tail) else None
            now = report.other_tail[offset] if offset < len(report.other_tail) else None
            table.add_row(str(start + offset + 1), str(was or "-"), str(now or "-"))
        console.print(table)
    if report.skipped:
        skipped = Table(title="recorded inputs that did not apply")
        skipped.add_column("v", justify="right")
        skipped.add_column("input")
        skipped.add_column("why not", overflow="fold")
        for item in report.skipped:
            skipped.add_row(str(item.input.version), item.input.describe(), item.reason)
        console.print(skipped)


def _pending_text(state: SagaSnapshot) -> str:
    pending = state.pending
    if pending is None:
        return "-"
    return f"{pending.kind.value} {pending.name} #{pending.attempt}"


def _steps_text(state: SagaSnapshot) -> str:
    parts = []
    for step in state.steps:
        if step.status == "NOT_STARTED":
            continue
        attempts = f"#{step.attempt}"
        if step.compensation_attempt:
            attempts += f"/c#{step.compensation_attempt}"
        parts.append(f"{step.name} {step.status} {attempts}")
    if len(state.in_flight) > 1:
        parts.append(f"in flight together: {', '.join(state.in_flight)}")
    return "\n".join(parts) or "-"


def _print_replay(steps: list[ReplayStep]) -> None:
    """One row per event; below ``WIDE`` columns related facts share a cell."""
    wide = console.width >= WIDE
    head = steps[0].state if steps else None
    title = f"replay of {head.saga_type} {head.saga_id}" if head else "replay"
    table = Table(title=f"{title} ({len(steps)} events, times in UTC)")
    table.add_column("v", justify="right")
    table.add_column("time", no_wrap=True)
    if wide:
        table.add_column("event", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("steps")
        table.add_column("pending command")
        table.add_column("next wake-up", no_wrap=True)
    else:
        table.add_column("event / status", no_wrap=True)
        table.add_column("steps / pending / wake-up", overflow="fold")
    for step in steps:
        stamp = step.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        event = Text(step.event_type, style=EVENT_STYLE.get(step.event_type, ""))
        if wide:
            table.add_row(
                str(step.version),
                stamp,
                event,
                status_text(step.state.status),
                _steps_text(step.state),
                _pending_text(step.state),
                instant(step.state.next_wakeup),
            )
            continue
        event.append("\n").append_text(status_text(step.state.status))
        detail = Text(_steps_text(step.state))
        detail.append(f"\npending: {_pending_text(step.state)}", style="dim")
        if step.state.next_wakeup:
            detail.append(f"\nwake-up: {instant(step.state.next_wakeup)}", style="dim")
        table.add_row(str(step.version), stamp.replace(" ", "\n"), event, detail)
    console.print(table)
    for span in concurrent_spans(steps):
        console.print(
            f"ran concurrently (v{span.first_version} to v{span.last_version}): "
            + ", ".join(span.steps)
        )


def _print_state(state: SagaSnapshot) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("saga", str(state.saga_id))
    table.add_row("type", state.saga_type)
    table.add_row("version", str(state.version))
    table.add_row("status", status_text(state.status))
    table.add_row("pending command", _pending_text(state))
    if len(state.in_flight) > 1:
        table.add_row("in flight together", ", ".join(state.in_flight))
    table.add_row("next wake-up", instant(state.next_wakeup))
    if state.dead_letter:
        table.add_row("dead letter", state.dead_letter)
    if state.last_error:
        table.add_row("last error", state.last_error)
    if state.failure_reason:
        table.add_row("failure", state.failure_reason)
    console.print(table)
    steps = Table(title=f"steps at version {state.version}")
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("attempt", justify="right")
    steps.add_column("compensation attempt", justify="right")
    for step in state.steps:
        steps.add_row(step.name, step.status, str(step.attempt), str(step.compensation_attempt))
    console.print(steps)


@app.command()
def explain(
    saga_id: SagaIdArgument,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Explain in a few sentences why a saga completed, failed, waits or is stuck."""
    wanted = parse_saga_id(saga_id)
    with reading(database_url, app, definitions) as manager:
        saga = manager.get(wanted)
        outbox = outbox_of(manager, saga) if saga.pending_command is not None else None
        sentences = explain_saga(saga, outbox=outbox)
    if json_output:
        print_json({"saga_id": str(wanted), "status": saga.status.value, "sentences": sentences})
        return
    for sentence in sentences:
        console.print(escape(sentence), highlight=False, soft_wrap=True)
