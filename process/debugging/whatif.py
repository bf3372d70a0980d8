"""What-if replay: what would this saga have done under another definition?

``what_if(manager, saga_id, definition)`` reads the saga's log, recovers the
*inputs* that drove it — the replies it applied (with their message ids,
attempts and outcomes), the clock ticks that fired its timeouts and retries, and
the operator actions — and feeds them, in recorded order and at their recorded
times, to a fresh ``Saga`` of ``definition`` built in memory. Nothing is written
to the store. The report says where the decisions diverge (the first differing
command, compared by step, kind, attempt and name), both tails from there, both
end states, and which inputs did not apply to the other definition.

What-if cannot invent replies: a command the other definition sends that the
original never sent gets no answer, so the other saga ends waiting for it. Only
applied inputs are in the log (duplicate and stale replies recorded nothing), and
the clock only ticks when the original's timers fired.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sagalog.domain import (
    InvalidPayloadError,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaNotFoundError,
)
from sagalog.domain.payload import check_data
from sagalog.domain.status import CommandKind
from sagalog.process.debugging.replay import SagaSnapshot, snapshot_of
from sagalog.process.loading import ImportSpecError, import_object
from sagalog.process.manager import SagaManager

__all__ = [
    "CommandRecord",
    "DefinitionImportError",
    "DefinitionMismatchError",
    "RecordedInput",
    "SkippedInput",
    "WhatIfReport",
    "WhatIfSummary",
    "commands_of",
    "load_definition",
    "recorded_inputs",
    "what_if",
    "what_if_events",
    "what_if_many",
]


class DefinitionImportError(ImportSpecError):
    """``module:attribute`` could not be imported, or is not a ``SagaDefinition``."""


class DefinitionMismatchError(SagalogError, ValueError):
    """A what-if was asked with a definition of another saga type than the saga's.

    Replaying an ``OrderFulfillment`` saga's replies through a ``TravelBooking``
    definition matches none of its steps and "diverges" at the first command:
    a report that looks like an answer but is a mistake, so it is refused.
    """


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A dispatched command, as what-if compares them: step, kind, attempt, name."""

    step: str
    kind: CommandKind
    attempt: int
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name} of {self.step!r} #{self.attempt}"

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind.value,
            "attempt": self.attempt,
            "name": self.name,
        }


@dataclass(frozen=True, slots=True)
class RecordedInput:
    """One input that drove the saga, recovered from the event at ``version``.

    ``kind`` is ``reply`` (``outcome`` ``completed``/``failed`` of an ``action`` or
    ``compensation``), ``tick`` (the clock fired timers at ``at``) or ``operator``
    (``action`` ``retry``, ``resolve`` or ``abort``).
    """

    version: int
    at: datetime
    kind: str
    step: str | None = None
    command_kind: CommandKind | None = None
    outcome: str | None = None
    attempt: int | None = None
    message_id: str | None = None
    result: Any = None
    error: str | None = None
    action: str | None = None
    actor: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        """A short human description (``reply: action 'charge' #1 failed``)."""
        if self.kind == "tick":
            return f"clock tick at {self.at.isoformat()}"
        if self.kind == "operator":
            return f"operator {self.action} by {self.actor}: {self.reason}"
        assert self.command_kind is not None
        return f"reply: {self.command_kind.value} of {self.step!r} #{self.attempt} {self.outcome}"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "description": self.describe(),
        }


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """A recorded input that changed nothing under the other definition, and why."""

    input: RecordedInput
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {**self.input.to_json(), "reason": self.reason}


