"""The ``sagalog`` command line (Typer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="sagalog: an event-sourced saga process manager.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """sagalog: an event-sourced saga process manager."""


def main() -> None:
    """Entry point of the ``sagalog`` console script."""
    app()
