"""Operator commands for what a poison message leaves behind: ``sagalog quarantine …``.

Registered on the ``sagalog`` app by :mod:`sagalog.infrastructure.cli` (imported at
its end). See docs/poison-messages.md.

* ``quarantine list`` — the events a follower (the projections, the relay, the
  metrics observer) could not apply and set aside, with why;
* ``quarantine retry [SAGA_ID] --actor --reason`` — apply the projections'
  quarantined events again, each saga all or none; who asked and why is logged.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.table import Table

from sagalog.infrastructure.cli import (
    ActorOption,
    DatabaseUrlOption,
    JsonOption,
    ReasonOption,
    _escape,
    _fail,
    _opened,
    _print_json,
    _saga_id,
    app,
    console,
)
from sagalog.projections.quarantine import QuarantinedEvent

logger = logging.getLogger("sagalog.operator")

quarantine_app = typer.Typer(
    help="Events a follower could not apply and set aside (poison events).",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


def quarantine_note(held: list[QuarantinedEvent]) -> str | None:
    """One line saying how many events of how many sagas are in quarantine, if any."""
    if not held:
        return None
    sagas = {item.saga_id for item in held}
    return (
        f"quarantined: {len(held)} events of {len(sagas)} sagas wait "
        "(sagalog quarantine list; retry with sagalog quarantine retry)"
    )


@quarantine_app.command("list")
def quarantine_list(
    database_url: DatabaseUrlOption = None,
    json_output: JsonOption = False,
) -> None:
    """The events set aside, oldest first, with the follower and the error."""
    with _opened(database_url) as (_, projector):
        held = projector.views.quarantine_log().events()
    if json_output:
        _print_json([item.to_json() for item in held])
        return
    if not held:
        console.print("[green]no quarantined events[/]")
        return
    table = Table(title=f"quarantined events ({len(held)})")
    for column in ("follower", "event", "saga id", "topic", "since (UTC)", "retries", "error"):
        table.add_column(column)
    for item in held:
        table.add_row(
            item.follower,
            str(item.notification_id),
            str(item.saga_id or "?"),
            item.topic.rpartition(".")[2],
            item.quarantined_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(item.retries),
            _escape(item.error),
        )
    console.print(table)


@quarantine_app.command("retry")
def quarantine_retry(
    reason: ReasonOption,
    actor: ActorOption,
    saga_id: Annotated[
        str | None,
        typer.Argument(metavar="[SAGA_ID]", help="Only this saga (default: every one held)."),
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Apply the projections' quarantined events again (each saga all or none).

    Exits 1 if a saga's events still cannot be applied (they stay in quarantine).
    """
    wanted = None if saga_id is None else _saga_id(saga_id)
    with _opened(database_url) as (_, projector):
        logger.warning(
            "quarantine retry by %s: %s",
            actor,
            reason,
            extra={"actor": actor, "reason": reason, "saga_id": str(wanted or "*")},
        )
        applied, failed = projector.retry_quarantined(wanted)
    console.print(
        f"retried by {_escape(actor)}: {applied} quarantined events applied"
        + (f", {len(failed)} sagas still held" if failed else ""),
        highlight=False,
    )
    for held_saga, error in failed.items():
        console.print(f"  {held_saga}: {_escape(error)}", highlight=False)
    if failed:
        raise _fail(f"{len(failed)} sagas still have quarantined events", code=1)
