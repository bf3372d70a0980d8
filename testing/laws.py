"""The laws of DESIGN.md as checks over one saga's events, plus a model of the log.

Every ``check_*`` function takes the saga's definition, id and events (oldest
first, as ``SagaManager.history`` or ``Saga.collect_events`` give them) and raises
``AssertionError`` naming the law it found broken; :func:`check_all` runs them all
and raises :class:`LawViolation`, which adds the saga and its numbered history to
the message. They know nothing of how the events were produced, so they judge the
``Saga`` aggregate, a ``SagaManager`` on any backend, or a log read back from a
production store alike::

    from sagalog.testing.laws import check_all

    check_all(definition, saga_id, manager.history(saga_id))

The model functions (:func:`sent_commands`, :func:`outstanding_command`,
:func:`pending_retry`, :func:`effects`, :func:`reply_would_apply`, ...) read the
log the way an outside observer would, independently of the aggregate's own
``evolve`` code, so that a test compares two independent accounts of a saga.

The checks are ``assert`` statements: run them under pytest (which rewrites them
into detailed reports), never under ``python -O`` (which removes them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sagalog.domain import (
    Command,
    CommandKind,
    RetryPolicy,
    Saga,
    SagaDefinition,
    SagalogError,
    UnexpectedReplyError,
    UnknownStepError,
    command_id_for,
)
from sagalog.domain._speed import definition_from_dict

__all__ = [
    "ACTION_OUTCOMES",
    "COMPENSATION_OUTCOMES",
    "TERMINAL_EVENTS",
    "Effect",
    "Events",
    "LawViolation",
    "Sent",
    "Timer",
    "awaited_actions",
    "check_all",
    "check_commands_carry_their_inputs",
    "check_failures_follow_retry_policies",
    "check_law1_effects",
    "check_law2_compensations",
    "check_law3_absorbing",
    "check_law6_command_ids",
    "check_partial_order",
    "command_named",
    "command_of",
    "compensation_began",
    "compensation_plan",
    "describe_history",
    "effects",
    "expected_reply_error",
    "is_dead_lettered",
    "is_ended",
    "late_success_would_apply",
    "latest_attempt",
    "operator_may",
    "outstanding_command",
    "outstanding_commands",
    "pending_retries",
    "pending_retry",
    "processed_message_ids",
    "reply_would_apply",
    "sent_commands",
    "timers",
    "uncertain_steps",
    "violation",
]

#: A saga's events, oldest first.
Events = Sequence[Saga.Event]

#: Outcome events of an action, and of a compensation.
ACTION_OUTCOMES = (Saga.StepCompleted, Saga.StepFailed, Saga.StepTimedOut)
COMPENSATION_OUTCOMES = (
    Saga.CompensationCompleted,
    Saga.CompensationFailed,
    Saga.CompensationTimedOut,
)
TERMINAL_EVENTS = (Saga.SagaCompleted, Saga.SagaFailed)

#: Events after which no retry is pending any more.
_CLEARS_RETRY = (
    Saga.StepDispatched,
    Saga.CompensationDispatched,
    Saga.CompensationRequested,
    Saga.SagaDeadLettered,
    *TERMINAL_EVENTS,
)

#: Floating-point slack when comparing retry delays, in seconds (timedelta keeps µs).
_DELAY_SLACK = 2e-6


@dataclass(frozen=True)
class Sent:
    """A command the saga dispatched, as its event records it."""

    index: int
    step: str
    kind: CommandKind
    attempt: int
    command_id: UUID
    deadline: datetime | None
    timestamp: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class Effect:
    """An effect that happened: a step's action (``T``) or its compensation (``C``)."""

    kind: CommandKind
    step: str
    by_operator: bool = False
    #: A success recorded after the saga stopped waiting for it (``StepCompletedLate``).
    late: bool = False


@dataclass(frozen=True)
class Timer:
    """Something the clock must do for the saga: a deadline or a scheduled retry."""

    due: datetime
    step: str
    kind: CommandKind
    attempt: int
    is_retry: bool


class LawViolation(SagalogError, AssertionError):
    """A law of DESIGN.md broken by one saga.

    The message says which law and how, then which saga (id, definition name and
    version) and its numbered event history, so that a failing property test
    reads as a story of what happened.
    """


#: Event fields worth showing in a history line, in this order.
_SHOWN_FIELDS = (
    "step",
    "kind",
    "attempt",
    "attempts",
    "command_name",
    "result",
    "error",
    "failed_step",
    "reason",
    "actor",
    "deadline",
    "due_at",
)


def describe_history(events: Events) -> str:
    """The events one per line, numbered by version, with the fields that tell the story."""
    lines = []
    for event in events:
        shown = [
            f"{name}={_shown(getattr(event, name))}"
            for name in _SHOWN_FIELDS
            if getattr(event, name, None) is not None
        ]
        cause = f" <- {event.causation_id}" if event.causation_id else ""
        lines.append(
            f"  {event.originator_version:>3}. {type(event).__name__}"
            f"{' ' if shown else ''}{' '.join(shown)}{cause}"
        )
    return "\n".join(lines)