@dataclass(frozen=True)
class WhatIfReport:
    """The original run of one saga beside its run under another definition."""

    saga_id: UUID
    original_definition: str
    other_definition: str
    inputs: tuple[RecordedInput, ...]
    skipped: tuple[SkippedInput, ...]
    original_commands: tuple[CommandRecord, ...]
    other_commands: tuple[CommandRecord, ...]
    original_end: SagaSnapshot
    other_end: SagaSnapshot
    #: The data patch the other run started with (``None``: the recorded data).
    patch: dict[str, Any] | None = None

    @property
    def divergence_index(self) -> int | None:
        """Position of the first differing command (``None``: the same commands)."""
        for index, (a, b) in enumerate(
            zip(self.original_commands, self.other_commands, strict=False)
        ):
            if a != b:
                return index
        shorter = min(len(self.original_commands), len(self.other_commands))
        if len(self.original_commands) != len(self.other_commands):
            return shorter
        return None

    @property
    def diverged(self) -> bool:
        """Whether the other definition dispatched different commands."""
        return self.divergence_index is not None

    @property
    def first_difference(self) -> tuple[CommandRecord | None, CommandRecord | None] | None:
        """The original's and the other's command at the divergence (``None``: none sent)."""
        index = self.divergence_index
        if index is None:
            return None
        return _at(self.original_commands, index), _at(self.other_commands, index)

    @property
    def original_tail(self) -> tuple[CommandRecord, ...]:
        """The original's commands from the divergence on (empty when none)."""
        index = self.divergence_index
        return () if index is None else self.original_commands[index:]

    @property
    def other_tail(self) -> tuple[CommandRecord, ...]:
        """The other definition's commands from the divergence on (empty when none)."""
        index = self.divergence_index
        return () if index is None else self.other_commands[index:]

    @property
    def ends_differently(self) -> bool:
        """Whether the end states differ in status or in the command waited on."""
        a, b = self.original_end, self.other_end
        return a.status != b.status or _waits_on(a) != _waits_on(b)

    def summary(self) -> list[str]:
        """A few sentences: where the runs diverge and how each ended."""
        lines = [
            f"saga {self.saga_id}: {len(self.inputs)} recorded inputs replayed against "
            f"{self.other_definition} (originally {self.original_definition})"
            + (f", with the data patched: {', '.join(sorted(self.patch))}." if self.patch else ".")
        ]
        index = self.divergence_index
        if index is None:
            lines.append("Same decisions: every command is the same.")
        else:
            was = _at(self.original_commands, index)
            now = _at(self.other_commands, index)
            lines.append(
                f"First difference at command {index + 1}: "
                f"originally {was or 'nothing'}, now {now or 'nothing'}."
            )
        ending = "ends differently" if self.ends_differently else "ends the same"
        lines.append(
            f"It {ending}: originally {_end_text(self.original_end)}, "
            f"now {_end_text(self.other_end)}."
        )
        if self.skipped:
            n = len(self.skipped)
            lines.append(f"{n} recorded input{'' if n == 1 else 's'} did not apply.")
        return lines

    def to_json(self) -> dict[str, Any]:
        first = self.first_difference
        return {
            "saga_id": str(self.saga_id),
            "original_definition": self.original_definition,
            "other_definition": self.other_definition,
            "inputs": len(self.inputs),
            "diverged": self.diverged,
            "ends_differently": self.ends_differently,
            "divergence_index": self.divergence_index,
            "first_difference": (
                None
                if first is None
                else {
                    "original": first[0].to_json() if first[0] else None,
                    "other": first[1].to_json() if first[1] else None,
                }
            ),
            "original_tail": [c.to_json() for c in self.original_tail],
            "other_tail": [c.to_json() for c in self.other_tail],
            "original_end": self.original_end.to_json(),
            "other_end": self.other_end.to_json(),
            "skipped": [s.to_json() for s in self.skipped],
            "patch": self.patch,
        }


@dataclass(frozen=True)
class WhatIfSummary:
    """What-if over many sagas: how many would have decided or ended differently."""

    reports: tuple[WhatIfReport, ...]
    missing: tuple[UUID, ...] = field(default=())
    #: Sagas of another type than the definition's, left out (see DefinitionMismatchError).
    other_type: tuple[UUID, ...] = field(default=())

    @property
    def total(self) -> int:
        return len(self.reports)

    @property
    def diverged(self) -> int:
        return sum(1 for r in self.reports if r.diverged)

    @property
    def ended_differently(self) -> int:
        return sum(1 for r in self.reports if r.ends_differently)

    @property
    def transitions(self) -> dict[tuple[str, str], int]:
        """Counts of (original end status, other end status) pairs."""
        counts: dict[tuple[str, str], int] = {}
        for r in self.reports:
            key = (r.original_end.status, r.other_end.status)
            counts[key] = counts.get(key, 0) + 1
        return counts


def _at(commands: tuple[CommandRecord, ...], index: int) -> CommandRecord | None:
    return commands[index] if index < len(commands) else None


def _waits_on(state: SagaSnapshot) -> tuple[str, str, int, str] | None:
    p = state.pending
    return None if p is None else (p.step, p.kind.value, p.attempt, p.name)


def _end_text(state: SagaSnapshot) -> str:
    if state.pending is not None:
        p = state.pending
        return f"{state.status} waiting on {p.kind.value} {p.name} of {p.step!r} #{p.attempt}"
    return state.status


# -- recovering the inputs -------------------------------------------------------------

