"""The ``sagalog`` command line (Typer for parsing, rich for tables and progress).

Every command takes ``--database-url`` (or ``SAGALOG_DATABASE_URL``); without
either it uses the embedded SQLite default, ``sagalog.db`` in the working
directory. Errors that a user can cause print one line and exit non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagalog.domain import SagalogError, SagaStatus
from sagalog.infrastructure.demo import DemoRates, run_demo

app = typer.Typer(
    help="sagalog: an event-sourced saga process manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

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


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; turn sagalog's typed errors into one line and exit code 2."""
    try:
        return action()
    except SagalogError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.callback()
def _root() -> None:
    """sagalog: an event-sourced saga process manager."""


@app.command()
def demo(
    database_url: DatabaseUrlOption = None,
    sagas: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many sagas to run.")] = 200,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that a step's action fails.")
    ] = 0.1,
    duplicate_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that a reply is delivered twice.")
    ] = 0.05,
    late_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that a reply comes after the timeout.")
    ] = 0.02,
    timeout_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that a step never answers.")
    ] = 0.02,
    compensation_failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that a compensation attempt fails.")
    ] = 0.1,
    stuck_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Chance that a compensation fails every time."),
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Random seed; a run is deterministic for a seed.")] = 7,
) -> None:
    """Run order-fulfillment and travel-booking sagas against simulated services."""
    try:
        rates = DemoRates(
            failure=failure_rate,
            duplicate=duplicate_rate,
            late=late_rate,
            silent=timeout_rate,
            compensation_failure=compensation_failure_rate,
            compensation_stuck=stuck_rate,
        )
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None

    with Progress(
        TextColumn("[bold]sagas"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("sagas", total=sagas)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = _guard(
            lambda: run_demo(
                database_url=database_url, sagas=sagas, seed=seed, rates=rates, progress=report
            )
        )

    table = Table(title=f"sagalog demo — {result.sagas} sagas on {result.database}")
    table.add_column("saga type")
    table.add_column("completed", justify="right")
    table.add_column("compensated", justify="right")
    table.add_column("dead-lettered", justify="right")
    table.add_column("other", justify="right")
    for saga_type, counts in sorted(result.by_type.items()):
        ended = counts[SagaStatus.COMPLETED] + counts[SagaStatus.FAILED]
        other = sum(counts.values()) - ended - counts[SagaStatus.DEAD_LETTERED]
        table.add_row(
            saga_type,
            str(counts[SagaStatus.COMPLETED]),
            str(counts[SagaStatus.FAILED]),
            str(counts[SagaStatus.DEAD_LETTERED]),
            str(other),
        )
    console.print(table)
    replies = ", ".join(f"{n} {kind}" for kind, n in sorted(result.replies.items()))
    console.print(
        f"replies: {replies}; duplicate commands dropped by participants: "
        f"{result.duplicate_commands_dropped}"
    )
    console.print(
        f"{result.sagas} sagas in {result.seconds:.2f} s "
        f"({result.sagas_per_second:.1f} sagas/s) on {result.database}"
    )


def main() -> None:
    """Entry point of the ``sagalog`` console script."""
    app()
