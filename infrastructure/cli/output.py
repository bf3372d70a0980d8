"""What the commands print: the two consoles, JSON, colours, times, the wide/narrow switch.

Tables go to stdout (``console``); progress bars, notes and errors to stderr
(``err_console``), so ``--json`` output stays parseable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def escape(text: str) -> str:
    """``text`` with rich markup brackets escaped, so it prints as it is."""
    return text.replace("[", "\\[")


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields ``report(done, total)``."""
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report


def instant(moment: datetime | None) -> str:
    """A moment in UTC to the second, or ``-``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (for ``--json``)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


#: Colours of the saga statuses.
STATUS_STYLE = {
    "COMPLETED": "green",
    "FAILED": "yellow",
    "COMPENSATING": "magenta",
    "DEAD_LETTERED": "bold red",
    "PENDING": "cyan",
    "STARTED": "cyan",
}


def status_text(status: str) -> Text:
    """A saga status in its colour."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


#: Below this console width the tables fold columns together rather than squeeze them.
WIDE = 120


#: Colours of the event types in timelines and replays.
EVENT_STYLE = {
    "SagaCompleted": "green",
    "SagaFailed": "yellow",
    "StepFailed": "red",
    "StepTimedOut": "red",
    "CompensationFailed": "red",
    "CompensationTimedOut": "red",
    "SagaDeadLettered": "bold red",
    "CompensationRequested": "magenta",
    "OperatorRetried": "bold",
    "OperatorResolved": "bold",
    "SagaAborted": "bold",
    "StepCompletedLate": "yellow",
    "OperatorCompensationRequested": "bold",
}
