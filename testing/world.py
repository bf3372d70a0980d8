"""The participants' world: which commands ran, when, and which actions are in force.

The laws machines judge a saga by its log *and* by what its participants did. A
participant may run a command at any time after it was sent: on time, after its
deadline, after the saga recorded a timeout, after an abort, out of order with its
compensation, an earlier attempt after a later one. :class:`World` records every
such run and what it did, under the contract sagas place on participants:

* a command id is answered once: a redelivered command gets the same answer and
  runs nothing (the classic deduplication by ``command_id``);
* a compensation undoes its step's action when that action is in force, and is a
  no-op that answers success when the action never ran.

Participants may also be *fenced* (:class:`Fencing`, the same settings as
``sagalog.infrastructure.services.fencing.Fencing``, which the shipped ``Participant`` helper
applies by default): an action past its deadline
(less the skew margin) is refused; an action after its step's compensation was
processed is refused (a tombstone); a step's action runs at most once per
idempotency key, later attempts getting the first success. In an unfenced world
those runs take effect, and each is marked with the fence that would have refused
it: law 1 cannot hold for them, whatever the saga does, so they are excused.

Law 1 against the world (:meth:`World.left_in_force`): once a saga is ``FAILED``,
no action of a compensatable step is in force, excused runs aside.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from sagalog.domain import Command, CommandKind, SagaDefinition

__all__ = ["Answer", "Execution", "Fencing", "Handling", "Participant", "World"]

#: A participant's effect: applies ``command`` to the world and returns the step's
#: result (any JSON value; ignored for compensations). It may change the world in
#: place; the machine compares worlds with ``==``.
Participant = Callable[[Any, Command], Any]


@dataclass(frozen=True)
class Fencing:
    """Which fences the modelled participants apply: all on by default, as sagalog's
    ``Participant`` helper (``sagalog.infrastructure.services.fencing.Fencing``, same fields).

    ``deadline``: an action at or past its deadline less ``skew_margin`` is refused;
    ``tombstones``: an action after its step's compensation is refused;
    ``idempotency``: a step's action runs once, later attempts get its first success.
    ``Fencing.off()`` assumes none (commands are only deduplicated by command id).
    """

    deadline: bool = True
    skew_margin: timedelta = timedelta(seconds=1)
    tombstones: bool = True
    idempotency: bool = True

    @classmethod
    def off(cls) -> Fencing:
        """No fence at all."""
        return cls(deadline=False, tombstones=False, idempotency=False)


class Handling(StrEnum):
    """How a modelled participant handled one command."""

    EXECUTED = "executed"
    DUPLICATE = "duplicate"
    REPEATED = "repeated"
    REFUSED = "refused"


@dataclass(frozen=True)
class Answer:
    """What a participant answered to one command, and how it handled it."""

    succeeded: bool
    result: Any = None
    error: str = ""
    handling: Handling = Handling.EXECUTED


@dataclass
class Execution:
    """One run of a command that reached the world (an action, or a compensation that
    found its action in force). ``excused`` names the fence that would have refused an
    action (unfenced worlds only); ``undone`` says a compensation undid it."""

    command: Command
    at: datetime
    result: Any
    excused: str | None = None
    undone: bool = False

    def describe(self) -> str:
        """One line for a failure message."""
        deadline = (
            f", deadline {self.command.deadline.isoformat()}" if self.command.deadline else ""
        )
        return (
            f"{self.command.name!r} (step {self.command.step!r}, attempt "
            f"{self.command.attempt}) ran at {self.at.isoformat()}{deadline}"
        )


class World:
    """The state the participants act on, with the record of what ran.

    ``state`` is the user's world (``None`` without participants); ``participants``
    maps command names to their effects. Without a participant for a command, its
    run still counts (the action is in force until compensated) but changes no state.
    """

    def __init__(
        self, state: Any, participants: Mapping[str, Participant], fencing: Fencing
    ) -> None:
        self.state = state
        self.before = copy.deepcopy(state)
        self.participants = participants
        self.fencing = fencing
        self.executions: list[Execution] = []
        self.answers: dict[UUID, Answer] = {}
        self.first_success: dict[tuple[str, CommandKind], Answer] = {}
        self.compensated: set[str] = set()

    # -- what participants do ------------------------------------------------------

    def answer(
        self,
        command: Command,
        now: datetime,
        *,
        succeed: bool = True,
        result: Any = None,
        error: str = "failed",
    ) -> Answer:
        """The participant handles ``command`` at ``now``: runs it (``succeed``) or fails
        it, unless it answered that command id before (the same answer again) or a fence
        refuses it. ``result`` is an action's result when no participant computes one."""
        known = self.answers.get(command.command_id)
        if known is not None:
            return Answer(known.succeeded, known.result, known.error, Handling.DUPLICATE)
        if not succeed:
            answer = Answer(False, None, error)
        elif command.kind is CommandKind.ACTION:
            answer = self._act(command, now, result)
        else:
            answer = self._compensate(command, now)
        self.answers[command.command_id] = answer
        return answer

    def by_hand(self, command: Command, now: datetime) -> None:
        """An operator did ``command`` by hand (resolving a dead letter)."""
        if command.kind is CommandKind.ACTION:
            self.executions.append(Execution(command, now, self._run(command, None)))
        else:
            self._undo(command)
            self.compensated.add(command.step)

    def _act(self, command: Command, now: datetime, result: Any) -> Answer:
        key = (command.step, CommandKind.ACTION)
        first = self.first_success.get(key)
        passed = command.deadline is not None and now + self.fencing.skew_margin >= command.deadline
        if command.step in self.compensated and self.fencing.tombstones:
            return self._refuse(command, "its step was already compensated")
        if passed and self.fencing.deadline:
            return self._refuse(command, f"its deadline {command.deadline} has passed")
        if first is not None and self.fencing.idempotency:
            return Answer(True, first.result, "", Handling.REPEATED)
        excused: str | None = None
        if command.step in self.compensated:
            excused = "a tombstone: its step was already compensated"
        elif passed:
            excused = "its deadline had passed"
        elif first is not None:
            excused = "its idempotency key: an earlier attempt ran"
        outcome = self._run(command, result)
        self.executions.append(Execution(command, now, outcome, excused))
        answer = Answer(True, outcome)
        self.first_success.setdefault(key, answer)
        return answer

    def _refuse(self, command: Command, why: str) -> Answer:
        return Answer(False, None, f"refused: {why}", Handling.REFUSED)

    def _compensate(self, command: Command, now: datetime) -> Answer:
        key = (command.step, CommandKind.COMPENSATION)
        if key in self.first_success and self.fencing.idempotency:
            return Answer(True, None, "", Handling.REPEATED)
        self._undo(command)
        self.compensated.add(command.step)
        answer = Answer(True)
        self.first_success.setdefault(key, answer)
        return answer

    def _undo(self, command: Command) -> None:
        """Undo a run of the step's action still in force (the oldest one no fence
        excuses, else the oldest); none: a no-op, as the participant's contract says."""
        runs = [e for e in self.in_force() if e.command.step == command.step]
        runs.sort(key=lambda e: e.excused is not None)
        if runs:
            self._run(command, None)
            runs[0].undone = True

    def _run(self, command: Command, result: Any) -> Any:
        participant = self.participants.get(command.name)
        if participant is None:
            return result
        outcome = participant(self.state, command)
        return outcome if command.kind is CommandKind.ACTION else None

    # -- what the machine checks -----------------------------------------------------

    def in_force(self) -> list[Execution]:
        """The runs of actions not undone, in the order they ran."""
        return [e for e in self.executions if not e.undone]

    def expected_state(self) -> Any:
        """The starting state with the actions in force applied (Garcia-Molina)."""
        expected = copy.deepcopy(self.before)
        for execution in self.in_force():
            participant = self.participants.get(execution.command.name)
            if participant is not None:
                participant(expected, execution.command)
        return expected

    def left_in_force(self, definition: SagaDefinition) -> list[Execution]:
        """Law 1 against the world: the runs of compensatable actions in force that no
        fence excuses (for a ``FAILED`` saga this must be empty)."""
        return [
            e
            for e in self.in_force()
            if e.excused is None and definition.step(e.command.step).compensatable
        ]

    def ran(self, command_id: UUID) -> bool:
        """Whether the command with ``command_id`` was answered by its participant."""
        return command_id in self.answers
