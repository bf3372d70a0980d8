"""The laws machine catches a saga that breaks the partial order.

Each test runs the laws machine on random parallel definitions against a ``Saga``
deliberately broken one way, and asserts that hypothesis finds a history breaking
a law: dispatching a step before a dependency completed, compensating in list
order instead of dependency order, compensating a step before its dependent's
compensation completed, and never compensating a sibling in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from sagalog.domain import Saga, SagaDefinition, StepStatus
from sagalog.domain.saga import _COMPENSATION_DONE, _COMPENSATION_STARTED
from sagalog.domain.status import CommandKind
from sagalog.testing import SagaLawsMachine
from sagalog.testing.strategies import dag_definitions
from sagalog.testing.subjects import AggregateSubject, Subject

_DONE = (StepStatus.COMPLETED, StepStatus.RESOLVED)


def _dispatch_before_dependencies(saga: Saga, now: datetime, cause: str | None) -> None:
    """Broken: a step goes as soon as its dependencies were dispatched, not completed."""
    gone = (*_DONE, StepStatus.DISPATCHED)
    for step in saga.definition.steps:
        if saga.steps[step.name].status is not StepStatus.NOT_STARTED:
            continue
        if all(saga.steps[d].status in gone for d in saga.definition.dependencies[step.name]):
            saga._dispatch(step, CommandKind.ACTION, 1, now, cause)


def _compensate_in_list_order(saga: Saga, now: datetime, cause: str | None) -> None:
    """Broken: one compensation at a time, oldest step first."""
    for name in reversed(saga.compensation_plan):
        status = saga.steps[name].status
        if status not in _COMPENSATION_STARTED:
            saga._dispatch(saga.definition.step(name), CommandKind.COMPENSATION, 1, now, cause)
            return
        if status not in _COMPENSATION_DONE:
            return
    reason = saga.failure_reason or "failed"
    saga._trigger(saga.SagaFailed, now, cause, reason=reason, failed_step=saga.failed_step)


def _blocked_until_dependents_started(saga: Saga, name: str) -> bool:
    """Broken: a compensation waits only until its dependents' compensations were sent."""
    planned = saga.compensation_plan
    return any(
        other in planned and saga.steps[other].status not in _COMPENSATION_STARTED
        for other in saga.definition.descendants(name)
    )


def _in_flight_not_uncertain(saga: Saga) -> list[str]:
    """Broken: a step in flight when the rollback began is left alone."""
    uncertain = []
    for step in saga.definition.steps:
        st = saga.steps[step.name]
        if not step.compensatable or st.status is not StepStatus.TIMED_OUT:
            continue
        if st.late or step.compensate_uncertain:
            uncertain.append(step.name)
    return uncertain


MUTATIONS: dict[str, tuple[str, Callable[..., Any]]] = {
    "dispatch before a dependency completed": ("_dispatch_ready", _dispatch_before_dependencies),
    "compensate in list order": ("_dispatch_next_compensation", _compensate_in_list_order),
    "compensate before the dependent's compensation completed": (
        "_compensation_blocked",
        _blocked_until_dependents_started,
    ),
    "never compensate an in-flight sibling": ("_uncertain_steps", _in_flight_not_uncertain),
}


class ParallelLaws(SagaLawsMachine):
    """The kit's rules on the aggregate alone, on definitions with steps in parallel."""

    definition = dag_definitions(min_steps=2, max_steps=5).filter(lambda d: not d.is_linear)

    def _open_subject(self, definition: SagaDefinition) -> Subject:
        return AggregateSubject(self.saga_id)


@pytest.fixture
def broken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    method, replacement = MUTATIONS[name]
    monkeypatch.setattr(Saga, method, replacement)
    return name


@pytest.mark.parametrize("broken", list(MUTATIONS), indirect=True)
def test_the_laws_machine_catches_the_mutation(broken: str) -> None:
    with pytest.raises(AssertionError) as caught:
        run_state_machine_as_test(
            ParallelLaws,
            settings=settings(
                max_examples=1000,
                stateful_step_count=20,
                derandomize=True,  # the same examples on every run: never flaky
                deadline=None,
                database=None,
                report_multiple_bugs=False,
                # Shrinking these histories takes minutes; the first failure is proof enough
                # here (run with shrinking to get the minimal examples docs/domain.md cites).
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )
    assert "law" in str(caught.value) or "partial order" in str(caught.value)
    print(f"\n--- {broken}: {caught.value}")


def test_the_unbroken_saga_passes_the_same_machine() -> None:
    run_state_machine_as_test(
        ParallelLaws,
        settings=settings(max_examples=100, stateful_step_count=30, deadline=None, database=None),
    )
