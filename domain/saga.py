"""The ``Saga`` aggregate: one saga instance, rebuilt from its own append-only events.

Each public method *decides* — it checks the request against the current state
and either raises a typed error (recording nothing), answers that the request is
a duplicate or stale (recording nothing), or triggers one or more events. Each
event's ``apply`` *evolves* the state, and nothing else does, so a saga rebuilt
from its events at any version equals the live object at that version.

Time is always passed in (``now``); the domain never reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import resolve_topic

from sagalog.domain._speed import (
    ACTION,
    COMPENSATION,
    MutateWithoutProperties,
    SagaStatuses,
    StepStatuses,
    create_without_introspection,
    definition_dump,
    definition_from_dict,
    trigger,
)
from sagalog.domain.commands import Command, command_id_for
from sagalog.domain.definition import SagaDefinition, Step
from sagalog.domain.errors import (
    InvalidPayloadError,
    InvalidTransitionError,
    UnexpectedReplyError,
    UnknownStepError,
)
from sagalog.domain.payload import check_data, check_json, check_text
from sagalog.domain.status import (
    APPLIED,
    CommandKind,
    Outcome,
    ReplyOutcome,
    SagaStatus,
    StepStatus,
)

#: Step states in which the step's action succeeded (or an operator said it did).
_ACTION_DONE = frozenset(
    {
        StepStatus.COMPLETED,
        StepStatus.RESOLVED,
        StepStatus.COMPENSATION_DISPATCHED,
        StepStatus.COMPENSATION_RETRY_SCHEDULED,
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATION_FAILED,
        StepStatus.COMPENSATION_RESOLVED,
    }
)
_COMPENSATION_DONE = frozenset({StepStatus.COMPENSATED, StepStatus.COMPENSATION_RESOLVED})
#: Step states once its compensation was dispatched (or resolved by hand).
_COMPENSATION_STARTED = frozenset(
    {
        StepStatus.COMPENSATION_DISPATCHED,
        StepStatus.COMPENSATION_RETRY_SCHEDULED,
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATION_FAILED,
        StepStatus.COMPENSATION_RESOLVED,
    }
)
#: Step states in which an action that was dispatched has no known success.
_ACTION_NOT_DONE = frozenset(
    {
        StepStatus.DISPATCHED,
        StepStatus.RETRY_SCHEDULED,
        StepStatus.FAILED,
        StepStatus.TIMED_OUT,
        StepStatus.ABANDONED,
    }
)

#: Step states that wait for the outcome of a command, by the command's kind (timeouts).
_AWAITING_OUTCOME = {
    StepStatus.DISPATCHED: ACTION,
    StepStatus.COMPENSATION_DISPATCHED: COMPENSATION,
}
#: Step states that wait for a retry of a command, by the command's kind.
_RETRY_DUE = {
    StepStatus.RETRY_SCHEDULED: ACTION,
    StepStatus.COMPENSATION_RETRY_SCHEDULED: COMPENSATION,
}

#: Bound on how many timer firings one call to ``fire_due`` performs (zero-delay retries).
_MAX_FIRINGS_PER_CALL = 1000


@dataclass
class StepState:
    """The state of one step of one saga, action and compensation together."""

    name: str
    status: StepStatus = StepStatus.NOT_STARTED
    attempt: int = 0
    compensation_attempt: int = 0
    result: Any = None
    last_error: str | None = None
    deadline: datetime | None = None
    retry_due_at: datetime | None = None
    history: list[str] = field(default_factory=list)
    #: An attempt of the action ended without an answer (it timed out, or was in
    #: flight when the saga began to roll back): the action may have been done.
    uncertain: bool = False
    #: A success arrived after its attempt had timed out or been abandoned
    #: (``StepCompletedLate``): the action was done, late.
    late: bool = False
    #: The latest attempt of the action timed out (rather than failed or succeeded).
    timed_out: bool = False
    #: The late success came after the step's compensation had completed: either the
    #: action ran before it (undone) or the participant ran it after (not fenced).
    late_after_compensation: bool = False


@dataclass(frozen=True)
class DeadLetter:
    """Why a saga waits for an operator: which step, which kind of command, the last error."""

    step: str
    kind: CommandKind
    error: str
    attempts: int


class Saga(Aggregate):
    """A saga instance: its definition, data, status and the state of every step."""

    # -- events --------------------------------------------------------------------

    class Event(MutateWithoutProperties, Aggregate.Event):
        """Base of every saga event: carries the saga id as correlation id and the cause.

        ``mutate`` is eventsourcing's, reading the saga's attributes directly (``_speed``).
        """

        correlation_id: UUID
        causation_id: str | None

        def wakeup_at(self) -> datetime | None:
            """When the saga wants to be woken next if this is its latest event."""
            return None

        def apply(self, aggregate: Any) -> None:
            saga: Saga = aggregate
            saga.next_wakeup = self.wakeup_at()
            if self.causation_id is not None:
                saga.processed_messages.add(self.causation_id)
            self.evolve(saga)
            if saga.parallel:
                saga.next_wakeup = saga._earliest_due()
            if saga.deadline is not None:
                saga.next_wakeup = saga._with_deadline(saga.next_wakeup)

        def evolve(self, saga: Saga) -> None:
            """Change ``saga`` as this event says; overridden by each event."""

    class SagaStarted(Event, Aggregate.Created):
        """A saga began, pinned to one definition (stored whole, with its fingerprint)."""

        saga_type: str
        definition: dict[str, Any]
        definition_version: int
        definition_fingerprint: str
        data: dict[str, Any]

        def mutate(self, aggregate: Any) -> Any:
            """eventsourcing's ``Created.mutate``; a new ``Saga`` is built without introspection.

            An event naming another class, or given a saga, goes eventsourcing's way.
            """
            if aggregate is not None or resolve_topic(self.originator_topic) is not Saga:
                return super().mutate(aggregate)
            return create_without_introspection(Saga, self)

        def apply(self, aggregate: Any) -> None:
            saga: Saga = aggregate
            definition = definition_from_dict(self.definition, self.definition_fingerprint)
            saga._init_state(self.saga_type, definition, self.data)
            if definition.deadline is not None:
                saga.deadline = self.timestamp + definition.deadline
            super().apply(saga)

    class StepDispatched(Event):
        """The command of a step's action is to be sent (the log is the outbox)."""

        step: str
        attempt: int
        saga_type: str
        command_name: str
        command_id: UUID
        payload: dict[str, Any]
        deadline: datetime | None

        def wakeup_at(self) -> datetime | None:
            return self.deadline

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.DISPATCHED
            st.attempt = self.attempt
            st.timed_out = False
            st.deadline = self.deadline
            st.retry_due_at = None
            saga.current_step = self.step
            if saga.status is SagaStatuses.STARTED:
                saga.status = SagaStatuses.PENDING
            saga._pending_dispatch = self

        def command(self, payload: dict[str, Any] | None = None) -> Command:
            """The command this event carries (all the relay needs to send it); see ``_command``."""
            return _command(self, ACTION, payload)

    class StepCompleted(Event):
        """A step's action succeeded, with the participant's result."""

        step: str
        attempt: int
        result: Any

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.COMPLETED
            st.result = self.result
            st.deadline = None
            st.uncertain = False
            saga._answered(self.step)

    class StepCompletedLate(Event):
        """A success arrived for an attempt whose outcome the saga no longer waited for.

        The attempt had timed out, or was in flight when the saga began to roll back:
        the action did happen, late. The fact is recorded with the participant's result
        (which the compensation then carries), and if the saga is rolling back and the
        step's compensation was not yet planned, it is added to the plan. It never moves
        a saga forward and never changes a ``COMPLETED`` or ``FAILED`` status.
        """

        step: str
        attempt: int
        result: Any
        #: The saga's wake-up, unchanged by this fact (a retry or a deadline still due).
        next_wakeup: datetime | None

        def wakeup_at(self) -> datetime | None:
            return self.next_wakeup

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.late = True
            st.late_after_compensation = st.status in _COMPENSATION_DONE
            st.result = self.result
            if st.status is StepStatuses.ABANDONED:
                st.deadline = None
            if (
                saga.status in (SagaStatuses.COMPENSATING, SagaStatuses.DEAD_LETTERED)
                and st.status not in _COMPENSATION_STARTED
                and self.step not in saga.compensation_plan
                and saga.definition.step(self.step).compensatable
            ):
                planned = {*saga.compensation_plan, self.step}
                saga.compensation_plan = [
                    step.name for step in reversed(saga.definition.steps) if step.name in planned
                ]

    class StepFailed(Event):
        """A step's action failed, with the participant's error."""

        step: str
        attempt: int
        error: str

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.FAILED
            st.last_error = self.error
            st.deadline = None
            saga.last_error = self.error
            saga._answered(self.step)

    class StepTimedOut(Event):
        """No outcome arrived for a step's action before its deadline."""

        step: str
        attempt: int
        deadline: datetime

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.TIMED_OUT
            st.last_error = f"timed out at {self.deadline.isoformat()} (attempt {self.attempt})"
            st.deadline = None
            st.uncertain = True
            st.timed_out = True
            saga.last_error = st.last_error
            saga._answered(self.step)

    class StepRetryScheduled(Event):
        """The action will be attempted again (as ``attempt``) at ``due_at``."""

        step: str
        attempt: int
        due_at: datetime

        def wakeup_at(self) -> datetime | None:
            return self.due_at

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.RETRY_SCHEDULED
            st.retry_due_at = self.due_at

    class CompensationRequested(Event):
        """The saga rolls back: its completed and uncertain steps will be undone, newest first.

        ``uncertain_steps`` names the compensatable steps whose action was dispatched
        and whose outcome is unknown (timed out, or in flight now): they are
        compensated like completed ones. It was added in class version 2; events
        recorded before carry ``None`` ("old rules": only completed steps were
        planned), so old logs rebuild to the state they had. Steps in flight are
        marked uncertain either way, so such old sagas can be found and repaired.
        """

        class_version = 2

        reason: str
        failed_step: str | None
        uncertain_steps: list[str] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 planned only completed steps: no uncertain step was recorded."""
            state["uncertain_steps"] = None

        def evolve(self, saga: Saga) -> None:
            saga.status = SagaStatuses.COMPENSATING
            saga.failure_reason = self.reason
            saga.failed_step = self.failed_step
            saga._pending_dispatch = None
            for st in saga.steps.values():
                if st.status is StepStatuses.DISPATCHED:
                    st.uncertain = True
                if st.status in (StepStatuses.DISPATCHED, StepStatuses.RETRY_SCHEDULED):
                    in_flight = st.status is StepStatuses.DISPATCHED
                    st.status = StepStatuses.ABANDONED
                    if not (saga.parallel and in_flight):
                        st.deadline = None
                    st.retry_due_at = None
            uncertain = self.uncertain_steps or ()
            saga.compensation_plan = [
                step.name
                for step in reversed(saga.definition.steps)
                if step.compensatable
                and (
                    saga.steps[step.name].status is StepStatuses.COMPLETED or step.name in uncertain
                )
            ]
            saga.current_step = None

    class CompensationDispatched(Event):
        """The command of a step's compensation is to be sent."""

        step: str
        attempt: int
        saga_type: str
        command_name: str
        command_id: UUID
        payload: dict[str, Any]
        deadline: datetime | None

        def wakeup_at(self) -> datetime | None:
            return self.deadline

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.COMPENSATION_DISPATCHED
            st.compensation_attempt = self.attempt
            st.deadline = self.deadline
            st.retry_due_at = None
            saga.current_step = self.step
            saga._pending_dispatch = self

        def command(self, payload: dict[str, Any] | None = None) -> Command:
            """The command this event carries (all the relay needs to send it); see ``_command``."""
            return _command(self, COMPENSATION, payload)

    class CompensationCompleted(Event):
        """A step's compensation succeeded: its effect is undone."""

        step: str
        attempt: int

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.COMPENSATED
            st.deadline = None
            saga._answered(self.step)

    class CompensationFailed(Event):
        """A step's compensation failed, with the participant's error."""

        step: str
        attempt: int
        error: str

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.COMPENSATION_FAILED
            st.last_error = self.error
            st.deadline = None
            saga.last_error = self.error
            saga._answered(self.step)

    class CompensationTimedOut(Event):
        """No outcome arrived for a compensation before its deadline."""

        step: str
        attempt: int
        deadline: datetime

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.COMPENSATION_FAILED
            st.last_error = (
                f"compensation timed out at {self.deadline.isoformat()} (attempt {self.attempt})"
            )
            st.deadline = None
            saga.last_error = st.last_error
            saga._answered(self.step)

    class CompensationRetryScheduled(Event):
        """The compensation will be attempted again (as ``attempt``) at ``due_at``."""

        step: str
        attempt: int
        due_at: datetime

        def wakeup_at(self) -> datetime | None:
            return self.due_at

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            st.status = StepStatuses.COMPENSATION_RETRY_SCHEDULED
            st.retry_due_at = self.due_at

    class SagaCompleted(Event):
        """Every step succeeded. Absorbing."""

        def evolve(self, saga: Saga) -> None:
            saga.status = SagaStatuses.COMPLETED
            saga.current_step = None
            saga._pending_dispatch = None

    class SagaFailed(Event):
        """The saga failed and every completed compensatable step was undone. Absorbing.

        ``failed_step`` names the step whose failure or timeout started the rollback
        (``None`` when an operator aborted the saga), so that a follower of the log
        that sees only how sagas end can tell where they broke. It was added in
        class version 2: events recorded before carry only ``reason``, and
        :meth:`upcast_v1_v2` gives them ``failed_step=None`` ("not recorded") when
        they are loaded, so old logs keep loading unchanged.
        """

        class_version = 2

        reason: str
        failed_step: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 had no ``failed_step``: it was not recorded."""
            state["failed_step"] = None

        def evolve(self, saga: Saga) -> None:
            saga.status = SagaStatuses.FAILED
            saga.failure_reason = self.reason
            saga.current_step = None
            saga._pending_dispatch = None

    class SagaDeadLettered(Event):
        """Retries are exhausted where the saga may not give up: an operator must act."""

        step: str
        kind: str
        error: str
        attempts: int

        def evolve(self, saga: Saga) -> None:
            saga.status = SagaStatuses.DEAD_LETTERED
            saga.dead_letter = DeadLetter(
                step=self.step,
                kind=CommandKind(self.kind),
                error=self.error,
                attempts=self.attempts,
            )

    class OperatorRetried(Event):
        """An operator asked for the dead-lettered command to be tried again.

        ``changes`` is the data patch the operator retried with, as a diff: for each
        top-level key of the saga's data it set, ``{"new": value}`` plus ``"old": value``
        when the key was there before. The patched data is what the retried command
        (and every later one) carries. Added in class version 2; a retry recorded
        before carries ``None`` (no patch), so old logs load unchanged.
        """

        class_version = 2

        step: str
        kind: str
        actor: str
        reason: str
        changes: dict[str, dict[str, Any]] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 had no data patch."""
            state["changes"] = None

        def evolve(self, saga: Saga) -> None:
            saga.status = (
                SagaStatuses.PENDING
                if CommandKind(self.kind) is CommandKind.ACTION
                else SagaStatuses.COMPENSATING
            )
            saga.dead_letter = None
            if self.changes:
                saga.data = {
                    **saga.data,
                    **{key: change["new"] for key, change in self.changes.items()},
                }

    class SagaDeadlinePassed(Event):
        """The saga's deadline (``SagaDefinition.deadline`` after its start) passed first.

        Before the pivot the saga rolls back as after a failure: ``CompensationRequested``
        follows, naming the steps in flight as uncertain. Past the pivot (``past_pivot``)
        the saga must finish, so the fact is recorded for the audit and it goes on.
        """

        deadline: datetime
        past_pivot: bool

        def evolve(self, saga: Saga) -> None:
            saga.deadline_passed = True

    class OperatorResolved(Event):
        """An operator declared the dead-lettered command done by hand; the saga moves on."""

        step: str
        kind: str
        actor: str
        reason: str

        def evolve(self, saga: Saga) -> None:
            st = saga.steps[self.step]
            if CommandKind(self.kind) is CommandKind.ACTION:
                st.status = StepStatuses.RESOLVED
                saga.status = SagaStatuses.PENDING
            else:
                st.status = StepStatuses.COMPENSATION_RESOLVED
                saga.status = SagaStatuses.COMPENSATING
            st.deadline = None
            st.retry_due_at = None
            saga.dead_letter = None

    class OperatorCompensationRequested(Event):
        """An operator had a failed saga compensate steps whose action may still be in force.

        For a ``FAILED`` saga recorded before uncertain steps were compensated, or one
        whose step reported a late success after the saga had ended: the saga rolls
        back again (``COMPENSATING``) through ``steps``, newest first, and ends
        ``FAILED`` once more. The one change of a ``FAILED`` status, made by a person.
        """

        steps: list[str]
        actor: str
        reason: str

        def evolve(self, saga: Saga) -> None:
            saga.status = SagaStatuses.COMPENSATING
            planned = set(self.steps)
            saga.compensation_plan = [
                step.name for step in reversed(saga.definition.steps) if step.name in planned
            ]
            saga.current_step = None

    class SagaAborted(Event):
        """An operator stopped a running saga; compensation follows."""

        actor: str
        reason: str

        def evolve(self, saga: Saga) -> None:
            saga.aborted_by = self.actor

    class SagaForgotten(Event):
        """An operator erased the saga's data: its data key was destroyed (crypto-shredding).

        From then on the payloads of its events (data, results, error texts,
        reasons) read as erased; everything else still replays. Its own ``actor``
        and ``reason`` are the audit of the erasure, kept readable (``payload_free``).
        """

        payload_free: ClassVar[bool] = True

        actor: str
        reason: str

        def evolve(self, saga: Saga) -> None:
            saga.forgotten_by = self.actor

    #: Events that carry a command for the relay to deliver.
    COMMAND_EVENTS: ClassVar[tuple[type[Saga.Event], ...]]

    # -- state -------------------------------------------------------------------

    def _init_state(self, saga_type: str, definition: SagaDefinition, data: dict[str, Any]) -> None:
        self.saga_type: str = saga_type
        self.definition: SagaDefinition = definition
        self.data: dict[str, Any] = data
        self.status: SagaStatus = SagaStatuses.STARTED
        self.steps: dict[str, StepState] = {s.name: StepState(s.name) for s in definition.steps}
        self.current_step: str | None = None
        self.compensation_plan: list[str] = []
        self.failure_reason: str | None = None
        self.failed_step: str | None = None
        self.last_error: str | None = None
        self.dead_letter: DeadLetter | None = None
        self.processed_messages: set[str] = set()
        self.next_wakeup: datetime | None = None
        #: The event of the command pending now; its ``Command`` is built when asked
        #: for (``pending_command``), not for every dispatch applied on a rebuild.
        self._pending_dispatch: Saga.StepDispatched | Saga.CompensationDispatched | None = None
        self.aborted_by: str | None = None
        #: When the saga's deadline passes (``None``: its definition sets none).
        self.deadline: datetime | None = None
        #: Whether ``SagaDeadlinePassed`` was recorded.
        self.deadline_passed = False
        #: Whether some step waits for other than the previous one (steps may run in
        #: parallel); a linear definition keeps the one-step-at-a-time rules exactly.
        self.parallel = not definition.is_linear

    def _answered(self, step: str) -> None:
        """The pending command is answered if it was ``step``'s (others may still be in flight)."""
        if self._pending_dispatch is not None and self._pending_dispatch.step == step:
            self._pending_dispatch = None

    def _earliest_due(self) -> datetime | None:
        """When the next step timer (a timeout or a retry) of a running saga is due."""
        if self.status.is_terminal or self.status is SagaStatuses.DEAD_LETTERED:
            return None
        due = [when for _, when, _ in self._step_timers()]
        return min(due) if due else None

    def _step_timers(self) -> Iterator[tuple[str, datetime, CommandKind | None]]:
        """Each step's pending timer: (step, when, kind); kind ``None`` for an abandoned action.

        An abandoned action keeps its deadline only in a parallel saga: it blocks the
        compensation of the steps it waits for until its outcome is known or it times out.
        """
        for name, st in self.steps.items():
            kind = _AWAITING_OUTCOME.get(st.status)
            if kind is not None and st.deadline is not None:
                yield name, st.deadline, kind
            elif st.status is StepStatuses.ABANDONED and st.deadline is not None:
                yield name, st.deadline, None
            else:
                kind = _RETRY_DUE.get(st.status)
                if kind is not None and st.retry_due_at is not None:
                    yield name, st.retry_due_at, kind

    # -- creation ----------------------------------------------------------------

    @classmethod
    def start(
        cls,
        definition: SagaDefinition,
        data: dict[str, Any],
        *,
        saga_id: UUID,
        now: datetime,
        message_id: str | None = None,
    ) -> Saga:
        """Begin a saga: ``SagaStarted`` then the first step's ``StepDispatched``."""
        if not isinstance(definition, SagaDefinition):
            raise TypeError("definition must be a SagaDefinition")
        if not isinstance(saga_id, UUID):
            raise InvalidPayloadError(f"saga_id must be a UUID, not {type(saga_id).__name__}")
        _check_now(now)
        checked = check_data(data)
        if message_id is not None:
            check_text(message_id, "message_id")
        saga = cls._create(
            cls.SagaStarted,
            id=saga_id,
            timestamp=now,
            correlation_id=saga_id,
            causation_id=message_id,
            saga_type=definition.name,
            definition=definition_dump(definition),
            definition_version=definition.version,
            definition_fingerprint=definition.fingerprint,
            data=checked,
        )
        saga._dispatch_ready(now, message_id)
        return saga

    # -- read side ---------------------------------------------------------------

    @property
    def pending_command(self) -> Command | None:
        """The command dispatched last and not yet answered, if any."""
        dispatch = self._pending_dispatch
        return None if dispatch is None else dispatch.command()

    @property
    def results(self) -> dict[str, Any]:
        """Results of the steps whose actions completed, by step name."""
        return {
            name: st.result
            for name, st in self.steps.items()
            if st.status in _ACTION_DONE and st.status is not StepStatuses.RESOLVED
        }

    @property
    def definition_fingerprint(self) -> str:
        """Fingerprint of the definition this saga is pinned to."""
        return self.definition.fingerprint

    @property
    def effects_in_force(self) -> list[str]:
        """Steps of a ``FAILED`` saga whose action may be in force, uncompensated.

        Empty for sagas run under today's rules, which compensate uncertain steps.
        Not empty for a saga recorded before that, which failed leaving a timed-out
        or abandoned step uncompensated, or for a step whose success came after the
        saga had ended (a late fact): ``compensate`` rolls those back.
        """
        if self.status is not SagaStatuses.FAILED:
            return []
        return [
            step.name
            for step in reversed(self.definition.steps)
            if step.compensatable
            and self.steps[step.name].status not in _COMPENSATION_STARTED
            and (
                self.steps[step.name].late
                or (self.steps[step.name].uncertain and step.compensate_uncertain)
            )
        ]

    @property
    def deadline_pending(self) -> bool:
        """Whether the saga's deadline can still fire: set, not passed, the saga running."""
        return (
            self.deadline is not None
            and not self.deadline_passed
            and self.status in (SagaStatuses.STARTED, SagaStatuses.PENDING)
        )

    def _with_deadline(self, wakeup: datetime | None) -> datetime | None:
        """``wakeup`` or the saga's deadline, whichever is earlier, while that can fire."""
        if not self.deadline_pending:
            return wakeup
        assert self.deadline is not None
        return self.deadline if wakeup is None or self.deadline < wakeup else wakeup

    @property
    def past_pivot(self) -> bool:
        """Whether a retriable step was dispatched: the saga can then only go forward.

        By the pivot rule every step that is not retriable has completed by then.
        """
        if self.status.is_terminal:
            return False
        return any(
            step.retriable and self.steps[step.name].attempt > 0 for step in self.definition.steps
        )

    @property
    def steps_in_flight(self) -> list[str]:
        """The steps whose action or compensation was sent and awaits its outcome, in list order."""
        return [
            name
            for name, st in self.steps.items()
            if st.status in (StepStatuses.DISPATCHED, StepStatuses.COMPENSATION_DISPATCHED)
        ]

    @property
    def steps_waiting(self) -> list[str]:
        """Steps whose action or compensation waits for a scheduled retry, in list order."""
        return [name for name, st in self.steps.items() if st.status in _RETRY_DUE]

    @property
    def steps_blocking(self) -> list[str]:
        """Abandoned actions of a rolling-back parallel saga whose outcome is still awaited."""
        return [
            name
            for name, st in self.steps.items()
            if st.status is StepStatuses.ABANDONED and st.deadline is not None
        ]

    @property
    def steps_completed(self) -> list[str]:
        """Steps whose action completed (or an operator resolved), in list order."""
        done = (StepStatuses.COMPLETED, StepStatuses.RESOLVED)
        return [name for name, st in self.steps.items() if st.status in done]

    @property
    def waiting_for(self) -> list[str]:
        """What the saga waits for now: steps in flight, retries due, blocking abandoned actions."""
        waiting = {*self.steps_in_flight, *self.steps_waiting, *self.steps_blocking}
        return [name for name in self.steps if name in waiting]

    @property
    def is_terminal(self) -> bool:
        """Whether the saga reached ``COMPLETED`` or ``FAILED``."""
        return self.status.is_terminal

    def step_state(self, name: str) -> StepState:
        """The state of step ``name``; :class:`UnknownStepError` if it has none."""
        self._require_step(name)
        return self.steps[name]

    # -- replies -----------------------------------------------------------------

    def complete_step(
        self,
        step: str,
        result: Any = None,
        *,
        now: datetime,
        attempt: int | None = None,
        message_id: str | None = None,
        command_id: UUID | None = None,
    ) -> ReplyOutcome:
        """A participant reports that a step's action succeeded.

        A success for an attempt whose outcome the saga no longer waits for (it timed
        out, or the saga began to roll back while it was in flight) is a late fact:
        ``StepCompletedLate`` is recorded and the outcome is ``LATE``.
        """
        _check_now(now)
        result = check_json(result, f"result of step {step!r}")
        attempt = self._attempt_named(step, ACTION, attempt, command_id)
        late = self._judge_late_success(step, attempt, message_id)
        if late is not None:
            self._trigger(
                self.StepCompletedLate,
                now,
                message_id,
                step=step,
                attempt=late,
                result=result,
                next_wakeup=self.next_wakeup,
            )
            if self.parallel and self.status is SagaStatuses.COMPENSATING:
                self._dispatch_next_compensation(now, message_id)
            return ReplyOutcome(
                Outcome.LATE,
                f"step {step!r} attempt {late} succeeded after the saga stopped waiting for it",
            )
        verdict = self._judge_reply(step, ACTION, attempt, message_id, succeeded=True)
        if verdict is not None:
            return verdict
        st = self.steps[step]
        self._trigger(
            self.StepCompleted, now, message_id, step=step, attempt=st.attempt, result=result
        )
        self._advance_after(step, now, message_id)
        return APPLIED

    def fail_step(
        self,
        step: str,
        error: str,
        *,
        now: datetime,
        attempt: int | None = None,
        message_id: str | None = None,
        command_id: UUID | None = None,
    ) -> ReplyOutcome:
        """A participant reports that a step's action failed."""
        return self._fail(step, ACTION, error, now, attempt, message_id, command_id)

    def complete_compensation(
        self,
        step: str,
        *,
        now: datetime,
        attempt: int | None = None,
        message_id: str | None = None,
        command_id: UUID | None = None,
    ) -> ReplyOutcome:
        """A participant reports that a step's compensation succeeded."""
        _check_now(now)
        attempt = self._attempt_named(step, COMPENSATION, attempt, command_id)
        verdict = self._judge_reply(step, COMPENSATION, attempt, message_id, succeeded=True)
        if verdict is not None:
            return verdict
        st = self.steps[step]
        self._trigger(
            self.CompensationCompleted, now, message_id, step=step, attempt=st.compensation_attempt
        )
        self._dispatch_next_compensation(now, message_id)
        return APPLIED

    def fail_compensation(
        self,
        step: str,
        error: str,
        *,
        now: datetime,
        attempt: int | None = None,
        message_id: str | None = None,
        command_id: UUID | None = None,
    ) -> ReplyOutcome:
        """A participant reports that a step's compensation failed."""
        return self._fail(step, COMPENSATION, error, now, attempt, message_id, command_id)

    def answer(
        self,
        step: str,
        kind: CommandKind,
        succeeded: bool,
        *,
        now: datetime,
        result: Any = None,
        error: str = "",
        attempt: int | None = None,
        message_id: str | None = None,
        command_id: UUID | None = None,
    ) -> ReplyOutcome:
        """Any outcome of any command: routes to the four reply methods above.

        For callers that receive outcomes as data (reply messages, upstream events)
        rather than as one call per outcome. ``command_id`` binds the reply to the
        command it answers: one this saga never sent is refused.
        """
        if kind is CommandKind.ACTION:
            if succeeded:
                return self.complete_step(
                    step,
                    result,
                    now=now,
                    attempt=attempt,
                    message_id=message_id,
                    command_id=command_id,
                )
            return self.fail_step(
                step, error, now=now, attempt=attempt, message_id=message_id, command_id=command_id
            )
        if succeeded:
            return self.complete_compensation(
                step, now=now, attempt=attempt, message_id=message_id, command_id=command_id
            )
        return self.fail_compensation(
            step, error, now=now, attempt=attempt, message_id=message_id, command_id=command_id
        )

    # -- the clock ---------------------------------------------------------------

    def fire_due(self, now: datetime) -> int:
        """Fire every timeout and retry that is due at ``now``; return how many fired.

        A step whose deadline passed is timed out (the failure path); a retry whose
        due time came is dispatched. Zero-delay retries fire in the same call.
        """
        _check_now(now)
        fired = 0
        while fired < _MAX_FIRINGS_PER_CALL and self._fire_one(now):
            fired += 1
        return fired

    def _fire_one(self, now: datetime) -> bool:
        if self.status.is_terminal or self.status is SagaStatuses.DEAD_LETTERED:
            return False
        if self.parallel:
            return self._fire_one_parallel(now)
        if self.next_wakeup is None or self.next_wakeup > now or self.current_step is None:
            return False
        name = self.current_step
        st = self.steps[name]
        step = self.definition.step(name)
        if self.deadline_pending and self.next_wakeup == self.deadline:
            self._pass_deadline(now)
            return True
        kind = _AWAITING_OUTCOME.get(st.status)
        if kind is not None and st.deadline is not None:
            timed_out = self.StepTimedOut if kind is ACTION else self.CompensationTimedOut
            attempt = _latest_attempt(st, kind)
            self._trigger(timed_out, now, None, step=name, attempt=attempt, deadline=st.deadline)
            self._after_failure(name, kind, st.last_error or "timed out", now, None)
            return True
        kind = _RETRY_DUE.get(st.status)
        if kind is not None:
            self._dispatch(step, kind, _latest_attempt(st, kind) + 1, now, None)
            return True
        return False

    def _fire_one_parallel(self, now: datetime) -> bool:
        """Fire the earliest due timer of a saga whose steps may be in flight together."""
        timers = sorted(self._step_timers(), key=lambda timer: timer[1])
        if self.deadline_pending:
            assert self.deadline is not None
            if self.deadline <= now and (not timers or self.deadline <= timers[0][1]):
                self._pass_deadline(now)
                return True
        if not timers or timers[0][1] > now:
            return False
        name, due, kind = timers[0]
        st = self.steps[name]
        if kind is None:
            self._trigger(self.StepTimedOut, now, None, step=name, attempt=st.attempt, deadline=due)
            self._dispatch_next_compensation(now, None)
        elif st.status in _AWAITING_OUTCOME:
            timed_out = self.StepTimedOut if kind is ACTION else self.CompensationTimedOut
            attempt = _latest_attempt(st, kind)
            self._trigger(timed_out, now, None, step=name, attempt=attempt, deadline=due)
            self._after_failure(name, kind, st.last_error or "timed out", now, None)
        else:
            step = self.definition.step(name)
            self._dispatch(step, kind, _latest_attempt(st, kind) + 1, now, None)
        return True

    def _pass_deadline(self, now: datetime) -> None:
        """Record that the saga's deadline passed; before the pivot, roll back."""
        assert self.deadline is not None
        deadline, past_pivot = self.deadline, self.past_pivot
        self._trigger(self.SagaDeadlinePassed, now, None, deadline=deadline, past_pivot=past_pivot)
        if not past_pivot:
            self._begin_compensation(
                f"saga deadline {deadline.isoformat()} passed", None, now, None
            )

    # -- operator actions --------------------------------------------------------

    def retry(
        self,
        *,
        actor: str,
        reason: str,
        now: datetime,
        patch: dict[str, Any] | None = None,
    ) -> None:
        """Try the dead-lettered command once more (a new attempt, a new command id).

        ``patch`` corrects the saga's data first: its top-level keys replace (or add)
        those of the data, the rest is kept; the patched data is checked like the data
        a saga starts with, and the diff is recorded in ``OperatorRetried.changes``.
        """
        _check_now(now)
        actor, reason = _check_operator(actor, reason)
        dead = self._require_dead_letter("retry")
        changes = self._changes_of(patch) if patch is not None else None
        self._trigger(
            self.OperatorRetried,
            now,
            None,
            step=dead.step,
            kind=dead.kind.value,
            actor=actor,
            reason=reason,
            changes=changes,
        )
        attempt = _latest_attempt(self.steps[dead.step], dead.kind) + 1
        self._dispatch(self.definition.step(dead.step), dead.kind, attempt, now, None)
        self._dead_letter_next(now)

    def _dead_letter_next(self, now: datetime) -> None:
        """After an operator acted: dead-letter a parallel branch that gave up meanwhile.

        While one branch waited for the operator another may have exhausted its retries;
        it waits its turn (one dead letter at a time) and is dead-lettered now.
        """
        if not self.parallel or self.status.is_terminal:
            return
        if self.status is SagaStatuses.DEAD_LETTERED:
            return
        for step in self.definition.steps:
            st = self.steps[step.name]
            if st.status is StepStatuses.COMPENSATION_FAILED:
                kind, attempts = COMPENSATION, st.compensation_attempt
            elif step.retriable and st.status in (StepStatuses.FAILED, StepStatuses.TIMED_OUT):
                kind, attempts = ACTION, st.attempt
            else:
                continue
            self._trigger(
                self.SagaDeadLettered,
                now,
                None,
                step=step.name,
                kind=kind.value,
                error=st.last_error or "failed",
                attempts=attempts,
            )
            return

    def _changes_of(self, patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The diff a data ``patch`` makes, once the patch and the patched data are checked."""
        if not isinstance(patch, dict) or not patch:
            raise InvalidPayloadError("a data patch must be a non-empty JSON object")
        checked = check_data(patch)
        check_data({**self.data, **checked})
        changes: dict[str, dict[str, Any]] = {}
        for key, new in checked.items():
            change = {"new": new}
            if key in self.data:
                change["old"] = self.data[key]
            changes[key] = change
        return changes

    def resolve(self, *, actor: str, reason: str, now: datetime) -> None:
        """Declare the dead-lettered command done by hand, and move the saga on."""
        _check_now(now)
        actor, reason = _check_operator(actor, reason)
        dead = self._require_dead_letter("resolve")
        self._trigger(
            self.OperatorResolved,
            now,
            None,
            step=dead.step,
            kind=dead.kind.value,
            actor=actor,
            reason=reason,
        )
        if dead.kind is CommandKind.ACTION:
            self._advance_after(dead.step, now, None)
        else:
            self._dispatch_next_compensation(now, None)
        self._dead_letter_next(now)

    def abort(
        self, *, actor: str, reason: str, now: datetime, message_id: str | None = None
    ) -> None:
        """Stop a running saga before its pivot and compensate what it has done.

        ``message_id`` names what caused it (an upstream event), recorded as the cause.
        """
        _check_now(now)
        actor, reason = _check_operator(actor, reason)
        if message_id is not None:
            check_text(message_id, "message_id")
        if self.status not in (SagaStatuses.STARTED, SagaStatuses.PENDING):
            raise InvalidTransitionError(
                f"saga {self.id} is {self.status.value}; only a running saga can be aborted"
            )
        if self.past_pivot:
            raise InvalidTransitionError(
                f"saga {self.id} is past its pivot (step {self.current_step!r} is retriable); "
                "it can only go forward"
            )
        self._trigger(self.SagaAborted, now, message_id, actor=actor, reason=reason)
        self._begin_compensation(f"aborted by {actor}: {reason}", None, now, message_id)

    def compensate(self, *, actor: str, reason: str, now: datetime) -> list[str]:
        """Compensate the steps of a ``FAILED`` saga that may still be in force.

        See :attr:`effects_in_force`; returns the steps whose compensation follows.
        """
        _check_now(now)
        actor, reason = _check_operator(actor, reason)
        steps = self.effects_in_force
        if not steps:
            raise InvalidTransitionError(
                f"saga {self.id} is {self.status.value} and has no step whose action may be "
                "in force uncompensated; only such a FAILED saga can be compensated again"
            )
        self._trigger(
            self.OperatorCompensationRequested,
            now,
            None,
            steps=steps,
            actor=actor,
            reason=reason,
        )
        self._dispatch_next_compensation(now, None)
        return steps

    # -- decisions shared by the commands above ----------------------------------

    #: Trigger an event: eventsourcing's ``trigger_event``, building the event directly.
    _trigger = trigger

    def _fail(
        self,
        step: str,
        kind: CommandKind,
        error: str,
        now: datetime,
        attempt: int | None,
        message_id: str | None,
        command_id: UUID | None,
    ) -> ReplyOutcome:
        """Record that the ``kind`` command of ``step`` failed, then retry or give up."""
        _check_now(now)
        check_text(error, f"error of {'step' if kind is ACTION else 'compensation'} {step!r}")
        attempt = self._attempt_named(step, kind, attempt, command_id)
        if kind is ACTION and self._awaited_abandoned(step, attempt, message_id):
            sent = self.steps[step].attempt
            self._trigger(self.StepFailed, now, message_id, step=step, attempt=sent, error=error)
            self._dispatch_next_compensation(now, message_id)
            return APPLIED
        verdict = self._judge_reply(step, kind, attempt, message_id, succeeded=False)
        if verdict is not None:
            return verdict
        failed = self.StepFailed if kind is ACTION else self.CompensationFailed
        sent = _latest_attempt(self.steps[step], kind)
        self._trigger(failed, now, message_id, step=step, attempt=sent, error=error)
        self._after_failure(step, kind, error, now, message_id)
        return APPLIED

    def _dispatch(
        self, step: Step, kind: CommandKind, attempt: int, now: datetime, cause: str | None
    ) -> None:
        """Record the ``kind`` command of ``step``, attempt ``attempt`` (the log is the outbox).

        An action carries the saga's data and the results so far; a compensation, the
        data and its own step's result (what it undoes).
        """
        event_class: type[Saga.Event]
        if kind is ACTION:
            event_class, command_name, timeout = self.StepDispatched, step.action, step.timeout
            payload = {"data": self.data, "results": self.results}
        else:
            assert step.compensation is not None
            event_class, command_name = self.CompensationDispatched, step.compensation
            timeout = step.effective_compensation_timeout
            payload = {"data": self.data, "result": self.steps[step.name].result}
        self._trigger(
            event_class,
            now,
            cause,
            step=step.name,
            attempt=attempt,
            saga_type=self.saga_type,
            command_name=command_name,
            command_id=command_id_for(self.id, step.name, kind, attempt),
            payload=payload,
            deadline=now + timeout if timeout else None,
        )

    def _awaited_abandoned(self, step: str, attempt: int | None, message_id: str | None) -> bool:
        """Whether a failure answers an abandoned action a parallel rollback still waits for.

        Such an action (in flight when the rollback began, not itself compensated) blocks
        the compensation of the steps it waits for until its outcome is known; a failure
        is that outcome.
        """
        self._require_step(step)
        st = self.steps[step]
        if not (
            self.parallel
            and self.status is SagaStatuses.COMPENSATING
            and st.status is StepStatuses.ABANDONED
            and st.deadline is not None
            and step not in self.compensation_plan
        ):
            return False
        if message_id is not None and message_id in self.processed_messages:
            return False
        return attempt is None or attempt == st.attempt

    def _advance_after(self, step_name: str, now: datetime, cause: str | None) -> None:
        """After ``step_name`` completed: dispatch every step now ready, or complete the saga."""
        done = (StepStatuses.COMPLETED, StepStatuses.RESOLVED)
        if all(st.status in done for st in self.steps.values()):
            self._trigger(self.SagaCompleted, now, cause)
            return
        self._dispatch_ready(now, cause)

    def _dispatch_ready(self, now: datetime, cause: str | None) -> None:
        """Dispatch, in list order, every step not started whose dependencies all completed."""
        done = (StepStatuses.COMPLETED, StepStatuses.RESOLVED)
        for step in self.definition.steps:
            if self.steps[step.name].status is not StepStatuses.NOT_STARTED:
                continue
            if all(
                self.steps[dep].status in done for dep in self.definition.dependencies[step.name]
            ):
                self._dispatch(step, ACTION, 1, now, cause)

    def _after_failure(
        self, step_name: str, kind: CommandKind, error: str, now: datetime, cause: str | None
    ) -> None:
        """After a failed or timed-out attempt: try again by the policy for ``kind``, or give up.

        Giving up on an action rolls the saga back (or, past the pivot, waits for an
        operator); giving up on a compensation waits for an operator: it must succeed.
        """
        step = self.definition.step(step_name)
        sent = _latest_attempt(self.steps[step_name], kind)
        scheduled: type[Saga.Event]
        if kind is ACTION:
            policy, scheduled = step.retry, self.StepRetryScheduled
        else:
            policy, scheduled = step.compensation_retry, self.CompensationRetryScheduled
        if sent < policy.max_attempts:
            key = str(command_id_for(self.id, step_name, kind, sent))
            due = now + policy.delay_after(sent, key)
            self._trigger(scheduled, now, cause, step=step_name, attempt=sent + 1, due_at=due)
            if due <= now:
                self._dispatch(step, kind, sent + 1, now, cause)
        elif kind is COMPENSATION or step.retriable:
            if self.parallel and self.status is SagaStatuses.DEAD_LETTERED:
                return  # another branch waits for the operator: this one's turn comes after
            self._trigger(
                self.SagaDeadLettered,
                now,
                cause,
                step=step_name,
                kind=kind.value,
                error=error,
                attempts=sent,
            )
        else:
            plural = "s" if sent != 1 else ""
            reason = f"step {step_name!r} failed after {sent} attempt{plural}: {error}"
            self._begin_compensation(reason, step_name, now, cause)

    def _begin_compensation(
        self, reason: str, failed_step: str | None, now: datetime, cause: str | None
    ) -> None:
        self._trigger(
            self.CompensationRequested,
            now,
            cause,
            reason=reason,
            failed_step=failed_step,
            uncertain_steps=self._uncertain_steps(),
        )
        self._dispatch_next_compensation(now, cause)

    def _uncertain_steps(self) -> list[str]:
        """The compensatable steps whose action may have been done though no success came.

        A step in flight now, or one an attempt of which timed out, unless the step
        opted out (``compensate_uncertain=False``) and no late success says it was done.
        """
        uncertain = []
        for step in self.definition.steps:
            st = self.steps[step.name]
            if not step.compensatable or st.status not in _ACTION_NOT_DONE:
                continue
            in_doubt = st.uncertain or st.status is StepStatuses.DISPATCHED
            if st.late or (in_doubt and step.compensate_uncertain):
                uncertain.append(step.name)
        return uncertain

    def _dispatch_next_compensation(self, now: datetime, cause: str | None) -> None:
        """Dispatch every planned compensation no longer blocked; fail the saga when all are done.

        A compensation waits for the compensations of the planned steps that depend on
        its step, and for the outcome of their abandoned actions (reverse dependency
        order); for a list of steps that is one at a time, newest first.
        """
        dispatched = False
        for name in self.compensation_plan:
            if self.steps[name].status in _COMPENSATION_STARTED or self._compensation_blocked(name):
                continue
            self._dispatch(self.definition.step(name), COMPENSATION, 1, now, cause)
            dispatched = True
        if dispatched or any(
            self.steps[name].status not in _COMPENSATION_DONE for name in self.compensation_plan
        ):
            return
        self._trigger(
            self.SagaFailed,
            now,
            cause,
            reason=self.failure_reason or "failed",
            failed_step=self.failed_step,
        )

    def _compensation_blocked(self, name: str) -> bool:
        """Whether a step that depends on ``name`` still has to be undone or heard from."""
        planned = self.compensation_plan
        for other in self.definition.descendants(name):
            st = self.steps[other]
            if other in planned:
                if st.status not in _COMPENSATION_DONE:
                    return True
            elif st.status is StepStatuses.ABANDONED and st.deadline is not None:
                return True
        return False

    # -- judging replies ---------------------------------------------------------

    def _require_step(self, step: str) -> None:
        if not isinstance(step, str) or not self.definition.has_step(step):
            raise UnknownStepError(
                f"saga {self.id} ({self.saga_type} v{self.definition.version}) has no step "
                f"{step!r}; its steps are {', '.join(self.definition.step_names)}"
            )

    def _judge_attempt(self, step: str, attempt: int | None, sent: int, what: str) -> str | None:
        if sent == 0:
            raise UnexpectedReplyError(f"the {what} of step {step!r} was never dispatched")
        if attempt is None or attempt == sent:
            return None
        if not isinstance(attempt, int) or attempt < 1 or attempt > sent:
            raise UnexpectedReplyError(
                f"attempt {attempt!r} of the {what} of step {step!r} was never dispatched "
                f"(latest attempt is {sent})"
            )
        return f"attempt {attempt} of the {what} of step {step!r} was superseded by attempt {sent}"

    def _attempt_named(
        self, step: str, kind: CommandKind, attempt: int | None, command_id: UUID | None
    ) -> int | None:
        """The attempt a reply is about: ``attempt``, or the one ``command_id`` names.

        A reply that names a command id must answer a command this saga sent for that
        step and kind (any attempt so far); otherwise it is refused, so that a reply
        cannot drive a saga just by knowing its id.
        """
        if command_id is None:
            return attempt
        self._require_step(step)
        sent = _latest_attempt(self.steps[step], kind)
        if sent == 0:
            raise UnexpectedReplyError(
                f"the {kind.value} of step {step!r} was never dispatched (the reply names "
                f"command {command_id})"
            )
        for number in range(sent, 0, -1):
            if command_id_for(self.id, step, kind, number) == command_id:
                if attempt is not None and attempt != number:
                    raise UnexpectedReplyError(
                        f"the reply names command {command_id} (attempt {number}) but "
                        f"attempt {attempt!r}"
                    )
                return number
        raise UnexpectedReplyError(
            f"saga {self.id} never sent command {command_id} (the {kind.value} of step "
            f"{step!r}, attempts 1..{sent})"
        )

    def _judge_late_success(
        self, step: str, attempt: int | None, message_id: str | None
    ) -> int | None:
        """The attempt of a late success to record, or ``None`` if the reply is not one.

        Late: the step's outcome is in doubt (an attempt timed out, or it was in flight
        when the saga rolled back), no late success was recorded yet, and the reply is
        not the answer the saga is waiting for right now.
        """
        self._require_step(step)
        st = self.steps[step]
        if not st.uncertain or st.late:
            return None
        if message_id is not None:
            check_text(message_id, "message_id")
            if message_id in self.processed_messages:
                return None
        if attempt is not None and (not isinstance(attempt, int) or not 1 <= attempt <= st.attempt):
            return None
        number = st.attempt if attempt is None else attempt
        waiting = st.status is StepStatuses.DISPATCHED and number == st.attempt
        if waiting and self.status in (SagaStatuses.STARTED, SagaStatuses.PENDING):
            return None
        return number

    def _judge_reply(
        self,
        step: str,
        kind: CommandKind,
        attempt: int | None,
        message_id: str | None,
        *,
        succeeded: bool,
    ) -> ReplyOutcome | None:
        """``None`` if the reply to the ``kind`` command of ``step`` is to be applied.

        Otherwise why it changes nothing: a duplicate of an outcome already recorded, or
        a stale answer (a superseded attempt, a step or saga that has moved on).
        """
        self._require_step(step)
        action = kind is ACTION
        if not action and not self.definition.step(step).compensatable:
            raise UnexpectedReplyError(f"step {step!r} has no compensation")
        if message_id is not None:
            check_text(message_id, "message_id")
            if message_id in self.processed_messages:
                return ReplyOutcome(Outcome.DUPLICATE, f"message {message_id} was already handled")
        st = self.steps[step]
        sent = st.attempt if action else st.compensation_attempt
        superseded = self._judge_attempt(step, attempt, sent, kind.value)
        if superseded is not None:
            return ReplyOutcome(Outcome.STALE, superseded)
        if st.status in (_ACTION_DONE if action else _COMPENSATION_DONE):
            outcome = Outcome.DUPLICATE if succeeded else Outcome.STALE
            return ReplyOutcome(outcome, f"{_subject(step, kind)} already completed")
        if self.status.is_terminal:
            return ReplyOutcome(Outcome.STALE, f"saga already {self.status.value}")
        if st.status is (
            StepStatuses.DISPATCHED if action else StepStatuses.COMPENSATION_DISPATCHED
        ):
            return None
        if action and st.status is StepStatuses.FAILED and not succeeded:
            return ReplyOutcome(
                Outcome.DUPLICATE, f"step {step!r} attempt {st.attempt} already failed"
            )
        return ReplyOutcome(
            Outcome.STALE,
            f"{_subject(step, kind)} attempt {sent} is {st.status.value.lower()}",
        )

    def _require_dead_letter(self, action: str) -> DeadLetter:
        if self.status is not SagaStatuses.DEAD_LETTERED or self.dead_letter is None:
            raise InvalidTransitionError(
                f"saga {self.id} is {self.status.value}; only a dead-lettered saga can be "
                f"{'retried' if action == 'retry' else 'resolved'}"
            )
        return self.dead_letter

    #: Who erased the saga's data (``SagaForgotten``); ``None``: not erased.
    forgotten_by: str | None = None

    @property
    def forgotten(self) -> bool:
        """Whether the saga's data was erased (its payloads read as erased)."""
        return self.forgotten_by is not None

    def forget(self, *, actor: str, reason: str, now: datetime) -> None:
        """Record that the saga's data is erased; only an ended saga (or again, no-op).

        A running, dead-lettered or compensating saga is refused: its next
        commands need its data. Abort it (or let it end) first.
        """
        _check_now(now)
        actor, reason = _check_operator(actor, reason)
        if self.forgotten:
            return
        if not self.status.is_terminal:
            if self.status is SagaStatuses.DEAD_LETTERED:
                hint = "retry or resolve its failed command first"
            elif self.status is SagaStatuses.COMPENSATING:
                hint = "let its compensation finish first"
            else:
                hint = "let it end, or abort it first"
            raise InvalidTransitionError(
                f"saga {self.id} is {self.status.value}; only an ended saga can be forgotten "
                f"({hint})"
            )
        self._trigger(self.SagaForgotten, now, None, actor=actor, reason=reason)

    def commands(self) -> Iterator[Command]:
        """The command pending now, if any (for inspection; the relay reads events)."""
        if self.pending_command is not None:
            yield self.pending_command


