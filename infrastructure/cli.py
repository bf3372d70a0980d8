"""The ``sagalog`` command line (Typer for parsing, rich for tables and progress).

Every command takes ``--database-url`` (or ``SAGALOG_DATABASE_URL``); without
either it uses the embedded SQLite default, ``sagalog.db`` in the working
directory. ``--app`` (``SAGALOG_APP``) names the user's ``SagaManager`` subclass,
whose name names its tables, and ``--definitions`` (``SAGALOG_DEFINITIONS``) the
user's saga definitions; a store holding only another manager's sagas is refused.
Errors that a user can cause print one line and exit non-zero.

Commands (see docs/cli.md): ``demo``; the listings ``list``, ``stuck``, ``show``
(each catches the projections up before reading and has ``--json``); the debugging
commands ``replay`` (time travel, and ``--against`` for what-if) and ``explain``;
``versions`` (which definition versions the sagas run on); ``start``; the operator
actions ``retry``, ``resolve``, ``abort``; ``projections status | rebuild``; and
``worker``. Exit codes: 0 done, 2 a user error (bad option value, unknown saga,
an action the saga's state refuses, unreachable database), 1 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import typer
from eventsourcing.persistence import PersistenceError
from eventsourcing.utils import TopicError
from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

# Typer >= 0.29 vendors click; its parse errors derive from TyperException.
from typer.exceptions import TyperException as _ParseError

from sagalog.domain import SagaDefinition, SagalogError, SagaStatus
from sagalog.domain.errors import first_line
from sagalog.infrastructure.demo.runner import DemoRates, run_demo
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.relay import outbox_of
from sagalog.infrastructure.messaging.transport import InProcessTransport, Transport, TransportError
from sagalog.infrastructure.worker import (
    StoppableLoop,
    Worker,
    WorkerError,
    load_participants,
    stop_on_signals,
)
from sagalog.process import SagaManager, parse_database_url
from sagalog.process.debugging.explain import explain as explain_saga
from sagalog.process.debugging.replay import ReplayStep, SagaSnapshot, state_at
from sagalog.process.debugging.replay import replay as replay_saga
from sagalog.process.debugging.timeline import plot_timeline
from sagalog.process.debugging.whatif import load_definition, what_if
from sagalog.process.loading import definitions_from, manager_class
from sagalog.process.store.contents import check_store_name
from sagalog.process.store.url import DATABASE_URL_ENV_VAR
from sagalog.projections import (
    DefinitionVersionUsage,
    SagaProjector,
    SagaSummary,
    StuckPolicy,
    StuckSaga,
    TimelineEntry,
    definition_versions,
    format_duration,
    parse_duration,
)

app = typer.Typer(
    help="sagalog: an event-sourced saga process manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help wraps option text to the terminal's width; rich's help panel
    # cuts long words (URLs, env var names) with an ellipsis below ~100 columns.
    rich_markup_mode=None,
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
    transport: Annotated[
        str,
        typer.Option(
            help="inprocess (simulated services, simulated clock) or rabbitmq (each service "
            "its own process, over the broker, real time; see docs/services.md)."
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

            result = _guard(
                lambda: run_rabbitmq_demo(
                    database_url=database_url,
                    sagas=sagas,
                    seed=seed,
                    rates=rates,
                    url=rabbitmq_url,
                    metrics_port=metrics_port,
                    progress=report,
                    on_metrics=lambda url: err_console.print(f"metrics: {url}"),
                )
            )
        else:
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


# -- shared by the commands below ----------------------------------------------------

#: Catching up more than this many events shows a progress bar.
_PROGRESS_THRESHOLD = 2000

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr, one line; return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _errors_as_one_line() -> Iterator[None]:
    """sagalog's typed errors → exit 2; database errors → exit 2; one line each."""
    try:
        yield
    except SagalogError as exc:
        raise _fail(_escape(str(exc))) from None
    except (PersistenceError, SQLAlchemyError, OSError) as exc:
        raise _fail(f"database error: {_escape(first_line(exc))}") from None


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


#: Seconds the CLI waits for PostgreSQL when the URL names no ``connect_timeout``.
DEFAULT_CONNECT_TIMEOUT = 5
CONNECT_TIMEOUT_ENV_VAR = "SAGALOG_CONNECT_TIMEOUT"


def _with_connect_timeout(database_url: str | None) -> str | None:
    """``database_url`` with a short PostgreSQL ``connect_timeout`` unless it names one.

    eventsourcing waits 30 s for a connection by default: too long for a command
    typed at a prompt. ``SAGALOG_CONNECT_TIMEOUT`` (seconds) overrides the default.
    """
    url = parse_database_url(database_url)
    if url.kind != "postgresql" or url.connect_timeout is not None:
        return database_url
    raw = os.environ.get(CONNECT_TIMEOUT_ENV_VAR, "").strip()
    if raw and not (raw.isdigit() and int(raw) >= 1):
        raise _fail(f"{CONNECT_TIMEOUT_ENV_VAR} must be a whole number of seconds, not {raw!r}")
    text = database_url if database_url is not None else os.environ[DATABASE_URL_ENV_VAR]
    parts = urlsplit(text.strip())
    query = "&".join(
        q for q in (parts.query, f"connect_timeout={raw or DEFAULT_CONNECT_TIMEOUT}") if q
    )
    return urlunsplit(parts._replace(query=query))