_REPLY_EVENTS: dict[type[Saga.Event], tuple[CommandKind, str]] = {
    Saga.StepCompleted: (CommandKind.ACTION, "completed"),
    Saga.StepCompletedLate: (CommandKind.ACTION, "completed"),
    Saga.StepFailed: (CommandKind.ACTION, "failed"),
    Saga.CompensationCompleted: (CommandKind.COMPENSATION, "completed"),
    Saga.CompensationFailed: (CommandKind.COMPENSATION, "failed"),
}
_RETRY_SCHEDULED = (Saga.StepRetryScheduled, Saga.CompensationRetryScheduled)
_TIMED_OUT = (Saga.StepTimedOut, Saga.CompensationTimedOut)


def recorded_inputs(events: list[Saga.Event]) -> list[RecordedInput]:
    """The inputs that drove a saga, recovered from its events (``SagaStarted`` excluded)."""
    inputs: list[RecordedInput] = []
    previous: Saga.Event | None = None
    for event in events:
        found = _input_of(event, previous)
        if not isinstance(event, Saga.StepCompletedLate):
            # A late fact leaves the timers alone: a retry scheduled before it is still
            # what the next dispatch follows.
            previous = event
        if found is None:
            continue
        if (
            found.kind == "tick"
            and inputs
            and inputs[-1].kind == "tick"
            and inputs[-1].at == found.at
        ):
            continue  # one tick fires everything due at that moment
        inputs.append(found)
    return inputs


def _input_of(event: Saga.Event, previous: Saga.Event | None) -> RecordedInput | None:
    version = event.originator_version
    at = event.timestamp
    reply = _REPLY_EVENTS.get(type(event))
    if reply is not None:
        kind, outcome = reply
        return RecordedInput(
            version=version,
            at=at,
            kind="reply",
            step=getattr(event, "step", None),
            command_kind=kind,
            outcome=outcome,
            attempt=getattr(event, "attempt", None),
            message_id=event.causation_id,
            result=getattr(event, "result", None),
            error=getattr(event, "error", None),
        )
    if isinstance(event, _TIMED_OUT):
        return RecordedInput(version=version, at=at, kind="tick")
    if (
        isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched)
        and isinstance(previous, _RETRY_SCHEDULED)
        and previous.timestamp < at
    ):
        return RecordedInput(version=version, at=at, kind="tick")
    if isinstance(
        event,
        Saga.OperatorRetried
        | Saga.OperatorResolved
        | Saga.SagaAborted
        | Saga.OperatorCompensationRequested,
    ):
        action = {
            Saga.OperatorRetried: "retry",
            Saga.OperatorResolved: "resolve",
            Saga.SagaAborted: "abort",
            Saga.OperatorCompensationRequested: "compensate",
        }[type(event)]
        return RecordedInput(
            version=version,
            at=at,
            kind="operator",
            action=action,
            actor=event.actor,
            reason=event.reason,
        )
    return None


def commands_of(events: Iterable[object]) -> tuple[CommandRecord, ...]:
    """The commands ``events`` dispatched (actions and compensations), in order."""
    found: list[CommandRecord] = []
    for event in events:
        if isinstance(event, Saga.StepDispatched):
            kind = CommandKind.ACTION
        elif isinstance(event, Saga.CompensationDispatched):
            kind = CommandKind.COMPENSATION
        else:
            continue
        found.append(CommandRecord(event.step, kind, event.attempt, event.command_name))
    return tuple(found)


# -- feeding them to another definition -------------------------------------------------


def _feed(saga: Saga, item: RecordedInput) -> str | None:
    """Apply ``item`` to ``saga``; ``None`` if it applied, else why it did not.

    A reply goes through ``Saga.answer``, the entry the manager decides replies
    through, so what-if and the live manager cannot judge a reply differently.
    """
    try:
        if item.kind == "tick":
            fired = saga.fire_due(item.at)
            return None if fired else "nothing was due at that moment"
        if item.kind == "operator":
            assert item.actor is not None
            assert item.reason is not None
            if item.action == "retry":
                saga.retry(actor=item.actor, reason=item.reason, now=item.at)
            elif item.action == "resolve":
                saga.resolve(actor=item.actor, reason=item.reason, now=item.at)
            elif item.action == "compensate":
                saga.compensate(actor=item.actor, reason=item.reason, now=item.at)
            else:
                saga.abort(actor=item.actor, reason=item.reason, now=item.at)
            return None
        assert item.step is not None
        assert item.command_kind is not None
        verdict = saga.answer(
            item.step,
            item.command_kind,
            item.outcome == "completed",
            now=item.at,
            result=item.result,
            error=item.error or "",
            attempt=item.attempt,
            message_id=item.message_id,
        )
    except SagalogError as exc:
        return str(exc)
    return None if verdict.applied else f"{verdict.outcome.value}: {verdict.reason}"