Saga.COMMAND_EVENTS = (Saga.StepDispatched, Saga.CompensationDispatched)


def _check_now(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidPayloadError("now must be a timezone-aware datetime")


def _check_operator(actor: str, reason: str) -> tuple[str, str]:
    return check_text(actor, "actor"), check_text(reason, "reason")


def _latest_attempt(st: StepState, kind: CommandKind) -> int:
    """The number of the latest attempt of ``st``'s action or compensation (0: none yet)."""
    return st.attempt if kind is ACTION else st.compensation_attempt


def _subject(step: str, kind: CommandKind) -> str:
    """How a reply verdict names the action or the compensation of ``step``."""
    return f"step {step!r}" if kind is ACTION else f"compensation of {step!r}"


def _command(
    event: Saga.StepDispatched | Saga.CompensationDispatched,
    kind: CommandKind,
    payload: dict[str, Any] | None,
) -> Command:
    """The ``kind`` command a dispatch event carries.

    ``payload`` replaces the event's own (a copy, for a command that must not share
    the saga's dicts); by default the command carries the event's.
    """
    return Command(
        command_id=event.command_id,
        saga_id=event.originator_id,
        saga_type=event.saga_type,
        step=event.step,
        kind=kind,
        name=event.command_name,
        attempt=event.attempt,
        payload=event.payload if payload is None else payload,
        deadline=event.deadline,
        causation_id=event.causation_id,
    )
