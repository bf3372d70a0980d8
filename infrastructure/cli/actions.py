"""The commands that act on a saga: ``start``, and the operator actions ``retry``,
``resolve``, ``abort``, ``compensate`` and ``forget`` (each recorded in the saga's log with
who and why).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from sagalog.infrastructure.cli.app import app, fail
from sagalog.infrastructure.cli.opening import opened
from sagalog.infrastructure.cli.options import (
    ActorOption,
    AppOption,
    DatabaseUrlOption,
    DefinitionsOption,
    ReasonOption,
    SagaIdArgument,
    parse_saga_id,
)
from sagalog.infrastructure.cli.output import console, escape
from sagalog.process import SagaManager


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
    wanted = parse_saga_id(saga_id) if saga_id is not None else None
    payload = _json_object(data)
    # The first saga may create the store (as the worker may).
    with opened(database_url, app, definitions, must_exist=False) as (manager, _):
        started = manager.start(saga_type, payload, saga_id=wanted, version=version)
    console.print(str(started), highlight=False)


def _json_object(text: str, option: str = "--data") -> dict[str, Any]:
    """``--data`` (or ``option``): a JSON object given inline or as ``@FILE``."""
    source = option
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"{option} {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(escape(f"{source}: cannot read: {exc.strerror or exc}")) from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise fail(escape(f"{source}: not JSON: {exc}")) from None
    if not isinstance(value, dict):
        raise fail(f"{source}: give a JSON object, not a {type(value).__name__}")
    return value


# -- operator actions ----------------------------------------------------------------


def _operator_action(
    saga_id: str,
    store: tuple[str | None, str | None, str | None],
    act: Callable[[SagaManager, UUID], object],
    done: str,
) -> None:
    wanted = parse_saga_id(saga_id)
    with opened(*store) as (manager, projector):
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


@app.command()
def retry(
    saga_id: SagaIdArgument,
    reason: ReasonOption,
    actor: ActorOption,
    patch: Annotated[
        str | None,
        typer.Option(
            help="A JSON object (or @FILE) whose top-level keys replace or add those of the saga's "
            "data before the retry; recorded with the old values.",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
) -> None:
    """Try a dead-lettered saga's failed command once more, optionally with corrected data."""
    changes = _json_object(patch, "--patch") if patch is not None else None
    _operator_action(
        saga_id,
        (database_url, app, definitions),
        lambda manager, sid: manager.retry(sid, actor=actor, reason=reason, patch=changes),
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
_operator_command(
    "forget",
    "Erase an ended saga's data (crypto-shredding): destroy its data key; its events still "
    "replay, every payload reads as <erased>. Needs encryption at rest (docs/security.md).",
    lambda m, sid, actor, reason: m.forget(sid, actor=actor, reason=reason),
    "erased the data of",
)