def _label(definition: SagaDefinition) -> str:
    return f"{definition.name} v{definition.version} ({definition.fingerprint[:12]})"


def what_if(
    manager: SagaManager,
    saga_id: UUID,
    definition: SagaDefinition,
    *,
    patch: dict[str, Any] | None = None,
) -> WhatIfReport:
    """Replay saga ``saga_id``'s recorded inputs through ``definition``, in memory only.

    ``patch`` tries corrected data before an operator retries with it: its top-level
    keys replace (or add) those of the saga's data from the start, checked as
    ``Saga.retry``'s patch is (:class:`~sagalog.domain.InvalidPayloadError`).

    :class:`~sagalog.domain.SagaNotFoundError` if there is no such saga;
    :class:`DefinitionMismatchError` if ``definition`` is of another saga type;
    ``TypeError`` if ``definition`` is not a ``SagaDefinition``.
    """
    if not isinstance(definition, SagaDefinition):
        raise TypeError(f"definition must be a SagaDefinition, not {type(definition).__name__}")
    return what_if_events(manager.history(saga_id), definition, patch=patch)


def what_if_events(
    events: list[Saga.Event],
    definition: SagaDefinition,
    *,
    patch: dict[str, Any] | None = None,
) -> WhatIfReport:
    """:func:`what_if` on a saga's events (oldest first, from ``SagaStarted``) given directly."""
    if not isinstance(definition, SagaDefinition):
        raise TypeError(f"definition must be a SagaDefinition, not {type(definition).__name__}")
    if not events or not isinstance(events[0], Saga.SagaStarted):
        raise SagaNotFoundError("a saga's events begin with SagaStarted")
    started = events[0]
    saga_id = started.originator_id
    if definition.name != started.saga_type:
        raise DefinitionMismatchError(
            f"saga {saga_id} is a {started.saga_type!r} saga; {_label(definition)} "
            f"defines {definition.name!r} sagas"
        )
    original: Any = None
    for event in events:
        original = event.mutate(original)
    inputs = recorded_inputs(events)
    data = started.data if patch is None else patched_data(started.data, patch)
    other = Saga.start(
        definition,
        data,
        saga_id=saga_id,
        now=started.timestamp,
        message_id=started.causation_id,
    )
    skipped = []
    for item in inputs:
        why = _feed(other, item)
        if why is not None:
            skipped.append(SkippedInput(item, why))
    return WhatIfReport(
        saga_id=saga_id,
        original_definition=_label(original.definition),
        other_definition=_label(definition),
        inputs=tuple(inputs),
        skipped=tuple(skipped),
        original_commands=commands_of(events),
        other_commands=commands_of(other.pending_events),
        original_end=snapshot_of(original),
        other_end=snapshot_of(other),
        patch=None if patch is None else check_data(patch),
    )


def patched_data(data: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``patch``'s top-level keys replaced or added, both checked like saga data."""
    if not isinstance(patch, dict) or not patch:
        raise InvalidPayloadError("a data patch must be a non-empty JSON object")
    return check_data({**data, **check_data(patch)})


def what_if_many(
    manager: SagaManager, saga_ids: Iterable[UUID], definition: SagaDefinition
) -> WhatIfSummary:
    """:func:`what_if` over many sagas.

    Ids with no saga are listed in ``missing``, sagas of another type than
    ``definition``'s in ``other_type``; neither counts in the totals.
    """
    reports: list[WhatIfReport] = []
    missing: list[UUID] = []
    other_type: list[UUID] = []
    for saga_id in saga_ids:
        try:
            reports.append(what_if(manager, saga_id, definition))
        except SagaNotFoundError:
            missing.append(saga_id)
        except DefinitionMismatchError:
            other_type.append(saga_id)
    return WhatIfSummary(
        reports=tuple(reports), missing=tuple(missing), other_type=tuple(other_type)
    )


def load_definition(spec: str) -> SagaDefinition:
    """Import the ``SagaDefinition`` named by ``module:attribute`` (attribute may be dotted).

    :class:`DefinitionImportError` with a one-line message when it cannot.
    """
    try:
        found = import_object(spec, what="definition")
    except ImportSpecError as exc:
        raise DefinitionImportError(str(exc)) from None
    if not isinstance(found, SagaDefinition):
        raise DefinitionImportError(f"{spec} is a {type(found).__name__}, not a SagaDefinition")
    return found
