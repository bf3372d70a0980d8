"""The laws of DESIGN.md hold end to end through ``SagaManager`` on every backend.

This is the testing kit's own ``SagaLawsMachine`` (the one users subclass) run on
arbitrary definitions drawn per example: every move goes through the manager and
its store — replies, reordered, stale and stray ones, redeliveries, time passing
with ``tick``, operators acting, everyone cooperating to the end — and after every
rule the stored history is judged by the law checks, every stored version
rebuilds to what the manager returned (law 5), and the timer index holds the
saga's next wake-up.

It is the one run of the laws machine on SQLite and PostgreSQL: the kit's tests
(``tests/testing``) run the shop's machine, participants and world included, in
memory, where the store plays no part in what they check.
"""

from __future__ import annotations

from uuid import UUID

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from sagalog.process import SagaManager
from sagalog.testing import SagaLawsMachine
from sagalog.testing.strategies import dag_definitions, definitions


def _examples(backend: str) -> int:
    """Fewer examples on the real databases, where each transition is a commit."""
    configured = settings().max_examples
    return configured if backend == "memory" else max(10, configured // 10)


def test_laws_hold_through_the_manager_for_any_definition(database_url: str, backend: str) -> None:
    started: list[UUID] = []

    class AnyDefinitionLaws(SagaLawsMachine):
        definition = st.one_of(definitions(), dag_definitions())

        def teardown(self) -> None:
            if self._definition is not None:
                started.append(self.saga_id)
            super().teardown()

    AnyDefinitionLaws.database_url = database_url
    run_state_machine_as_test(
        AnyDefinitionLaws, settings=settings(settings(), max_examples=_examples(backend))
    )
    assert started
    if backend != "memory":  # ``database_url`` put the machine's managers on the test's store
        store = SagaManager([], database_url)
        try:
            assert all(store.recorder.select_events(saga_id) for saga_id in started)
        finally:
            store.close()
