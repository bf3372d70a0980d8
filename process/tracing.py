"""The manager's tracing hook: what a tracer is told about transitions and replies.

``SagaManager.tracer`` is ``None`` unless tracing is switched on
(``sagalog.infrastructure.observability.tracing.enable_tracing``), and then every
commit tells it which sagas moved, with their new events, and every reply handled
tells it the outcome. With no tracer the cost is one attribute test per commit; this
module imports nothing of OpenTelemetry (the implementation lives in infrastructure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sagalog.domain import ReplyOutcome, Saga

__all__ = ["TransitionTracer"]


class TransitionTracer(Protocol):
    """Told of each recorded transition and each reply handled, after the fact."""

    def recorded(
        self, transitions: Sequence[tuple[Saga, Sequence[Any]]], started_ns: int, ended_ns: int
    ) -> None:
        """``transitions`` (each saga and the events it just recorded) committed in one go."""
        ...

    def reply_handled(self, reply: Any, outcome: ReplyOutcome | Exception) -> None:
        """The reply message ``reply`` (a ``Reply``) was decided: ``outcome`` or an error."""
        ...
