"""The root ``sagalog`` app, its entry point, and how errors become one line.

Errors that a user can cause print one ``error:`` line on stderr and exit 2;
anything else exits 1. The commands register on ``app`` from their own modules.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from eventsourcing.persistence import PersistenceError
from sqlalchemy.exc import SQLAlchemyError

# Typer >= 0.29 vendors click; its parse errors derive from TyperException.
from typer.exceptions import TyperException as _ParseError

from sagalog.domain import SagalogError
from sagalog.domain.errors import first_line
from sagalog.infrastructure.cli.output import err_console, escape

app = typer.Typer(
    help="sagalog: an event-sourced saga process manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help wraps option text to the terminal's width; rich's help panel
    # cuts long words (URLs, env var names) with an ellipsis below ~100 columns.
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """sagalog: an event-sourced saga process manager."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr, one line; return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def errors_as_one_line() -> Iterator[None]:
    """sagalog's typed errors → exit 2; database errors → exit 2; one line each."""
    try:
        yield
    except SagalogError as exc:
        raise fail(escape(str(exc))) from None
    except (PersistenceError, SQLAlchemyError, OSError) as exc:
        raise fail(f"database error: {escape(first_line(exc))}") from None


def main() -> None:
    """Entry point of the ``sagalog`` console script.

    Runs the Typer app, but reports usage errors (an unknown option, a value of
    the wrong type, a missing argument) as one ``error:`` line with a pointer to
    ``--help``, like every other error, rather than as Typer's boxed panel. Exit
    codes are unchanged (2 for usage errors).
    """
    try:
        result = app(prog_name="sagalog", standalone_mode=False)
    except _ParseError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(exc.exit_code)  # Typer has printed the help already
        ctx = getattr(exc, "ctx", None)
        command = getattr(ctx, "command_path", None) or "sagalog"
        err_console.print(
            f"[bold red]error:[/] {escape(exc.format_message())} (see {command} --help)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