def _shown(value: object) -> str:
    """A field's value for a history line: instants in ISO form, the rest as repr."""
    return value.isoformat() if isinstance(value, datetime) else repr(value)


def violation(
    problem: str, definition: SagaDefinition, saga_id: UUID, events: Events
) -> LawViolation:
    """A :class:`LawViolation` saying ``problem`` about the saga, with its history."""
    return LawViolation(
        f"{problem}\n"
        f"saga {saga_id} ({definition.name} v{definition.version}), "
        f"{len(events)} events:\n{describe_history(events)}"
    )


# -- the model ------------------------------------------------------------------


def sent_commands(events: Events) -> list[Sent]:
    """Every dispatched command, oldest first."""
    sent: list[Sent] = []
    for index, event in enumerate(events):
        if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
            kind = (
                CommandKind.ACTION
                if isinstance(event, Saga.StepDispatched)
                else CommandKind.COMPENSATION
            )
            sent.append(
                Sent(
                    index=index,
                    step=event.step,
                    kind=kind,
                    attempt=event.attempt,
                    command_id=event.command_id,
                    deadline=event.deadline,
                    timestamp=event.timestamp,
                    payload=event.payload,
                )
            )
    return sent


def latest_attempt(events: Events, step: str, kind: CommandKind) -> int:
    """The highest attempt dispatched for ``step``'s action or compensation; 0 if none."""
    return max(
        (s.attempt for s in sent_commands(events) if s.step == step and s.kind is kind),
        default=0,
    )


def _answers(event: Saga.Event, command: Sent) -> bool:
    if isinstance(event, ACTION_OUTCOMES):
        kind = CommandKind.ACTION
    elif isinstance(event, COMPENSATION_OUTCOMES):
        kind = CommandKind.COMPENSATION
    else:
        return False
    step: str = getattr(event, "step")  # noqa: B009 - every outcome event has one
    attempt: int = getattr(event, "attempt")  # noqa: B009
    return command.kind is kind and command.step == step and command.attempt == attempt


def _is_linear(events: Events) -> bool:
    """Whether the saga of ``events`` runs a plain list of steps (read from ``SagaStarted``)."""
    if not events or not isinstance(events[0], Saga.SagaStarted):
        return True
    started = events[0]
    return definition_from_dict(started.definition, started.definition_fingerprint).is_linear


def _follow_commands(events: Events) -> tuple[list[Sent], dict[str, Sent]]:
    """The commands outstanding after ``events``, and the abandoned actions still awaited.

    Outstanding: dispatched, not yet answered, not abandoned by the start of
    compensation, saga not ended. Awaited (steps in parallel only): actions in flight
    with a deadline when the rollback began; they keep the compensation of the steps
    they wait for waiting until a failure, a timeout or a late success settles them,
    or their own compensation is dispatched.

    Law 4 (checked here): every recorded outcome answers a command outstanding (or an
    awaited action) when it was recorded — never an older attempt, another step or
    another kind; for a list of steps at most one command is outstanding at a time.
    """
    linear = _is_linear(events)
    outstanding: list[Sent] = []
    awaited: dict[str, Sent] = {}
    sent = {s.index: s for s in sent_commands(events)}
    for index, event in enumerate(events):
        if index in sent:
            command = sent[index]
            current = outstanding[-1] if outstanding else None
            assert not (linear and current is not None), (
                f"law 4: {type(event).__name__} #{index + 1} dispatched while "
                f"{current} was still outstanding"
            )
            twin = [c for c in outstanding if (c.step, c.kind) == (command.step, command.kind)]
            assert not twin, (
                f"law 4: {type(event).__name__} #{index + 1} dispatched while {twin[0]} of "
                "the same step was still outstanding"
            )
            outstanding.append(command)
            if command.kind is CommandKind.COMPENSATION:
                awaited.pop(command.step, None)
        elif isinstance(event, ACTION_OUTCOMES + COMPENSATION_OUTCOMES):
            answered = [c for c in outstanding if _answers(event, c)]
            settled = awaited.get(event.step)
            if answered:
                outstanding.remove(answered[0])
            elif (
                settled is not None
                and isinstance(event, Saga.StepFailed | Saga.StepTimedOut)
                and settled.attempt == event.attempt
            ):
                del awaited[event.step]
            else:
                assert outstanding, (
                    f"law 4: {type(event).__name__} #{index + 1} ({event.step!r}, attempt "
                    f"{event.attempt}) recorded while no command was outstanding"
                )
                raise AssertionError(
                    f"law 4: {type(event).__name__} #{index + 1} ({event.step!r}, attempt "
                    f"{event.attempt}) answers no outstanding command (outstanding: "
                    f"{outstanding[-1] if linear else outstanding})"
                )
        elif isinstance(event, Saga.StepCompletedLate):
            awaited.pop(event.step, None)
        elif isinstance(event, Saga.CompensationRequested):
            if not linear:
                awaited = {
                    c.step: c
                    for c in outstanding
                    if c.kind is CommandKind.ACTION and c.deadline is not None
                }
            outstanding = []
        elif isinstance(
            event, Saga.OperatorCompensationRequested | Saga.SagaCompleted | Saga.SagaFailed
        ):
            outstanding, awaited = [], {}
    return outstanding, awaited


