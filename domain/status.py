"""The states of a saga and of its steps, and what handling a reply did."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SagaStatus(StrEnum):
    """Where a saga is in its life.

    ``COMPLETED`` and ``FAILED`` are absorbing: nothing later changes them.
    ``DEAD_LETTERED`` waits for an operator (retry, resolve by hand).
    """

    STARTED = "STARTED"
    PENDING = "PENDING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"

    @property
    def is_terminal(self) -> bool:
        """``COMPLETED`` and ``FAILED`` never change again."""
        return self in (SagaStatus.COMPLETED, SagaStatus.FAILED)


class StepStatus(StrEnum):
    """Where one step is: its action first, then (if the saga rolls back) its compensation."""

    NOT_STARTED = "NOT_STARTED"
    DISPATCHED = "DISPATCHED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABANDONED = "ABANDONED"
    RESOLVED = "RESOLVED"
    COMPENSATION_DISPATCHED = "COMPENSATION_DISPATCHED"
    COMPENSATION_RETRY_SCHEDULED = "COMPENSATION_RETRY_SCHEDULED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    COMPENSATION_RESOLVED = "COMPENSATION_RESOLVED"


class CommandKind(StrEnum):
    """Whether a command does a step (``action``) or undoes it (``compensation``)."""

    ACTION = "action"
    COMPENSATION = "compensation"


class Outcome(StrEnum):
    """What handling one reply did to its saga."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    #: A success that came after its attempt timed out or the saga stopped going
    #: forward: recorded as a fact (``StepCompletedLate``), it only adds a compensation.
    LATE = "late"


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """The answer to a reply: applied, or a duplicate or stale reply that recorded nothing."""

    outcome: Outcome
    reason: str = ""

    @property
    def applied(self) -> bool:
        """True when the reply changed the saga (applied, or recorded as a late fact)."""
        return self.outcome is Outcome.APPLIED or self.outcome is Outcome.LATE


APPLIED = ReplyOutcome(Outcome.APPLIED)
