"""The laws of DESIGN.md, held by the ``Saga`` aggregate for any definition and any replies.

A hypothesis state machine starts one saga from an arbitrary definition and data,
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
from dataclasses import replace
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.application import Application
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from sagalog.domain import (
    CommandKind,
    InvalidPayloadError,
    InvalidTransitionError,
    Outcome,
    ReplyOutcome,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaStatus,
)
from sagalog.domain.payload import MAX_PAYLOAD_BYTES, MAX_TEXT_LENGTH
from sagalog.testing import laws
from sagalog.testing.strategies import (
    EPOCH,
    AdvanceClock,
    AnswerCommand,
    DeliveredReply,
    OperatorAction,
    OperatorVerb,
    Redeliver,
    StrayReply,
    clock_advances,
    definitions,
    error_texts,
    operator_actions,
    pick_back,
    picks,
    redeliveries,
    replies,
    saga_data,
    step_results,
    stray_replies,
)
from sagalog.testing.world import Fencing, World

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


def deliver(saga: Saga, reply: DeliveredReply, now: datetime) -> ReplyOutcome:
    """Hand ``reply`` to the saga through the method its kind and outcome call for."""
    return saga.answer(
        reply.step,
        reply.kind,
        reply.succeeded,
        now=now,
        result=reply.result,
        error=reply.error,
        attempt=reply.attempt,
        message_id=reply.message_id,
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
        command = saga.pending_command
        if command is not None:
            outcome = deliver(
                saga, DeliveredReply(command.step, command.kind, True, command.attempt, None), now
            )
            assert outcome.applied, f"the reply to pending {command} was not applied: {outcome}"
            continue
        assert saga.next_wakeup is not None, "liveness: a running saga waits on nothing"
        now = max(now, saga.next_wakeup)
        assert saga.fire_due(now) > 0, f"liveness: nothing fired at next_wakeup {now}"
    raise AssertionError(f"liveness: the saga did not end within {max_moves} moves")


class SagaLaws(RuleBasedStateMachine):
    """One saga, an arbitrary definition, an arbitrary schedule of replies."""

    def __init__(self) -> None:
        super().__init__()
        self.app: Application[UUID] = Application(
            env={"PERSISTENCE_MODULE": "eventsourcing.popo", "IS_SNAPSHOTTING_ENABLED": "no"}
        )
        self._saga: Saga | None = None
        self._definition: SagaDefinition | None = None
        self.events: list[Saga.Event] = []
        self.snapshots: dict[int, Saga] = {}
        self.unchecked_versions: list[int] = []
        self.now: datetime = EPOCH
        self.delivered: list[DeliveredReply] = []
        self.message_count = 0
        self.ended_at: tuple[SagaStatus, int] | None = None
        self._world: World | None = None
        self.in_flight: list[DeliveredReply] = []

    # -- helpers -----------------------------------------------------------------

    @property
    def saga(self) -> Saga:
        assert self._saga is not None
        return self._saga

    @property
    def definition(self) -> SagaDefinition:
        assert self._definition is not None
        return self._definition

    @property
    def world(self) -> World:
        assert self._world is not None
        return self._world

    def as_participant_answers(self, reply: DeliveredReply) -> DeliveredReply:
        """``reply`` as the participant gives it: a success runs the command now (unless it
        ran before, or a fence refuses it and it fails); a failure means it never runs."""
        command = laws.command_named(self.events, reply.step, reply.kind, reply.attempt)
        if command is None:
            return reply
        answer = self.world.answer(
            command, self.now, succeed=reply.succeeded, result=reply.result, error=reply.error
        )
        return replace(
            reply,
            succeeded=answer.succeeded,
            result=answer.result if command.kind is CommandKind.ACTION else None,
            error=answer.error or reply.error,
        )

    def fresh_message_id(self) -> str:
        self.message_count += 1
        return f"msg-{self.message_count}"

    def record(self, cause: str | None) -> None:
        """Store what the last call recorded; check its events' ids and times."""
        saga = self.saga
        new = list(saga.pending_events)
        for event in new:
            assert isinstance(event, Saga.Event)
            assert event.correlation_id == saga.id, f"{event} is not correlated to the saga"
            assert event.causation_id == cause, (
                f"{type(event).__name__} has causation_id {event.causation_id!r}, not {cause!r}"
            )
            assert event.timestamp == self.now
        before = len(self.events)
        self.app.save(saga)
        assert not saga.pending_events
        self.events.extend(cast(list[Saga.Event], new))
        assert [e.originator_version for e in self.events] == list(range(1, len(self.events) + 1))
        assert saga.version == len(self.events)
        self.unchecked_versions.extend(range(before + 1, len(self.events) + 1))
        self.snapshots[saga.version] = copy.deepcopy(saga)

    def nothing_recorded(self, before: Saga) -> None:
        """Law 4: the saga is exactly as it was, with no pending event."""
        assert not self.saga.pending_events, (
            f"law 4: recorded {[type(e).__name__ for e in self.saga.pending_events]}"
        )
        assert self.saga.version == before.version
        assert self.saga == before, "law 4: the saga changed without recording an event"

    def refused(self, error: type[SagalogError], call: Callable[[], object]) -> None:
        """``call`` raises ``error`` and records nothing."""
        before = copy.deepcopy(self.saga)
        with pytest.raises(error):
            call()
        self.nothing_recorded(before)

    def running(self) -> bool:
        """Neither ended nor dead-lettered (judged from the log)."""
        return not laws.is_ended(self.events) and not laws.is_dead_lettered(self.events)

    def is_late(self, reply: DeliveredReply) -> bool:
        """Law 4's oracle for late facts: the first success of an uncertain step that the
        saga is not waiting for now is recorded as ``StepCompletedLate``."""
        return (
            reply.succeeded
            and reply.kind is CommandKind.ACTION
            and self.definition.has_step(reply.step)
            and laws.late_success_would_apply(
                self.definition, self.events, reply.step, reply.attempt, reply.message_id
            )
        )

    def would_apply(self, reply: DeliveredReply) -> bool:
        """Law 4's oracle: applied iff it answers the outstanding command, new message id
        (or is a late fact)."""
        return self.is_late(reply) or laws.reply_would_apply(
            self.events, reply.step, reply.kind, reply.attempt, reply.message_id
        )

    def hand_over(self, reply: DeliveredReply, *, answered: bool = False) -> ReplyOutcome:
        """Deliver ``reply`` (first to its participant, unless ``answered``), check it
        against the oracle, and store what it recorded."""
        if not answered:
            reply = self.as_participant_answers(reply)
        late = self.is_late(reply)
        expected = self.would_apply(reply)
        processed = laws.processed_message_ids(self.events)
        latest = laws.latest_attempt(self.events, reply.step, reply.kind)
        before = copy.deepcopy(self.saga)
        outcome = deliver(self.saga, reply, self.now)
        assert outcome.applied == expected, (
            f"law 4: {reply} gave {outcome}; the outstanding command was "
            f"{laws.outstanding_command(self.events)}"
        )
        assert (outcome.outcome is Outcome.LATE) == late, (
            f"law 4: {reply} gave {outcome}; a late success of an uncertain step: {late}"
        )
        if not outcome.applied:
            self.nothing_recorded(before)
            assert outcome.reason, "a reply that changes nothing must say why"
            if reply.message_id is not None and reply.message_id in processed:
                assert outcome.outcome is Outcome.DUPLICATE, outcome
            elif reply.attempt is not None and reply.attempt < latest:
                assert outcome.outcome is Outcome.STALE, outcome
        self.record(reply.message_id)
        if outcome.applied and reply.message_id is not None:
            self.delivered.append(reply)
        return outcome

    def expected_error(self, reply: DeliveredReply) -> type[SagalogError] | None:
        """The typed error a reply must raise, judged from the definition and the log."""
        return laws.expected_reply_error(
            self.definition, self.events, reply.step, reply.kind, reply.attempt
        )

    # -- rules -------------------------------------------------------------------

    @initialize(
        definition=definitions(),
        data=saga_data(python_forms=True),
        saga_id=st.uuids(),
        with_message_id=st.booleans(),
        head_start=st.integers(0, 7),
        fencing=st.sampled_from([Fencing.off(), Fencing()]),
    )
    def start(
        self,
        definition: SagaDefinition,
        data: dict[str, Any],
        saga_id: UUID,
        with_message_id: bool,
        head_start: int,
        fencing: Fencing,
    ) -> None:
        """Start the saga; with a ``head_start``, its first steps succeed at once (up to
        all but the last), so that rules also begin from deep, much-to-undo states. Its
        participants are fenced or not."""
        self._world = World(None, {}, fencing)
        message_id = self.fresh_message_id() if with_message_id else None
        self._definition = definition
        self._saga = Saga.start(
            definition, data, saga_id=saga_id, now=self.now, message_id=message_id
        )
        assert self.saga.status is SagaStatus.PENDING
        self.record(message_id)
        first = self.events[1]
        assert isinstance(first, Saga.StepDispatched)
        assert (first.step, first.attempt) == (definition.steps[0].name, 1)
        for index in range(min(head_start, len(definition.steps) - 1)):
            waiting = laws.outstanding_command(self.events)
            if waiting is None or waiting.step != definition.steps[index].name:
                break  # a fenced participant refused an action (its deadline within the margin)
            outcome = self.hand_over(
                DeliveredReply(
                    definition.steps[index].name,
                    CommandKind.ACTION,
                    True,
                    1,
                    None,
                    result={"step": index},
                )
            )
            assert outcome.applied

    @rule(move=replies(python_forms=True))
    def participant_replies(self, move: AnswerCommand) -> None:
        """A reply to the latest command sent, or (reordered, stale) to an earlier one."""
        reply = move.delivery(laws.sent_commands(self.events), self.fresh_message_id)
        assert reply is not None
        self.hand_over(reply)

    @rule(result=step_results(), with_message_id=st.booleans(), cite_attempt=st.booleans())
    def participant_succeeds(self, result: Any, with_message_id: bool, cite_attempt: bool) -> None:
        """The outstanding command (or, when none, the latest) succeeds: drives sagas forward."""
        target = laws.outstanding_command(self.events) or laws.sent_commands(self.events)[-1]
        self.hand_over(
            DeliveredReply(
                step=target.step,
                kind=target.kind,
                succeeded=True,
                attempt=target.attempt if cite_attempt else None,
                message_id=self.fresh_message_id() if with_message_id else None,
                result=result,
            )
        )

    @rule(count=st.integers(1, 8), with_message_ids=st.booleans())
    def participants_succeed_several_times(self, count: int, with_message_ids: bool) -> None:
        """Up to ``count`` outstanding commands succeed in turn, forward or backward: gets
        sagas deep enough to have much to compensate, and through their compensations."""
        for _ in range(count):
            target = laws.outstanding_command(self.events)
            if target is None:
                return
            outcome = self.hand_over(
                DeliveredReply(
                    step=target.step,
                    kind=target.kind,
                    succeeded=True,
                    attempt=target.attempt,
                    message_id=self.fresh_message_id() if with_message_ids else None,
                    result={"done": target.step},
                )
            )
            assert outcome.applied

    @rule(error=error_texts(), with_message_id=st.booleans(), cite_attempt=st.booleans())
    def participant_fails(self, error: str, with_message_id: bool, cite_attempt: bool) -> None:
        """The outstanding command (or, when none, the latest) fails: drives sagas into
        retries, compensation and dead letters."""
        target = laws.outstanding_command(self.events) or laws.sent_commands(self.events)[-1]
        self.hand_over(
            DeliveredReply(
                step=target.step,
                kind=target.kind,
                succeeded=False,
                attempt=target.attempt if cite_attempt else None,
                message_id=self.fresh_message_id() if with_message_id else None,
                error=error,
            )
        )

    @rule(move=redeliveries())
    def transport_redelivers(self, move: Redeliver) -> None:
        """At-least-once delivery: an applied reply arrives again, same message id, and is
        a duplicate. (A no-op until some reply with a message id was applied.)"""
        reply = pick_back(self.delivered, move.pick)
        if reply is not None:
            outcome = self.hand_over(reply, answered=True)
            assert outcome.outcome is Outcome.DUPLICATE

    @rule(move=stray_replies())
    def stray_reply(self, move: StrayReply) -> None:
        """A reply naming any step, kind and attempt: typed errors, or judged like any reply."""
        reply = move.delivery(self.definition.step_names, self.fresh_message_id())
        error = self.expected_error(reply)
        if error is None:
            self.hand_over(reply)
        else:
            self.refused(error, lambda: deliver(self.saga, reply, self.now))

    @rule(pick=picks(), reply=st.sampled_from(["now", "later", "never"]))
    def participant_runs_a_command_late(self, pick: int, reply: str) -> None:
        """A participant runs any command sent so far, now: possibly after its deadline,
        its timeout, an abort, its compensation or a later attempt. Its reply arrives
        now, later (:meth:`a_reply_in_flight_arrives`) or never."""
        sent = pick_back(laws.sent_commands(self.events), pick)
        assert sent is not None
        command = laws.command_of(self.events, sent)
        if self.world.ran(command.command_id):
            return
        answer = self.world.answer(command, self.now, result={"late": sent.step})
        delivery = DeliveredReply.answering(command, answer, self.fresh_message_id())
        if reply == "now":
            self.hand_over(delivery, answered=True)
        elif reply == "later":
            self.in_flight.append(delivery)

    @rule(pick=picks())
    def a_reply_in_flight_arrives(self, pick: int) -> None:
        """The reply of a command run earlier arrives, late and in any order."""
        reply = pick_back(self.in_flight, pick)
        if reply is not None:
            self.in_flight.remove(reply)
            self.hand_over(reply, answered=True)

    @rule(move=clock_advances())
    def time_passes(self, move: AdvanceClock) -> None:
        """The clock moves on; exactly the due timers fire (``fire_due``)."""
        running = self.running()
        pending = laws.timers(self.events) if running else []
        self.now = move.moment(self.now, [t.due for t in pending])
        due = any(t.due <= self.now for t in pending)
        version = self.saga.version
        fired = self.saga.fire_due(self.now)
        self.record(None)
        assert (fired > 0) == due, f"fired {fired} timers; due: {pending} at {self.now}"
        assert (self.saga.version > version) == due

    @rule(move=operator_actions())
    def operator_acts(self, move: OperatorAction) -> None:
        """Retry and resolve only a dead-lettered saga; abort only a running one before
        its pivot. Every operator event records who and why."""
        saga = self.saga
        allowed = laws.operator_may(move.verb.value, self.definition, self.events)
        call: Callable[[], None] = {
            OperatorVerb.RETRY: lambda: saga.retry(
                actor=move.actor, reason=move.reason, now=self.now
            ),
            OperatorVerb.RESOLVE: lambda: saga.resolve(
                actor=move.actor, reason=move.reason, now=self.now
            ),
            OperatorVerb.ABORT: lambda: saga.abort(
                actor=move.actor, reason=move.reason, now=self.now
            ),
        }[move.verb]
        if not allowed:
            self.refused(InvalidTransitionError, call)
            return
        dead_letter = saga.dead_letter
        if move.verb is OperatorVerb.RESOLVE and dead_letter is not None:
            resolved = [
                s
                for s in laws.sent_commands(self.events)
                if (s.step, s.kind) == (dead_letter.step, dead_letter.kind)
            ]
            self.world.by_hand(laws.command_of(self.events, resolved[-1]), self.now)
        before = len(self.events)
        call()
        self.record(None)
        first = self.events[before]
        if move.verb is OperatorVerb.RETRY:
            assert isinstance(first, Saga.OperatorRetried)
        elif move.verb is OperatorVerb.RESOLVE:
            assert isinstance(first, Saga.OperatorResolved)
        else:
            assert isinstance(first, Saga.SagaAborted)
        assert (first.actor, first.reason) == (move.actor, move.reason)
        if move.verb is OperatorVerb.RETRY:
            assert dead_letter is not None
            retried = self.events[before + 1]
            assert isinstance(retried, Saga.StepDispatched | Saga.CompensationDispatched)
            assert retried.step == dead_letter.step
            assert retried.attempt == dead_letter.attempts + 1
        if move.verb is OperatorVerb.ABORT:
            assert isinstance(self.events[before + 1], Saga.CompensationRequested)

    @rule(case=st.sampled_from(MALFORMED))
    def malformed_input_is_refused(self, case: str) -> None:
        """Malformed input raises ``InvalidPayloadError`` whatever the state, recording nothing."""
        saga, now = self.saga, self.now
        target = laws.outstanding_command(self.events) or laws.sent_commands(self.events)[-1]
        naive = now.replace(tzinfo=None)
        compensatable = [s.name for s in self.definition.steps if s.compensatable]
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
        finish(clone, self.now)
        finished = self.events + cast(list[Saga.Event], list(clone.collect_events()))
        laws.check_all(self.definition, clone.id, finished)
        assert laws.is_ended(finished)

    # -- the laws, after every rule ------------------------------------------------

    @invariant()
    def law1_effects_run_forward_then_back_newest_first(self) -> None:
        laws.check_law1_effects(self.definition, self.events)

    @invariant()
    def law1_failures_are_retried_by_policy_then_compensated_or_dead_lettered(self) -> None:
        laws.check_failures_follow_retry_policies(self.definition, self.events)

    @invariant()
    def law2_no_dispatch_after_compensation_and_each_step_undone_at_most_once(self) -> None:
        laws.check_law2_compensations(self.definition, self.events)

    @invariant()
    def law3_completed_and_failed_are_absorbing(self) -> None:
        laws.check_law3_absorbing(self.events)
        saga = self.saga
        if self.ended_at is not None:
            assert saga.status == self.ended_at[0], (
                f"law 3: the saga ended as {self.ended_at} and is now "
                f"{saga.status} at version {saga.version}"
            )
        elif saga.status.is_terminal:
            self.ended_at = (saga.status, saga.version)
        assert saga.status.is_terminal == laws.is_ended(self.events)

    @invariant()
    def law1_a_failed_saga_leaves_no_action_in_force(self) -> None:
        """Law 1 against the world: once ``FAILED``, no action of a compensatable step is
        in force, whatever the timing (a run a fence would have refused aside)."""
        if self.saga.status is SagaStatus.FAILED:
            left = self.world.left_in_force(self.definition)
            assert not left, (
                "law 1: the saga is FAILED but these actions are in force, never compensated: "
                + "; ".join(e.describe() for e in left)
                + f" (fencing: {self.world.fencing})\n"
                + laws.describe_history(self.events)
            )

    @invariant()
    def law4_outcomes_answer_the_outstanding_command(self) -> None:
        command = laws.outstanding_command(self.events)
        pending = self.saga.pending_command
        assert (pending.command_id if pending else None) == (
            command.command_id if command else None
        ), f"law 4: the saga says {pending} is pending; its log says {command}"

    @invariant()
    def law5_the_saga_rebuilt_from_its_events_equals_the_live_one(self) -> None:
        saga = self.saga
        for version in self.unchecked_versions:
            rebuilt: Saga = self.app.repository.get(saga.id, version=version)
            assert rebuilt.version == version
            if version in self.snapshots:
                assert rebuilt == self.snapshots[version], (
                    f"law 5: rebuilt at version {version} differs from the live saga then"
                )
        self.unchecked_versions.clear()
        assert self.app.repository.get(saga.id) == saga, (
            f"law 5: the saga rebuilt at version {saga.version} differs from the live saga"
        )

    @invariant()
    def law6_command_ids_are_unique_and_deterministic(self) -> None:
        laws.check_law6_command_ids(self.saga.id, self.events)

    @invariant()
    def commands_carry_data_results_and_deadlines(self) -> None:
        laws.check_commands_carry_their_inputs(self.definition, self.events)

    @invariant()
    def liveness_a_running_saga_waits_on_a_command_or_a_timer(self) -> None:
        saga = self.saga
        assert saga.status is SagaStatus.DEAD_LETTERED or not laws.is_dead_lettered(self.events)
        if not self.running():
            assert saga.pending_command is None
            assert saga.next_wakeup is None
            return
        pending_timers = laws.timers(self.events)
        assert len(pending_timers) <= 1, f"more than one timer: {pending_timers}"
        assert saga.next_wakeup == (pending_timers[0].due if pending_timers else None)
        assert saga.pending_command is not None or saga.next_wakeup is not None, (
            f"liveness: a {saga.status} saga waits on no command and no timer"
        )
        assert saga.next_wakeup is None or saga.next_wakeup > self.now, (
            f"a timer due at {saga.next_wakeup} is overdue at {self.now}"
        )

    def teardown(self) -> None:
        """Law 5 once more over the whole run: every recorded version rebuilds equal."""
        if self._saga is None:
            return
        note_event(f"final status: {self.saga.status.value}")
        note_event(f"steps: {len(self.definition.steps)}")
        for kind in sorted({type(e).__name__ for e in self.events}):
            note_event(f"recorded {kind}")
        for version, snapshot in self.snapshots.items():
            assert self.app.repository.get(self.saga.id, version=version) == snapshot


TestSagaLaws = SagaLaws.TestCase