def outstanding_commands(events: Events) -> list[Sent]:
    """Every command the saga waits on after ``events``, oldest first (see
    :func:`outstanding_command`; with steps in parallel there may be several)."""
    return _follow_commands(events)[0]


def awaited_actions(events: Events) -> dict[str, Sent]:
    """Abandoned actions a parallel rollback still waits to hear from, by step."""
    return _follow_commands(events)[1]


def outstanding_command(events: Events) -> Sent | None:
    """The command the saga waits on after ``events`` (the newest, when steps in
    parallel wait on several): dispatched, not yet answered, not abandoned by the
    start of compensation, saga not ended. Checks law 4 (see :func:`_follow_commands`).
    """
    outstanding = outstanding_commands(events)
    return outstanding[-1] if outstanding else None


def pending_retries(events: Events) -> list[Timer]:
    """Every retry scheduled and not yet dispatched (nor abandoned) after ``events``."""
    pending: dict[tuple[str, CommandKind], Timer] = {}
    for event in events:
        if isinstance(event, Saga.StepRetryScheduled | Saga.CompensationRetryScheduled):
            kind = (
                CommandKind.ACTION
                if isinstance(event, Saga.StepRetryScheduled)
                else CommandKind.COMPENSATION
            )
            pending[(event.step, kind)] = Timer(
                event.due_at, event.step, kind, event.attempt, is_retry=True
            )
        elif isinstance(event, Saga.StepDispatched):
            pending.pop((event.step, CommandKind.ACTION), None)
        elif isinstance(event, Saga.CompensationDispatched):
            pending.pop((event.step, CommandKind.COMPENSATION), None)
        elif isinstance(event, Saga.CompensationRequested | Saga.SagaDeadLettered):
            if isinstance(event, Saga.CompensationRequested) or _is_linear(events):
                pending = {}
        elif isinstance(event, TERMINAL_EVENTS):
            pending = {}
    return list(pending.values())


def pending_retry(events: Events) -> Timer | None:
    """The retry scheduled and not yet dispatched (nor abandoned) after ``events``."""
    pending: Timer | None = None
    for event in events:
        if isinstance(event, Saga.StepRetryScheduled | Saga.CompensationRetryScheduled):
            kind = (
                CommandKind.ACTION
                if isinstance(event, Saga.StepRetryScheduled)
                else CommandKind.COMPENSATION
            )
            pending = Timer(event.due_at, event.step, kind, event.attempt, is_retry=True)
        elif isinstance(event, _CLEARS_RETRY):
            pending = None
    return pending


def command_of(events: Events, sent: Sent) -> Command:
    """The command ``sent`` stands for, rebuilt from its dispatch event."""
    event = events[sent.index]
    assert isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched)
    return event.command()


def command_named(
    events: Events, step: str, kind: CommandKind, attempt: int | None
) -> Command | None:
    """The command a reply naming ``step``, ``kind`` and ``attempt`` is about (its latest
    attempt when it names none), if the saga sent it."""
    named = [
        s
        for s in sent_commands(events)
        if (s.step, s.kind) == (step, kind) and attempt in (None, s.attempt)
    ]
    return command_of(events, named[-1]) if named else None


def timers(events: Events) -> list[Timer]:
    """Everything the clock must still do: the outstanding deadlines (abandoned actions a
    parallel rollback awaits included) and the pending retries."""
    if _is_linear(events):
        found: list[Timer] = []
        command = outstanding_command(events)
        if command is not None and command.deadline is not None:
            found.append(
                Timer(command.deadline, command.step, command.kind, command.attempt, False)
            )
        retry = pending_retry(events)
        if retry is not None:
            found.append(retry)
        return found
    outstanding, awaited = _follow_commands(events)
    found = [
        Timer(c.deadline, c.step, c.kind, c.attempt, False)
        for c in [*outstanding, *awaited.values()]
        if c.deadline is not None
    ]
    return sorted([*found, *pending_retries(events)], key=lambda timer: timer.due)


def processed_message_ids(events: Events) -> set[str]:
    """Message ids the saga has consumed: the causation ids of its events."""
    return {e.causation_id for e in events if e.causation_id is not None}


def effects(events: Events) -> list[Effect]:
    """The effects run, in order: completed actions (late ones marked ``late``) and
    compensations, and what an operator declared done by hand (``OperatorResolved``)."""
    found: list[Effect] = []
    for event in events:
        if isinstance(event, Saga.StepCompleted):
            found.append(Effect(CommandKind.ACTION, event.step))
        elif isinstance(event, Saga.StepCompletedLate):
            found.append(Effect(CommandKind.ACTION, event.step, late=True))
        elif isinstance(event, Saga.CompensationCompleted):
            found.append(Effect(CommandKind.COMPENSATION, event.step))
        elif isinstance(event, Saga.OperatorResolved):
            found.append(Effect(CommandKind(event.kind), event.step, by_operator=True))
    return found


