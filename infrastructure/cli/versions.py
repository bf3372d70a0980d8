"""``sagalog versions``: the definition versions sagas run on, and whether the code has them."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from sagalog.infrastructure.cli.app import app
from sagalog.infrastructure.cli.opening import catch_up, opened
from sagalog.infrastructure.cli.options import (
    AppOption,
    DatabaseUrlOption,
    DefinitionsOption,
    JsonOption,
)
from sagalog.infrastructure.cli.output import WIDE, console, print_json
from sagalog.projections import DefinitionVersionUsage, definition_versions


@app.command()
def versions(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Definition versions: sagas in flight and ended on each, and whether the code has it."""
    with opened(database_url, app, definitions) as (manager, projector):
        catch_up(projector)
        usages = definition_versions(manager, projector.views)
    if json_output:
        print_json([usage.to_json() for usage in usages])
        return
    if not any(u.in_flight_total or u.ended_total for u in usages):
        console.print("no sagas recorded yet", highlight=False)
    console.print(_versions_table(usages, wide=console.width >= WIDE))


def _versions_table(usages: list[DefinitionVersionUsage], *, wide: bool) -> Table:
    """One row per definition version; narrower, type, version and fingerprint share a cell."""
    table = Table(title="definition versions (sagas by the version they started on)")
    if wide:
        table.add_column("saga type", no_wrap=True)
        table.add_column("version", justify="right", no_wrap=True)
        table.add_column("fingerprint", no_wrap=True)
    else:
        table.add_column("type / fingerprint", no_wrap=True)
    for column in ("code", "in flight", "ended", "by status"):
        table.add_column(column, justify="right" if column in ("in flight", "ended") else "left")
    for usage in usages:
        fingerprint = usage.fingerprint[:_FINGERPRINT_SHOWN]
        statuses = [*sorted(usage.in_flight.items()), *sorted(usage.ended.items())]
        identity = (
            [usage.saga_type, f"v{usage.version}", fingerprint]
            if wide
            else [f"{usage.saga_type} v{usage.version}\n{fingerprint}"]
        )
        table.add_row(
            *identity,
            _registration_text(usage),
            str(usage.in_flight_total),
            str(usage.ended_total),
            ("\n" if not wide else ", ").join(f"{status} {n}" for status, n in statuses),
        )
    return table


#: How many hex digits of a fingerprint the table shows (the JSON has all 64).
_FINGERPRINT_SHOWN = 8


def _registration_text(usage: DefinitionVersionUsage) -> Text:
    """Whether the running code registers this definition version, in one word or two."""
    if usage.newest:
        return Text("newest", style="green")
    if usage.registered:
        return Text("registered")
    if usage.registered_fingerprint is not None:
        return Text("differs", style="red")
    return Text("not registered", style="yellow")
