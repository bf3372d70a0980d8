"""Given / when / then for one saga, on a real ``SagaManager``.

A scenario starts a saga of your definition on an in-memory manager with a
:class:`~sagalog.testing.clock.ManualClock`, brings it into a state with
``given(...)``, makes one thing happen with ``when(...)`` and checks what that
one thing did with ``then_*``::

    (
        scenario(order_fulfillment, {"order_id": "o-1", "amount": 42})
        .given(completed("reserve_inventory", {"reservation": "r-9"}))
        .when(failed("process_payment", "card declined"))
        .then_dispatched("InventoryService.ReleaseItems")
        .then_status(SagaStatus.COMPENSATING)
    )

What can happen: replies (:func:`completed`, :func:`failed`, :func:`compensated`,
:func:`compensation_failed`), time passing (:func:`time_passes`, which ticks the
manager) and operators acting (:func:`retried`, :func:`resolved`, :func:`aborted`).
A ``given`` reply must be applied (otherwise the scenario is not in the state it
claims, and says so); a ``when`` reply may be a duplicate or stale, which
:meth:`Scenario.then_outcome` checks. Before any ``when``, the ``then_*`` methods
look at the start of the saga. A broken expectation raises ``AssertionError``
with the expected and actual values side by side and the saga's history.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Self
from uuid import UUID

from sagalog.domain import (
    CommandKind,
    Outcome,
    ReplyOutcome,
    Saga,
    SagaDefinition,
    SagaStatus,
)
from sagalog.process import SagaManager
from sagalog.testing.clock import ManualClock
from sagalog.testing.laws import describe_history
from sagalog.testing.replies import send_reply

__all__ = [
    "Happening",
    "OperatorActs",
    "ReplyArrives",
    "Scenario",
    "TimePasses",
    "aborted",
    "compensated",
    "compensation_failed",
    "completed",
    "failed",
    "resolved",
    "retried",
    "scenario",
    "time_passes",
]


@dataclass(frozen=True)
class ReplyArrives:
    """A participant's reply about the action or compensation of ``step``."""

    step: str
    kind: CommandKind
    succeeded: bool
    result: Any = None
    error: str = "failed"
    attempt: int | None = None
    message_id: str | None = None

    def __str__(self) -> str:
        verb = {
            (CommandKind.ACTION, True): "completed",
            (CommandKind.ACTION, False): "failed",
            (CommandKind.COMPENSATION, True): "compensated",
            (CommandKind.COMPENSATION, False): "compensation_failed",
        }[(self.kind, self.succeeded)]
        extra = [repr(self.step)]
        if self.succeeded and self.result is not None:
            extra.append(repr(self.result))
        if not self.succeeded:
            extra.append(repr(self.error))
        if self.attempt is not None:
            extra.append(f"attempt={self.attempt}")
        if self.message_id is not None:
            extra.append(f"message_id={self.message_id!r}")
        return f"{verb}({', '.join(extra)})"


@dataclass(frozen=True)
class TimePasses:
    """The clock moves on by ``by``, then the manager ticks (timeouts and retries fire)."""

    by: timedelta

    def __str__(self) -> str:
        return f"time_passes({self.by.total_seconds():g}s)"


@dataclass(frozen=True)
class OperatorActs:
    """An operator retries or resolves a dead-lettered saga, or aborts a running one."""

    verb: Literal["retry", "resolve", "abort"]
    actor: str
    reason: str

    def __str__(self) -> str:
        return f"{self.verb} by {self.actor!r} ({self.reason})"


#: Anything a scenario can make happen.
Happening = ReplyArrives | TimePasses | OperatorActs


def completed(
    step: str, result: Any = None, *, attempt: int | None = None, message_id: str | None = None
) -> ReplyArrives:
    """The action of ``step`` succeeded with ``result``."""
    return ReplyArrives(step, CommandKind.ACTION, True, result, "", attempt, message_id)


def failed(
    step: str, error: str = "failed", *, attempt: int | None = None, message_id: str | None = None
) -> ReplyArrives:
    """The action of ``step`` failed because ``error``."""
    return ReplyArrives(step, CommandKind.ACTION, False, None, error, attempt, message_id)


def compensated(
    step: str, *, attempt: int | None = None, message_id: str | None = None
) -> ReplyArrives:
    """The compensation of ``step`` succeeded."""
    return ReplyArrives(step, CommandKind.COMPENSATION, True, None, "", attempt, message_id)


def compensation_failed(
    step: str, error: str = "failed", *, attempt: int | None = None, message_id: str | None = None
) -> ReplyArrives:
    """The compensation of ``step`` failed because ``error``."""
    return ReplyArrives(step, CommandKind.COMPENSATION, False, None, error, attempt, message_id)


def time_passes(by: timedelta | float) -> TimePasses:
    """``by`` (a timedelta, or seconds) passes; due timeouts and retries fire."""
    return TimePasses(by if isinstance(by, timedelta) else timedelta(seconds=by))


def retried(by: str = "operator", reason: str = "retrying") -> OperatorActs:
    """An operator retries the dead-lettered command."""
    return OperatorActs("retry", by, reason)


def resolved(by: str = "operator", reason: str = "done by hand") -> OperatorActs:
    """An operator declares the dead-lettered command done by hand."""
    return OperatorActs("resolve", by, reason)


def aborted(by: str = "operator", reason: str = "aborted") -> OperatorActs:
    """An operator aborts the running saga (it compensates what it has done)."""
    return OperatorActs("abort", by, reason)