def reply_would_apply(
    events: Events,
    step: str,
    kind: CommandKind,
    attempt: int | None,
    message_id: str | None,
    succeeded: bool = True,
) -> bool:
    """Law 4's oracle: a reply changes the saga exactly when it answers an outstanding
    command (naming its attempt or none) with a message id never consumed before; or,
    with steps in parallel, is the failure of an abandoned action the rollback awaits
    whose compensation is not planned."""
    if message_id is not None and message_id in processed_message_ids(events):
        return False
    outstanding, awaited = _follow_commands(events)
    if any(c.step == step and c.kind is kind and attempt in (None, c.attempt) for c in outstanding):
        return True
    settled = awaited.get(step)
    if succeeded or kind is not CommandKind.ACTION or settled is None:
        return False
    if is_dead_lettered(events) or attempt not in (None, settled.attempt):
        return False
    assert isinstance(events[0], Saga.SagaStarted)
    started = events[0]
    definition = definition_from_dict(started.definition, started.definition_fingerprint)
    return step not in compensation_plan(definition, events)


def uncertain_steps(definition: SagaDefinition, events: Events) -> set[str]:
    """The steps whose action may have been done though no success answered it: one
    of its attempts timed out, or it was outstanding when the saga began to roll back,
    and no ``StepCompleted`` followed. Read from the log, independently of the
    aggregate (which names them in ``CompensationRequested.uncertain_steps``)."""
    del definition  # the same for every definition; kept for symmetry with the checks
    uncertain: set[str] = set()
    current: dict[tuple[str, CommandKind], Sent] = {}
    sent = {s.index: s for s in sent_commands(events)}
    for index, event in enumerate(events):
        if index in sent:
            current[(sent[index].step, sent[index].kind)] = sent[index]
        elif isinstance(event, ACTION_OUTCOMES + COMPENSATION_OUTCOMES):
            kind = (
                CommandKind.ACTION
                if isinstance(event, ACTION_OUTCOMES)
                else CommandKind.COMPENSATION
            )
            current.pop((event.step, kind), None)
            if isinstance(event, Saga.StepTimedOut):
                uncertain.add(event.step)
            elif isinstance(event, Saga.StepCompleted):
                uncertain.discard(event.step)
        elif isinstance(event, Saga.CompensationRequested):
            uncertain.update(s for s, kind in current if kind is CommandKind.ACTION)
            current = {}
        elif isinstance(event, TERMINAL_EVENTS):
            current = {}
    return uncertain


def _late_steps(events: Events) -> set[str]:
    return {e.step for e in events if isinstance(e, Saga.StepCompletedLate)}


def late_success_would_apply(
    definition: SagaDefinition,
    events: Events,
    step: str,
    attempt: int | None,
    message_id: str | None,
) -> bool:
    """Law 4's oracle for late facts: a success is recorded as ``StepCompletedLate``
    exactly when the step is uncertain (see :func:`uncertain_steps`), no late success
    was recorded for it yet, the message id is new, the attempt was sent, and it is not
    the answer the saga is waiting for right now."""
    if step not in uncertain_steps(definition, events) or step in _late_steps(events):
        return False
    if message_id is not None and message_id in processed_message_ids(events):
        return False
    sent = latest_attempt(events, step, CommandKind.ACTION)
    if attempt is not None and not 1 <= attempt <= sent:
        return False
    number = sent if attempt is None else attempt
    return not any(
        (waiting.step, waiting.kind, waiting.attempt) == (step, CommandKind.ACTION, number)
        for waiting in outstanding_commands(events)
    )


def compensation_plan(definition: SagaDefinition, events: Events) -> list[str]:
    """The steps the saga will have compensated when it fails, newest first: the
    compensatable steps completed or uncertain when it began to roll back (an uncertain
    one only if it compensates uncertain steps, or a late success showed it done), and
    those whose late success came while it rolled back, before their compensation."""
    return _walk_plan(definition, events)[0]


def _walk_plan(definition: SagaDefinition, events: Events) -> tuple[list[str], list[str]]:
    """The plan after ``events`` and the steps whose compensation was dispatched, in
    order; asserts (law 1) that each compensation dispatched is the next one planned."""
    order = [s.name for s in reversed(definition.steps)]
    linear = definition.is_linear
    undone: set[str] = set()
    completed: set[str] = set()
    late: set[str] = set()
    plan: list[str] = []
    started: list[str] = []
    rolling_back = False
    seen: list[Saga.Event] = []
    for index, event in enumerate(events):
        if isinstance(event, Saga.StepCompleted):
            completed.add(event.step)
        elif isinstance(event, Saga.StepCompletedLate):
            late.add(event.step)
            step = definition.step(event.step)
            if rolling_back and step.compensatable and event.step not in started + plan:
                plan = [name for name in order if name in {*plan, event.step}]
        elif isinstance(event, Saga.CompensationRequested):
            uncertain = uncertain_steps(definition, [*seen, event])
            expected = {
                s.name
                for s in definition.steps
                if s.compensatable
                and (
                    s.name in completed
                    or (s.name in uncertain and (s.compensate_uncertain or s.name in late))
                )
            }
            recorded = set(event.uncertain_steps or ())
            assert recorded == expected - completed, (
                f"law 1: CompensationRequested #{index + 1} names uncertain steps "
                f"{sorted(recorded)}; the log says {sorted(expected - completed)} (dispatched, "
                "outcome unknown: timed out or in flight)"
            )
            plan = [name for name in order if name in expected]
            rolling_back = True
        elif isinstance(event, Saga.OperatorCompensationRequested):
            plan = [name for name in order if name in {*plan, *event.steps}]
            rolling_back = True
        elif isinstance(event, Saga.CompensationDispatched) and event.step not in started:
            if not linear:
                _check_reverse_dependency_order(definition, seen, index, event.step, plan, undone)
                started.append(event.step)
                seen.append(event)
                continue
            remaining: list[str | None] = [name for name in plan if name not in started]
            remaining.append(None)
            assert remaining[0] == event.step, (
                f"law 1: compensation of {event.step!r} dispatched (event #{index + 1}); the "
                f"plan, newest first, says {remaining[0] or 'nothing'} next "
                f"(plan {plan}, compensated {started})"
            )
            started.append(event.step)
        elif isinstance(event, Saga.OperatorResolved) and event.kind == CommandKind.COMPENSATION:
            undone.add(event.step)
            if event.step not in started:
                started.append(event.step)
        elif isinstance(event, Saga.CompensationCompleted):
            undone.add(event.step)
        elif isinstance(event, TERMINAL_EVENTS):
            rolling_back = False
        seen.append(event)
    return plan, started


