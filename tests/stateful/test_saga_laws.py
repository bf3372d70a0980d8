"""The laws of DESIGN.md, held by the ``Saga`` aggregate for any definition and any replies.

The kit's ``SagaLawsMachine`` with its rules written once (``sagalog.testing.machine``),
driving the aggregate alone (``AggregateSubject``) instead of a manager, and with the
checks below of its own. It starts one saga from an arbitrary definition and data,
then plays an arbitrary reply schedule against it: successes and failures, replies
to earlier (stale) attempts, duplicates by message id, stray replies, time passing
(timeouts and retries firing through ``fire_due``), operator actions and malformed
input. After every rule every law is checked:

1. effects are T1..Tn or T1..Tj then Cj..C1; retriable steps retried, never compensated;
2. no dispatch after compensation began, no compensation of a step never completed,
   each step compensated at most once, one compensation at a time;
3. ``COMPLETED`` and ``FAILED`` are absorbing;
4. a reply is applied exactly when it answers the outstanding command with a new
   message id, or is the first success of an uncertain step (a late fact);
   duplicates, stale replies and refused input record nothing;
5. the saga rebuilt from its stored events at every version equals the live saga at
   that version (stored through an in-memory ``eventsourcing`` application, so the
   events also survive their JSON encoding);
6. every command id is unique and equals ``command_id_for(saga, step, kind, attempt)``;

and law 1 against the world: participants (``sagalog.testing.world.World``, fenced
or not, drawn per example) run any command sent at any time — after its deadline,
its timeout, an abort, its compensation, or a later attempt — and their replies
arrive at once, later or never; once the saga is ``FAILED`` no action of a
compensatable step is in force, except a run a fence would have refused;

plus liveness: a saga that is neither ended nor dead-lettered always waits on a
command or a timer, and a copy of it driven by a cooperative participant and
operator always ends.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import cast

import pytest
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from sagalog.domain import (
    CommandKind,
    InvalidPayloadError,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaStatus,
    StepStatus,
)
from sagalog.domain.payload import MAX_PAYLOAD_BYTES, MAX_TEXT_LENGTH
from sagalog.testing import SagaLawsMachine, laws
from sagalog.testing.strategies import (
    AnswerCommand,
    OperatorAction,
    OperatorVerb,
    dag_definitions,
    definitions,
    replies,
    saga_data,
)
from sagalog.testing.subjects import AggregateSubject, Subject
from sagalog.testing.world import Fencing

#: Ways of passing input that must be refused with ``InvalidPayloadError``.
MALFORMED = (
    "naive now in a reply",
    "naive now on the clock",
    "naive now in an operator action",
    "NaN result",
    "non-JSON result",
    "oversized result",
    "lone surrogate in a result",
    "blank error",
    "non-text error of a compensation",
    "overlong error",
    "lone surrogate in an error",
    "blank operator",
    "blank message id",
)


def finish(saga: Saga, now: datetime, max_moves: int = 500) -> None:
    """Drive ``saga`` to its end: every command succeeds, timers fire, dead letters are
    resolved by an operator. Fails if the saga cannot end."""
    for _ in range(max_moves):
        if saga.is_terminal:
            return
        if saga.status is SagaStatus.DEAD_LETTERED:
            saga.resolve(actor="test.kit", reason="finishing the saga", now=now)
            continue
        in_flight = saga.steps_in_flight
        if in_flight:
            state = saga.steps[in_flight[0]]
            kind = (
                CommandKind.ACTION
                if state.status is StepStatus.DISPATCHED
                else CommandKind.COMPENSATION
            )
            attempt = state.attempt if kind is CommandKind.ACTION else state.compensation_attempt
            outcome = saga.answer(in_flight[0], kind, True, now=now, attempt=attempt)
            assert outcome.applied, f"the reply to {in_flight[0]} was not applied: {outcome}"
            continue
        assert saga.next_wakeup is not None, "liveness: a running saga waits on nothing"
        now = max(now, saga.next_wakeup)
        assert saga.fire_due(now) > 0, f"liveness: nothing fired at next_wakeup {now}"
    raise AssertionError(f"liveness: the saga did not end within {max_moves} moves")


class SagaLaws(SagaLawsMachine):
    """The kit's rules on the ``Saga`` aggregate: any definition, any data (Python forms
    included), any saga id, fenced participants or not, and the checks below besides."""

    definition = st.one_of(definitions(), dag_definitions())
    data = saga_data(python_forms=True)

    def __init__(self) -> None:
        super().__init__()
        self.started_as_defined = False
        self.rebuilt_up_to = 0

    def _open_subject(self, definition: SagaDefinition) -> Subject:
        return AggregateSubject(self.saga_id)

    def _draw_example(self, draw: st.DataObject) -> Fencing:
        self.saga_id = draw.draw(st.uuids(), label="saga id")
        if draw.draw(st.booleans(), label="start with a message id"):
            self.start_message_id = self._fresh_message_id()
        return draw.draw(st.sampled_from([Fencing.off(), Fencing()]), label="fencing")

    @property
    def aggregate(self) -> AggregateSubject:
        subject = self.subject
        assert isinstance(subject, AggregateSubject)
        return subject

    def refused(self, error: type[SagalogError], call: Callable[[], object]) -> None:
        """``call`` raises ``error`` and records nothing."""
        before = self.subject.mark()
        with pytest.raises(error):
            call()
        assert self.subject.mark() == before, "refused input changed the saga"

    # -- rules of its own ----------------------------------------------------------

    @rule(move=replies(python_forms=True))
    def a_participant_replies(self, move: AnswerCommand) -> None:
        """The kit's rule, with results in Python forms (tuples, integer keys) too."""
        super().a_participant_replies(move)

    def _operator(self, move: OperatorAction) -> None:
        """The kit's operator, and every operator event records who and why; a retry
        dispatches the dead-lettered command again, an abort requests compensation."""
        before = len(self.history())
        dead_letter = self.saga.dead_letter
        super()._operator(move)
        events = self.history()
        if len(events) == before:
            return  # refused (the kit checked that it had to be)
        first = events[before]
        if move.verb is OperatorVerb.RETRY:
            assert isinstance(first, Saga.OperatorRetried)
        elif move.verb is OperatorVerb.RESOLVE:
            assert isinstance(first, Saga.OperatorResolved)
        else:
            assert isinstance(first, Saga.SagaAborted)
        assert (first.actor, first.reason) == (move.actor, move.reason)
        if move.verb is OperatorVerb.RETRY:
            assert dead_letter is not None
            retried = events[before + 1]
            assert isinstance(retried, Saga.StepDispatched | Saga.CompensationDispatched)
            assert retried.step == dead_letter.step
            assert retried.attempt == dead_letter.attempts + 1
        if move.verb is OperatorVerb.ABORT:
            assert isinstance(events[before + 1], Saga.CompensationRequested)

    @rule(case=st.sampled_from(MALFORMED))
    def malformed_input_is_refused(self, case: str) -> None:
        """Malformed input raises ``InvalidPayloadError`` whatever the state, recording nothing."""
        saga, now, events = self.saga, self.clock.now, self.history()
        target = laws.outstanding_command(events) or laws.sent_commands(events)[-1]
        naive = now.replace(tzinfo=None)
        compensatable = [s.name for s in self.saga_definition.steps if s.compensatable]
        comp_step = compensatable[0] if compensatable else target.step
        calls: dict[str, Callable[[], object]] = {
            "naive now in a reply": lambda: saga.complete_step(target.step, now=naive),
            "naive now on the clock": lambda: saga.fire_due(naive),
            "naive now in an operator action": lambda: saga.abort(
                actor="ops", reason="r", now=naive
            ),
            "NaN result": lambda: saga.complete_step(target.step, float("nan"), now=now),
            "non-JSON result": lambda: saga.complete_step(target.step, {"at": now}, now=now),
            "oversized result": lambda: saga.complete_step(
                target.step, "x" * (MAX_PAYLOAD_BYTES + 1), now=now
            ),
            "lone surrogate in a result": lambda: saga.complete_step(
                target.step, {"name": "\ud800"}, now=now
            ),
            "blank error": lambda: saga.fail_step(target.step, "  ", now=now),
            "non-text error of a compensation": lambda: saga.fail_compensation(
                comp_step, cast(str, 42), now=now
            ),
            "overlong error": lambda: saga.fail_step(
                target.step, "e" * (MAX_TEXT_LENGTH + 1), now=now
            ),
            "lone surrogate in an error": lambda: saga.fail_step(
                target.step, "broken \udc00", now=now
            ),
            "blank operator": lambda: saga.retry(actor=" ", reason="r", now=now),
            "blank message id": lambda: saga.complete_step(target.step, now=now, message_id=""),
        }
        self.refused(InvalidPayloadError, calls[case])

    @rule()
    def a_copy_can_always_finish(self) -> None:
        """Liveness: from here, a cooperative participant and operator end the saga,
        and the finished log still obeys every law."""
        clone = copy.deepcopy(self.saga)
        finish(clone, self.clock.now)
        finished = self.history() + cast(list[Saga.Event], list(clone.collect_events()))
        laws.check_all(self.saga_definition, clone.id, finished)
        assert laws.is_ended(finished)

    # -- checks of its own, after every rule -----------------------------------------

    @invariant()
    def the_saga_started_with_its_first_step(self) -> None:
        if self._definition is None or self.started_as_defined:
            return
        assert self.seen[min(self.seen)].status is SagaStatus.PENDING  # as it started
        first = self.history()[1]
        assert isinstance(first, Saga.StepDispatched)
        assert (first.step, first.attempt) == (self.saga_definition.steps[0].name, 1)
        self.started_as_defined = True

    @invariant()
    def law3_the_status_is_terminal_exactly_when_the_log_ended(self) -> None:
        if self._definition is not None:
            assert self.saga.status.is_terminal == laws.is_ended(self.history())

    @invariant()
    def law4_the_saga_waits_on_the_command_its_log_says(self) -> None:
        if self._definition is None:
            return
        if not self.saga_definition.is_linear:
            outstanding = {c.step for c in laws.outstanding_commands(self.history())}
            assert outstanding == set(self.saga.steps_in_flight), (
                f"law 4: the saga has {self.saga.steps_in_flight} in flight; its log says "
                f"{sorted(outstanding)}"
            )
            return
        command = laws.outstanding_command(self.history())
        pending = self.saga.pending_command
        assert (pending.command_id if pending else None) == (
            command.command_id if command else None
        ), f"law 4: the saga says {pending} is pending; its log says {command}"

    @invariant()
    def law5_every_recorded_version_rebuilds_and_so_does_the_live_saga(self) -> None:
        if self._definition is None:
            return
        saga = self.saga
        for version in range(self.rebuilt_up_to + 1, saga.version + 1):
            assert self.subject.rebuilt(version).version == version
        self.rebuilt_up_to = saga.version
        assert self.subject.rebuilt(saga.version) == saga, (
            f"law 5: the saga rebuilt at version {saga.version} differs from the live saga"
        )

    @invariant()
    def liveness_one_timer_at_most_and_never_overdue(self) -> None:
        if self._definition is None:
            return
        saga, events = self.saga, self.history()
        assert saga.status is SagaStatus.DEAD_LETTERED or not laws.is_dead_lettered(events)
        if laws.is_ended(events) or laws.is_dead_lettered(events):
            assert saga.pending_command is None or not self.saga_definition.is_linear
            assert saga.next_wakeup is None
            return
        pending_timers = laws.timers(events)
        if self.saga_definition.is_linear:
            assert len(pending_timers) <= 1, f"more than one timer: {pending_timers}"
        assert saga.next_wakeup == (pending_timers[0].due if pending_timers else None)
        # A branch's timer that came due while another branch was dead-lettered fires at
        # the first tick after the operator acted (timers wait while a saga is dead-lettered).
        waited = not self.saga_definition.is_linear and any(
            isinstance(e, Saga.SagaDeadLettered) for e in events
        )
        assert waited or saga.next_wakeup is None or saga.next_wakeup > self.clock.now, (
            f"a timer due at {saga.next_wakeup} is overdue at {self.clock.now}"
        )

    def teardown(self) -> None:
        """Note what the rules reached, then the kit's end: everyone cooperates until the
        saga ends, and every version seen rebuilds once more."""
        if self._subject is not None:
            note_event(f"final status: {self.saga.status.value}")
            note_event(f"steps: {len(self.saga_definition.steps)}")
            for kind in sorted({type(e).__name__ for e in self.history()}):
                note_event(f"recorded {kind}")
        super().teardown()


TestSagaLaws = SagaLaws.TestCase
