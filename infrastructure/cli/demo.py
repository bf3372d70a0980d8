"""``sagalog demo``: sagas against simulated services, in process or over RabbitMQ."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagalog.domain import SagaStatus
from sagalog.infrastructure.cli.app import app, errors_as_one_line
from sagalog.infrastructure.cli.options import DatabaseUrlOption
from sagalog.infrastructure.cli.output import console, err_console
from sagalog.infrastructure.demo.runner import DemoRates, run_demo


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
    transport: Annotated[
        str,
        typer.Option(
            help="inprocess (simulated services, simulated clock) or rabbitmq (each service "
            "its own process, over the broker, real time; see docs/demo.md)."
        ),
    ] = "inprocess",
    rabbitmq_url: Annotated[
        str | None,
        typer.Option(
            envvar="SAGALOG_RABBITMQ_URL",
            show_envvar=True,
            help="Broker for --transport rabbitmq (default amqp://guest:guest@127.0.0.1:5672/%2F).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus /metrics here during a rabbitmq run."
        ),
    ] = None,
) -> None:
    """Run order-fulfillment and travel-booking sagas against simulated services."""
    if transport not in ("inprocess", "rabbitmq"):
        err_console.print("[bold red]error:[/] --transport must be inprocess or rabbitmq")
        raise typer.Exit(2)
    if metrics_port is not None and transport != "rabbitmq":
        err_console.print("[bold red]error:[/] --metrics-port needs --transport rabbitmq")
        raise typer.Exit(2)
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

        if transport == "rabbitmq":
            from sagalog.infrastructure.demo.rabbitmq import run_rabbitmq_demo

            with errors_as_one_line():
                result = run_rabbitmq_demo(
                    database_url=database_url,
                    sagas=sagas,
                    seed=seed,
                    rates=rates,
                    url=rabbitmq_url,
                    metrics_port=metrics_port,
                    progress=report,
                    on_metrics=lambda url: err_console.print(f"metrics: {url}"),
                )
        else:
            with errors_as_one_line():
                result = run_demo(
                    database_url=database_url, sagas=sagas, seed=seed, rates=rates, progress=report
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
