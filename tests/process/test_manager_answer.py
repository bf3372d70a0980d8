"""``SagaManager.answer``: an outcome given as data takes the same path as its ``handle_*`` call.

Each case runs one saga through ``answer`` and a twin saga through the matching
``handle_*`` method, at the same clock, and compares the events they recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from sagalog.domain import CommandKind, Outcome, SagaStatus, UnknownStepError
from sagalog.process import SagaManager


def event_names(manager: SagaManager, saga_id: UUID) -> list[str]:
    return [type(event).__name__ for event in manager.history(saga_id)]


def to_compensating(manager: SagaManager, saga_id: UUID) -> None:
    """Complete ``reserve`` and ``charge``, fail ``ship``: ``charge`` is compensated first."""
    manager.handle_step_completed(saga_id, "reserve", message_id=f"{saga_id}:r")
    manager.handle_step_completed(saga_id, "charge", message_id=f"{saga_id}:c")
    manager.handle_step_failed(saga_id, "ship", "no courier", message_id=f"{saga_id}:s")


Handler = Callable[[SagaManager, UUID], Any]

Prepare = Callable[[SagaManager, UUID], None]

CASES: dict[str, tuple[Prepare, str, CommandKind, bool, Handler]] = {
    "action completed": (
        lambda m, s: None,
        "reserve",
        CommandKind.ACTION,
        True,
        lambda m, s: m.handle_step_completed(s, "reserve", {"r": 1}, message_id="x"),
    ),
    "action failed": (
        lambda m, s: None,
        "reserve",
        CommandKind.ACTION,
        False,
        lambda m, s: m.handle_step_failed(s, "reserve", "out of stock", message_id="x"),
    ),
    "compensation completed": (
        to_compensating,
        "charge",
        CommandKind.COMPENSATION,
        True,
        lambda m, s: m.handle_compensation_completed(s, "charge", message_id="x"),
    ),
    "compensation failed": (
        to_compensating,
        "charge",
        CommandKind.COMPENSATION,
        False,
        lambda m, s: m.handle_compensation_failed(s, "charge", "busy", message_id="x"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_answer_records_what_the_matching_handle_method_records(
    manager: SagaManager, case: str
) -> None:
    prepare, step, kind, succeeded, handle = CASES[case]
    by_answer, by_handle = manager.start("Order", {"n": 1}), manager.start("Order", {"n": 2})
    for saga_id in (by_answer, by_handle):
        prepare(manager, saga_id)
    result = {"r": 1} if kind is CommandKind.ACTION and succeeded else None
    error = "out of stock" if kind is CommandKind.ACTION else "busy"
    outcome = manager.answer(
        by_answer, step, kind, succeeded, result=result, error=error, message_id="x"
    )
    assert outcome == handle(manager, by_handle)
    assert outcome.outcome is Outcome.APPLIED
    assert event_names(manager, by_answer) == event_names(manager, by_handle)
    answered, handled = manager.get(by_answer), manager.get(by_handle)
    assert answered.status == handled.status

    # (due times differ: retry jitter is derived from each saga's command ids)
    def seen(saga: Any) -> dict[str, tuple[Any, ...]]:
        return {
            name: (st.status, st.attempt, st.compensation_attempt, st.result, st.last_error)
            for name, st in saga.steps.items()
        }

    assert seen(answered) == seen(handled)


def test_answer_judges_a_repeated_message_id_a_duplicate(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    manager.answer(saga_id, "reserve", CommandKind.ACTION, True, message_id="m-1")
    again = manager.answer(saga_id, "reserve", CommandKind.ACTION, True, message_id="m-1")
    assert again.outcome is Outcome.DUPLICATE
    assert event_names(manager, saga_id).count("StepCompleted") == 1
    assert manager.get(saga_id).status is SagaStatus.PENDING


def test_answer_refuses_an_unknown_step_and_records_nothing(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    before = event_names(manager, saga_id)
    with pytest.raises(UnknownStepError):
        manager.answer(saga_id, "teleport", CommandKind.ACTION, True, message_id="m-1")
    assert event_names(manager, saga_id) == before