def _check_reverse_dependency_order(
    definition: SagaDefinition,
    before: Events,
    index: int,
    step: str,
    plan: list[str],
    undone: set[str],
) -> None:
    """Law 1 for steps in parallel: the compensation of ``step`` is planned, and is
    dispatched only once every planned step that depends on it was undone and every
    abandoned action that depends on it was settled (reverse dependency order)."""
    assert step in plan, (
        f"law 1: compensation of {step!r} dispatched (event #{index + 1}) but the plan is {plan}"
    )
    for other in definition.descendants(step):
        assert other not in plan or other in undone, (
            f"law 1: compensation of {step!r} dispatched (event #{index + 1}) before that "
            f"of {other!r}, which depends on it, completed (reverse dependency order)"
        )
    waiting = sorted(set(awaited_actions(before)) & definition.descendants(step) - set(plan))
    assert not waiting, (
        f"law 1: compensation of {step!r} dispatched (event #{index + 1}) while the "
        f"action of {waiting[0]!r}, which depends on it, may still be running"
    )


def expected_reply_error(
    definition: SagaDefinition,
    events: Events,
    step: str,
    kind: CommandKind,
    attempt: int | None,
) -> type[SagalogError] | None:
    """The typed error a reply must be refused with, judged from the definition and the
    log: an unknown step, a compensation reply for a step without one, a reply about a
    command never sent or an attempt never made; ``None`` when the reply is admissible."""
    if not definition.has_step(step):
        return UnknownStepError
    if kind is CommandKind.COMPENSATION and not definition.step(step).compensatable:
        return UnexpectedReplyError
    sent = latest_attempt(events, step, kind)
    if sent == 0:
        return UnexpectedReplyError
    if attempt is not None and not 1 <= attempt <= sent:
        return UnexpectedReplyError
    return None


def is_ended(events: Events) -> bool:
    """Whether the log holds ``SagaCompleted`` or ``SagaFailed``."""
    return any(isinstance(e, TERMINAL_EVENTS) for e in events)


def is_dead_lettered(events: Events) -> bool:
    """Whether the latest dead-letter event has not been followed by an operator action."""
    state = False
    for event in events:
        if isinstance(event, Saga.SagaDeadLettered):
            state = True
        elif isinstance(event, Saga.OperatorRetried | Saga.OperatorResolved):
            state = False
    return state


def compensation_began(events: Events) -> bool:
    """Whether ``CompensationRequested`` is in the log."""
    return any(isinstance(e, Saga.CompensationRequested) for e in events)


def operator_may(verb: str, definition: SagaDefinition, events: Events) -> bool:
    """Whether an operator may ``retry``, ``resolve`` or ``abort`` the saga now: retry and
    resolve only a dead-lettered saga; abort only a running one before its pivot (not
    once compensation began, nor while a retriable step is under way)."""
    if verb != "abort":
        return is_dead_lettered(events)
    past_pivot = any(
        s.kind is CommandKind.ACTION and definition.step(s.step).retriable
        for s in sent_commands(events)
    )
    return (
        not is_ended(events)
        and not is_dead_lettered(events)
        and not compensation_began(events)
        and not past_pivot
    )


# -- the laws ---------------------------------------------------------------------


