"""``sagalog worker``: the timers, the command relay and the projections, until a signal.

The relay's transport is ``none`` (commands stay in the log), ``in-process`` (the
user's participants in this process) or ``rabbitmq`` (the broker, with a reply consumer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from sagalog.domain.errors import first_line
from sagalog.infrastructure.cli.app import app, errors_as_one_line, fail
from sagalog.infrastructure.cli.opening import open_manager
from sagalog.infrastructure.cli.options import AppOption, DatabaseUrlOption, DefinitionsOption
from sagalog.infrastructure.cli.output import err_console, escape
from sagalog.infrastructure.messaging.transport import InProcessTransport, Transport, TransportError
from sagalog.infrastructure.observability.tracing import enable_from_env
from sagalog.infrastructure.persistence.lease import DEFAULT_LEASE_SECONDS
from sagalog.infrastructure.worker import (
    StoppableLoop,
    Worker,
    WorkerError,
    load_participants,
    stop_on_signals,
)
from sagalog.process import SagaManager


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
                chosen, replies = _rabbitmq_worker_parts(manager, rabbitmq_url, rabbitmq_prefix)
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
    manager: SagaManager, url: str | None, prefix: str
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
    topology = Topology(prefix, signing=_signing_keys())
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
        raise fail(f"cannot set up RabbitMQ: {escape(first_line(exc))}") from None
    transport = RabbitMQTransport(url, topology=topology)
    return transport, ReplyConsumer(manager, url, topology=topology)
