"""Checks of one saga's recorded history, shared by the multi-process tests.

Each check reads only the events (as ``SagaManager.history`` returns them) and
returns a list of human-readable problems, empty when the history obeys the
laws of DESIGN.md that an end-to-end run can observe:

* versions are consecutive from 1 and there is exactly one ``SagaStarted``, first;
* for every ``(step, kind, attempt)`` there is exactly one dispatch event, its
  ``command_id`` is ``command_id_for(saga, step, kind, attempt)`` and the
  attempts of a step are 1, 2, 3... with no gap (no command was dispatched
  twice, nor under a different command id);
* no ``StepDispatched`` after ``CompensationRequested`` (law 2);
* a compensation is dispatched only for a step whose action completed, and each
  step is completed at most once and compensated at most once (law 2);
* the saga ended exactly once and nothing follows its end (law 3);
* ``COMPLETED`` means every step completed exactly once and nothing was
  compensated; ``FAILED`` means every completed compensatable step was
  compensated exactly once (law 1);
* nothing was dead-lettered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from uuid import UUID

from sagalog.domain import CommandKind, Saga, SagaDefinition, command_id_for

TERMINAL_EVENTS = (Saga.SagaCompleted, Saga.SagaFailed)


def history_problems(
    saga_id: UUID, events: Sequence[Saga.Event], definition: SagaDefinition
) -> list[str]:
    """Everything wrong with the history ``events`` of saga ``saga_id``."""
    problems: list[str] = []

    def problem(text: str) -> None:
        problems.append(f"saga {saga_id}: {text}")

    if not events:
        return [f"saga {saga_id}: has no events"]
    versions = [event.originator_version for event in events]
    if versions != list(range(1, len(events) + 1)):
        problem(f"versions are not consecutive from 1: {versions}")
    if any(event.originator_id != saga_id for event in events):
        problem("holds an event of another saga")
    started = [e for e in events if isinstance(e, Saga.SagaStarted)]
    if len(started) != 1 or not isinstance(events[0], Saga.SagaStarted):
        problem(f"has {len(started)} SagaStarted events; expected exactly one, first")

    dispatches: Counter[tuple[str, CommandKind, int]] = Counter()
    attempts: dict[tuple[str, CommandKind], list[int]] = {}
    completed: Counter[str] = Counter()
    late: set[str] = set()
    uncertain: set[str] = set()
    compensated: Counter[str] = Counter()
    compensation_began = False
    ended_at: int | None = None
    for index, event in enumerate(events):
        if ended_at is not None:
            if isinstance(event, Saga.StepCompletedLate):
                late.add(event.step)  # a fact may follow the end; it changes no status
                continue
            problem(f"{type(event).__name__} recorded after the saga ended")
            break
        if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
            kind = (
                CommandKind.ACTION
                if isinstance(event, Saga.StepDispatched)
                else CommandKind.COMPENSATION
            )
            key = (event.step, kind, event.attempt)
            dispatches[key] += 1
            attempts.setdefault((event.step, kind), []).append(event.attempt)
            expected_id = command_id_for(saga_id, event.step, kind, event.attempt)
            if event.command_id != expected_id:
                problem(
                    f"{kind.value} {event.step!r} attempt {event.attempt} was dispatched as "
                    f"{event.command_id}, not {expected_id}"
                )
            if kind is CommandKind.ACTION and compensation_began:
                problem(f"step {event.step!r} dispatched after compensation began")
            done = completed[event.step] or event.step in late | uncertain
            if kind is CommandKind.COMPENSATION and not done:
                problem(
                    f"compensation of {event.step!r} dispatched but its action neither "
                    "completed nor is uncertain"
                )
        elif isinstance(event, Saga.StepCompleted):
            completed[event.step] += 1
        elif isinstance(event, Saga.StepCompletedLate):
            late.add(event.step)
        elif isinstance(event, Saga.CompensationCompleted):
            compensated[event.step] += 1
        elif isinstance(event, Saga.CompensationRequested):
            if compensation_began:
                problem("compensation requested twice")
            compensation_began = True
            uncertain.update(event.uncertain_steps or ())
        elif isinstance(event, Saga.SagaDeadLettered):
            problem(f"dead-lettered at {event.step!r} ({event.kind}): {event.error}")
        if isinstance(event, TERMINAL_EVENTS):
            ended_at = index

    for key, count in dispatches.items():
        if count != 1:
            problem(f"{key[1].value} {key[0]!r} attempt {key[2]} dispatched {count} times")
    for (step, kind), seen in attempts.items():
        if seen != list(range(1, len(seen) + 1)):
            problem(f"{kind.value} {step!r} dispatched attempts {seen}, not 1..n in order")
    for step, count in completed.items():
        if count > 1:
            problem(f"step {step!r} completed {count} times")
    for step, count in compensated.items():
        if count > 1:
            problem(f"step {step!r} compensated {count} times")

    last = events[ended_at] if ended_at is not None else events[-1]
    if ended_at is None:
        problem(f"never ended; last event {type(last).__name__}")
    elif isinstance(last, Saga.SagaCompleted):
        missing = [s for s in definition.step_names if completed[s] != 1]
        if missing:
            problem(f"COMPLETED but steps {missing} did not complete exactly once")
        if compensation_began or compensated:
            problem("COMPLETED but compensation ran")
    elif isinstance(last, Saga.SagaFailed):
        if not compensation_began:
            problem("FAILED without CompensationRequested")
        undone = [
            s.name
            for s in definition.steps
            if s.compensatable
            and (completed[s.name] or s.name in uncertain)
            and compensated[s.name] != 1
        ]
        if undone:
            problem(
                f"FAILED but completed or uncertain steps {undone} were not compensated "
                "exactly once"
            )
    return problems
