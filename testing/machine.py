"""``SagaLawsMachine``: check the laws of DESIGN.md on your own saga definition.

Subclass it, name your definition, and let hypothesis play every reply schedule
its participants could produce against a real ``SagaManager``::

    from sagalog.testing import SagaLawsMachine

    class OrderSagaLaws(SagaLawsMachine):
        definition = order_fulfillment

    TestOrderSagaLaws = OrderSagaLaws.TestCase

Each example starts one saga (data drawn from :attr:`SagaLawsMachine.data`) on a
fresh manager (in memory unless :attr:`SagaLawsMachine.database_url` says
otherwise) with a :class:`~sagalog.testing.clock.ManualClock`, then plays rules:
participants answer the pending command or an older one (reordered and stale
replies), succeed several times in a row, fail; the transport redelivers; stray
replies name any step, kind and attempt; participants run commands late and
their replies arrive late or never; time passes and the manager ticks (timeouts,
retries); operators retry, resolve and abort; and everyone cooperates until the
saga ends. After every rule it checks:

* laws 1, 2, 3, 6, the retry policies and the commands' inputs over the stored
  history (:func:`sagalog.testing.laws.check_all`);
* law 1 against the world: once ``FAILED``, no action is left in force (below);
* law 3 on the live saga: once ``COMPLETED`` or ``FAILED`` the status never changes;
* law 4: each reply is applied exactly when it answers the outstanding command
  with a new message id, or is the first success of an uncertain step (a late
  fact, ``StepCompletedLate``); duplicates, stale and refused replies record nothing;
* law 5: every version seen rebuilds from the store to what was seen;
* the timer index holds the saga's next wake-up, and a running saga always waits
  on a command or a timer.

**Participants with effects.** Give :attr:`SagaLawsMachine.participants` a
function per command name (action or compensation) that applies the command to a
world you model — ``def charge(world, command): world.balance += ...`` — and
return a fresh world from :meth:`SagaLawsMachine.new_world`. A command takes
effect when its participant runs it, which may be late: the rules let a
participant run any command sent so far at any time (after its deadline, after a
timeout was recorded, after an abort, out of order with its compensation, an
earlier attempt after a later one), its success reply then arriving at once,
later, or never (:class:`~sagalog.testing.world.World`). A compensation undoes
its action when the action is in force and is a no-op (answering success) when
it never ran: the participant's contract. Set :attr:`SagaLawsMachine.fencing` to
``Fencing()`` (:class:`~sagalog.testing.world.Fencing`) when your participants
are fenced like sagalog's ``Participant`` helper (expired actions, actions after
their compensation and repeated attempts are refused); the default,
``Fencing.off()``, assumes nothing.

After every rule the machine checks the Garcia-Molina property on effects: the
world equals the world before the saga with the actions in force applied; a
compensation that does not undo its action fails the test with a message naming
it. And it checks **law 1 against the world**: once the saga is ``FAILED`` no
action of a compensatable step is in force, whatever the timing, except a run
that a fence would have refused (possible only in an unfenced world). Without
participants the machine still keeps the record of what ran, so law 1 is checked
against it. Participants must be deterministic functions of the world and the
command: the machine replays them on a copy of the starting world to know what
the world should be.

A failure raises :class:`~sagalog.testing.laws.LawViolation`: which law, which
saga, and its numbered event history.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar
from uuid import UUID, uuid4

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sagalog.domain import (
    Command,
    CommandKind,
    InvalidTransitionError,
    Outcome,
    ReplyOutcome,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaStatus,
)
from sagalog.process import SagaManager
from sagalog.testing import laws
from sagalog.testing.clock import ManualClock
from sagalog.testing.strategies import (
    AdvanceClock,
    AnswerCommand,
    DeliveredReply,
    OperatorAction,
    OperatorVerb,
    Redeliver,
    StrayReply,
    clock_advances,
    error_texts,
    operator_actions,
    pick_back,
    picks,
    redeliveries,
    replies,
    saga_data,
    stray_replies,
)
from sagalog.testing.subjects import ManagerSubject, Subject
from sagalog.testing.world import Answer, Fencing, Handling, Participant, World

__all__ = ["Participant", "SagaLawsMachine"]

#: When the success reply of a command a participant ran late reaches the manager.
_REPLY_TIMINGS = ("now", "later", "never")

#: How many moves cooperating participants and operators get to end a saga.
_MAX_MOVES_TO_END = 500

#: What the cooperative operator does to a dead-lettered saga.
_RESOLVE_BY_HAND = OperatorAction(OperatorVerb.RESOLVE, "cooperative.operator", "ending the saga")


class SagaLawsMachine(RuleBasedStateMachine):
    """A hypothesis state machine that checks the laws on one saga per example.

    Set :attr:`definition` in a subclass; optionally :attr:`data`,
    :attr:`database_url`, :attr:`participants` with :meth:`new_world`, and override
    :meth:`open_manager` / :meth:`close_manager` to run on a manager of your own.
    Add ``@invariant()`` methods of your own for properties of your world.
    """

    #: The definition under test, or a strategy drawing one per example.
    definition: ClassVar[SagaDefinition | st.SearchStrategy[SagaDefinition]]
    #: The saga data, drawn per example; ``None`` draws small JSON objects.
    data: ClassVar[st.SearchStrategy[dict[str, Any]] | None] = None
    #: Where the manager stores sagas: ``memory://`` or a ``sqlite:///`` or PostgreSQL URL.
    database_url: ClassVar[str] = "memory://"
    #: Effects of commands on the world, by command name (see the module docs).
    participants: ClassVar[Mapping[str, Participant]] = {}
    #: The fences your participants apply: ``Fencing()`` for sagalog's fenced
    #: ``Participant`` helper; the default assumes none (see the module docs).
    fencing: ClassVar[Fencing] = Fencing.off()

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.saga_id: UUID = uuid4()
        self._subject: Subject | None = None
        self.start_message_id: str | None = None
        self._definition: SagaDefinition | None = None
        self._world: World | None = None
        self.in_flight: list[DeliveredReply] = []
        self.delivered: list[DeliveredReply] = []
        self.seen: dict[int, Saga] = {}
        self.unchecked_versions: list[int] = []
        self.ended_at: tuple[SagaStatus, int] | None = None
        self._message_count = 0

    # -- hooks -------------------------------------------------------------------

    def new_world(self) -> Any:
        """A fresh world for the participants to act on (``None`` without participants)."""
        return None

    def open_manager(self, definition: SagaDefinition) -> SagaManager:
        """The manager this example runs on, knowing ``definition``."""
        return SagaManager([definition], self.database_url, clock=self.clock)

    def close_manager(self, manager: SagaManager) -> None:
        """Release what :meth:`open_manager` opened."""
        manager.close()

    def _open_subject(self, definition: SagaDefinition) -> Subject:
        """What the rules drive: the saga through :meth:`open_manager`'s manager.
        (sagalog's own tests drive the ``Saga`` aggregate alone, with the same rules.)"""
        return ManagerSubject(self.open_manager(definition), self.saga_id, self.close_manager)

    def _draw_example(self, draw: st.DataObject) -> Fencing:
        """Draw what else an example varies, before the saga starts; the fences of its
        participants (:attr:`fencing`, always, in the kit)."""
        return self.fencing

    # -- state -------------------------------------------------------------------

    @property
    def subject(self) -> Subject:
        """What this example's rules drive (see :mod:`sagalog.testing.subjects`)."""
        assert self._subject is not None, "the saga has not been started"
        return self._subject

    @property
    def manager(self) -> SagaManager:
        """The manager of this example."""
        subject = self.subject
        assert isinstance(subject, ManagerSubject), f"{type(self).__name__} runs no manager"
        return subject.manager

    @property
    def saga_definition(self) -> SagaDefinition:
        """The definition this example's saga runs (drawn, if :attr:`definition` is a strategy)."""
        assert self._definition is not None, "the saga has not been started"
        return self._definition

    @property
    def participants_world(self) -> World:
        """What the participants did: their state, the commands they ran, what is in force."""
        assert self._world is not None, "the saga has not been started"
        return self._world

    @property
    def world(self) -> Any:
        """The state your participants act on (what :meth:`new_world` returned)."""
        return self._world.state if self._world is not None else None

    @property
    def saga(self) -> Saga:
        """The saga as the manager has it now."""
        return self.subject.saga

    def history(self) -> list[Saga.Event]:
        """The saga's stored events, oldest first."""
        return self.subject.history()

    def require(self, condition: bool, problem: str) -> None:
        """Fail with a :class:`~sagalog.testing.laws.LawViolation` saying ``problem``
        (and showing the saga's history) unless ``condition`` holds."""
        if not condition:
            raise laws.violation(problem, self.saga_definition, self.saga_id, self.history())

    def _fresh_message_id(self) -> str:
        self._message_count += 1
        return f"msg-{self._message_count}"

    def _remember(self) -> None:
        saga = self.saga
        if saga.version not in self.seen:
            self.unchecked_versions.append(saga.version)
        self.seen[saga.version] = copy.deepcopy(saga)

    def _head(self) -> object:
        return self.subject.mark()

    def _definitions(self) -> st.SearchStrategy[SagaDefinition]:
        chosen = getattr(type(self), "definition", None)
        if isinstance(chosen, SagaDefinition):
            return st.just(chosen)
        if isinstance(chosen, st.SearchStrategy):
            return chosen
        raise TypeError(
            f"{type(self).__name__} must set definition = <a SagaDefinition> (or a strategy "
            f"of them), not {chosen!r}"
        )

    # -- effects -----------------------------------------------------------------

    def _command_answered(self, sent: laws.Sent) -> Command:
        return laws.command_of(self.history(), sent)

    def _participant_answers(self, reply: DeliveredReply) -> DeliveredReply:
        """``reply`` as the participant of its command would give it: a success means the
        command runs now (unless it ran before, or a fence refuses it, turning the success
        into a failure); a failure means it will never run."""
        command = laws.command_named(self.history(), reply.step, reply.kind, reply.attempt)
        if command is None:
            return reply
        answer = self.participants_world.answer(
            command,
            self.clock.now,
            succeed=reply.succeeded,
            result=reply.result,
            error=reply.error,
        )
        self._after_answer(command, answer)
        return replace(
            reply,
            succeeded=answer.succeeded,
            result=answer.result if command.kind is CommandKind.ACTION else None,
            error=answer.error or reply.error,
        )

    def _after_answer(self, command: Command, answer: Answer) -> None:
        if command.kind is CommandKind.COMPENSATION and answer.handling is Handling.EXECUTED:
            self._check_the_world(undoing=command)

    def _check_the_world(self, undoing: Command | None = None) -> None:
        world = self.participants_world
        if not self.participants or world.state == (expected := world.expected_state()):
            return
        in_force = [e.command.name for e in world.in_force()]
        if undoing is not None:
            action = self.saga_definition.step(undoing.step).action
            problem = (
                f"Garcia-Molina: compensation {undoing.name!r} of step {undoing.step!r} did not "
                f"undo {action!r}: with {in_force or 'no action'} in force the world should be "
                f"{expected!r}, but after {undoing.name!r} it is {world.state!r}"
            )
        else:
            status = self.saga.status
            problem = (
                f"Garcia-Molina: the saga is {status.value}; with {in_force or 'no action'} in "
                f"force the world should be {expected!r}, but it is {world.state!r} (are the "
                "participants deterministic functions of the world and the command?)"
            )
        self.require(False, problem)

    def _check_law1_against_the_world(self) -> None:
        if self.saga.status is not SagaStatus.FAILED:
            return
        left = self.participants_world.left_in_force(self.saga_definition)
        if left:
            runs = "; ".join(e.describe() for e in left)
            self.require(
                False,
                f"law 1: the saga is FAILED but the action of {left[0].command.step!r} is in "
                f"force, never compensated: {runs}. No fence excuses it (fencing: "
                f"{self.participants_world.fencing})",
            )

    # -- delivering replies ------------------------------------------------------

    def _deliver(self, reply: DeliveredReply, *, answered: bool = False) -> ReplyOutcome | None:
        """Hand ``reply`` to the manager and judge the outcome by law 4's oracle. Unless
        ``answered`` (a reply the participants already gave), the participant of the
        command first handles it (see :meth:`_participant_answers`)."""
        if not answered:
            reply = self._participant_answers(reply)
        events = self.history()
        refusal = laws.expected_reply_error(
            self.saga_definition, events, reply.step, reply.kind, reply.attempt
        )
        late = (
            refusal is None
            and reply.succeeded
            and reply.kind is CommandKind.ACTION
            and laws.late_success_would_apply(
                self.saga_definition, events, reply.step, reply.attempt, reply.message_id
            )
        )
        applies = late or (
            refusal is None
            and laws.reply_would_apply(
                events, reply.step, reply.kind, reply.attempt, reply.message_id, reply.succeeded
            )
        )
        processed = laws.processed_message_ids(events)
        latest = laws.latest_attempt(events, reply.step, reply.kind)
        head = self._head()
        result = reply.result
        try:
            outcome = self.subject.deliver(reply, self.clock.now)
        except SagalogError as refused:
            self.require(
                refusal is not None and isinstance(refused, refusal),
                f"law 4: {reply} was refused with {refused!r}; expected "
                f"{refusal.__name__ if refusal else 'no error'}",
            )
            self.require(self._head() == head, f"law 4: the refused {reply} recorded events")
            return None
        self.require(
            refusal is None,
            f"law 4: {reply} gave {outcome}; it must be refused with "
            f"{refusal.__name__ if refusal else ''}",
        )
        self.require(
            outcome.applied == applies and (outcome.outcome is Outcome.LATE) == late,
            f"law 4: {reply} gave {outcome}; the outstanding command was "
            f"{laws.outstanding_command(events)}"
            + ("; it is a late success of an uncertain step" if late else ""),
        )
        if not outcome.applied:
            self.require(self._head() == head, f"law 4: {reply} ({outcome}) recorded events")
            self.require(bool(outcome.reason), f"law 4: {outcome} for {reply} does not say why")
            if reply.message_id is not None and reply.message_id in processed:
                self.require(
                    outcome.outcome is Outcome.DUPLICATE,
                    f"law 4: {reply} reuses a consumed message id but gave {outcome}",
                )
            elif reply.attempt is not None and reply.attempt < latest:
                self.require(
                    outcome.outcome is Outcome.STALE,
                    f"law 4: {reply} answers an older attempt but gave {outcome}",
                )
        elif reply.message_id is not None:
            self.delivered.append(replace(reply, result=result))
        self._remember()
        return outcome

    def _succeed(self, sent: laws.Sent, message_id: str | None) -> ReplyOutcome | None:
        """The participant of ``sent`` runs it and answers (a fence may refuse it)."""
        return self._deliver(
            DeliveredReply(
                sent.step, sent.kind, True, sent.attempt, message_id, {"done": sent.step}
            )
        )

    def _require_applied(self, target: laws.Sent, outcome: ReplyOutcome | None) -> None:
        self.require(
            outcome is not None and outcome.applied,
            f"law 4: the answer to outstanding {target} was not applied: {outcome}",
        )

    # -- rules -------------------------------------------------------------------

    @initialize(draw=st.data())
    def start_the_saga(self, draw: st.DataObject) -> None:
        """Start one saga of the definition with drawn data; starting it again with the
        same id records nothing (starts are idempotent). With a head start its first
        steps (up to all but the last) succeed at once, so that the rules also begin
        from deep states with much to compensate."""
        definition = draw.draw(self._definitions(), label="definition")
        data = draw.draw(self.data if self.data is not None else saga_data(), label="data")
        fencing = self._draw_example(draw)
        self._definition = definition
        self._subject = self._open_subject(definition)
        state = self.new_world()
        if self.participants and state is None:
            raise TypeError(
                f"{type(self).__name__} has participants but new_world() returned None; "
                "override new_world to return the world they act on"
            )
        self._world = World(state, self.participants, fencing)
        start = (definition, data, self.start_message_id, self.clock.now)
        self.subject.start(*start)
        head = self._head()
        again = self.subject.start(*start)
        self.require(again == self.saga_id, f"starting again gave {again}, not {self.saga_id}")
        self.require(self._head() == head, "starting an existing saga again recorded events")
        self._remember()
        head_start = draw.draw(st.integers(0, len(definition.steps) - 1), label="head start")
        for _ in range(head_start):
            target = laws.outstanding_command(self.history())
            if target is None or target.kind is not CommandKind.ACTION:
                break
            self._require_applied(target, self._succeed(target, None))

    @rule(move=replies())
    def a_participant_replies(self, move: AnswerCommand) -> None:
        """A reply to the latest command sent or, reordered or stale, to an earlier one."""
        reply = move.delivery(laws.sent_commands(self.history()), self._fresh_message_id)
        assert reply is not None
        self._deliver(reply)

    @rule(error=error_texts(), cite_attempt=st.booleans())
    def the_outstanding_command_fails(self, error: str, cite_attempt: bool) -> None:
        """The command the saga waits on (the newest, with steps in parallel) fails:
        drives sagas into retries, compensation and dead letters (a no-op when the saga
        waits on nothing). Replies to any branch, failures included, come from
        :meth:`a_participant_replies`."""
        target = laws.outstanding_command(self.history())
        if target is not None:
            attempt = target.attempt if cite_attempt else None
            message_id = self._fresh_message_id()
            self._deliver(
                DeliveredReply(target.step, target.kind, False, attempt, message_id, None, error)
            )

    @rule(count=st.integers(1, 8), with_message_ids=st.booleans())
    def participants_succeed_in_turn(self, count: int, with_message_ids: bool) -> None:
        """Up to ``count`` outstanding commands succeed in turn, forward or backward: takes
        sagas deep, with much to compensate, and through their compensations (with steps
        in parallel, the newest first)."""
        for _ in range(count):
            target = laws.outstanding_command(self.history())
            if target is None:
                return
            message_id = self._fresh_message_id() if with_message_ids else None
            self._require_applied(target, self._succeed(target, message_id))

    @rule(move=redeliveries())
    def the_transport_redelivers(self, move: Redeliver) -> None:
        """At-least-once delivery: an applied reply arrives again with the same message id
        and is a duplicate. (Nothing to do until a reply with a message id was applied.)"""
        reply = pick_back(self.delivered, move.pick)
        if reply is not None:
            outcome = self._deliver(reply, answered=True)
            self.require(
                outcome is not None and outcome.outcome is Outcome.DUPLICATE,
                f"law 4: redelivered {reply} gave {outcome}, not a duplicate",
            )

    @rule(pick=picks(), succeeded=st.booleans())
    def a_consumed_message_id_comes_back_on_another_reply(self, pick: int, succeeded: bool) -> None:
        """A message id already consumed, now on a reply to the command the saga waits on:
        a duplicate, whatever it says. (Nothing to do before a reply with a message id
        was applied, or when the saga waits on nothing.)"""
        used = pick_back(self.delivered, pick)
        target = laws.outstanding_command(self.history())
        if used is None or target is None:
            return
        reply = DeliveredReply(target.step, target.kind, succeeded, None, used.message_id)
        outcome = self._deliver(reply, answered=True)
        self.require(
            outcome is not None and outcome.outcome is Outcome.DUPLICATE,
            f"law 4: {reply} reuses consumed message id {used.message_id!r} but gave {outcome}",
        )

    @rule(move=stray_replies())
    def a_stray_reply_arrives(self, move: StrayReply) -> None:
        """A reply naming any step, kind and attempt: refused with a typed error when it
        cannot be about a command sent, otherwise judged like any reply."""
        names = self.saga_definition.step_names
        self._deliver(move.delivery(names, self._fresh_message_id()))

    @rule(pick=picks(), reply=st.sampled_from(_REPLY_TIMINGS))
    def a_participant_runs_a_command_late(self, pick: int, reply: str) -> None:
        """A participant runs any command sent so far, now: possibly after its deadline,
        its timeout, an abort, its compensation, or a later attempt. Its reply arrives
        now, is in flight (see :meth:`a_reply_in_flight_arrives`) or is lost."""
        sent = pick_back(laws.sent_commands(self.history()), pick)
        assert sent is not None
        self._run_late(sent, reply)

    @rule(lost=st.booleans())
    def the_outstanding_command_runs_but_its_reply_is_delayed(self, lost: bool) -> None:
        """The participant runs the command the saga waits on; its reply is in flight (or
        lost) while deadlines pass and operators act: the outcome is unknown to the saga."""
        target = laws.outstanding_command(self.history())
        if target is not None:
            self._run_late(target, "never" if lost else "later")

    def _run_late(self, sent: laws.Sent, reply: str) -> None:
        command = self._command_answered(sent)
        if self.participants_world.ran(command.command_id):
            return
        answer = self.participants_world.answer(command, self.clock.now, result={"late": True})
        self._after_answer(command, answer)
        delivery = DeliveredReply.answering(command, answer, self._fresh_message_id())
        if reply == "now":
            self._deliver(delivery, answered=True)
        elif reply == "later":
            self.in_flight.append(delivery)

    @rule(pick=picks())
    def a_reply_in_flight_arrives(self, pick: int) -> None:
        """The reply of a command a participant ran earlier arrives, late and in any order
        (nothing to do when no reply is in flight)."""
        reply = pick_back(self.in_flight, pick)
        if reply is not None:
            self.in_flight.remove(reply)
            self._deliver(reply, answered=True)

    @rule(move=clock_advances())
    def time_passes(self, move: AdvanceClock) -> None:
        """The clock moves on and the manager ticks; the saga moves exactly when one of
        its timers (a deadline or a retry, read from its log) is due."""
        events = self.history()
        running = not laws.is_ended(events) and not laws.is_dead_lettered(events)
        pending = laws.timers(events) if running else []
        self.clock.move_to(move.moment(self.clock.now, [t.due for t in pending]))
        due = any(t.due <= self.clock.now for t in pending)
        version = self.saga.version
        fired = self.subject.tick(self.clock.now)
        moved = self.saga.version > version
        self.require(
            moved == due and (fired > 0) == due,
            f"at {self.clock.now} the saga {'moved' if moved else 'stood still'} ({fired} "
            f"fired); its timers: {pending}",
        )
        self._remember()

    @rule(move=operator_actions())
    def an_operator_acts(self, move: OperatorAction) -> None:
        """Retry and resolve only a dead-lettered saga, abort only a running one before
        its pivot; anything else is refused and records nothing."""
        self._operator(move)

    def _operator(self, move: OperatorAction) -> None:
        events = self.history()
        allowed = laws.operator_may(move.verb.value, self.saga_definition, events)
        dead_letter = self.saga.dead_letter
        head = self._head()
        if allowed and move.verb.value == "resolve" and dead_letter is not None:
            sent = [
                s
                for s in laws.sent_commands(events)
                if (s.step, s.kind) == (dead_letter.step, dead_letter.kind)
            ]
            command = self._command_answered(sent[-1])
            self.participants_world.by_hand(command, self.clock.now)
            if command.kind is CommandKind.COMPENSATION:
                self._check_the_world(undoing=command)
        try:
            self.subject.act(move.verb, move.actor, move.reason, self.clock.now)
        except InvalidTransitionError as refused:
            self.require(not allowed, f"the operator's {move.verb.value} was refused: {refused}")
            self.require(self._head() == head, f"the refused {move.verb.value} recorded events")
            return
        self.require(allowed, f"the operator's {move.verb.value} was not refused")
        self._remember()

    # -- the laws, after every rule ------------------------------------------------

    @invariant()
    def the_stored_history_obeys_the_laws(self) -> None:
        """Laws 1, 2, 3, 4 (outstanding commands), 6, retry policies, command inputs."""
        if self._definition is not None:
            laws.check_all(self.saga_definition, self.saga_id, self.history())

    @invariant()
    def law3_completed_and_failed_are_absorbing(self) -> None:
        if self._definition is None:
            return
        saga = self.saga
        if self.ended_at is not None:
            self.require(
                saga.status == self.ended_at[0],
                f"law 3: the saga ended as {self.ended_at} and is now {saga.status} at "
                f"version {saga.version}",
            )
        elif saga.status.is_terminal:
            self.ended_at = (saga.status, saga.version)

    @invariant()
    def law5_every_version_rebuilds_to_what_was_seen(self) -> None:
        if self._definition is None:
            return
        for version in self.unchecked_versions:
            rebuilt = self.subject.rebuilt(version)
            self.require(
                rebuilt == self.seen[version],
                f"law 5: the saga rebuilt at version {version} differs from the live one then",
            )
        self.unchecked_versions.clear()

    @invariant()
    def a_running_saga_waits_on_a_command_or_a_timer(self) -> None:
        if self._definition is None:
            return
        saga = self.saga
        if saga.status in (SagaStatus.PENDING, SagaStatus.COMPENSATING):
            self.require(
                saga.pending_command is not None
                or bool(saga.steps_in_flight)
                or saga.next_wakeup is not None,
                f"liveness: a {saga.status.value} saga waits on no command and no timer",
            )

    @invariant()
    def the_timer_index_holds_the_next_wakeup(self) -> None:
        if self._definition is None:
            return
        wakeup = self.saga.next_wakeup
        indexed = self.subject.indexed_wakeup()
        self.require(
            indexed == wakeup, f"the timer index says {indexed}; the saga wakes at {wakeup}"
        )

    @invariant()
    def garcia_molina_the_world_holds_exactly_the_actions_in_force(self) -> None:
        """With participants: the world is the starting world with the actions that ran
        and were not compensated."""
        if self._definition is not None:
            self._check_the_world()

    @invariant()
    def law1_a_failed_saga_leaves_no_action_in_force(self) -> None:
        """Law 1 against the world: once ``FAILED``, no action of a compensatable step is
        in force, whatever the timing (a run a fence would have refused aside)."""
        if self._definition is not None:
            self._check_law1_against_the_world()

    def everyone_cooperates_to_the_end(self) -> None:
        """Liveness, at the end of every example: participants succeed, timers fire and an
        operator resolves dead letters until the saga ends, which it must within a
        bounded number of moves; the ended saga (and the world) must obey the laws.
        This also takes every saga stopped midway through its compensations, so a
        broken compensation shows even when the rules stopped before it ran."""
        while self.in_flight:
            self._deliver(self.in_flight.pop(0), answered=True)
        for _ in range(_MAX_MOVES_TO_END):
            events = self.history()
            if laws.is_ended(events):
                self.the_stored_history_obeys_the_laws()
                self.garcia_molina_the_world_holds_exactly_the_actions_in_force()
                self.law1_a_failed_saga_leaves_no_action_in_force()
                self.unchecked_versions = sorted(self.seen)
                self.law5_every_version_rebuilds_to_what_was_seen()
                return
            if laws.is_dead_lettered(events):
                self._operator(_RESOLVE_BY_HAND)
                continue
            target = laws.outstanding_command(events)
            if target is not None:
                self._require_applied(target, self._succeed(target, None))
                continue
            wakeup = self.saga.next_wakeup
            self.require(wakeup is not None, "liveness: a running saga waits on nothing")
            assert wakeup is not None
            version = self.saga.version
            self.subject.tick(self.clock.move_to(wakeup))
            self.require(self.saga.version > version, f"liveness: nothing fired at {wakeup}")
            self._remember()
        self.require(False, f"liveness: the saga did not end within {_MAX_MOVES_TO_END} moves")

    def teardown(self) -> None:
        """Take the saga to its end (see :meth:`everyone_cooperates_to_the_end`), then
        close the manager. After a failed rule or invariant (hypothesis calls teardown
        while that exception propagates) the saga is left as it is: finishing it
        would run its participants again and report a second failure."""
        if self._subject is None:
            return
        try:
            if sys.exc_info()[1] is None:
                self.everyone_cooperates_to_the_end()
        finally:
            self._subject.close()
            self._subject = None
