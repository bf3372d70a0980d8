"""The laws of DESIGN.md hold end to end through ``SagaManager`` on every backend.

The same strategies and law checks as the domain state machine, but every move
goes through the manager and its store: replies are handled, time passes with
``tick``, operators act, and after every rule the saga's stored history is judged
by the law checks, and every stored version rebuilds to what the manager returned
when that version was the latest (law 5).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from law_checks import check_all, sent_commands
from strategies import definitions, error_texts, operator_names, saga_data, step_results

from sagalog.domain import (
    CommandKind,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaStatus,
)
from sagalog.process import SagaManager

_T0 = datetime.fromisoformat("2026-05-01T08:00:00+00:00")


class _Clock:
    def __init__(self) -> None:
        self.now = _T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def manager(database_url: str, clock: _Clock) -> Iterator[SagaManager]:
    app = SagaManager([], database_url, clock=clock)
    yield app
    app.close()


def _examples(backend: str) -> int:
    """Fewer examples on the real databases, where each transition is a commit."""
    configured = settings().max_examples
    return configured if backend == "memory" else max(10, configured // 10)


def test_laws_hold_through_the_manager(manager: SagaManager, clock: _Clock, backend: str) -> None:
    names = itertools.count()

    class ManagerLaws(RuleBasedStateMachine):
        """One saga per example, driven only through the manager's public API."""

        def __init__(self) -> None:
            super().__init__()
            self.saga_id: UUID = uuid4()
            self.definition: SagaDefinition | None = None
            self.seen_versions: dict[int, Saga] = {}
            self.message_ids: list[str] = []

        # -- helpers ---------------------------------------------------------

        def latest(self) -> Saga:
            return manager.get(self.saga_id)

        def remember(self) -> None:
            saga = self.latest()
            self.seen_versions[saga.version] = copy.deepcopy(saga)

        def expect_nothing_recorded(self, call: Callable[[], Any]) -> None:
            head = manager.recorder.max_notification_id()
            try:
                outcome = call()
            except SagalogError:
                assert manager.recorder.max_notification_id() == head
                return
            if outcome is not None and not outcome.applied:
                assert manager.recorder.max_notification_id() == head, outcome

        # -- rules -----------------------------------------------------------

        @initialize(definition=definitions(), data=saga_data())
        def start(self, definition: SagaDefinition, data: dict[str, Any]) -> None:
            unique = definition.model_copy(update={"name": f"{definition.name}_{next(names)}"})
            self.definition = SagaDefinition.model_validate(unique.model_dump())
            manager.registry.register(self.definition)
            manager.start(self.definition.name, data, saga_id=self.saga_id)
            again = manager.start(self.definition.name, data, saga_id=self.saga_id)
            assert again == self.saga_id
            self.remember()

        @rule(
            succeeded=st.booleans(),
            result=step_results(),
            error=error_texts(),
            cite=st.booleans(),
            with_id=st.booleans(),
        )
        def the_pending_command_is_answered(
            self, succeeded: bool, result: Any, error: str, cite: bool, with_id: bool
        ) -> None:
            command = self.latest().pending_command
            if command is None:
                return
            message_id = f"m-{uuid4()}" if with_id else None
            if message_id:
                self.message_ids.append(message_id)
            attempt = command.attempt if cite else None
            self.expect_nothing_recorded(
                lambda: _answer(
                    manager,
                    command.saga_id,
                    command.step,
                    command.kind,
                    succeeded,
                    result,
                    error,
                    attempt,
                    message_id,
                )
            )
            self.remember()

        @rule(pick=st.integers(1, 10), succeeded=st.booleans())
        def an_older_command_is_answered_late(self, pick: int, succeeded: bool) -> None:
            sent = sent_commands(manager.history(self.saga_id))
            if len(sent) < 2:
                return
            old = sent[max(0, len(sent) - 1 - pick)]
            head = manager.recorder.max_notification_id()
            try:
                outcome = _answer(
                    manager,
                    self.saga_id,
                    old.step,
                    old.kind,
                    succeeded,
                    None,
                    "late",
                    old.attempt,
                    None,
                )
            except SagalogError:
                outcome = None
            if outcome is not None and outcome.applied:
                # only possible when the older command is still the one outstanding
                assert (old.step, old.kind) == (sent[-1].step, sent[-1].kind)
            else:
                assert manager.recorder.max_notification_id() == head
            self.remember()

        @precondition(lambda self: bool(self.message_ids))
        @rule(pick=st.integers(0, 10), succeeded=st.booleans())
        def a_reply_is_redelivered(self, pick: int, succeeded: bool) -> None:
            message_id = self.message_ids[max(0, len(self.message_ids) - 1 - pick)]
            saga = self.latest()
            step = saga.current_step or saga.definition.steps[0].name
            head = manager.recorder.max_notification_id()
            try:
                outcome = manager.handle_step_completed(self.saga_id, step, message_id=message_id)
            except SagalogError:
                outcome = None
            assert outcome is None or not outcome.applied
            assert manager.recorder.max_notification_id() == head

        @rule(seconds=st.one_of(st.just(0.0), st.floats(0.0, 400.0)), exact=st.booleans())
        def time_passes(self, seconds: float, exact: bool) -> None:
            wakeup = self.latest().next_wakeup
            if exact and wakeup is not None and wakeup > clock.now:
                clock.now = wakeup
            else:
                clock.now = clock.now + _seconds(seconds)
            manager.tick(clock.now)
            self.remember()

        @rule(verb=st.sampled_from(["retry", "resolve", "abort"]), actor=operator_names())
        def an_operator_acts(self, verb: str, actor: str) -> None:
            act = getattr(manager, verb)
            self.expect_nothing_recorded(lambda: act(self.saga_id, actor=actor, reason="triage"))
            self.remember()

        # -- invariants ------------------------------------------------------

        @invariant()
        def the_stored_history_obeys_the_laws(self) -> None:
            assert self.definition is not None
            check_all(self.definition, self.saga_id, manager.history(self.saga_id))

        @invariant()
        def every_stored_version_rebuilds_to_what_was_seen(self) -> None:
            for version, seen in self.seen_versions.items():
                assert manager.get(self.saga_id, version=version) == seen

        @invariant()
        def a_running_saga_waits_on_a_command_or_a_timer(self) -> None:
            saga = self.latest()
            if saga.status in (SagaStatus.PENDING, SagaStatus.COMPENSATING):
                assert saga.pending_command is not None or saga.next_wakeup is not None

        @invariant()
        def the_timer_index_holds_the_next_wakeup(self) -> None:
            wakeup = self.latest().next_wakeup
            far = datetime.fromisoformat("9999-01-01T00:00:00+00:00")
            timers = dict(manager.timers.select_due_timers(far, 1_000_000))
            assert timers.get(self.saga_id) == wakeup

    run_state_machine_as_test(
        ManagerLaws, settings=settings(settings(), max_examples=_examples(backend))
    )


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _answer(
    manager: SagaManager,
    saga_id: UUID,
    step: str,
    kind: CommandKind,
    succeeded: bool,
    result: Any,
    error: str,
    attempt: int | None,
    message_id: str | None,
) -> Any:
    if kind is CommandKind.ACTION:
        if succeeded:
            return manager.handle_step_completed(
                saga_id, step, result, attempt=attempt, message_id=message_id
            )
        return manager.handle_step_failed(
            saga_id, step, error, attempt=attempt, message_id=message_id
        )
    if succeeded:
        return manager.handle_compensation_completed(
            saga_id, step, attempt=attempt, message_id=message_id
        )
    return manager.handle_compensation_failed(
        saga_id, step, error, attempt=attempt, message_id=message_id
    )