def _manager(
    database_url: str | None,
    app: str | None = None,
    definitions: str | None = None,
    *,
    must_exist: bool = True,
) -> SagaManager:
    """Open the saga store of ``app``; refuse a missing SQLite file or another app's store.

    ``app`` (``--app``) is the user's ``SagaManager`` subclass, whose name names the
    tables; ``definitions`` (``--definitions``) the user's saga definitions, by
    default the subclass's, or the demo's when neither is given. Operator actions
    and timers need no definitions: every saga stores the whole definition it runs.
    """
    url = parse_database_url(database_url)
    if must_exist and url.kind == "sqlite" and not url.is_sqlite_memory:
        assert url.path is not None
        if not Path(url.path).exists():
            raise _fail(
                f"no saga database at {url.path} (give --database-url, or run `sagalog demo`)"
            )
    database_url = _with_connect_timeout(database_url)
    url = parse_database_url(database_url)
    _preflight(url)
    manager_type = manager_class(app) if app else SagaManager
    chosen: list[SagaDefinition] | None
    if definitions:
        chosen = definitions_from(definitions)
    elif app:
        chosen = None  # the subclass's own (none for a bare name)
    else:
        chosen = list(DEMO_DEFINITIONS)
    check_store_name(url, manager_type.name)
    try:
        return manager_type(chosen, database_url)
    except (TopicError, OSError, ValueError) as exc:
        if isinstance(exc, SagalogError):
            raise
        raise _fail(_store_settings_error(exc)) from None


def _store_settings_error(exc: BaseException) -> str:
    """One line for a store that its environment cannot open (a cipher without key, …)."""
    cause = _escape(first_line(exc))
    if any(name.endswith("CIPHER_TOPIC") and value for name, value in os.environ.items()):
        return f"cannot open the saga store with the cipher configured (CIPHER_TOPIC): {cause}"
    return f"cannot open the saga store: {cause}"


def _preflight(url: Any) -> None:
    """One line, at once, when the store cannot be opened (see health.preflight_store)."""
    from sagalog.infrastructure.observability.health import preflight_store

    try:
        preflight_store(url)
    except SagalogError as exc:
        raise _fail(_escape(str(exc))) from None


@contextmanager
def _opened(
    database_url: str | None,
    app: str | None = None,
    definitions: str | None = None,
    *,
    must_exist: bool = True,
) -> Iterator[tuple[SagaManager, SagaProjector]]:
    """The manager and its projector, closed afterwards; errors as one line."""
    with _errors_as_one_line():
        manager = _manager(database_url, app, definitions, must_exist=must_exist)
        try:
            projector = SagaProjector(manager)
            try:
                yield manager, projector
            finally:
                projector.close()
        finally:
            manager.close()


def _catch_up(projector: SagaProjector) -> None:
    """Bring the projections up to the head of the log before reading them."""
    if projector.lag() <= _PROGRESS_THRESHOLD:
        projector.catch_up()
        return
    with _progress("catching up projections") as report:
        projector.catch_up(report)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
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


def _saga_id(text: str) -> UUID:
    try:
        return UUID(text.strip())
    except ValueError:
        raise _fail(f"{text!r} is not a saga id (saga ids are UUIDs)") from None


def _status(text: str | None) -> SagaStatus | None:
    if text is None:
        return None
    try:
        return SagaStatus(text.strip().upper())
    except ValueError:
        choices = ", ".join(s.value for s in SagaStatus)
        raise _fail(f"unknown status {text!r}; choose one of {choices}") from None


