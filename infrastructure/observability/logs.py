"""Structured, correlated logs: one line per saga transition, JSON on request.

Plain stdlib ``logging``: sagalog's loggers (``sagalog.*``) put their saga fields
in each record through ``extra=``, and :class:`JsonFormatter` writes every record
as one JSON object. Every line about a saga carries:

``correlation_id``  the saga id
``saga_type``       the saga's type
``step``            the step concerned, if any
``attempt``         the attempt of that step's action or compensation, if any
``kind``            ``action`` or ``compensation``, if it concerns a command
``causation_id``    the id of the message that caused the transition (reply,
                    upstream event), if any
``event``           the saga event's name (``StepFailed``…), for transitions
``command_id``      for dispatches, the command's deterministic id
``message_id``      for broker logs, the id of the message in hand

:class:`SagaTransitionLogger` logs each transition once — it is a handler for
:class:`~sagalog.infrastructure.messaging.observer.SagaEventFollower`, so whichever process
recorded the transition, the one observer following the log writes its line —
at the level it deserves: ``INFO`` for a saga started, completed or compensated
and for a compensation done; ``WARNING`` for failures, timeouts, retries, the
start of compensation and operator actions; ``ERROR`` for a dead letter;
``DEBUG`` for routine dispatches and step completions.

(The module is called ``logs``, not ``logging``, so it never shadows the stdlib.)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

from sagalog.domain import Saga
from sagalog.infrastructure.messaging.observer import ObservedEvent

#: The saga fields a record may carry, in the order the JSON formatter writes them.
SAGA_FIELDS: tuple[str, ...] = (
    "correlation_id",
    "saga_type",
    "step",
    "attempt",
    "kind",
    "causation_id",
    "event",
    "command_id",
    "message_id",
    "status",
    "error",
    "reason",
    "actor",
    "notification_id",
)

TRANSITIONS_LOGGER = "sagalog.transitions"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, saga fields.

    Fields that are absent or None are left out; an exception is added as ``exc``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in SAGA_FIELDS:
            found = getattr(record, name, None)
            if found is not None:
                entry[name] = found if isinstance(found, int | float | bool) else str(found)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


#: Line breaks and other control characters as visible escapes (tab is kept).
_CONTROL_ESCAPES: Final = {
    **{code: f"\\x{code:02x}" for code in [*range(32), 127] if code != 9},
    10: "\\n",
    13: "\\r",
}


def one_line(text: str) -> str:
    """``text`` with its line breaks and control characters escaped, so that an actor,
    a reason or an error text in a record cannot start a line that looks like another."""
    return text.translate(_CONTROL_ESCAPES)


class KeyValueFormatter(logging.Formatter):
    """The usual text line, followed by the saga fields as ``key=value`` pairs.

    The line and the fields are one line whatever they hold; only a traceback, added
    after them, spans lines.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = one_line(super().formatMessage(record))
        pairs = [
            f"{name}={one_line(str(getattr(record, name)))}"
            for name in SAGA_FIELDS
            if getattr(record, name, None) is not None
        ]
        return f"{line} [{' '.join(pairs)}]" if pairs else line


