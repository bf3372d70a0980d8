"""``sagalog worker``: the timers, the command relay and the projections, until a signal.

The relay's transport is ``none`` (commands stay in the log), ``in-process`` (the
user's participants in this process) or ``rabbitmq`` (the broker, with a reply consumer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sagalog.domain.errors import first_line
from sagalog.infrastructure.cli.app import app, errors_as_one_line, fail
from sagalog.infrastructure.cli.opening import open_manager
from sagalog.infrastructure.cli.options import (
    AppOption,
    DatabaseUrlOption,
    DefinitionsOption,
    JsonOption,
)
from sagalog.infrastructure.cli.output import console, err_console, escape, print_json
from sagalog.infrastructure.messaging.transport import InProcessTransport, Transport, TransportError
from sagalog.infrastructure.observability.tracing import enable_from_env
from sagalog.infrastructure.persistence.heartbeats import WorkerRegistry
from sagalog.infrastructure.persistence.lease import DEFAULT_LEASE_SECONDS, StoreLease
from sagalog.infrastructure.worker import (
    StoppableLoop,
    Worker,
    WorkerError,
    load_participants,
    stop_on_signals,
)
from sagalog.process import SagaManager
from sagalog.process.store.url import parse_database_url

#: Reply partitions of ``sagalog worker --transport rabbitmq`` unless told otherwise.
DEFAULT_REPLY_PARTITIONS = 8


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
            help="Serve Prometheus metrics on http://HOST:PORT/metrics "
            "(0: any free port; needs the metrics extra).",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            help="Address the metrics endpoint binds (0.0.0.0: every interface, for a "
            "Prometheus on another host)."
        ),
    ] = "127.0.0.1",
    reply_partitions: Annotated[
        int,
        typer.Option(
            min=0,
            max=1024,
            help="For --transport rabbitmq: queues the replies are routed to by saga id, "
            "shared among the live workers (0: the single replies queue of older versions). "
            "Keep it fixed for a deployment.",
        ),
    ] = DEFAULT_REPLY_PARTITIONS,
    queue_type: Annotated[
        str,
        typer.Option(
            help="For --transport rabbitmq: classic, or quorum (replicated; the production "
            "setting on a broker cluster) for the reply partitions.",
        ),
    ] = "classic",
    lease_seconds: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="The store's lease time: one worker per store runs the relay, the timers "
            "and the projections; the others stand by and take over this long after it "
            "stops renewing (dies, hangs, loses the database).",
        ),
    ] = DEFAULT_LEASE_SECONDS,
) -> None:
    """Run the timers, the command relay and the projections until SIGINT/SIGTERM."""
    if transport not in ("none", "in-process", "rabbitmq"):
        raise fail(f"unknown transport {transport!r}; choose none, in-process or rabbitmq")
    if queue_type not in ("classic", "quorum"):
        raise fail(f"unknown queue type {queue_type!r}; choose classic or quorum")
    if transport == "none" and participants:
        raise fail("--participants needs --transport in-process")
    if transport == "in-process" and not participants:
        raise fail("--transport in-process needs --participants MODULE:FUNCTION")
    # The handlers go in first, before the store is opened (seconds on a remote
    # PostgreSQL): a SIGINT or SIGTERM during startup stops the worker cleanly once
    # it is built, instead of being lost (SIGINT is ignored in a script's background
    # jobs) or killing it (SIGTERM's default).
    stop_hooks: list[Callable[[], None]] = []

    def stop() -> None:
        for hook in stop_hooks:
            hook()

    with stop_on_signals(stop) as received:
        with errors_as_one_line():
            manager = open_manager(database_url, app, definitions, must_exist=False)
        try:
            chosen: Transport | None = None
            replies: StoppableLoop | None = None
            if transport == "rabbitmq":
                chosen, replies = _rabbitmq_worker_parts(
                    manager, rabbitmq_url, rabbitmq_prefix, reply_partitions, queue_type
                )
            if transport == "in-process":
                assert participants is not None
                in_process = InProcessTransport()
                try:
                    load_participants(participants)(in_process, manager)
                except ValueError as exc:
                    raise fail(str(exc)) from None
                except TypeError as exc:
                    raise fail(
                        f"--participants {participants}: not a function(transport, manager) "
                        f"({escape(first_line(exc))})"
                    ) from None
                chosen = in_process
            with errors_as_one_line():
                try:
                    # SAGALOG_TRACING / SAGALOG_TRACING_FILE switch OpenTelemetry on.
                    enable_from_env()
                    runner = Worker(
                        manager,
                        transport=chosen,
                        tick_interval=tick_interval,
                        poll_interval=poll_interval,
                        metrics_port=metrics_port,
                        metrics_addr=metrics_host,
                        replies=replies,
                        lease_seconds=lease_seconds,
                    )
                except ValueError as exc:
                    raise fail(str(exc)) from None
            relay = f"relay on ({transport})" if chosen else "relay off (no transport)"
            if runner.metrics_server is not None:
                relay += f", metrics on {runner.metrics_server.url}"
            try:
                stop_hooks.append(runner.stop)
                if not received:  # a signal during startup: stop before running anything
                    err_console.print(
                        f"sagalog worker on {manager.database_url.masked}: timers every "
                        f"{tick_interval:g} s, projections following, {relay}, "
                        f"lease {lease_seconds:g} s ({runner.holder}); "
                        "stop with Ctrl-C or SIGTERM",
                        highlight=False,
                        soft_wrap=True,
                    )
                    runner.run()
            except WorkerError as exc:
                raise fail(escape(str(exc)), code=1) from None
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
        raise fail(escape(str(exc))) from None
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
    manager: SagaManager, url: str | None, prefix: str, partitions: int, queue_type: str
) -> tuple[Transport, StoppableLoop]:
    """The broker transport for the relay and the reply consumer, topology declared."""
    try:
        from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
        from sagalog.infrastructure.rabbitmq.topology import channel_to, check_rabbitmq_url
    except ImportError as exc:  # pika is the optional "rabbitmq" extra
        raise fail(
            f"--transport rabbitmq needs pika: pip install 'sagalog[rabbitmq]' ({exc})"
        ) from None
    try:
        check_rabbitmq_url(url)
    except TransportError as exc:
        raise fail(f"--rabbitmq-url: {escape(str(exc))}") from None
    topology = Topology(
        prefix, signing=_signing_keys(), reply_partitions=partitions, queue_type=queue_type
    )
    try:
        with channel_to(url) as channel:
            topology.declare(channel)
    except TransportError as exc:
        # Not fatal: the timers and the projections run without the broker; the relay
        # and the reply consumer connect (and declare the topology) when it comes.
        err_console.print(
            f"[bold yellow]warning:[/] {escape(str(exc))}; the worker starts anyway and "
            "connects when the broker is back",
            highlight=False,
            soft_wrap=True,
        )
    except Exception as exc:
        raise fail(
            f"cannot set up RabbitMQ: {escape(first_line(exc))} (a queue declared before "
            "with another type or without partitions' arguments: see docs/deployment.md)"
        ) from None
    transport = RabbitMQTransport(url, topology=topology)
    return transport, ReplyConsumer(manager, url, topology=topology)


@app.command()
def workers(
    database_url: DatabaseUrlOption = None,
    lease_seconds: Annotated[
        float,
        typer.Option(min=0.1, help="The workers' lease time: older heartbeats are gone."),
    ] = DEFAULT_LEASE_SECONDS,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also the workers whose heartbeat is stale.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """List the workers on the store: host, pid, role, reply partitions, heartbeat, lag."""
    with errors_as_one_line():
        url = parse_database_url(database_url)
    if url.kind not in ("postgresql", "sqlite") or url.is_sqlite_memory:
        raise fail(f"workers share a SQLite or PostgreSQL store, not {url.masked}")
    if url.kind == "sqlite" and url.path is not None and not Path(url.path).exists():
        raise fail(f"no store at {url.masked}")
    with errors_as_one_line():
        lease = StoreLease(url, lease_seconds=lease_seconds, create=False)
        try:
            rows = WorkerRegistry(lease, create=False).workers()
            holder = lease.holder()
        except Exception as exc:
            if not _no_such_table(exc):
                raise
            rows, holder = [], None  # no worker ever ran on this store
        finally:
            lease.close()
    shown = [w for w in rows if show_all or w.age < lease_seconds]
    if json_output:
        print_json(
            [
                {
                    "holder": w.holder,
                    "host": w.host,
                    "pid": w.pid,
                    "role": w.role,
                    "epoch": w.epoch,
                    "partitions": list(w.partitions),
                    "heartbeat_age_seconds": round(w.age, 3),
                    "live": w.age < lease_seconds,
                    "lag": w.lag,
                }
                for w in shown
            ]
        )
        return
    table = Table(title=None, box=None, header_style="bold")
    for column in ("worker", "role", "epoch", "reply partitions", "heartbeat", "relay lag"):
        table.add_column(column)
    for w in shown:
        stale = w.age >= lease_seconds
        table.add_row(
            escape(w.holder),
            "gone" if stale else w.role,
            str(w.epoch),
            ",".join(str(k) for k in w.partitions) or "-",
            f"{w.age:.1f} s ago",
            "-" if w.lag is None else str(w.lag),
        )
    if shown:
        console.print(table)
    lease_line = (
        "lease: free"
        if holder is None
        else f"lease: {escape(holder[0])}, epoch {holder[1]}, "
        + (f"expires in {holder[2]:.1f} s" if holder[2] >= 0 else "expired")
    )
    err_console.print(
        f"{len(shown)} worker(s) on {url.masked}; {lease_line}", highlight=False, soft_wrap=True
    )


def _no_such_table(exc: BaseException) -> bool:
    """Whether ``exc`` says a table is missing (SQLite or PostgreSQL)."""
    text = str(exc)
    return "no such table" in text or type(exc).__name__ == "UndefinedTable"