class Scenario:
    """One saga on its own manager: ``given`` brings it somewhere, ``when`` makes one
    thing happen, ``then_*`` check what that did. Every method returns the scenario,
    so a test reads as one chained expression."""

    def __init__(
        self,
        definition: SagaDefinition,
        data: dict[str, Any] | None = None,
        *,
        database_url: str = "memory://",
        clock: ManualClock | None = None,
        saga_id: UUID | None = None,
    ) -> None:
        self.definition = definition
        self.clock = clock or ManualClock()
        self.manager = SagaManager([definition], database_url, clock=self.clock)
        self.saga_id = self.manager.start(
            definition.name, dict(data or {}), saga_id=saga_id, version=definition.version
        )
        self._step: str = f"start of {definition.name}"
        self._before = 0
        self._outcome: ReplyOutcome | None = None

    # -- what happens ------------------------------------------------------------

    def given(self, *happenings: Happening) -> Self:
        """Make each of ``happenings`` happen, in order; a reply must be applied."""
        for happening in happenings:
            outcome = self._make(happening)
            if outcome is not None and not outcome.applied:
                self._fail(
                    f"given {happening}: the reply was not applied ({outcome.outcome.value}: "
                    f"{outcome.reason}), so the saga is not where the scenario says"
                )
        self._before = len(self.history)
        self._step = f"given {', '.join(str(h) for h in happenings)}"
        return self

    def when(self, happening: Happening) -> Self:
        """Make ``happening`` happen; the ``then_*`` methods look at what it did."""
        self._before = len(self.history)
        self._outcome = self._make(happening)
        self._step = f"when {happening}"
        return self

    def _make(self, happening: Happening) -> ReplyOutcome | None:
        if isinstance(happening, ReplyArrives):
            return send_reply(
                self.manager,
                self.saga_id,
                happening.step,
                happening.kind,
                happening.succeeded,
                result=happening.result,
                error=happening.error,
                attempt=happening.attempt,
                message_id=happening.message_id,
            )
        if isinstance(happening, TimePasses):
            self.manager.tick(self.clock.advance(happening.by))
            return None
        act = getattr(self.manager, happening.verb)
        act(self.saga_id, actor=happening.actor, reason=happening.reason)
        return None

    # -- what it did -------------------------------------------------------------

    @property
    def saga(self) -> Saga:
        """The saga as it is now."""
        return self.manager.get(self.saga_id)

    @property
    def history(self) -> list[Saga.Event]:
        """All of the saga's events, oldest first."""
        return self.manager.history(self.saga_id)

    @property
    def new_events(self) -> list[Saga.Event]:
        """The events the last ``when`` (or the start, or the last ``given``) recorded."""
        return self.history[self._before :]

    @property
    def dispatched(self) -> list[str]:
        """The names of the commands the last ``when`` dispatched, in order."""
        return [
            e.command_name
            for e in self.new_events
            if isinstance(e, Saga.StepDispatched | Saga.CompensationDispatched)
        ]

    def then_dispatched(self, *command_names: str) -> Self:
        """Exactly these commands were dispatched, in this order (none if none given)."""
        self._expect("the commands dispatched", list(command_names), self.dispatched)
        return self

    def then_nothing_dispatched(self) -> Self:
        """No command was dispatched."""
        return self.then_dispatched()

    def then_status(self, status: SagaStatus | str) -> Self:
        """The saga's status is now ``status``."""
        self._expect("the saga's status", SagaStatus(status).value, self.saga.status.value)
        return self

    def then_events(self, *event_names: str) -> Self:
        """Exactly these events were recorded (by class name, e.g. ``"StepCompleted"``)."""
        recorded = [type(e).__name__ for e in self.new_events]
        self._expect("the events recorded", list(event_names), recorded)
        return self

    def then_outcome(self, outcome: Outcome | str) -> Self:
        """The ``when`` reply was ``applied``, a ``duplicate`` or ``stale``."""
        actual = self._outcome.outcome.value if self._outcome is not None else None
        self._expect("the reply's outcome", Outcome(outcome).value, actual)
        return self

    # -- reporting -----------------------------------------------------------------

    def _expect(self, what: str, expected: Any, actual: Any) -> None:
        if expected == actual:
            return
        if isinstance(expected, list) and isinstance(actual, list):
            diff = "\n".join(
                f"    {line}"
                for line in difflib.ndiff([str(x) for x in expected], [str(x) for x in actual])
                if not line.startswith("?")
            )
            shown = (
                f"  expected: {expected}\n  actual:   {actual}\n"
                f"  diff (- expected, + actual):\n{diff}"
            )
        else:
            shown = f"  expected: {expected}\n  actual:   {actual}"
        self._fail(f"{self._step}: {what} differ\n{shown}")

    def _fail(self, problem: str) -> None:
        raise AssertionError(
            f"{problem}\nsaga {self.saga_id} ({self.definition.name}):\n"
            f"{describe_history(self.history)}"
        )

    def close(self) -> None:
        """Close the manager (needed for file and server databases only)."""
        self.manager.close()


def scenario(
    definition: SagaDefinition,
    data: dict[str, Any] | None = None,
    *,
    database_url: str = "memory://",
    clock: ManualClock | None = None,
    saga_id: UUID | None = None,
) -> Scenario:
    """Start a saga of ``definition`` with ``data`` on a fresh manager (in memory unless
    ``database_url`` says otherwise) and return its :class:`Scenario`."""
    return Scenario(definition, data, database_url=database_url, clock=clock, saga_id=saga_id)
