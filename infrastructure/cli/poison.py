"""What a poison message leaves behind: ``sagalog quarantine …`` and ``sagalog dead-letters …``.

See docs/poison-messages.md.

* ``quarantine list`` — the events a follower (the projections, the relay, the
  metrics observer) could not apply and set aside, with why;
* ``quarantine retry [SAGA_ID] --actor --reason`` — apply the projections'
  quarantined events again, each saga all or none; who asked and why is logged;
* ``dead-letters list | replay | purge`` — the RabbitMQ dead-letter queues: read
  them, send letters back where they came from (each replayed message carries who,
  why and when, and each replay is logged with the actor), or drop them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table

from sagalog.domain import SagalogError
from sagalog.domain.errors import first_line
from sagalog.domain.payload import check_text
from sagalog.infrastructure.cli.app import app, fail
from sagalog.infrastructure.cli.opening import opened
from sagalog.infrastructure.cli.options import (
    ActorOption,
    DatabaseUrlOption,
    JsonOption,
    ReasonOption,
    parse_saga_id,
)
from sagalog.infrastructure.cli.output import console, escape, print_json

logger = logging.getLogger("sagalog.operator")

quarantine_app = typer.Typer(
    help="Events a follower could not apply and set aside (poison events).",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    database_url: DatabaseUrlOption = None,
    json_output: JsonOption = False,
) -> None:
    """The events set aside, oldest first, with the follower and the error."""
    with opened(database_url) as (_, projector):
        held = projector.views.quarantine_log().events()
    if json_output:
        print_json([item.to_json() for item in held])
        return
    if not held:
        console.print("[green]no quarantined events[/]")
        return
    table = Table(title=f"quarantined events ({len(held)})")
    for column in ("follower", "event", "saga id", "topic", "since (UTC)", "retries", "error"):
        table.add_column(column)
    for item in held:
        table.add_row(
            item.follower,
            str(item.notification_id),
            str(item.saga_id or "?"),
            item.topic.rpartition(".")[2],
            item.quarantined_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(item.retries),
            escape(item.error),
        )
    console.print(table)


@quarantine_app.command("retry")
def quarantine_retry(
    reason: ReasonOption,
    actor: ActorOption,
    saga_id: Annotated[
        str | None,
        typer.Argument(metavar="[SAGA_ID]", help="Only this saga (default: every one held)."),
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Apply the projections' quarantined events again (each saga all or none).

    Exits 1 if a saga's events still cannot be applied (they stay in quarantine).
    """
    wanted = None if saga_id is None else parse_saga_id(saga_id)
    with opened(database_url) as (_, projector):
        logger.warning(
            "quarantine retry by %s: %s",
            actor,
            reason,
            extra={"actor": actor, "reason": reason, "saga_id": str(wanted or "*")},
        )
        applied, failed = projector.retry_quarantined(wanted)
    console.print(
        f"retried by {escape(actor)}: {applied} quarantined events applied"
        + (f", {len(failed)} sagas still held" if failed else ""),
        highlight=False,
    )
    for held_saga, error in failed.items():
        console.print(f"  {held_saga}: {escape(error)}", highlight=False)
    if failed:
        raise fail(f"{len(failed)} sagas still have quarantined events", code=1)


# -- dead letters ------------------------------------------------------------------------

dead_letters_app = typer.Typer(
    help="Messages the broker's consumers could not use (RabbitMQ dead-letter queues).",
    no_args_is_help=True,
)
app.add_typer(dead_letters_app, name="dead-letters")

RabbitMQUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="SAGALOG_RABBITMQ_URL",
        help="The broker (default amqp://guest:guest@127.0.0.1:5672/%2F).",
    ),
]
PrefixOption = Annotated[
    str, typer.Option("--rabbitmq-prefix", help="Prefix of the exchange and queue names.")
]
QueueOption = Annotated[
    str,
    typer.Option(
        "--queue",
        help="replies: replies the manager could not apply; commands: commands a "
        "participant could not read or handle.",
    ),
]


def _dead_letter_queue(prefix: str, which: str) -> tuple[Any, str]:
    """The topology and the dead-letter queue ``which`` names; one-line errors."""
    try:
        from sagalog.infrastructure.rabbitmq import Topology
    except ImportError as exc:  # pika is the optional "rabbitmq" extra
        raise fail(f"dead letters need pika: pip install 'sagalog[rabbitmq]' ({exc})") from None
    topology = Topology(prefix)
    queues = {
        "replies": topology.replies_dead_letter_queue,
        "commands": topology.commands_dead_letter_queue,
    }
    if which not in queues:
        raise fail(f"--queue takes replies or commands, not {which!r}")
    return topology, queues[which]