def configure_logging(
    level: int | str = "INFO", *, json_lines: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Send sagalog's logs to ``stream`` (stderr), as JSON lines or text with fields.

    Replaces a handler this function installed before; returns the new handler.
    """
    root = logging.getLogger("sagalog")
    for old in [h for h in root.handlers if getattr(h, "_sagalog", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    handler._sagalog = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def saga_fields(event: Saga.Event, saga_type: str | None = None) -> dict[str, Any]:
    """The log fields of a saga event (for ``extra=``)."""
    fields: dict[str, Any] = {
        "correlation_id": str(event.originator_id),
        "saga_type": saga_type or getattr(event, "saga_type", None),
        "event": type(event).__name__,
        "causation_id": event.causation_id,
        "step": getattr(event, "step", None),
        "attempt": getattr(event, "attempt", None),
    }
    if isinstance(event, _COMPENSATION_EVENTS) or getattr(event, "kind", None) == "compensation":
        fields["kind"] = "compensation"
    elif fields["step"] is not None:
        fields["kind"] = "action"
    command_id = getattr(event, "command_id", None)
    if command_id is not None:
        fields["command_id"] = str(command_id)
    for name in ("error", "reason", "actor"):
        found = getattr(event, name, None)
        if found is not None:
            fields[name] = found
    return fields


_COMPENSATION_EVENTS = (
    Saga.CompensationDispatched,
    Saga.CompensationCompleted,
    Saga.CompensationFailed,
    Saga.CompensationTimedOut,
    Saga.CompensationRetryScheduled,
)

#: The level and message of each transition (``{step}``, ``{attempt}``… are fields).
TRANSITION_LEVELS: Mapping[type[Saga.Event], tuple[int, str]] = {
    Saga.SagaStarted: (logging.INFO, "saga started"),
    Saga.StepDispatched: (logging.DEBUG, "step {step} dispatched (attempt {attempt})"),
    Saga.StepCompleted: (logging.DEBUG, "step {step} completed (attempt {attempt})"),
    Saga.StepFailed: (logging.WARNING, "step {step} failed (attempt {attempt}): {error}"),
    Saga.StepTimedOut: (logging.WARNING, "step {step} timed out (attempt {attempt})"),
    Saga.StepRetryScheduled: (
        logging.WARNING,
        "step {step} will be retried as attempt {attempt}",
    ),
    Saga.CompensationRequested: (logging.WARNING, "compensation requested: {reason}"),
    Saga.CompensationDispatched: (
        logging.DEBUG,
        "compensation of {step} dispatched (attempt {attempt})",
    ),
    Saga.CompensationCompleted: (
        logging.INFO,
        "compensation of {step} completed (attempt {attempt})",
    ),
    Saga.CompensationFailed: (
        logging.WARNING,
        "compensation of {step} failed (attempt {attempt}): {error}",
    ),
    Saga.CompensationTimedOut: (
        logging.WARNING,
        "compensation of {step} timed out (attempt {attempt})",
    ),
    Saga.CompensationRetryScheduled: (
        logging.WARNING,
        "compensation of {step} will be retried as attempt {attempt}",
    ),
    Saga.SagaCompleted: (logging.INFO, "saga completed"),
    Saga.SagaFailed: (logging.INFO, "saga compensated: {reason}"),
    Saga.SagaDeadLettered: (
        logging.ERROR,
        "saga dead-lettered: {kind} of {step} failed after {attempt} attempts: {error}",
    ),
    Saga.OperatorRetried: (logging.WARNING, "operator {actor} retried {step}: {reason}"),
    Saga.OperatorResolved: (logging.WARNING, "operator {actor} resolved {step}: {reason}"),
    Saga.SagaAborted: (logging.WARNING, "operator {actor} aborted the saga: {reason}"),
}


class SagaTransitionLogger:
    """Logs each saga transition once, with its fields (a follower handler)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(TRANSITIONS_LOGGER)

    def __call__(self, observed: ObservedEvent) -> None:
        event = observed.event
        level, template = TRANSITION_LEVELS.get(type(event), (logging.INFO, type(event).__name__))
        if not self.logger.isEnabledFor(level):
            return
        fields = saga_fields(event, observed.saga_type)
        if isinstance(event, Saga.SagaDeadLettered):
            fields["attempt"] = event.attempts
            fields["kind"] = event.kind
        fields["notification_id"] = observed.notification_id
        text = template.format_map(_Blank(fields))
        self.logger.log(
            level, "%s %s: %s", observed.saga_type, event.originator_id, text, extra=fields
        )


class _Blank(dict[str, Any]):
    """A format map that leaves unknown names as ``?``."""

    def __missing__(self, key: str) -> str:
        return "?"
