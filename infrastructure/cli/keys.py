"""``sagalog keys``: store keys for encryption at rest (see docs/security.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from sagalog.infrastructure.cli.app import app, errors_as_one_line
from sagalog.infrastructure.cli.output import console
from sagalog.process.store.encryption import new_key

keys_app = typer.Typer(
    help="Store keys for encryption at rest (SAGALOG_ENCRYPTION_KEYS).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def new(
    key_id: Annotated[
        str,
        typer.Argument(metavar="KEY_ID", help="The new key's id: letters, digits, '-', '_', '.'."),
    ],
) -> None:
    """Print a new random store key as one ``ID=BASE64`` line, to put first in the keys."""
    with errors_as_one_line():
        line = new_key(key_id)
    console.print(line, highlight=False, soft_wrap=True)
