"""Explain a saga in plain sentences: why it completed, failed, waits or is stuck.

``explain(saga)`` reads only the saga's state (no store, no projections): which
step failed and with what error after how many attempts, which compensations ran
and which did not, what the saga waits for now, and which operator action would
move it on. The sentences are for people; do not parse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sagalog.domain import Saga, SagaStatus, StepStatus
from sagalog.domain.status import CommandKind
from sagalog.process.clock import utc_now

__all__ = ["Outbox", "explain"]


@dataclass(frozen=True)
class Outbox:
    """Where the command relay stands, so ``explain`` can tell a sent command from an unsent one.

    The log is the outbox: a command is sent once the relay's position passes its event.
    """

    #: Whether the relay has sent the saga's pending command.
    pending_sent: bool
    #: The relay's position in the manager's log, and the log's head.
    relay_position: int
    head: int
    #: How many recorded commands wait to be sent (counted up to a limit).
    waiting: int


_FAILED_ACTION = (StepStatus.FAILED, StepStatus.TIMED_OUT)


def explain(saga: Saga, *, now: datetime | None = None, outbox: Outbox | None = None) -> list[str]:
    """A few sentences on where ``saga`` is and why; ``now`` judges overdue timers.

    With ``outbox`` (where the relay stands) a command still waiting to be sent is
    told apart from one sent and waiting for its reply.
    """
    moment = now if now is not None else utc_now()
    lines = [_headline(saga)]
    status = saga.status
    if status is SagaStatus.COMPLETED:
        lines += _completed(saga)
    elif status is SagaStatus.FAILED:
        lines += _failure(saga)
        lines += _compensations(saga)
        in_force = saga.effects_in_force
        if in_force:
            lines.append(
                f"{_names(in_force)} may still be in force, uncompensated: run `sagalog "
                f"compensate {saga.id} --actor ... --reason ...` to compensate "
                f"{'it' if len(in_force) == 1 else 'them'}."
            )
        else:
            lines.append("Nothing is left to do: a failed saga never changes again.")
    elif status is SagaStatus.DEAD_LETTERED:
        lines += _dead_lettered(saga)
    elif status is SagaStatus.COMPENSATING:
        lines += _failure(saga)
        lines += _compensations(saga)
        lines += _waiting(saga, moment, outbox)
    else:
        lines += _progress(saga)
        lines += _waiting(saga, moment, outbox)
    if saga.forgotten:
        lines.append(
            f"Its data was erased by {saga.forgotten_by} (sagalog forget): its data, results, "
            "errors and reasons read as <erased>; its steps, statuses and times remain."
        )
    return lines


def _headline(saga: Saga) -> str:
    count = len(saga.definition.steps)
    return (
        f"{saga.saga_type} saga {saga.id} (definition v{saga.definition.version}, "
        f"{count} step{_s(count)}) is {saga.status.value} after {saga.version} "
        f"event{_s(saga.version)}."
    )


def _attempts(n: int) -> str:
    return f"{n} attempt{_s(n)}"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _names(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _completed(saga: Saga) -> list[str]:
    lines = ["Every step succeeded, so nothing was compensated."]
    retried = [
        f"{name!r} took {_attempts(st.attempt)}"
        for name, st in saga.steps.items()
        if st.attempt > 1
    ]
    if retried:
        lines.append("Some steps needed retries: " + "; ".join(retried) + ".")
    resolved = [name for name, st in saga.steps.items() if st.status is StepStatus.RESOLVED]
    if resolved:
        lines.append(f"An operator resolved {_names(resolved)} by hand.")
    lines.append("Nothing is left to do: a completed saga never changes again.")
    return lines


def _failed_step(saga: Saga) -> str | None:
    if saga.failed_step is not None:
        return saga.failed_step
    for name, st in saga.steps.items():
        if st.status in _FAILED_ACTION:
            return name
    return None


def _failure(saga: Saga) -> list[str]:
    lines: list[str] = []
    if saga.aborted_by is not None:
        # The failure reason already reads "aborted by <actor>: <reason>".
        reason = saga.failure_reason or ""
        reason = reason.removeprefix(f"aborted by {saga.aborted_by}: ")
        lines.append(f"It was aborted by {saga.aborted_by}: {reason}.")
    failed = _failed_step(saga)
    if failed is not None:
        st = saga.steps[failed]
        allowed = saga.definition.step(failed).retry.max_attempts
        how = "timed out" if st.timed_out else "failed"
        lines.append(
            f"Step {failed!r} {how} on attempt {st.attempt} of {allowed} allowed, "
            f"with error: {st.last_error}."
        )
    elif saga.aborted_by is None and saga.failure_reason:
        lines.append(f"It rolled back because {saga.failure_reason}.")
    abandoned = [
        name
        for name, st in saga.steps.items()
        if st.status is StepStatus.ABANDONED and not st.uncertain
    ]
    if abandoned:
        lines.append(f"The command of {_names(abandoned)} was abandoned when rollback began.")
    lines += _uncertain(saga)
    return lines


def _uncertain(saga: Saga) -> list[str]:
    """One sentence per step whose outcome was unknown, or whose success came late."""
    lines: list[str] = []
    for name, st in saga.steps.items():
        if not (st.uncertain or st.late):
            continue
        if st.late:
            what = f"{name}: succeeded late (attempt {st.attempt}, after the saga stopped waiting)"
        elif st.timed_out:
            what = f"{name}: outcome unknown at timeout"
        else:
            what = f"{name}: outcome unknown when rollback began (it was in flight)"
        lines.append(f"{what}; {_compensation_state(saga, name)}.")
        if st.late_after_compensation:
            lines.append(
                "Its success came after its compensation had completed: if the participant "
                "ran the action only then (a fenced participant refuses that), its effect is "
                "in force; check the participant."
            )
    return lines


def _compensation_state(saga: Saga, name: str) -> str:
    status = saga.steps[name].status
    step = saga.definition.step(name)
    if status is StepStatus.COMPENSATED:
        return "compensated"
    if status is StepStatus.COMPENSATION_RESOLVED:
        return "compensated by hand"
    if status in (StepStatus.COMPENSATION_DISPATCHED, StepStatus.COMPENSATION_RETRY_SCHEDULED):
        return "its compensation is under way"
    if status is StepStatus.COMPENSATION_FAILED:
        return "its compensation failed"
    if not step.compensatable:
        return "it has no compensation"
    if name in saga.effects_in_force:
        return "NOT compensated: it may still be in force"
    if name in saga.compensation_plan:
        return "to be compensated"
    if not step.compensate_uncertain and not saga.steps[name].late:
        return "not compensated (the step opts out: its participant refuses it once expired)"
    return "not compensated"


def _compensations(saga: Saga) -> list[str]:
    lines: list[str] = []
    plan = saga.compensation_plan
    done = [n for n in plan if saga.steps[n].status is StepStatus.COMPENSATED]
    by_hand = [n for n in plan if saga.steps[n].status is StepStatus.COMPENSATION_RESOLVED]
    todo = [
        _todo_label(n, saga.steps[n].status) for n in plan if n not in done and n not in by_hand
    ]
    if not plan:
        lines.append("No step had completed with a compensation, so nothing needed undoing.")
    if done:
        detail = ", ".join(f"{n!r} ({_attempts(saga.steps[n].compensation_attempt)})" for n in done)
        lines.append(f"Compensated: {detail}.")
    if by_hand:
        lines.append(f"Compensated by hand (an operator resolved): {_names(by_hand)}.")
    if todo:
        lines.append(f"Not compensated yet, newest first: {', '.join(todo)}.")
    kept = [
        name
        for name, st in saga.steps.items()
        if st.status is StepStatus.COMPLETED
        and not saga.definition.step(name).compensatable
        and name not in plan
    ]
    if kept:
        lines.append(
            f"{_names(kept)} completed but {'has' if len(kept) == 1 else 'have'} "
            "no compensation, so its effect stays."
        )
    return lines


def _todo_label(name: str, status: StepStatus) -> str:
    if status is StepStatus.COMPLETED:
        return name
    if status in (
        StepStatus.TIMED_OUT,
        StepStatus.ABANDONED,
        StepStatus.FAILED,
        StepStatus.DISPATCHED,
        StepStatus.RETRY_SCHEDULED,
    ):
        return f"{name} (uncertain)"
    if status is StepStatus.COMPENSATION_FAILED:
        return f"{name} (its compensation failed)"
    return f"{name} (under way)"


def _progress(saga: Saga) -> list[str]:
    done = [
        n
        for n, st in saga.steps.items()
        if st.status in (StepStatus.COMPLETED, StepStatus.RESOLVED)
    ]
    total = len(saga.definition.steps)
    if not done:
        return [f"No step has completed yet (of {total})."]
    return [f"{len(done)} of {total} steps completed: {_names(done)}."]


def _branches(saga: Saga) -> list[str]:
    """For steps in parallel: what the saga waits for, what completed, what holds back."""
    if not saga.parallel or not saga.waiting_for:
        return []
    line = f"It waits for {_names(saga.waiting_for)}"
    done = saga.steps_completed
    if done:
        line += f"; {_names(done)} completed"
    lines = [line + "."]
    blocking = saga.steps_blocking
    if blocking:
        waits = "it waits" if len(blocking) == 1 else "they wait"
        lines.append(
            f"{_names(blocking)} may still be running though the saga rolls back: the "
            f"compensation of the steps {waits} for holds until a reply or a timeout "
            "settles it."
        )
    return lines


def _waiting(saga: Saga, now: datetime, outbox: Outbox | None) -> list[str]:
    lines: list[str] = _branches(saga)
    pending = saga.pending_command
    current = saga.current_step
    if pending is not None and outbox is not None and not outbox.pending_sent:
        what = "compensation" if pending.kind is CommandKind.COMPENSATION else "action"
        behind = outbox.head - outbox.relay_position
        lines.append(
            f"Its command {pending.name} (the {what} of step {pending.step!r}, attempt "
            f"{pending.attempt}) is still in the outbox: the relay has not sent it. The relay "
            f"is at position {outbox.relay_position} of {outbox.head} in the log ({behind} "
            f"behind, {outbox.waiting} command{_s(outbox.waiting)} waiting): is a worker with a "
            "transport running (`sagalog worker --transport ...`)?"
        )
    elif pending is not None:
        what = "compensation" if pending.kind is CommandKind.COMPENSATION else "action"
        lines.append(
            f"It waits for the reply to {pending.name} (the {what} of step {pending.step!r}, "
            f"attempt {pending.attempt})."
        )
        if pending.deadline is None:
            lines.append(
                "That command has no timeout, so the saga waits as long as the participant "
                "takes; check that the participant received it (the relay must be running)."
            )
    elif current is not None:
        st = saga.steps[current]
        if st.status is StepStatus.RETRY_SCHEDULED:
            lines.append(
                f"Step {current!r} failed on attempt {st.attempt} ({st.last_error}); attempt "
                f"{st.attempt + 1} is scheduled for {_when(st.retry_due_at)}."
            )
        elif st.status is StepStatus.COMPENSATION_RETRY_SCHEDULED:
            lines.append(
                f"The compensation of {current!r} failed on attempt {st.compensation_attempt} "
                f"({st.last_error}); attempt {st.compensation_attempt + 1} is scheduled for "
                f"{_when(st.retry_due_at)}."
            )
    if saga.deadline is not None:
        if saga.deadline_passed:
            lines.append(f"Its deadline, {_when(saga.deadline)}, passed.")
        elif saga.deadline_pending:
            lines.append(
                f"Its deadline is {_when(saga.deadline)}: if it has not ended by then, it "
                "compensates (unless it is past its pivot)."
            )
    wake = saga.next_wakeup
    if wake is not None and wake <= now:
        lines.append(
            f"Its timer was due at {_when(wake)}, {_ago(now - wake)} ago, and has not fired: "
            "is the worker running (`sagalog worker`)?"
        )
    if saga.status in (SagaStatus.STARTED, SagaStatus.PENDING) and current is not None:
        if saga.definition.step(current).retriable:
            lines.append(
                f"Step {current!r} is past the pivot, so the saga can only go forward; "
                "it cannot be aborted."
            )
        else:
            lines.append(
                f"An operator may stop it with `sagalog abort {saga.id}` (it then compensates "
                "what it has done)."
            )
    return lines


def _dead_lettered(saga: Saga) -> list[str]:
    dead = saga.dead_letter
    if dead is None:  # pragma: no cover - the state guarantees it
        return []
    lines: list[str] = []
    if dead.kind is CommandKind.COMPENSATION:
        lines += _failure(saga)
        lines.append(
            f"The compensation of step {dead.step!r} failed {_attempts(dead.attempts)}, "
            f"the last with: {dead.error}; its retries are exhausted, so the saga waits for "
            "an operator."
        )
        lines += [line for line in _compensations(saga) if not line.startswith("No step had")]
        after = "the next compensation" if _remaining_after(saga, dead.step) else "SagaFailed"
    else:
        index = saga.definition.index_of(dead.step)
        lines.append(
            f"Step {dead.step!r} is past the pivot and failed {_attempts(dead.attempts)}, "
            f"the last with: {dead.error}; its retries are exhausted, so the saga waits for "
            "an operator."
        )
        after = (
            f"step {saga.definition.steps[index + 1].name!r}"
            if index + 1 < len(saga.definition.steps)
            else "SagaCompleted"
        )
    lines.append(
        f"Run `sagalog retry {saga.id} --reason ... --actor ...` to try the {dead.kind.value} "
        f"again (attempt {dead.attempts + 1}), or `sagalog resolve {saga.id} --reason ... "
        f"--actor ...` if it was done by hand; the saga then moves on to {after}."
    )
    return lines


def _remaining_after(saga: Saga, step: str) -> bool:
    started = (
        StepStatus.COMPENSATION_DISPATCHED,
        StepStatus.COMPENSATION_RETRY_SCHEDULED,
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATION_FAILED,
        StepStatus.COMPENSATION_RESOLVED,
    )
    return any(saga.steps[n].status not in started for n in saga.compensation_plan if n != step)


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "?"


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
