"""The OpenTelemetry side of tracing (imported only when tracing is switched on).

See :mod:`sagalog.infrastructure.observability.tracing` for what is traced and how one
saga becomes one trace.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from hashlib import sha1
from typing import TYPE_CHECKING, Any
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sagalog.domain import Command, ReplyOutcome, Saga
from sagalog.domain.errors import first_line

if TYPE_CHECKING:
    from sagalog.infrastructure.services.fencing import Answer

__all__ = ["OTelTracing", "file_tracer_provider", "saga_span_context"]

_PROPAGATOR = TraceContextTextMapPropagator()
#: Replies whose sender's traceparent is remembered at most at once.
_MAX_REPLY_PARENTS = 10_000
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def saga_span_context(saga_id: UUID) -> SpanContext:
    """The virtual root of saga ``saga_id``'s trace: trace id = the saga id."""
    span_id = int.from_bytes(sha1(saga_id.bytes, usedforsecurity=False).digest()[:8], "big")
    return SpanContext(
        trace_id=saga_id.int, span_id=span_id or 1, is_remote=True, trace_flags=_SAMPLED
    )


def _saga_context(saga_id: UUID) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(saga_span_context(saga_id)))


def _command_attributes(command: Command) -> dict[str, Any]:
    return {
        "saga.id": str(command.saga_id),
        "saga.type": command.saga_type,
        "saga.step": command.step,
        "saga.attempt": command.attempt,
        "saga.command.kind": command.kind.value,
        "saga.command.name": command.name,
        "saga.command.id": str(command.command_id),
    }


class OTelTracing:
    """Spans for transitions, sends, replies and handlers on ``tracer_provider``."""

    def __init__(self, tracer_provider: Any = None) -> None:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer_provider = provider
        self.tracer = provider.get_tracer("sagalog")
        #: The ``traceparent`` each reply arrived under, by message id, until it is decided.
        self._reply_parents: dict[str, str] = {}
        self._lock = threading.Lock()

    def current_traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the current span, if any."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    def note_reply_parent(self, message_id: str, traceparent: str) -> None:
        """Make the span of reply ``message_id`` the child of ``traceparent`` (its sender's)."""
        with self._lock:
            if len(self._reply_parents) >= _MAX_REPLY_PARENTS:
                self._reply_parents.clear()  # replies never decided (dead-lettered): forget
            self._reply_parents[message_id] = traceparent

    # -- the manager (sagalog.process.tracing.TransitionTracer) -----------------------

    def recorded(
        self, transitions: Sequence[tuple[Saga, Sequence[Any]]], started_ns: int, ended_ns: int
    ) -> None:
        """One span per saga that moved, from the start to the end of the commit."""
        caller = trace.get_current_span().get_span_context()
        for saga, events in transitions:
            if not events:
                continue
            last = events[-1]
            links = []
            started = any(isinstance(event, Saga.SagaStarted) for event in events)
            if started and caller.is_valid and caller.trace_id != saga.id.int:
                links.append(Link(caller))
            step = getattr(last, "step", None) or saga.current_step
            attempt = getattr(last, "attempt", None)
            attributes: dict[str, Any] = {
                "saga.id": str(saga.id),
                "saga.type": saga.saga_type,
                "saga.status": str(saga.status),
                "saga.outcome": type(last).__name__,
                "saga.events": [type(event).__name__ for event in events],
                "saga.version": saga.version,
            }
            if step is not None:
                attributes["saga.step"] = str(step)
            if attempt is not None:
                attributes["saga.attempt"] = int(attempt)
            span = self.tracer.start_span(
                f"saga.transition {saga.saga_type}",
                context=_saga_context(saga.id),
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                links=links,
                start_time=started_ns,
            )
            span.end(end_time=ended_ns)

    def reply_handled(self, reply: Any, outcome: ReplyOutcome | Exception) -> None:
        """One span per reply decided, with its outcome (or the error's class)."""
        attributes: dict[str, Any] = {
            "saga.id": str(reply.saga_id),
            "saga.step": str(reply.step),
            "saga.command.kind": str(reply.kind),
            "saga.reply.outcome": str(reply.outcome),
            "saga.reply.id": str(reply.message_id),
        }
        if reply.attempt is not None:
            attributes["saga.attempt"] = int(reply.attempt)
        attributes["saga.outcome"] = (
            outcome.outcome.value if isinstance(outcome, ReplyOutcome) else type(outcome).__name__
        )
        with self._lock:
            carrier = self._reply_parents.pop(str(reply.message_id), None)
        span = self.tracer.start_span(
            f"saga.reply {reply.step}",
            context=(
                _PROPAGATOR.extract({"traceparent": carrier})
                if carrier
                else _saga_context(reply.saga_id)
            ),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        if isinstance(outcome, Exception):
            span.set_status(Status(StatusCode.ERROR, first_line(outcome)))
        span.end()

    # -- the relay and the participant -----------------------------------------------

    def send(self, command: Command, send: Callable[[Command], None]) -> None:
        """Send ``command`` in a producer span; the command carries the span's traceparent."""
        with self.tracer.start_as_current_span(
            f"saga.send {command.name}",
            context=_saga_context(command.saga_id),
            kind=SpanKind.PRODUCER,
            attributes=_command_attributes(command),
        ) as span:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            try:
                send(dataclasses.replace(command, traceparent=carrier.get("traceparent")))
            except Exception as exc:
                span.set_attribute("saga.outcome", "error")
                span.set_status(Status(StatusCode.ERROR, first_line(exc)))
                raise
            span.set_attribute("saga.outcome", "sent")

    def handle(
        self, command: Command, traceparent: str | None, answer: Callable[[Command], Answer]
    ) -> Answer:
        """Answer ``command`` in a consumer span continuing the relay's ``traceparent``."""
        carrier = traceparent or command.traceparent
        context = (
            _PROPAGATOR.extract({"traceparent": carrier})
            if carrier
            else _saga_context(command.saga_id)
        )
        with self.tracer.start_as_current_span(
            f"saga.handle {command.name}",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes=_command_attributes(command),
        ) as span:
            result = answer(command)
            span.set_attribute("saga.outcome", result.reply.outcome)
            span.set_attribute("saga.handling", result.handling.value)
            if result.reply.outcome != "completed":
                span.set_status(Status(StatusCode.ERROR, result.reply.error or "failed"))
            return result


class _JsonLinesExporter:
    """A span exporter writing one JSON line per span to a file (appending)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [_span_line(span) for span in spans]
        with self._lock, open(self.path, "a", encoding="utf-8") as file:
            file.writelines(lines)
            file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _span_line(span: Any) -> str:
    import json

    context = span.get_span_context()
    parent = span.parent
    return (
        json.dumps(
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
                "start": span.start_time,
                "end": span.end_time,
                "status": span.status.status_code.name,
                "attributes": dict(span.attributes or {}),
                "links": [f"{link.context.trace_id:032x}" for link in span.links],
                "resource": dict(span.resource.attributes),
            },
            default=str,
        )
        + "\n"
    )


def file_tracer_provider(path: str) -> Any:
    """An SDK tracer provider that writes every span to ``path`` as it ends (JSON lines)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_JsonLinesExporter(path)))  # type: ignore[arg-type]
    return provider