def check_law1_effects(definition: SagaDefinition, events: Events) -> None:
    """Law 1: the effects are T1..Tn, or T1..Tj then Cj..C1 for the completed or
    uncertain compensatable steps (see :func:`compensation_plan`), newest first; a
    retriable step is retried, never compensated. Late successes are facts that may
    come at any time: they only add their step to the plan."""
    names = list(definition.step_names)
    done = [e for e in effects(events) if not e.late]
    first_undo = next(
        (i for i, e in enumerate(done) if e.kind is CommandKind.COMPENSATION), len(done)
    )
    forward = [e.step for e in done[:first_undo]]
    assert all(e.kind is CommandKind.COMPENSATION for e in done[first_undo:]), (
        f"law 1: an action took effect after compensation began: {done}"
    )
    backward = [e.step for e in done[first_undo:]]
    _, started = _walk_plan(definition, events)
    if definition.is_linear:
        assert forward == names[: len(forward)], (
            f"law 1: actions took effect as {forward}, not as a prefix of {names}"
        )
        assert backward == started[: len(backward)], (
            f"law 1: compensations ran as {backward}; they were dispatched as {started}"
        )
    else:
        for position, step in enumerate(forward):
            missing = set(definition.dependencies[step]) - set(forward[:position])
            assert not missing, (
                f"law 1: {step!r} took effect before {sorted(missing)}, which it waits for: "
                f"the actions run must form a down-set of the dependency graph ({forward})"
            )
        assert set(backward) <= set(started), (
            f"law 1: compensations ran as {backward}; only {started} were dispatched"
        )
    for effect in done:
        if effect.kind is CommandKind.COMPENSATION:
            assert not definition.step(effect.step).retriable, (
                f"law 1: retriable step {effect.step!r} was compensated"
            )
    for event in events:
        if isinstance(event, Saga.CompensationRequested) and event.failed_step is not None:
            assert not definition.step(event.failed_step).retriable, (
                f"law 1: retriable step {event.failed_step!r} failed and the saga rolled back "
                "instead of retrying it"
            )
        if isinstance(event, Saga.SagaCompleted):
            assert sorted(forward) == sorted(names), (
                f"law 1: SagaCompleted after only {forward} of {names}"
            )
            assert not backward, f"law 1: SagaCompleted after compensations {backward}"
    failed = [i for i, e in enumerate(events) if isinstance(e, Saga.SagaFailed)]
    if failed:
        planned, _ = _walk_plan(definition, events[: failed[-1]])
        undone = [
            e.step for e in effects(events[: failed[-1]]) if e.kind is CommandKind.COMPENSATION
        ]
        assert sorted(undone) == sorted(planned), (
            f"law 1: SagaFailed after compensations {undone}; the completed and uncertain "
            f"steps to compensate were {planned}"
        )


def _expected_delay_bounds(policy: RetryPolicy, attempt: int) -> tuple[float, float]:
    base = min(
        policy.max_delay.total_seconds(),
        policy.initial_delay.total_seconds() * policy.backoff_factor ** (attempt - 1),
    )
    return base * (1.0 - policy.jitter) - _DELAY_SLACK, base + _DELAY_SLACK


