"""The rows of the read model, and how one saga event changes them.

The rules here are pure: :func:`evolve_summary` takes the saga's current
summary row (or ``None`` before its first event) and one event, and returns the
new row; :func:`timeline_entry` turns one event into one timeline row. Neither
loads the aggregate nor reads anything else, so the projection can apply a
batch of events from the log with one read of the affected rows and one write
(:func:`apply_event` is the same rule on a dict of column values, changed in
place, which is what the projection uses for speed).

The summary mirrors what the ``Saga`` aggregate's own ``evolve`` methods do to
the fields it shows (status, current step, last error, next wake-up), and the
tests hold it to that: for every saga at every version, the row equals what the
aggregate rebuilt at that version says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from sagalog.domain import Saga, SagalogError, SagaStatus
from sagalog.domain.status import CommandKind
from sagalog.process.store.shredding import ERASED

__all__ = [
    "ACTIVE_STATUSES",
    "HANDLED_EVENT_TYPES",
    "ProjectionIntegrityError",
    "Row",
    "SagaSummary",
    "TimelineEntry",
    "apply_event",
    "evolve_summary",
    "timeline_entry",
]

#: Statuses of a saga that is still running on its own (not ended, not waiting for a person).
ACTIVE_STATUSES = frozenset({SagaStatus.STARTED, SagaStatus.PENDING, SagaStatus.COMPENSATING})

#: Longest text kept in a row (errors, reasons, details); longer text is cut with "…".
MAX_TEXT = 500
#: Longest timeline detail.
MAX_DETAIL = 200


class ProjectionIntegrityError(SagalogError, RuntimeError):
    """The log and the read model disagree (an event for a saga the view never saw
    start, or a version gap): the view was damaged and must be rebuilt."""


@dataclass(frozen=True, slots=True)
class SagaSummary:
    """One row of ``saga_summary``: a saga as an operator first wants to see it."""

    saga_id: UUID
    saga_type: str
    definition_version: int
    status: str
    current_step: str | None
    attempt: int
    started_at: datetime
    updated_at: datetime
    next_deadline: datetime | None
    wakeup_kind: str | None
    last_error: str | None
    failure_reason: str | None
    event_count: int
    last_version: int
    compensation_started_at: datetime | None
    last_progress_at: datetime | None
    compensating_since: datetime | None
    dead_lettered_at: datetime | None
    dead_letter_step: str | None
    dead_letter_kind: str | None
    step_marks: dict[str, str] | None
    in_force_since: datetime | None
    in_force_steps: str | None
    saga_deadline: datetime | None
    parallel: bool
    steps_in_flight: list[str]
    wakeup_step: str | None
    step_timers: dict[str, list[Any]]

    def as_row(self) -> dict[str, Any]:
        """The row as a dict of column values (shallow: values are immutable)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_row(cls, row: Any) -> SagaSummary:
        """Build from a database row (anything with the columns as keys)."""
        mapping = row._mapping if hasattr(row, "_mapping") else row
        return cls(**{name: mapping[name] for name in cls.__slots__})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ids and instants as strings."""
        return {key: _jsonable(value) for key, value in self.as_row().items()}


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One row of ``saga_timeline``: one event of one saga."""

    saga_id: UUID
    version: int
    time: datetime
    event_type: str
    step: str | None
    attempt: int | None
    detail: str

    def as_row(self) -> dict[str, Any]:
        """The row as a dict of column values (shallow: values are immutable)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_row(cls, row: Any) -> TimelineEntry:
        """Build from a database row (anything with the columns as keys)."""
        mapping = row._mapping if hasattr(row, "_mapping") else row
        return cls(**{name: mapping[name] for name in cls.__slots__})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ids and instants as strings."""
        return {key: _jsonable(value) for key, value in self.as_row().items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cut(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: A summary row as a mutable dict of column values, used while applying a batch.
Row = dict[str, Any]


def _with_status(row: Row, status: SagaStatus, at: datetime) -> None:
    """Put ``row`` in ``status``, with the stuck-candidate columns that go with it."""
    was_compensating = row["status"] == SagaStatus.COMPENSATING.value
    row["status"] = status.value
    row["last_progress_at"] = at if status in ACTIVE_STATUSES else None
    if status is SagaStatus.COMPENSATING:
        # When the saga last *entered* COMPENSATING: an operator's retry restarts the clock.
        if not (was_compensating and row["compensating_since"]):
            row["compensating_since"] = at
    else:
        row["compensating_since"] = None
    if status is SagaStatus.DEAD_LETTERED:
        row["dead_lettered_at"] = row["dead_lettered_at"] or at
    else:
        row["dead_lettered_at"] = row["dead_letter_step"] = row["dead_letter_kind"] = None


# -- how each event changes the summary (after the changes common to all events) ----


def _step_dispatched(row: Row, event: Any) -> None:
    row["current_step"] = event.step
    row["attempt"] = event.attempt
    if row["status"] == SagaStatus.STARTED.value:
        _with_status(row, SagaStatus.PENDING, event.timestamp)


def _failed(row: Row, event: Any) -> None:
    row["last_error"] = _cut(event.error)


def _step_timed_out(row: Row, event: Any) -> None:
    row["last_error"] = f"timed out at {event.deadline.isoformat()} (attempt {event.attempt})"


def _compensation_timed_out(row: Row, event: Any) -> None:
    row["last_error"] = (
        f"compensation timed out at {event.deadline.isoformat()} (attempt {event.attempt})"
    )


def _compensation_requested(row: Row, event: Any) -> None:
    row["current_step"] = None
    row["failure_reason"] = _cut(event.reason)
    row["compensation_started_at"] = event.timestamp
    _with_status(row, SagaStatus.COMPENSATING, event.timestamp)


def _compensation_dispatched(row: Row, event: Any) -> None:
    row["current_step"] = event.step
    row["attempt"] = event.attempt


def _saga_completed(row: Row, event: Any) -> None:
    row["current_step"] = None
    _with_status(row, SagaStatus.COMPLETED, event.timestamp)


def _saga_failed(row: Row, event: Any) -> None:
    row["current_step"] = None
    row["failure_reason"] = _cut(event.reason)
    _with_status(row, SagaStatus.FAILED, event.timestamp)


def _dead_lettered(row: Row, event: Any) -> None:
    row["dead_letter_step"] = event.step
    row["dead_letter_kind"] = event.kind
    row["dead_lettered_at"] = event.timestamp
    _with_status(row, SagaStatus.DEAD_LETTERED, event.timestamp)


def _operator_moved_on(row: Row, event: Any) -> None:
    """``OperatorRetried`` / ``OperatorResolved``: back to running, in the dead letter's phase."""
    action = CommandKind(event.kind) is CommandKind.ACTION
    _with_status(row, SagaStatus.PENDING if action else SagaStatus.COMPENSATING, event.timestamp)


def _unchanged(row: Row, event: Any) -> None:
    """Events that change nothing here beyond what every event changes."""


# -- step marks: what the log says of each compensatable step ------------------------
#
# ``step_marks`` maps each compensatable step to letters: its kind, ``c`` (compensated
# when uncertain) or ``o`` (opted out), then ``f`` while its action is in flight, ``d``
# when its outcome is in doubt (an attempt timed out — then also ``t`` — or it was in
# flight when the saga rolled back), ``l`` when a late success was recorded, ``x`` once its
# compensation was dispatched. A FAILED saga with a step marked ``l``, or ``c`` and ``d``,
# and not ``x`` has an effect in force: the same rule as ``Saga.effects_in_force``.


def _marks_of(definition: dict[str, Any]) -> dict[str, str] | None:
    marks = {
        step["name"]: "c" if step.get("compensate_uncertain", True) else "o"
        for step in definition.get("steps", ())
        if step.get("compensation") is not None
    }
    return marks or None


def _mark(row: Row, step: str, add: str = "", remove: str = "") -> None:
    marks = row["step_marks"]
    if not marks or step not in marks:
        return
    letters = marks[step]
    changed = "".join(c for c in letters if c not in remove)
    changed += "".join(c for c in add if c not in changed)
    if changed != letters:
        row["step_marks"] = {**marks, step: changed}


def _update_in_force(row: Row, at: datetime) -> None:
    marks = row["step_marks"]
    steps = []
    if marks and row["status"] == SagaStatus.FAILED.value:
        steps = [
            name
            for name, letters in marks.items()
            if "x" not in letters and ("l" in letters or ("c" in letters and "d" in letters))
        ]
    if steps:
        row["in_force_steps"] = ",".join(reversed(steps))
        row["in_force_since"] = row["in_force_since"] or at
    else:
        row["in_force_steps"] = row["in_force_since"] = None


def _action_dispatched(row: Row, event: Any) -> None:
    _step_dispatched(row, event)
    _mark(row, event.step, add="f")


def _action_completed(row: Row, event: Any) -> None:
    _mark(row, event.step, remove="fd")


def _action_failed(row: Row, event: Any) -> None:
    _failed(row, event)
    _mark(row, event.step, remove="f")


def _action_timed_out(row: Row, event: Any) -> None:
    _step_timed_out(row, event)
    _mark(row, event.step, add="dt", remove="f")


def _rollback_requested(row: Row, event: Any) -> None:
    _compensation_requested(row, event)
    for name, letters in list((row["step_marks"] or {}).items()):
        if "f" in letters:
            _mark(row, name, add="d", remove="f")


def _compensation_of_step_dispatched(row: Row, event: Any) -> None:
    _compensation_dispatched(row, event)
    _mark(row, event.step, add="x")


def _late_success(row: Row, event: Any) -> None:
    _mark(row, event.step, add="l")
    _update_in_force(row, event.timestamp)


def _ended_failed(row: Row, event: Any) -> None:
    _saga_failed(row, event)
    _update_in_force(row, event.timestamp)


def _operator_compensates(row: Row, event: Any) -> None:
    row["current_step"] = None
    _with_status(row, SagaStatus.COMPENSATING, event.timestamp)
    _update_in_force(row, event.timestamp)


def _operator_resolved(row: Row, event: Any) -> None:
    _operator_moved_on(row, event)
    if CommandKind(event.kind) is CommandKind.ACTION:
        _mark(row, event.step, remove="fd")


def _deadline_passed(row: Row, event: Any) -> None:
    row["saga_deadline"] = None


def _forgotten(row: Row, event: Any) -> None:
    """The saga's data is erased: so are its error and reason here."""
    for column in ("last_error", "failure_reason"):
        if row[column] is not None:
            row[column] = ERASED


_EVOLVE: dict[type[Any], Callable[[Row, Any], None]] = {
    Saga.SagaStarted: _unchanged,  # the row was built from the event already
    Saga.StepDispatched: _action_dispatched,
    Saga.StepCompleted: _action_completed,
    Saga.StepCompletedLate: _late_success,
    Saga.StepFailed: _action_failed,
    Saga.StepTimedOut: _action_timed_out,
    Saga.StepRetryScheduled: _unchanged,
    Saga.CompensationRequested: _rollback_requested,
    Saga.CompensationDispatched: _compensation_of_step_dispatched,
    Saga.CompensationCompleted: _unchanged,
    Saga.CompensationFailed: _failed,
    Saga.CompensationTimedOut: _compensation_timed_out,
    Saga.CompensationRetryScheduled: _unchanged,
    Saga.SagaCompleted: _saga_completed,
    Saga.SagaFailed: _ended_failed,
    Saga.SagaDeadLettered: _dead_lettered,
    Saga.OperatorRetried: _operator_moved_on,
    Saga.OperatorResolved: _operator_resolved,
    Saga.OperatorCompensationRequested: _operator_compensates,
    Saga.SagaAborted: _unchanged,
    Saga.SagaDeadlinePassed: _deadline_passed,
    Saga.SagaForgotten: _forgotten,
}

#: The saga event types with a rule of their own (any other type only counts and timestamps).
HANDLED_EVENT_TYPES = frozenset(_EVOLVE)

_WAKEUP_KIND: dict[type[Any], str] = {
    Saga.StepDispatched: "deadline",
    Saga.CompensationDispatched: "deadline",
    Saga.StepRetryScheduled: "retry",
    Saga.CompensationRetryScheduled: "retry",
}


def evolve_summary(row: SagaSummary | None, event: Saga.Event) -> SagaSummary:
    """The summary row after ``event``, given the row before it (``None`` before ``SagaStarted``).

    Pure: ``row`` is not changed. Raises :class:`ProjectionIntegrityError` when
    the event cannot follow the row (no row for a saga whose start was never
    seen, or a version that is not the next one).
    """
    values = apply_event(None if row is None else row.as_row(), event)
    return SagaSummary(**values)


def apply_event(row: Row | None, event: Saga.Event) -> Row:
    """:func:`evolve_summary` on a dict of column values, changed in place and returned.

    The projection applies whole batches this way (no object per event); a new
    dict is returned for ``SagaStarted``.
    """
    version = event.originator_version
    if row is None:
        if not isinstance(event, Saga.SagaStarted):
            raise ProjectionIntegrityError(
                f"saga {event.originator_id}: {type(event).__name__} (version {version}) "
                "but no summary row; rebuild the projections"
            )
        row = {
            "saga_id": event.originator_id,
            "saga_type": event.saga_type,
            "definition_version": event.definition_version,
            "status": SagaStatus.STARTED.value,
            "current_step": None,
            "attempt": 0,
            "started_at": event.timestamp,
            "updated_at": event.timestamp,
            "next_deadline": None,
            "wakeup_kind": None,
            "last_error": None,
            "failure_reason": None,
            "event_count": 0,
            "last_version": 0,
            "compensation_started_at": None,
            "last_progress_at": event.timestamp,
            "compensating_since": None,
            "dead_lettered_at": None,
            "dead_letter_step": None,
            "dead_letter_kind": None,
            "step_marks": _marks_of(event.definition),
            "in_force_since": None,
            "in_force_steps": None,
            "saga_deadline": _saga_deadline(event),
            "parallel": not _is_linear(event.definition),
            "steps_in_flight": [],
            "wakeup_step": None,
            "step_timers": {
                step["name"]: [IDLE, None, 0] for step in event.definition.get("steps", ())
            },
        }
    elif version != row["last_version"] + 1:
        raise ProjectionIntegrityError(
            f"saga {row['saga_id']}: event version {version} does not follow the row's "
            f"version {row['last_version']}; rebuild the projections"
        )
    wakeup = event.wakeup_at()
    row["updated_at"] = event.timestamp
    row["event_count"] += 1
    row["last_version"] = version
    row["next_deadline"] = wakeup
    row["wakeup_kind"] = _WAKEUP_KIND.get(type(event)) if wakeup is not None else None
    if row["last_progress_at"] is not None:
        row["last_progress_at"] = event.timestamp
    _EVOLVE.get(type(event), _unchanged)(row, event)
    _track_steps(row, event)
    if row["parallel"]:
        wakeup, row["wakeup_kind"], row["wakeup_step"] = _earliest_timer(row)
        row["next_deadline"] = wakeup
    else:
        row["wakeup_step"], kind = _timer_due_at(row["step_timers"], wakeup)
        row["wakeup_kind"] = row["wakeup_kind"] or kind
    deadline = row["saga_deadline"]
    if (
        deadline is not None
        and row["status"] in _DEADLINE_STATUSES
        and (wakeup is None or deadline < wakeup)
    ):
        row["next_deadline"], row["wakeup_kind"] = deadline, "saga_deadline"
        row["wakeup_step"] = None
    return row


# -- steps in parallel: each step's timer, mirrored from the aggregate's step states -----
#
# ``step_timers`` maps every step of the definition (in list order) to
# ``[phase, due, attempt]``: its phase (one of the constants below), when its timer is
# due (ISO text, or null) and the attempt of the latest command dispatched for it. The
# phases mirror ``Saga._step_timers``: a command in flight waits for its deadline, a
# scheduled retry for its due time, and an action abandoned by a parallel rollback keeps
# its deadline while the rollback waits for its outcome. A parallel saga's next wake-up
# is the earliest of these (``Saga.next_wakeup``), not the latest event's.

#: Nothing pending for the step.
IDLE = ""
#: Its action is in flight.
ACTION_IN_FLIGHT = "f"
#: Its action waits for a scheduled retry.
ACTION_RETRY = "r"
#: Its action was in flight (or due a retry) when the saga began to roll back.
ABANDONED = "a"
#: Its compensation is in flight.
COMPENSATION_IN_FLIGHT = "cf"
#: Its compensation waits for a scheduled retry.
COMPENSATION_RETRY = "cr"

_IN_FLIGHT = (ACTION_IN_FLIGHT, COMPENSATION_IN_FLIGHT)
_TIMER_KIND = {
    ACTION_IN_FLIGHT: "deadline",
    COMPENSATION_IN_FLIGHT: "deadline",
    ABANDONED: "deadline",
    ACTION_RETRY: "retry",
    COMPENSATION_RETRY: "retry",
}
_ENDS_TIMER = (
    Saga.StepCompleted,
    Saga.StepFailed,
    Saga.StepTimedOut,
    Saga.CompensationCompleted,
    Saga.CompensationFailed,
    Saga.CompensationTimedOut,
    Saga.OperatorResolved,
)


def _is_linear(definition: dict[str, Any]) -> bool:
    """``SagaDefinition.is_linear`` on the stored definition: each step waits for the previous."""
    previous: list[str] = []
    for step in definition.get("steps", ()):
        after = step.get("after")
        if after is not None and list(after) != previous:
            return False
        previous = [step["name"]]
    return True


def _set_timer(row: Row, step: str, phase: str, due: datetime | None, attempt: int | None) -> None:
    timers = row["step_timers"]
    if step not in timers:
        return
    before = timers[step]
    entry = [
        phase,
        None if due is None else due.isoformat(),
        before[2] if attempt is None else attempt,
    ]
    if entry != before:
        row["step_timers"] = {**timers, step: entry}


def _track_steps(row: Row, event: Any) -> None:
    """Move the timers of the steps ``event`` changes, then list the steps in flight."""
    if isinstance(event, Saga.StepDispatched):
        _set_timer(row, event.step, ACTION_IN_FLIGHT, event.deadline, event.attempt)
    elif isinstance(event, Saga.CompensationDispatched):
        _set_timer(row, event.step, COMPENSATION_IN_FLIGHT, event.deadline, event.attempt)
    elif isinstance(event, Saga.StepRetryScheduled):
        _set_timer(row, event.step, ACTION_RETRY, event.due_at, None)
    elif isinstance(event, Saga.CompensationRetryScheduled):
        _set_timer(row, event.step, COMPENSATION_RETRY, event.due_at, None)
    elif isinstance(event, _ENDS_TIMER):
        _set_timer(row, event.step, IDLE, None, None)
    elif isinstance(event, Saga.StepCompletedLate):
        if row["step_timers"].get(event.step, [IDLE])[0] == ABANDONED:
            _set_timer(row, event.step, ABANDONED, None, None)
    elif isinstance(event, Saga.CompensationRequested):
        for name, (phase, due, _) in list(row["step_timers"].items()):
            if phase in (ACTION_IN_FLIGHT, ACTION_RETRY):
                keep = row["parallel"] and phase == ACTION_IN_FLIGHT and due is not None
                _set_timer(row, name, ABANDONED, _instant_of(due) if keep else None, None)
    else:
        return
    row["steps_in_flight"] = [
        name for name, (phase, _, _) in row["step_timers"].items() if phase in _IN_FLIGHT
    ]


def _instant_of(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _earliest_timer(row: Row) -> tuple[datetime | None, str | None, str | None]:
    """A parallel saga's next wake-up among its step timers: (when, kind, step)."""
    if row["status"] not in _TIMER_STATUSES:
        return None, None, None
    best: tuple[datetime | None, str | None, str | None] = (None, None, None)
    for name, (phase, due, _) in row["step_timers"].items():
        if due is None or phase not in _TIMER_KIND:
            continue
        when = datetime.fromisoformat(due)
        if best[0] is None or when < best[0]:
            best = (when, _TIMER_KIND[phase], name)
    return best


def _timer_due_at(
    timers: dict[str, list[Any]], wakeup: datetime | None
) -> tuple[str | None, str | None]:
    """The step (and its timer's kind) whose timer is due at ``wakeup``, if one is."""
    if wakeup is not None:
        due = wakeup.isoformat()
        for name, (phase, when, _) in timers.items():
            if when == due and phase in _TIMER_KIND:
                return name, _TIMER_KIND[phase]
    return None, None


#: Statuses in which a saga's step timers can fire.
_TIMER_STATUSES = frozenset(
    {SagaStatus.STARTED.value, SagaStatus.PENDING.value, SagaStatus.COMPENSATING.value}
)


#: Statuses in which a saga's own deadline can fire.
_DEADLINE_STATUSES = frozenset({SagaStatus.STARTED.value, SagaStatus.PENDING.value})
_TIMEDELTA = TypeAdapter(timedelta)


def _saga_deadline(started: Saga.SagaStarted) -> datetime | None:
    """When the saga's deadline passes, read from the definition it started with."""
    deadline = started.definition.get("deadline")
    return None if deadline is None else started.timestamp + _TIMEDELTA.validate_python(deadline)


# -- timeline ------------------------------------------------------------------------


def _instant(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "none"


def _short_json(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text


def _detail(event: Any) -> str:
    if isinstance(event, Saga.SagaStarted):
        return f"{event.saga_type} v{event.definition_version} data={_short_json(event.data)}"
    if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
        due = f", deadline {_instant(event.deadline)}" if event.deadline is not None else ""
        return f"{event.command_name}{due}"
    if isinstance(event, Saga.StepCompleted):
        return f"result={_short_json(event.result)}"
    if isinstance(event, Saga.StepCompletedLate):
        return f"late success of attempt {event.attempt}: result={_short_json(event.result)}"
    if isinstance(event, Saga.OperatorCompensationRequested):
        return f"{', '.join(event.steps)} by {event.actor}: {event.reason}"
    if isinstance(event, Saga.StepFailed | Saga.CompensationFailed):
        return str(event.error)
    if isinstance(event, Saga.StepTimedOut | Saga.CompensationTimedOut):
        return f"no reply by {_instant(event.deadline)}"
    if isinstance(event, Saga.StepRetryScheduled | Saga.CompensationRetryScheduled):
        return f"attempt {event.attempt} due {_instant(event.due_at)}"
    if isinstance(event, Saga.CompensationRequested | Saga.SagaFailed):
        return str(event.reason)
    if isinstance(event, Saga.SagaDeadLettered):
        plural = "s" if event.attempts != 1 else ""
        return f"{event.kind} gave up after {event.attempts} attempt{plural}: {event.error}"
    if isinstance(event, Saga.OperatorRetried) and event.changes:
        patched = _short_json({key: change["new"] for key, change in event.changes.items()})
        return f"{event.kind} by {event.actor} with data {patched}: {event.reason}"
    if isinstance(event, Saga.OperatorRetried | Saga.OperatorResolved):
        return f"{event.kind} by {event.actor}: {event.reason}"
    if isinstance(event, Saga.SagaDeadlinePassed):
        after = "past the pivot: going on" if event.past_pivot else "compensating"
        return f"deadline {_instant(event.deadline)} passed; {after}"
    if isinstance(event, Saga.SagaAborted):
        return f"by {event.actor}: {event.reason}"
    if isinstance(event, Saga.SagaForgotten):
        return f"data erased by {event.actor}: {event.reason}"
    return ""


def timeline_entry(event: Saga.Event) -> TimelineEntry:
    """The timeline row of ``event``: when, what, which step and attempt, a short detail."""
    step = getattr(event, "step", None)
    attempt = getattr(event, "attempt", None)
    return TimelineEntry(
        saga_id=event.originator_id,
        version=event.originator_version,
        time=event.timestamp,
        event_type=type(event).__name__,
        step=step if isinstance(step, str) else None,
        attempt=attempt if isinstance(attempt, int) else None,
        detail=_cut(_detail(event), MAX_DETAIL) or "",
    )
