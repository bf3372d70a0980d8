"""Time travel: a saga's state after each of its events, rebuilt from its own log.

``replay(manager, saga_id)`` folds the saga's events one by one into a fresh
aggregate and takes a :class:`SagaSnapshot` after each, so a debugger can watch
the status, every step's status and attempt, the pending command and the next
wake-up change event by event, and which steps were out at once (``in_flight``;
:func:`concurrent_spans` groups the stretches where several were).
``state_at(manager, saga_id, version)`` gives the state at one version. Nothing
here writes to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sagalog.domain import Saga, SagalogError
from sagalog.domain.status import CommandKind
from sagalog.process.manager import SagaManager

__all__ = [
    "ConcurrentSpan",
    "PendingCommand",
    "ReplayStep",
    "SagaSnapshot",
    "StepSnapshot",
    "VersionOutOfRangeError",
    "concurrent_spans",
    "replay",
    "snapshot_of",
    "state_at",
]


class VersionOutOfRangeError(SagalogError, LookupError):
    """A saga version that the saga never had (versions run from 1 to its event count)."""


@dataclass(frozen=True, slots=True)
class StepSnapshot:
    """One step's state at one moment."""

    name: str
    status: str
    attempt: int
    compensation_attempt: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "attempt": self.attempt,
            "compensation_attempt": self.compensation_attempt,
        }


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """The command a saga waits on: which step, action or compensation, name, attempt."""

    step: str
    kind: CommandKind
    name: str
    attempt: int
    deadline: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind.value,
            "name": self.name,
            "attempt": self.attempt,
            "deadline": _iso(self.deadline),
        }


@dataclass(frozen=True, slots=True)
class SagaSnapshot:
    """A saga's state at one version, detached from the aggregate."""

    saga_id: UUID
    saga_type: str
    version: int
    status: str
    current_step: str | None
    steps: tuple[StepSnapshot, ...]
    pending: PendingCommand | None
    next_wakeup: datetime | None
    last_error: str | None
    failure_reason: str | None
    dead_letter: str | None
    #: Steps whose action or compensation was sent and is still unanswered, in list
    #: order; more than one only in a saga with steps in parallel.
    in_flight: tuple[str, ...] = ()

    def step(self, name: str) -> StepSnapshot:
        """The snapshot of step ``name``; ``KeyError`` if the saga has no such step."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_id": str(self.saga_id),
            "saga_type": self.saga_type,
            "version": self.version,
            "status": self.status,
            "current_step": self.current_step,
            "steps": [s.to_json() for s in self.steps],
            "pending": self.pending.to_json() if self.pending else None,
            "next_wakeup": _iso(self.next_wakeup),
            "last_error": self.last_error,
            "failure_reason": self.failure_reason,
            "dead_letter": self.dead_letter,
            "in_flight": list(self.in_flight),
        }


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One event of a saga's log and the state the saga had right after it."""

    version: int
    event_type: str
    timestamp: datetime
    state: SagaSnapshot

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "event_type": self.event_type,
            "timestamp": _iso(self.timestamp),
            "state": self.state.to_json(),
        }


def snapshot_of(saga: Saga) -> SagaSnapshot:
    """Copy the parts of ``saga`` a debugger looks at into an immutable snapshot."""
    pending = saga.pending_command
    dead = saga.dead_letter
    return SagaSnapshot(
        saga_id=saga.id,
        saga_type=saga.saga_type,
        version=saga.version,
        status=saga.status.value,
        current_step=saga.current_step,
        steps=tuple(
            StepSnapshot(
                name=st.name,
                status=st.status.value,
                attempt=st.attempt,
                compensation_attempt=st.compensation_attempt,
            )
            for st in saga.steps.values()
        ),
        pending=(
            PendingCommand(
                step=pending.step,
                kind=pending.kind,
                name=pending.name,
                attempt=pending.attempt,
                deadline=pending.deadline,
            )
            if pending is not None
            else None
        ),
        next_wakeup=saga.next_wakeup,
        last_error=saga.last_error,
        failure_reason=saga.failure_reason,
        dead_letter=(
            f"{dead.kind.value} of {dead.step} after {dead.attempts} attempt"
            f"{'' if dead.attempts == 1 else 's'}: {dead.error}"
            if dead is not None
            else None
        ),
        in_flight=tuple(
            name for name in saga.steps if name in {*saga.steps_in_flight, *saga.steps_blocking}
        ),
    )


@dataclass(frozen=True, slots=True)
class ConcurrentSpan:
    """Consecutive versions at which several steps were in flight at once."""

    first_version: int
    last_version: int
    #: Every step in flight at some version of the span, in list order.
    steps: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_version": self.first_version,
            "last_version": self.last_version,
            "steps": list(self.steps),
        }


def concurrent_spans(steps: list[ReplayStep]) -> list[ConcurrentSpan]:
    """The stretches of a replay where two or more steps were in flight together.

    Empty for a saga whose steps run one at a time; for a fan-out, the versions from
    the second dispatch until only one command is left out.
    """
    spans: list[ConcurrentSpan] = []
    first: int | None = None
    last = 0
    names: set[str] = set()
    order: list[str] = [s.name for s in steps[0].state.steps] if steps else []
    for step in [*steps, None]:
        if step is not None and len(step.state.in_flight) > 1:
            first = step.version if first is None else first
            last = step.version
            names.update(step.state.in_flight)
            continue
        if first is not None:
            spans.append(ConcurrentSpan(first, last, tuple(n for n in order if n in names)))
            first, names = None, set()
    return spans


def replay(manager: SagaManager, saga_id: UUID) -> list[ReplayStep]:
    """The saga's state after each of its events, oldest first.

    :class:`~sagalog.domain.SagaNotFoundError` if there is no such saga.
    """
    events = manager.history(saga_id)
    steps: list[ReplayStep] = []
    saga: Any = None
    for event in events:
        saga = event.mutate(saga)
        steps.append(
            ReplayStep(
                version=event.originator_version,
                event_type=type(event).__name__,
                timestamp=event.timestamp,
                state=snapshot_of(saga),
            )
        )
    return steps


def state_at(manager: SagaManager, saga_id: UUID, version: int) -> SagaSnapshot:
    """The saga's state right after its event number ``version`` (1 is ``SagaStarted``).

    :class:`~sagalog.domain.SagaNotFoundError` if there is no such saga,
    :class:`VersionOutOfRangeError` if the saga never had that version.
    """
    events = manager.history(saga_id)
    if isinstance(version, bool) or not isinstance(version, int):
        raise VersionOutOfRangeError(f"versions are integers, not {type(version).__name__}")
    if not 1 <= version <= len(events):
        raise VersionOutOfRangeError(
            f"saga {saga_id} has versions 1 to {len(events)}; there is no version {version}"
        )
    saga: Any = None
    for event in events[:version]:
        saga = event.mutate(saga)
    return snapshot_of(saga)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