@contextmanager
def _broker_errors(url: str | None) -> Iterator[None]:
    """Broker and URL errors as one line, exit 2."""
    from sagalog.infrastructure.messaging.transport import TransportError
    from sagalog.infrastructure.rabbitmq.topology import BROKER_ERRORS

    try:
        yield
    except SagalogError as exc:
        raise fail(escape(str(exc))) from None
    except TransportError as exc:
        raise fail(escape(str(exc))) from None
    except BROKER_ERRORS as exc:
        raise fail(f"RabbitMQ refused: {escape(first_line(exc))}") from None


def _letter_json(letter: Any) -> dict[str, Any]:
    body = bytes(letter.body)
    text = body.decode("utf-8", "replace")
    return {
        "message_id": letter.message_id,
        "correlation_id": letter.correlation_id,
        "reason": letter.reason,
        "error": letter.error,
        "attempts": letter.attempts,
        "dead_lettered_at": str(letter.headers.get("sagalog-dead-letter-at", "")),
        "bytes": len(body),
        "body": text if len(text) <= 4000 else text[:4000] + "…",
    }


@dead_letters_app.command("list")
def dead_letters_list(
    rabbitmq_url: RabbitMQUrlOption = None,
    rabbitmq_prefix: PrefixOption = "sagalog",
    queue: QueueOption = "replies",
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """The letters waiting, oldest first, with why they are there (left in place)."""
    _, name = _dead_letter_queue(rabbitmq_prefix, queue)
    from sagalog.infrastructure.rabbitmq import read_dead_letters

    with _broker_errors(rabbitmq_url):
        letters = read_dead_letters(name, rabbitmq_url, limit=limit)
    if json_output:
        print_json([_letter_json(letter) for letter in letters])
        return
    if not letters:
        console.print(f"[green]no dead letters in {name}[/]")
        return
    table = Table(title=f"{name} ({len(letters)} shown, oldest first)")
    for column in ("message id", "error", "attempts", "bytes", "reason"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            letter.message_id or "?",
            letter.error,
            str(letter.attempts),
            str(len(letter.body)),
            escape(letter.reason),
        )
    console.print(table)


@dead_letters_app.command("replay")
def dead_letters_replay(
    reason: ReasonOption,
    actor: ActorOption,
    rabbitmq_url: RabbitMQUrlOption = None,
    rabbitmq_prefix: PrefixOption = "sagalog",
    queue: QueueOption = "replies",
    message_id: Annotated[
        list[str] | None,
        typer.Option("--message-id", help="Only this letter (repeatable; default: all)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 1000,
) -> None:
    """Send letters back where they came from, recording who and why on each."""
    topology, name = _dead_letter_queue(rabbitmq_prefix, queue)
    from sagalog.infrastructure.rabbitmq import replay_dead_letters

    with _broker_errors(rabbitmq_url):
        check_text(actor, "actor")
        check_text(reason, "reason")
        replayed = replay_dead_letters(
            topology,
            name,
            rabbitmq_url,
            actor=actor,
            reason=reason,
            limit=limit,
            message_ids=message_id or (),
        )
    console.print(f"replayed {len(replayed)} letters from {name} by {escape(actor)}")


@dead_letters_app.command("purge")
def dead_letters_purge(
    reason: ReasonOption,
    actor: ActorOption,
    rabbitmq_url: RabbitMQUrlOption = None,
    rabbitmq_prefix: PrefixOption = "sagalog",
    queue: QueueOption = "replies",
    delete_queue: Annotated[
        bool,
        typer.Option(
            "--delete-queue",
            help="Delete the queue instead, so that the next worker or participant "
            "declares it again with the configured bounds.",
        ),
    ] = False,
) -> None:
    """Drop every letter of a dead-letter queue (logged with who and why)."""
    _, name = _dead_letter_queue(rabbitmq_prefix, queue)
    from sagalog.infrastructure.rabbitmq import purge_dead_letters

    with _broker_errors(rabbitmq_url):
        check_text(actor, "actor")
        check_text(reason, "reason")
        count = purge_dead_letters(
            name, rabbitmq_url, actor=actor, reason=reason, delete_queue=delete_queue
        )
    done = "deleted" if delete_queue else "purged"
    console.print(f"{done} {name}: {count} letters dropped by {escape(actor)}")