def check_failures_follow_retry_policies(definition: SagaDefinition, events: Events) -> None:
    """Law 1 (retries): a failed or timed-out attempt is retried while its policy allows,
    after the policy's delay; then a retriable action or a compensation is
    dead-lettered, and any other action makes the saga roll back. Timeouts fire at or
    after the deadline the dispatch recorded, never before; retries are dispatched at
    or after their due time, never before."""
    dispatched = {(s.step, s.kind, s.attempt): s for s in sent_commands(events)}
    scheduled: dict[tuple[str, CommandKind, int], datetime] = {}
    for index, event in enumerate(events):
        following = events[index + 1] if index + 1 < len(events) else None
        if isinstance(event, ACTION_OUTCOMES + COMPENSATION_OUTCOMES) and not isinstance(
            event, Saga.StepCompleted | Saga.CompensationCompleted
        ):
            is_action = isinstance(event, Saga.StepFailed | Saga.StepTimedOut)
            kind = CommandKind.ACTION if is_action else CommandKind.COMPENSATION
            if is_action and any(isinstance(e, Saga.CompensationRequested) for e in events[:index]):
                assert not definition.is_linear, (
                    f"law 1: {type(event).__name__} #{index + 1} recorded after compensation began"
                )
                assert not isinstance(following, Saga.StepRetryScheduled | Saga.StepDispatched), (
                    f"law 2: {type(event).__name__} #{index + 1} of an abandoned branch is "
                    f"followed by {type(following).__name__}"
                )
                continue
            step = definition.step(event.step)
            policy = step.retry if is_action else step.compensation_retry
            where = f"{type(event).__name__} #{index + 1} ({event.step!r} attempt {event.attempt})"
            if isinstance(event, Saga.StepTimedOut | Saga.CompensationTimedOut):
                sent = dispatched[(event.step, kind, event.attempt)]
                assert sent.deadline == event.deadline, (
                    f"law 1: {where} is for deadline {event.deadline}; the dispatch recorded "
                    f"deadline {sent.deadline}"
                )
                assert event.timestamp >= event.deadline, (
                    f"law 1: {where} fired at {event.timestamp}, before its deadline "
                    f"{event.deadline}"
                )
            if event.attempt < policy.max_attempts:
                retry_type = (
                    Saga.StepRetryScheduled if is_action else Saga.CompensationRetryScheduled
                )
                assert isinstance(following, retry_type), (
                    f"law 1: {where} has attempts left ({policy.max_attempts}) but is followed "
                    f"by {type(following).__name__}"
                )
                assert following.step == event.step
                assert following.attempt == event.attempt + 1
                low, high = _expected_delay_bounds(policy, event.attempt)
                waited = (following.due_at - event.timestamp).total_seconds()
                assert low <= waited <= high, (
                    f"law 1: retry after {where} is due {waited}s later; the policy says "
                    f"between {low}s and {high}s"
                )
                scheduled[(event.step, kind, event.attempt + 1)] = following.due_at
            elif is_action and not step.retriable:
                assert isinstance(following, Saga.CompensationRequested), (
                    f"law 1: {where} exhausted its attempts; compensation must begin, not "
                    f"{type(following).__name__}"
                )
                assert following.failed_step == event.step
            elif not definition.is_linear and is_dead_lettered(events[:index]):
                # another branch waits for the operator: this one is dead-lettered after
                pass
            else:
                assert isinstance(following, Saga.SagaDeadLettered), (
                    f"law 1: {where} exhausted its attempts and may not give up; it must be "
                    f"dead-lettered, not followed by {type(following).__name__}"
                )
                assert (following.step, following.kind, following.attempts) == (
                    event.step,
                    kind.value,
                    event.attempt,
                )
        elif isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
            kind = (
                CommandKind.ACTION
                if isinstance(event, Saga.StepDispatched)
                else CommandKind.COMPENSATION
            )
            if event.attempt == 1:
                continue
            previous = events[index - 1]
            if isinstance(previous, Saga.OperatorRetried):
                assert (previous.step, previous.kind) == (event.step, kind.value)
                continue
            due = scheduled.get((event.step, kind, event.attempt))
            assert due is not None, (
                f"law 1: attempt {event.attempt} of {event.step!r} ({kind.value}) dispatched "
                "without a scheduled retry or an operator's retry"
            )
            assert event.timestamp >= due, (
                f"law 1: attempt {event.attempt} of {event.step!r} ({kind.value}) dispatched "
                f"at {event.timestamp}, before its retry was due at {due}"
            )
        elif isinstance(event, Saga.SagaDeadLettered):
            failures = (
                Saga.StepFailed
                | Saga.StepTimedOut
                | Saga.CompensationFailed
                | Saga.CompensationTimedOut
            )
            if isinstance(events[index - 1], failures):
                continue
            assert not definition.is_linear, (
                f"law 1: SagaDeadLettered #{index + 1} follows no failure"
            )
            # a parallel branch that gave up while another waited for the operator
            last = [
                e
                for e in events[:index]
                if isinstance(e, failures | Saga.StepDispatched | Saga.CompensationDispatched)
                and e.step == event.step
            ]
            assert isinstance(last[-1] if last else None, failures), (
                f"law 1: SagaDeadLettered #{index + 1} names {event.step!r}, whose latest "
                "attempt did not fail"
            )


def check_law2_compensations(definition: SagaDefinition, events: Events) -> None:
    """Law 2: no step is dispatched after compensation began; no compensation runs for
    a step that was never dispatched or that failed (only completed or uncertain ones);
    each step is compensated at most once; compensations run one at a time."""
    requested = [i for i, e in enumerate(events) if isinstance(e, Saga.CompensationRequested)]
    assert len(requested) <= 1, f"law 2: compensation began {len(requested)} times"
    began = requested[0] if requested else None
    completed: set[str] = set()
    uncertain = uncertain_steps(definition, events[: began + 1]) if began is not None else set()
    undone: Counter[str] = Counter()
    running: str | None = None
    running_now: set[str] = set()
    for index, event in enumerate(events):
        if isinstance(event, Saga.StepDispatched):
            assert began is None or index < began, (
                f"law 2: step {event.step!r} dispatched (event #{index + 1}) after compensation "
                f"began (event #{began + 1 if began is not None else '?'})"
            )
        elif isinstance(event, Saga.StepCompleted | Saga.StepCompletedLate):
            completed.add(event.step)
        elif isinstance(event, Saga.CompensationDispatched):
            assert began is not None, (
                f"law 2: compensation of {event.step!r} dispatched but compensation never began"
            )
            assert index > began, (
                f"law 2: compensation of {event.step!r} dispatched before compensation began"
            )
            assert event.step in completed | uncertain, (
                f"law 2: compensation of {event.step!r} dispatched but the step neither "
                "completed nor was uncertain (dispatched, outcome unknown)"
            )
            assert definition.step(event.step).compensatable
            assert undone[event.step] == 0, (
                f"law 2: compensation of {event.step!r} dispatched after it was already undone"
            )
            assert not definition.is_linear or running in (None, event.step), (
                f"law 2: compensation of {event.step!r} dispatched while that of {running!r} "
                "is unfinished"
            )
            running = event.step
            running_now.add(event.step)
        elif isinstance(event, Saga.CompensationCompleted) or (
            isinstance(event, Saga.OperatorResolved) and event.kind == CommandKind.COMPENSATION
        ):
            undone[event.step] += 1
            assert undone[event.step] == 1, f"law 2: step {event.step!r} compensated twice"
            assert event.step in running_now
            running_now.discard(event.step)
            running = None