def _duration(text: str, option: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _fail(f"{option}: {exc}") from None


def _instant(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


_STATUS_STYLE = {
    "COMPLETED": "green",
    "FAILED": "yellow",
    "COMPENSATING": "magenta",
    "DEAD_LETTERED": "bold red",
    "PENDING": "cyan",
    "STARTED": "cyan",
}


def _status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _short(text: str | None, limit: int = 60) -> str:
    if not text:
        return "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Below this console width the tables fold columns together rather than squeeze them.
_WIDE = 120


def _fits(*widths: int) -> bool:
    """Whether columns of these minimum widths fit the console side by side (with borders)."""
    return sum(widths) + 3 * len(widths) + 1 <= console.width


def _longest(texts: Iterable[str], at_least: int = 0) -> int:
    return max([at_least, *(len(text) for text in texts)])


def _sagas_fit_wide(rows: list[SagaSummary]) -> bool:
    """Whether the one-fact-per-column ``list`` table fits without cutting an id, type or status."""
    return console.width >= _WIDE and _fits(
        36,
        _longest(row.saga_type for row in rows),
        _longest(row.status for row in rows),
        10,  # step (attempt), wrapped
        10,  # updated: date over time
        10,  # next wake-up: date over time
        6,
        10,  # last error, cut first
    )


def _sagas_table(rows: list[SagaSummary], *, wide: bool) -> Table:
    """The ``list`` table; a narrow one stacks two facts per cell (ids, types, statuses whole)."""
    table = Table(title=f"sagas ({len(rows)} shown, newest first)")
    types = _longest((row.saga_type for row in rows), 4)
    statuses = _longest((row.status for row in rows), 6)
    table.add_column(
        "saga id" if wide else "saga id / type",
        no_wrap=True,
        min_width=max(36, 0 if wide else types),
    )
    if wide:
        table.add_column("type", no_wrap=True, min_width=types)
    table.add_column("status" if wide else "status / step", min_width=statuses, no_wrap=wide)
    if wide:
        table.add_column("step (attempt)", min_width=10)
    table.add_column("updated (UTC)", no_wrap=not wide, min_width=10)
    if wide:
        table.add_column("next wake-up", min_width=10)
        table.add_column("events", justify="right", min_width=6)
        table.add_column("last error", overflow="fold", max_width=40, min_width=10)
    for row in rows:
        step = f"{row.current_step} ({row.attempt})" if row.current_step else "-"
        if wide:
            table.add_row(
                str(row.saga_id),
                row.saga_type,
                _status_text(row.status),
                step,
                _instant(row.updated_at),
                _instant(row.next_deadline),
                str(row.event_count),
                row.last_error or "-",
            )
        else:
            status = _status_text(row.status)
            if row.current_step:
                status.append(f"\n{step}", style="dim")
            table.add_row(
                Text(str(row.saga_id)).append(f"\n{row.saga_type}", style="dim"),
                status,
                _instant(row.updated_at).replace(" ", "\n"),
            )
    return table


# -- listings ------------------------------------------------------------------------


@app.command("list")
def list_sagas(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only sagas in this status (STARTED, PENDING, COMPENSATING, "
            "COMPLETED, FAILED, DEAD_LETTERED)."
        ),
    ] = None,
    saga_type: Annotated[
        str | None, typer.Option("--type", help="Only sagas of this type.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """List sagas, most recently changed first."""
    wanted = _status(status)
    with _opened(database_url, app, definitions) as (_, projector):
        _catch_up(projector)
        rows = projector.views.list_sagas(status=wanted, saga_type=saga_type, limit=limit)
    if json_output:
        _print_json([row.to_json() for row in rows])
        return
    if not rows:
        console.print("no sagas" + (" matching the filters" if wanted or saga_type else ""))
        return
    console.print(_sagas_table(rows, wide=_sagas_fit_wide(rows)))


@app.command()
def stuck(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
    deadline_grace: Annotated[
        str, typer.Option(help="How late a deadline may be before it counts as missed.")
    ] = "30s",
    no_progress_after: Annotated[
        str, typer.Option(help="A running saga with no event for this long is stuck.")
    ] = "1h",
    no_progress_for: Annotated[
        list[str] | None,
        typer.Option(
            "--no-progress-for",
            metavar="TYPE=DURATION",
            help="The no-progress threshold of one saga type (repeatable), e.g. TravelBooking=4h.",
        ),
    ] = None,
    compensation_too_long: Annotated[
        str, typer.Option(help="A saga compensating for longer than this is stuck.")
    ] = "15m",
    at: Annotated[
        str | None,
        typer.Option(
            help="Judge at this ISO-8601 instant instead of now (e.g. for sagas on a "
            "simulated clock).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List stuck sagas with why: DEAD_LETTERED, DEADLINE_MISSED, COMPENSATION_TOO_LONG,
    NO_PROGRESS (durations like 90s, 15m, 1h30m, 2d)."""
    by_type = {}
    for item in no_progress_for or []:
        saga_type, equals, duration = item.partition("=")
        if not equals or not saga_type.strip():
            raise _fail(f"--no-progress-for takes TYPE=DURATION, not {item!r}")
        by_type[saga_type.strip()] = _duration(duration, f"--no-progress-for {saga_type}")
    try:
        policy = StuckPolicy(
            deadline_grace=_duration(deadline_grace, "--deadline-grace"),
            no_progress_after=_duration(no_progress_after, "--no-progress-after"),
            no_progress_after_by_type=by_type,
            compensation_too_long=_duration(compensation_too_long, "--compensation-too-long"),
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    now = _at(at)
    with _opened(database_url, app, definitions) as (_, projector):
        _catch_up(projector)
        found = projector.views.stuck(now=now, policy=policy, limit=limit)
        held = projector.views.quarantine_log().events()
    if json_output:
        _print_json([item.to_json() for item in found])
        _note_quarantine(held)
        return
    if not found:
        console.print("[green]no stuck sagas[/]")
    else:
        _print_stuck(found)
    _note_quarantine(held)


def _note_quarantine(held: list[Any]) -> None:
    """Say on stderr that poison events wait in quarantine (see cli_operations)."""
    from sagalog.infrastructure.cli_operations import quarantine_note

    note = quarantine_note(held)
    if note is not None:
        err_console.print(f"[bold yellow]{note}[/]", highlight=False, soft_wrap=True)


def _at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"--at: {text!r} is not an ISO-8601 instant (e.g. 2026-05-01T12:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _print_stuck(found: list[StuckSaga]) -> None:
    title = f"stuck sagas ({len(found)}, most urgent first)"
    if console.width < _WIDE + 40:
        # One block per saga, so the detail gets the whole width.
        console.print(Text(title, style="italic"))
        for item in found:
            head = Text.assemble(
                (item.reason.value, "bold red"),
                *[(f" +{r.value}", "bold") for r in item.reasons[1:]],
                f"  {item.summary.saga_id}",
            )
            console.print(head)
            detail = Text.assemble(
                f"{item.summary.saga_type} ",
                _status_text(item.summary.status),
                f", since {_instant(item.since)} UTC: {item.detail}",
            )
            console.print(Padding(detail, (0, 0, 0, 4)))
        return
    table = Table(title=title)
    table.add_column("saga id", no_wrap=True, min_width=36)
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("reason", style="bold", no_wrap=True)
    table.add_column("since (UTC)")
    table.add_column("detail")
    for item in found:
        reasons = item.reason.value + "".join(f"\n+{r.value}" for r in item.reasons[1:])
        table.add_row(
            str(item.summary.saga_id),
            item.summary.saga_type,
            _status_text(item.summary.status),
            reasons,
            _instant(item.since),
            item.detail,
        )
    console.print(table)


@app.command()
def show(
    saga_id: SagaIdArgument,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Also draw the saga's timeline as a Gantt chart into FILE (.png, .svg or "
            ".pdf; needs the plot extra).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show one saga: its summary and its timeline, event by event."""
    wanted = _saga_id(saga_id)
    if plot is not None:
        _check_plot_target(plot)
    with _opened(database_url, app, definitions) as (manager, projector):
        _catch_up(projector)
        summary = projector.views.get(wanted)
        timeline = projector.views.timeline(wanted)
        if summary is not None and plot is not None:
            _draw(manager.history(wanted), plot)
    if summary is None:
        raise _fail(f"no saga with id {wanted}")
    if json_output:
        _print_json({"summary": summary.to_json(), "timeline": [e.to_json() for e in timeline]})
    else:
        _print_summary(summary)
        _print_timeline(summary, timeline)
    if plot is not None:
        err_console.print(f"timeline chart written to {plot}", highlight=False, soft_wrap=True)


#: The formats ``show --plot`` writes, by file suffix.
_PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _check_plot_target(path: Path) -> None:
    """Refuse, before reading anything, a plot that could not be drawn or written."""
    if path.suffix.lower() not in _PLOT_SUFFIXES:
        raise _fail(_escape(f"--plot {path}: give a file ending in {', '.join(_PLOT_SUFFIXES)}"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise _fail(_escape("--plot needs matplotlib: pip install 'sagalog[plot]'")) from None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise _fail(_escape(f"--plot {path}: no directory {parent}"))
    if path.is_dir():
        raise _fail(_escape(f"--plot {path}: is a directory"))


def _draw(events: list[Any], path: Path) -> None:
    """Draw the chart into a file beside ``path``, then move it there (no half-written file)."""
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        plot_timeline(events, partial)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise _fail(_escape(f"--plot {path}: cannot write: {exc.strerror or exc}")) from None


def _print_summary(summary: SagaSummary) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("saga", str(summary.saga_id))
    table.add_row("type", f"{summary.saga_type} v{summary.definition_version}")
    table.add_row("status", _status_text(summary.status))
    if summary.current_step:
        table.add_row("step", f"{summary.current_step} (attempt {summary.attempt})")
    table.add_row("started", _instant(summary.started_at) + " UTC")
    took = format_duration(summary.updated_at - summary.started_at)
    table.add_row("updated", f"{_instant(summary.updated_at)} UTC ({took} after start)")
    if summary.next_deadline:
        table.add_row(
            "next wake-up", f"{_instant(summary.next_deadline)} UTC ({summary.wakeup_kind})"
        )
    if summary.dead_letter_step:
        table.add_row("dead letter", f"{summary.dead_letter_kind} of {summary.dead_letter_step}")
    if summary.last_error:
        table.add_row("last error", summary.last_error)
    if summary.failure_reason:
        table.add_row("failure", summary.failure_reason)
    notes = _uncertain_steps(summary)
    if notes:
        table.add_row("uncertain", "\n".join(notes))
    if summary.in_force_steps:
        table.add_row(
            "in force",
            f"{summary.in_force_steps} may still be in force, uncompensated: "
            f"sagalog compensate {summary.saga_id} --actor NAME --reason TEXT",
        )
    console.print(table)


def _uncertain_steps(summary: SagaSummary) -> list[str]:
    """One line per step whose outcome was unknown or came late, and what became of it."""
    in_force = set((summary.in_force_steps or "").split(","))
    lines = []
    for name, letters in (summary.step_marks or {}).items():
        if "l" in letters:
            what = "succeeded late"
        elif "d" in letters:
            what = "outcome unknown at timeout" if "t" in letters else "outcome unknown (in flight)"
        else:
            continue
        if "x" in letters:
            done = "compensated" if "c" in letters or "l" in letters else "compensation run"
        elif name in in_force:
            done = "NOT compensated"
        else:
            done = "not compensated (the step opts out)" if "o" in letters else "to be compensated"
        lines.append(f"{name}: {what}; {done}")
    return lines


def _print_timeline(summary: SagaSummary, timeline: list[TimelineEntry]) -> None:
    wide = console.width >= _WIDE
    table = Table(title=f"timeline ({len(timeline)} events, times in UTC)")
    table.add_column("#", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("+", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=not wide)
    if wide:
        table.add_column("step")
        table.add_column("att.", justify="right")
    table.add_column("detail", overflow="fold")
    for entry in timeline:
        when = entry.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        event = Text(entry.event_type, style=_EVENT_STYLE.get(entry.event_type, ""))
        attempt = str(entry.attempt) if entry.attempt is not None else ""
        if wide:
            cells: list[str | Text] = [event, entry.step or "", attempt]
        else:
            if entry.step:
                event.append(f"\n{entry.step}" + (f" #{attempt}" if attempt else ""), style="dim")
            cells = [event]
            when = when[11:] if when[:10] == _instant(summary.started_at)[:10] else when
        offset = format_duration(entry.time - summary.started_at)
        table.add_row(str(entry.version), when, offset, *cells, entry.detail)
    console.print(table)


_EVENT_STYLE = {
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


# -- debugging: replay and explain ---------------------------------------------------


@contextmanager
def _reading(
    database_url: str | None, app: str | None = None, definitions: str | None = None
) -> Iterator[SagaManager]:
    """The manager alone (no projections), closed afterwards; errors as one line."""
    with _errors_as_one_line():
        manager = _manager(database_url, app, definitions)
        try:
            yield manager
        finally:
            manager.close()


@app.command()
def replay(
    saga_id: SagaIdArgument,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    at: Annotated[
        int | None,
        typer.Option("--at", metavar="VERSION", help="Only the state right after this event."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="MODULE:ATTRIBUTE|newest",
            help="What-if: replay the saga's recorded inputs through this SagaDefinition "
            "(in memory; nothing is written) and show where its decisions diverge. "
            "'newest': the newest version of the saga's type in --definitions / --app.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Replay a saga from its log: its state after each event (time travel).

    With --against, replay its inputs through another definition instead (what-if).
    """
    wanted = _saga_id(saga_id)
    if against is not None:
        if at is not None:
            raise _fail("--at and --against do not go together")
        _what_if(wanted, against, (database_url, app, definitions), json_output=json_output)
        return
    with _reading(database_url, app, definitions) as manager:
        if at is not None:
            state = state_at(manager, wanted, at)
            if json_output:
                _print_json(state.to_json())
                return
            _print_state(state)
            return
        steps = replay_saga(manager, wanted)
    if json_output:
        _print_json([step.to_json() for step in steps])
        return
    _print_replay(steps)


def _what_if(
    saga_id: UUID,
    spec: str,
    store: tuple[str | None, str | None, str | None],
    *,
    json_output: bool,
) -> None:
    """What-if against ``spec``, or against the newest registered version of its type."""
    with _errors_as_one_line():
        definition = None if spec.strip() == "newest" else load_definition(spec)
    with _reading(*store) as manager:
        if definition is None:
            saga_type = manager.get(saga_id).saga_type
            definition = manager.registry.get(saga_type)
        report = what_if(manager, saga_id, definition)
    if json_output:
        _print_json(report.to_json())
        return
    for line in report.summary():
        console.print(_escape(line), highlight=False, soft_wrap=True)
    if report.diverged:
        table = Table(title="commands from the first difference on")
        table.add_column("#", justify="right")
        table.add_column(f"originally ({report.original_definition})")
        table.add_column(f"under {report.other_definition}")
        start = report.divergence_index or 0
        longest = max(len(report.original_tail), len(report.other_tail))
        for offset in range(longest):
            was = report.original_tail[offset] if offset < len(report.original_tail) else None
            now = report.other_tail[offset] if offset < len(report.other_tail) else None
            table.add_row(str(start + offset + 1), str(was or "-"), str(now or "-"))
        console.print(table)
    if report.skipped:
        skipped = Table(title="recorded inputs that did not apply")
        skipped.add_column("v", justify="right")
        skipped.add_column("input")
        skipped.add_column("why not", overflow="fold")
        for item in report.skipped:
            skipped.add_row(str(item.input.version), item.input.describe(), item.reason)
        console.print(skipped)


def _pending_text(state: SagaSnapshot) -> str:
    pending = state.pending
    if pending is None:
        return "-"
    return f"{pending.kind.value} {pending.name} #{pending.attempt}"


def _steps_text(state: SagaSnapshot) -> str:
    parts = []
    for step in state.steps:
        if step.status == "NOT_STARTED":
            continue
        attempts = f"#{step.attempt}"
        if step.compensation_attempt:
            attempts += f"/c#{step.compensation_attempt}"
        parts.append(f"{step.name} {step.status} {attempts}")
    return "\n".join(parts) or "-"


def _print_replay(steps: list[ReplayStep]) -> None:
    """One row per event; below ``_WIDE`` columns related facts share a cell."""
    wide = console.width >= _WIDE
    head = steps[0].state if steps else None
    title = f"replay of {head.saga_type} {head.saga_id}" if head else "replay"
    table = Table(title=f"{title} ({len(steps)} events, times in UTC)")
    table.add_column("v", justify="right")
    table.add_column("time", no_wrap=True)
    if wide:
        table.add_column("event", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("steps")
        table.add_column("pending command")
        table.add_column("next wake-up", no_wrap=True)
    else:
        table.add_column("event / status", no_wrap=True)
        table.add_column("steps / pending / wake-up", overflow="fold")
    for step in steps:
        stamp = step.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        event = Text(step.event_type, style=_EVENT_STYLE.get(step.event_type, ""))
        if wide:
            table.add_row(
                str(step.version),
                stamp,
                event,
                _status_text(step.state.status),
                _steps_text(step.state),
                _pending_text(step.state),
                _instant(step.state.next_wakeup),
            )
            continue
        event.append("\n").append_text(_status_text(step.state.status))
        detail = Text(_steps_text(step.state))
        detail.append(f"\npending: {_pending_text(step.state)}", style="dim")
        if step.state.next_wakeup:
            detail.append(f"\nwake-up: {_instant(step.state.next_wakeup)}", style="dim")
        table.add_row(str(step.version), stamp.replace(" ", "\n"), event, detail)
    console.print(table)


def _print_state(state: SagaSnapshot) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("saga", str(state.saga_id))
    table.add_row("type", state.saga_type)
    table.add_row("version", str(state.version))
    table.add_row("status", _status_text(state.status))
    table.add_row("pending command", _pending_text(state))
    table.add_row("next wake-up", _instant(state.next_wakeup))
    if state.dead_letter:
        table.add_row("dead letter", state.dead_letter)
    if state.last_error:
        table.add_row("last error", state.last_error)
    if state.failure_reason:
        table.add_row("failure", state.failure_reason)
    console.print(table)
    steps = Table(title=f"steps at version {state.version}")
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("attempt", justify="right")
    steps.add_column("compensation attempt", justify="right")
    for step in state.steps:
        steps.add_row(step.name, step.status, str(step.attempt), str(step.compensation_attempt))
    console.print(steps)


@app.command()
def explain(
    saga_id: SagaIdArgument,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Explain in a few sentences why a saga completed, failed, waits or is stuck."""
    wanted = _saga_id(saga_id)
    with _reading(database_url, app, definitions) as manager:
        saga = manager.get(wanted)
        outbox = outbox_of(manager, saga) if saga.pending_command is not None else None
        sentences = explain_saga(saga, outbox=outbox)
    if json_output:
        _print_json({"saga_id": str(wanted), "status": saga.status.value, "sentences": sentences})
        return
    for sentence in sentences:
        console.print(_escape(sentence), highlight=False, soft_wrap=True)


# -- starting a saga ------------------------------------------------------------------


@app.command()
def start(
    saga_type: Annotated[
        str, typer.Argument(metavar="SAGA_TYPE", help="The saga type (a definition's name).")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="The saga's data: a JSON object, or @FILE holding one.",
            show_default=False,
        ),
    ] = "{}",
    saga_id: Annotated[
        str | None,
        typer.Option(
            "--saga-id",
            help="Start under this id (a UUID); starting it again changes nothing.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(min=1, help="This version of the definition (default: the newest)."),
    ] = None,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
) -> None:
    """Start a saga of one of your definitions (--definitions or --app) and print its id."""
    wanted = _saga_id(saga_id) if saga_id is not None else None
    payload = _json_object(data)
    # The first saga may create the store (as the worker may).
    with _opened(database_url, app, definitions, must_exist=False) as (manager, _):
        started = manager.start(saga_type, payload, saga_id=wanted, version=version)
    console.print(str(started), highlight=False)


def _json_object(text: str) -> dict[str, Any]:
    """``--data``: a JSON object given inline or as ``@FILE``."""
    source = "--data"
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"--data {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(_escape(f"{source}: cannot read: {exc.strerror or exc}")) from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _fail(_escape(f"{source}: not JSON: {exc}")) from None
    if not isinstance(value, dict):
        raise _fail(f"{source}: give a JSON object, not a {type(value).__name__}")
    return value


# -- operator actions ----------------------------------------------------------------


def _operator_action(
    saga_id: str,
    store: tuple[str | None, str | None, str | None],
    act: Callable[[SagaManager, UUID], object],
    done: str,
) -> None:
    wanted = _saga_id(saga_id)
    with _opened(*store) as (manager, projector):
        act(manager, wanted)
        projector.catch_up()
        summary = projector.views.get(wanted)
    status = summary.status if summary else "?"
    step = f" at {summary.current_step}" if summary and summary.current_step else ""
    console.print(f"{done} saga {wanted}: now {status}{step}", highlight=False)


def _operator_command(
    name: str, doc: str, act: Callable[[SagaManager, UUID, str, str], object], done: str
) -> None:
    """Register ``sagalog NAME SAGA_ID --reason --actor``: ``act(manager, id, actor, reason)``."""

    def command(
        saga_id: SagaIdArgument,
        reason: ReasonOption,
        actor: ActorOption,
        database_url: DatabaseUrlOption = None,
        app: AppOption = None,
        definitions: DefinitionsOption = None,
    ) -> None:
        _operator_action(
            saga_id,
            (database_url, app, definitions),
            lambda manager, sid: act(manager, sid, actor, reason),
            done,
        )

    command.__doc__ = doc
    command.__name__ = name
    app.command(name)(command)


_operator_command(
    "retry",
    "Try a dead-lettered saga's failed command once more.",
    lambda m, sid, actor, reason: m.retry(sid, actor=actor, reason=reason),
    "retried",
)
_operator_command(
    "resolve",
    "Declare a dead-lettered saga's failed command done by hand; the saga moves on.",
    lambda m, sid, actor, reason: m.resolve(sid, actor=actor, reason=reason),
    "resolved",
)
_operator_command(
    "abort",
    "Stop a running saga (before its pivot) and compensate what it has done.",
    lambda m, sid, actor, reason: m.abort(sid, actor=actor, reason=reason),
    "aborted",
)
_operator_command(
    "compensate",
    "Compensate the steps of a FAILED saga that may still be in force (stuck EFFECT_IN_FORCE).",
    lambda m, sid, actor, reason: m.compensate(sid, actor=actor, reason=reason),
    "compensating",
)


# -- definition versions -------------------------------------------------------------


@app.command()
def versions(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Definition versions: sagas in flight and ended on each, and whether the code has it."""
    with _opened(database_url, app, definitions) as (manager, projector):
        _catch_up(projector)
        usages = definition_versions(manager, projector.views)
    if json_output:
        _print_json([usage.to_json() for usage in usages])
        return
    if not any(u.in_flight_total or u.ended_total for u in usages):
        console.print("no sagas recorded yet", highlight=False)
    console.print(_versions_table(usages, wide=console.width >= _WIDE))


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


# -- projections ---------------------------------------------------------------------

projections_app = typer.Typer(
    help="The read projections (saga summary and timeline tables).", no_args_is_help=True
)
app.add_typer(projections_app, name="projections")


@projections_app.command("status")
def projections_status(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Where the projections stand: position in the log, lag, rows (does not catch up)."""
    with _opened(database_url, app, definitions) as (_, projector):
        status = projector.status()
        stale = projector.views.stale_tables()
        by_status = projector.views.count_by_status()
    if json_output:
        _print_json({**status.to_json(), "by_status": by_status, "stale_tables": stale})
        return
    table = Table(title="projections")
    for column in ("projection", "schema", "log", "position", "head", "lag", "sagas", "events"):
        table.add_column(column, justify="right" if column not in ("projection", "log") else "left")
    table.add_row(
        status.name,
        f"v{status.schema_version}",
        status.application,
        str(status.position),
        str(status.head),
        Text(str(status.lag), style="yellow" if status.lag else "green"),
        str(status.sagas),
        str(status.events),
    )
    console.print(table)
    if by_status:
        console.print(
            "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())),
            highlight=False,
        )
    if stale:
        console.print(f"tables of older schema versions (safe to drop): {', '.join(stale)}")
    if status.quarantined:
        console.print(
            f"[bold yellow]quarantined: {status.quarantined} events set aside[/] "
            "(sagalog quarantine list)",
            highlight=False,
        )


@projections_app.command("rebuild")
def projections_rebuild(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
) -> None:
    """Empty the projections and rebuild them from the whole log."""
    with _opened(database_url, app, definitions) as (_, projector):
        started = time.perf_counter()
        with _progress("rebuilding projections") as report:
            applied = projector.rebuild(report)
        seconds = time.perf_counter() - started
        sagas = projector.views.count_sagas()
        name = projector.views.projection_name
    rate = f" ({applied / seconds:,.0f} events/s)" if seconds > 0 and applied else ""
    console.print(
        f"rebuilt {name}: {applied} events, {sagas} sagas in {seconds:.2f} s{rate}",
        highlight=False,
    )


# -- worker --------------------------------------------------------------------------


@app.command()
def worker(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    tick_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between two timer ticks when idle.")
    ] = 0.5,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between two polls of the log when idle.")
    ] = 0.2,
    transport: Annotated[
        str,
        typer.Option(
            help="none: no relay, commands stay in the log for a relay elsewhere; "
            "in-process: deliver them to --participants in this process; "
            "rabbitmq: publish them to the broker and consume the replies."
        ),
    ] = "none",
    rabbitmq_url: Annotated[
        str | None,
        typer.Option(
            envvar="SAGALOG_RABBITMQ_URL",
            help="For --transport rabbitmq (default amqp://guest:guest@127.0.0.1:5672/%2F).",
        ),
    ] = None,
    rabbitmq_prefix: Annotated[
        str,
        typer.Option(help="For --transport rabbitmq: prefix of the exchange and queue names."),
    ] = "sagalog",
    participants: Annotated[
        str | None,
        typer.Option(
            metavar="MODULE:FUNCTION",
            help="For --transport in-process: function(transport, manager) that "
            "subscribes the participants.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on http://127.0.0.1:PORT/metrics "
            "(0: any free port; needs the metrics extra).",
        ),
    ] = None,
) -> None:
    """Run the timers, the command relay and the projections until SIGINT/SIGTERM."""
    if transport not in ("none", "in-process", "rabbitmq"):
        raise _fail(f"unknown transport {transport!r}; choose none, in-process or rabbitmq")
    if transport == "none" and participants:
        raise _fail("--participants needs --transport in-process")
    if transport == "in-process" and not participants:
        raise _fail("--transport in-process needs --participants MODULE:FUNCTION")
    # The handlers go in first, before the store is opened (seconds on a remote
    # PostgreSQL): a SIGINT or SIGTERM during startup stops the worker cleanly once
    # it is built, instead of being lost (SIGINT is ignored in a script's background
    # jobs) or killing it (SIGTERM's default).
    stop_hooks: list[Callable[[], None]] = []

    def stop() -> None:
        for hook in stop_hooks:
            hook()

    with stop_on_signals(stop) as received:
        with _errors_as_one_line():
            manager = _manager(database_url, app, definitions, must_exist=False)
        try:
            chosen: Transport | None = None
            replies: StoppableLoop | None = None
            if transport == "rabbitmq":
                chosen, replies = _rabbitmq_worker_parts(manager, rabbitmq_url, rabbitmq_prefix)
            if transport == "in-process":
                assert participants is not None
                in_process = InProcessTransport()
                try:
                    load_participants(participants)(in_process, manager)
                except ValueError as exc:
                    raise _fail(str(exc)) from None
                except TypeError as exc:
                    raise _fail(
                        f"--participants {participants}: not a function(transport, manager) "
                        f"({_escape(first_line(exc))})"
                    ) from None
                chosen = in_process
            with _errors_as_one_line():
                try:
                    runner = Worker(
                        manager,
                        transport=chosen,
                        tick_interval=tick_interval,
                        poll_interval=poll_interval,
                        metrics_port=metrics_port,
                        replies=replies,
                    )
                except ValueError as exc:
                    raise _fail(str(exc)) from None
            relay = f"relay on ({transport})" if chosen else "relay off (no transport)"
            if runner.metrics_server is not None:
                relay += f", metrics on {runner.metrics_server.url}"
            try:
                stop_hooks.append(runner.stop)
                if not received:  # a signal during startup: stop before running anything
                    err_console.print(
                        f"sagalog worker on {manager.database_url.masked}: timers every "
                        f"{tick_interval:g} s, projections following, {relay}; "
                        "stop with Ctrl-C or SIGTERM",
                        highlight=False,
                        soft_wrap=True,
                    )
                    runner.run()
            except WorkerError as exc:
                raise _fail(_escape(str(exc)), code=1) from None
            finally:
                runner.close()
            why = f" on signal {received[0]}" if received else ""
            err_console.print(
                f"sagalog worker stopped{why}: {runner.stats.sagas_ticked} sagas moved by timers, "
                f"{runner.stats.commands_sent} commands sent, "
                f"{runner.projector.events_applied} events projected",
                highlight=False,
                soft_wrap=True,
            )
        finally:
            manager.close()


def _signing_keys() -> Any:
    """``SAGALOG_SIGNING_KEYS`` as keys, or ``None`` with a warning; one-line errors."""
    from sagalog.infrastructure.messaging.signing import SIGNING_KEYS_ENV_VAR, SigningKeys

    try:
        keys = SigningKeys.from_env()
    except ValueError as exc:
        raise _fail(_escape(str(exc))) from None
    if keys is None:
        err_console.print(
            f"[bold yellow]warning:[/] {SIGNING_KEYS_ENV_VAR} is not set: commands and "
            "replies are not signed, so anyone who can publish to the replies queue can "
            "answer for a participant (see docs/poison-messages.md)",
            highlight=False,
            soft_wrap=True,
        )
    return keys


def _rabbitmq_worker_parts(
    manager: SagaManager, url: str | None, prefix: str
) -> tuple[Transport, StoppableLoop]:
    """The broker transport for the relay and the reply consumer, topology declared."""
    try:
        from sagalog.infrastructure.rabbitmq import (
            RabbitMQTransport,
            ReplyConsumer,
            Topology,
            channel_to,
            check_rabbitmq_url,
        )
    except ImportError as exc:  # pika is the optional "rabbitmq" extra
        raise _fail(
            f"--transport rabbitmq needs pika: pip install 'sagalog[rabbitmq]' ({exc})"
        ) from None
    try:
        check_rabbitmq_url(url)
    except TransportError as exc:
        raise _fail(f"--rabbitmq-url: {_escape(str(exc))}") from None
    topology = Topology(prefix, signing=_signing_keys())
    try:
        with channel_to(url) as channel:
            topology.declare(channel)
    except TransportError as exc:
        # Not fatal: the timers and the projections run without the broker; the relay
        # and the reply consumer connect (and declare the topology) when it comes.
        err_console.print(
            f"[bold yellow]warning:[/] {_escape(str(exc))}; the worker starts anyway and "
            "connects when the broker is back",
            highlight=False,
            soft_wrap=True,
        )
    except Exception as exc:
        raise _fail(f"cannot set up RabbitMQ: {_escape(first_line(exc))}") from None
    transport = RabbitMQTransport(url, topology=topology)
    return transport, ReplyConsumer(manager, url, topology=topology)


# The operator commands for poison messages register themselves on ``app``.
from sagalog.infrastructure import cli_operations as _cli_operations  # noqa: E402

_REGISTERED = (_cli_operations.__name__,)


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
            f"[bold red]error:[/] {_escape(exc.format_message())} (see {command} --help)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":  # python -m sagalog.infrastructure.cli
    # Run the importable module's app: the commands registered by other modules
    # (cli_operations) are registered on it, not on this __main__ copy.
    from sagalog.infrastructure.cli import main as _installed_main

    _installed_main()
