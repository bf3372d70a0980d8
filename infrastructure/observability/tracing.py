"""Tracing switch: OpenTelemetry spans for saga transitions, sends, replies and handlers.

Off by default, and then nothing of OpenTelemetry is imported and the code paths cost
one test each. :func:`enable_tracing` switches it on for the process (it needs the
``otel`` extra): every :class:`~sagalog.process.SagaManager` then reports its commits
and replies, the command relay wraps each send in a span and puts the W3C
``traceparent`` in the command (RabbitMQ header and message, and the ``Command`` the
in-process transport hands over), and the participant helper continues it.

One saga is one trace: the trace id *is* the saga id (128 bits each), and every span of
the saga hangs under a virtual root whose span id is derived from the saga id. The trace
context is therefore stored in every event of the saga, without a field of its own: a
timer that fires after a restart, in another worker, continues the same trace. A saga
started inside another trace (a web request) links its first span to it.

:func:`enable_from_env` reads ``SAGALOG_TRACING`` (``otel``: the global tracer provider)
and ``SAGALOG_TRACING_FILE`` (a path: an SDK provider exporting each span as a JSON line
there, for tests and for looking at one process's spans without a collector). The worker
and the participant helper call it when they start. See docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sagalog.domain import Command

if TYPE_CHECKING:
    from sagalog.infrastructure.observability.otel import OTelTracing
    from sagalog.infrastructure.services.fencing import Answer

__all__ = [
    "TRACEPARENT_HEADER",
    "TRACING_ENV_VAR",
    "TRACING_FILE_ENV_VAR",
    "active",
    "current_traceparent",
    "disable_tracing",
    "enable_from_env",
    "enable_tracing",
    "handle_traced",
    "note_reply_parent",
    "send_traced",
]

#: The W3C trace-context header (AMQP application header, and key in command messages).
TRACEPARENT_HEADER = "traceparent"
#: ``otel`` switches tracing on with the global OpenTelemetry tracer provider.
TRACING_ENV_VAR = "SAGALOG_TRACING"
#: A path: spans are exported there as JSON lines (an SDK provider of sagalog's own).
TRACING_FILE_ENV_VAR = "SAGALOG_TRACING_FILE"

_active: OTelTracing | None = None


def active() -> OTelTracing | None:
    """The tracing in force (``None``: off)."""
    return _active


def enable_tracing(tracer_provider: Any = None) -> OTelTracing:
    """Switch tracing on for this process, with ``tracer_provider`` (default: the global one).

    Needs ``pip install 'sagalog[otel]'``; raises ``ImportError`` naming it otherwise.
    """
    global _active
    try:
        from sagalog.infrastructure.observability.otel import OTelTracing
    except ImportError as exc:
        raise ImportError(
            f"tracing needs OpenTelemetry ({exc}); install it with: pip install 'sagalog[otel]'"
        ) from exc
    from sagalog.process import SagaManager

    _active = OTelTracing(tracer_provider)
    SagaManager.tracer = _active
    return _active


def disable_tracing() -> None:
    """Switch tracing off again."""
    global _active
    from sagalog.process import SagaManager

    _active = None
    SagaManager.tracer = None


def enable_from_env(env: Mapping[str, str] | None = None) -> OTelTracing | None:
    """Switch tracing on if ``SAGALOG_TRACING=otel`` or ``SAGALOG_TRACING_FILE`` is set."""
    env = os.environ if env is None else env
    path = env.get(TRACING_FILE_ENV_VAR, "").strip()
    wanted = env.get(TRACING_ENV_VAR, "").strip().lower()
    if path:
        from sagalog.infrastructure.observability.otel import file_tracer_provider

        return enable_tracing(file_tracer_provider(path))
    if wanted in ("otel", "1", "true", "on"):
        return enable_tracing()
    return None


def send_traced(command: Command, send: Callable[[Command], None]) -> None:
    """``send(command)``, in a span carrying its ``traceparent`` when tracing is on."""
    tracing = _active
    if tracing is None:
        send(command)
    else:
        tracing.send(command, send)


def handle_traced(
    command: Command, traceparent: str | None, answer: Callable[[Command], Answer]
) -> Answer:
    """``answer(command)``, in a span continuing ``traceparent`` when tracing is on."""
    tracing = _active
    if tracing is None:
        return answer(command)
    return tracing.handle(command, traceparent, answer)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span in force (``None`` when tracing is off)."""
    tracing = _active
    return None if tracing is None else tracing.current_traceparent()


def note_reply_parent(message_id: str, traceparent: object) -> None:
    """Remember the reply ``message_id`` arrived under ``traceparent`` (when tracing is on)."""
    tracing = _active
    if tracing is not None and isinstance(traceparent, str):
        tracing.note_reply_parent(message_id, traceparent)