def check_partial_order(definition: SagaDefinition, events: Events) -> None:
    """The laws for steps in parallel: a step is dispatched only after every step it
    waits for completed (so the actions run form a down-set of the dependency graph),
    once per attempt, and never after compensation began; a step that failed is not
    compensated unless its outcome was also in doubt. (Reverse dependency order of
    compensations is checked with law 1.)"""
    done: set[str] = set()
    began = False
    for index, event in enumerate(events):
        if isinstance(event, Saga.StepCompleted | Saga.OperatorResolved):
            if not isinstance(event, Saga.OperatorResolved) or event.kind == CommandKind.ACTION:
                done.add(event.step)
        elif isinstance(event, Saga.CompensationRequested):
            began = True
        elif isinstance(event, Saga.StepDispatched):
            missing = [d for d in definition.dependencies[event.step] if d not in done]
            assert not missing, (
                f"partial order: {event.step!r} dispatched (event #{index + 1}) before "
                f"{missing[0]!r}, which it waits for, completed"
            )
            assert not began, (
                f"partial order: {event.step!r} dispatched (event #{index + 1}) after "
                "compensation began"
            )
    uncertain = uncertain_steps(definition, events)
    late = _late_steps(events)
    failed = {e.step for e in events if isinstance(e, Saga.StepFailed)} - done
    for event in events:
        if isinstance(event, Saga.CompensationDispatched):
            assert event.step not in failed or event.step in uncertain | late, (
                f"partial order: step {event.step!r} failed and was compensated"
            )


def check_law3_absorbing(events: Events) -> None:
    """Law 3: after ``SagaCompleted`` or ``SagaFailed`` nothing is recorded but late
    successes (``StepCompletedLate``, facts that change no status)."""
    ended: int | None = None
    for index, event in enumerate(events):
        if ended is not None:
            assert isinstance(event, Saga.StepCompletedLate), (
                f"law 3: {type(event).__name__} #{index + 1} was recorded after "
                f"{type(events[ended]).__name__} #{ended + 1}"
            )
        elif isinstance(event, TERMINAL_EVENTS):
            ended = index


def check_law6_command_ids(saga_id: UUID, events: Events) -> None:
    """Law 6: every dispatched command has a unique, deterministic command id, and the
    attempts of each step's action and compensation count 1, 2, 3, ..."""
    sent = sent_commands(events)
    ids = [s.command_id for s in sent]
    assert len(ids) == len(set(ids)), f"law 6: command ids repeat: {ids}"
    attempts: dict[tuple[str, CommandKind], int] = {}
    for command in sent:
        expected = command_id_for(saga_id, command.step, command.kind, command.attempt)
        assert command.command_id == expected, (
            f"law 6: {command.kind.value} of {command.step!r} attempt {command.attempt} has id "
            f"{command.command_id}, not command_id_for(...) = {expected}"
        )
        key = (command.step, command.kind)
        assert command.attempt == attempts.get(key, 0) + 1, (
            f"law 6: {command.kind.value} of {command.step!r} attempt {command.attempt} follows "
            f"attempt {attempts.get(key, 0)}"
        )
        attempts[key] = command.attempt


def check_commands_carry_their_inputs(definition: SagaDefinition, events: Events) -> None:
    """Dispatched commands carry the saga data and the earlier results (actions) or the
    step's own result, late or not, ``None`` if none came (compensations), and deadlines
    from the definition's timeouts."""
    assert isinstance(events[0], Saga.SagaStarted)
    data = events[0].data
    results: dict[str, Any] = {}
    reported: dict[str, Any] = {}
    for event in events:
        if isinstance(event, Saga.StepCompleted):
            results[event.step] = reported[event.step] = event.result
        elif isinstance(event, Saga.StepCompletedLate):
            reported[event.step] = event.result
        elif isinstance(event, Saga.StepDispatched):
            step = definition.step(event.step)
            assert event.payload == {"data": data, "results": results}, (
                f"action of {event.step!r} carries {event.payload}"
            )
            assert event.command_name == step.action
            expected = event.timestamp + step.timeout if step.timeout else None
            assert event.deadline == expected
        elif isinstance(event, Saga.CompensationDispatched):
            step = definition.step(event.step)
            assert event.payload == {"data": data, "result": reported.get(event.step)}, (
                f"compensation of {event.step!r} carries {event.payload}"
            )
            assert event.command_name == step.compensation
            timeout: timedelta | None = step.effective_compensation_timeout
            assert event.deadline == (event.timestamp + timeout if timeout else None)


def check_all(definition: SagaDefinition, saga_id: UUID, events: Events) -> None:
    """Every law that can be judged from the log alone; a broken one raises
    :class:`LawViolation` with the saga's history."""
    try:
        outstanding_command(events)
        check_law1_effects(definition, events)
        check_failures_follow_retry_policies(definition, events)
        check_law2_compensations(definition, events)
        check_partial_order(definition, events)
        check_law3_absorbing(events)
        check_law6_command_ids(saga_id, events)
        check_commands_carry_their_inputs(definition, events)
    except LawViolation:
        raise
    except AssertionError as broken:
        problem = str(broken) or f"a law check failed: {type(broken).__name__}"
        raise violation(problem, definition, saga_id, events) from broken
