"""The options and arguments the commands share, and the parser of a saga id."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from sagalog.infrastructure.cli.app import fail

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SAGALOG_DATABASE_URL",
        help="memory://, sqlite:///path.db or postgresql://user@host:port/db "
        "(default: sqlite:///sagalog.db).",
        show_envvar=True,
    ),
]

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="SAGALOG_APP",
        show_envvar=True,
        metavar="MODULE:CLASS",
        help="Your SagaManager subclass, or just its name: its tables are named after it "
        "(default: SagaManager). See docs/cli.md.",
        show_default=False,
    ),
]
DefinitionsOption = Annotated[
    str | None,
    typer.Option(
        "--definitions",
        envvar="SAGALOG_DEFINITIONS",
        show_envvar=True,
        metavar="MODULE:ATTR",
        help="Your saga definitions: a SagaDefinition or a list of them (default: "
        "the --app class's, else the demo's).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")
]
ActorOption = Annotated[
    str,
    typer.Option(
        "--actor",
        envvar="SAGALOG_ACTOR",
        show_envvar=True,
        help="Who is acting (recorded in the saga's log).",
    ),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the saga's log).")]
SagaIdArgument = Annotated[
    str, typer.Argument(metavar="SAGA_ID", help="The saga's id (a UUID).", show_default=False)
]


def parse_saga_id(text: str) -> UUID:
    """A ``SAGA_ID`` argument as a UUID; a one-line error if it is not one."""
    try:
        return UUID(text.strip())
    except ValueError:
        raise fail(f"{text!r} is not a saga id (saga ids are UUIDs)") from None
