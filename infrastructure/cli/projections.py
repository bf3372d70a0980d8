"""``sagalog projections status | rebuild``: the read projections (summary and timeline tables)."""

from __future__ import annotations

import time

import typer
from rich.table import Table
from rich.text import Text

from sagalog.infrastructure.cli.app import app
from sagalog.infrastructure.cli.opening import opened
from sagalog.infrastructure.cli.options import (
    AppOption,
    DatabaseUrlOption,
    DefinitionsOption,
    JsonOption,
)
from sagalog.infrastructure.cli.output import console, print_json, progress

projections_app = typer.Typer(
    help="The read projections (saga summary and timeline tables).", no_args_is_help=True
)
app.add_typer(projections_app, name="projections")


@projections_app.command("status")
def projections_status(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Where the projections stand: position in the log, lag, rows (does not catch up)."""
    with opened(database_url, app, definitions) as (_, projector):
        status = projector.status()
        stale = projector.views.stale_tables()
        by_status = projector.views.count_by_status()
    if json_output:
        print_json({**status.to_json(), "by_status": by_status, "stale_tables": stale})
        return
    table = Table(title="projections")
    for column in ("projection", "schema", "log", "position", "head", "lag", "sagas", "events"):
        table.add_column(column, justify="right" if column not in ("projection", "log") else "left")
    table.add_row(
        status.name,
        f"v{status.schema_version}",
        status.application,
        str(status.position),
        str(status.head),
        Text(str(status.lag), style="yellow" if status.lag else "green"),
        str(status.sagas),
        str(status.events),
    )
    console.print(table)
    if by_status:
        console.print(
            "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())),
            highlight=False,
        )
    if stale:
        console.print(f"tables of older schema versions (safe to drop): {', '.join(stale)}")
    if status.quarantined:
        console.print(
            f"[bold yellow]quarantined: {status.quarantined} events set aside[/] "
            "(sagalog quarantine list)",
            highlight=False,
        )


@projections_app.command("rebuild")
def projections_rebuild(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
) -> None:
    """Empty the projections and rebuild them from the whole log."""
    with opened(database_url, app, definitions) as (_, projector):
        started = time.perf_counter()
        with progress("rebuilding projections") as report:
            applied = projector.rebuild(report)
        seconds = time.perf_counter() - started
        sagas = projector.views.count_sagas()
        name = projector.views.projection_name
    rate = f" ({applied / seconds:,.0f} events/s)" if seconds > 0 and applied else ""
    console.print(
        f"rebuilt {name}: {applied} events, {sagas} sagas in {seconds:.2f} s{rate}",
        highlight=False,
    )
