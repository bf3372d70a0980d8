"""``sagalog retention`` and ``sagalog restore``: retire ended sagas into an archive, and back.

See docs/retention.md for what may be retired and how the log stays followable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sagalog.infrastructure.cli.app import app, errors_as_one_line
from sagalog.infrastructure.cli.listings import _at
from sagalog.infrastructure.cli.opening import opened
from sagalog.infrastructure.cli.options import (
    ActorOption,
    AppOption,
    DatabaseUrlOption,
    DefinitionsOption,
    JsonOption,
    ReasonOption,
)
from sagalog.infrastructure.cli.output import console, print_json
from sagalog.infrastructure.retention import RetentionPolicy, restore_sagas, retire_sagas


@app.command()
def retention(
    ended_before: Annotated[
        str,
        typer.Option(
            "--ended-before",
            help="Retire sagas whose last event is older than this age: 30d, 12h, 2w, 90m.",
        ),
    ],
    actor: ActorOption,
    reason: ReasonOption,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            metavar="FILE.jsonl.gz",
            help="A new file to archive the retired sagas' events into (required unless "
            "--dry-run).",
            show_default=False,
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Retire sagas of this status: COMPLETED (the default) or FAILED (resolved "
            "failures only); repeat for both.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; write nothing.")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(help="Measure ages from this ISO-8601 instant instead of now."),
    ] = None,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
) -> None:
    """Archive ended sagas' events and remove them from the store and the views (audited)."""
    with errors_as_one_line():
        policy = RetentionPolicy.parse(ended_before, status)
    now = _at(at)
    with opened(database_url, app, definitions) as (manager, projector):
        report = retire_sagas(
            manager,
            policy,
            archive=archive,
            actor=actor,
            reason=reason,
            dry_run=dry_run,
            now=now,
            views=projector.views,
        )
    if as_json:
        print_json(report.to_json())
        return
    verb = "would retire" if dry_run else "retired"
    kept = ", ".join(f"{n} {why}" for why, n in sorted(report.kept.items())) or "none"
    where = f" into {report.archive} (sha256 {report.archive_sha256})" if not dry_run else ""
    console.print(
        f"{verb} {report.sagas} sagas ({report.events} events){where}; kept: {kept}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def restore(
    archive: Annotated[
        Path, typer.Argument(metavar="FILE", help="An archive written by sagalog retention.")
    ],
    actor: ActorOption,
    reason: ReasonOption,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
) -> None:
    """Bring archived sagas back into the store and the views (audited; never overwrites)."""
    with opened(database_url, app, definitions) as (manager, projector):
        report = restore_sagas(manager, archive, actor=actor, reason=reason, views=projector.views)
    if as_json:
        print_json(report.to_json())
        return
    cut = " (the archive ends early: its whole lines were restored)" if report.truncated else ""
    console.print(
        f"restored {report.sagas} sagas ({report.events} events); "
        f"{report.already_present} already present{cut}",
        highlight=False,
        soft_wrap=True,
    )
