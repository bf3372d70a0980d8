"""The laws of DESIGN.md hold end to end through ``SagaManager`` on every backend.

This is the testing kit's own ``SagaLawsMachine`` (the one users subclass) run on
arbitrary definitions drawn per example: every move goes through the manager and
its store — replies, reordered, stale and stray ones, redeliveries, time passing
with ``tick``, operators acting, everyone cooperating to the end — and after every
rule the stored history is judged by the law checks, every stored version
rebuilds to what the manager returned (law 5), and the timer index holds the
saga's next wake-up.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from sagalog.testing import SagaLawsMachine
from sagalog.testing.strategies import definitions


def _examples(backend: str) -> int:
    """Fewer examples on the real databases, where each transition is a commit."""
    configured = settings().max_examples
    return configured if backend == "memory" else max(10, configured // 10)


def test_laws_hold_through_the_manager_for_any_definition(database_url: str, backend: str) -> None:
    class AnyDefinitionLaws(SagaLawsMachine):
        definition = definitions()

    AnyDefinitionLaws.database_url = database_url
    run_state_machine_as_test(
        AnyDefinitionLaws, settings=settings(settings(), max_examples=_examples(backend))
    )
