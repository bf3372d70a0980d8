"""``SagaStarted`` records its definition's JSON dump, made once per fingerprint.

``Saga.start`` takes the dump from a small cache keyed by fingerprint, so every saga
of a definition records the same dict. These tests check that what is recorded is
always the dump of the saga's own definition, that sharing it changes nothing a
saga's life or its storage could observe, and that the cache stays bounded.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import Application
from saga_builders import T0, at, collect, order_definition

from sagalog.domain import RetryPolicy, Saga, SagaDefinition, Step, _speed


def started(definition: SagaDefinition, saga_id: UUID | None = None) -> Saga.SagaStarted:
    """The ``SagaStarted`` of a new saga of ``definition``."""
    saga = Saga.start(definition, {"order": 1}, saga_id=saga_id or uuid4(), now=T0)
    event = collect(saga)[0]
    assert isinstance(event, Saga.SagaStarted)
    return event


def test_sagas_started_from_one_definition_record_equal_definitions() -> None:
    definition = order_definition()
    first, second = started(definition), started(definition)
    rebuilt_equal = started(order_definition())  # an equal definition, built anew
    expected = definition.model_dump(mode="json")
    assert first.definition == second.definition == rebuilt_equal.definition == expected
    assert first.definition_fingerprint == rebuilt_equal.definition_fingerprint
    assert SagaDefinition.model_validate(first.definition) == definition


def test_a_definition_with_another_fingerprint_records_its_own() -> None:
    definition = order_definition()
    other = order_definition(
        payment_retry=RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=2))
    )
    assert other.fingerprint != definition.fingerprint
    mine, theirs = started(definition), started(other)
    assert mine.definition == definition.model_dump(mode="json")
    assert theirs.definition == other.model_dump(mode="json")
    assert theirs.definition != mine.definition
    assert theirs.definition_fingerprint == other.fingerprint
    assert SagaDefinition.model_validate(theirs.definition) == other


def test_the_shared_dump_survives_sagas_running_and_being_stored() -> None:
    definition = order_definition()
    expected = definition.model_dump(mode="json")
    app: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    sagas = [Saga.start(definition, {"n": n}, saga_id=uuid4(), now=T0) for n in range(2)]
    for saga in sagas:
        for seconds, step in enumerate(definition.step_names, start=1):
            saga.complete_step(step, {"step": step}, now=at(seconds))
        app.save(saga)
    for saga in sagas:
        assert app.repository.get(saga.id) == saga
    assert started(definition).definition == expected


def test_the_dump_cache_is_bounded_and_evicted_definitions_record_their_own() -> None:
    def numbered(version: int) -> SagaDefinition:
        return SagaDefinition("Numbered", [Step(name="only", action="Svc.Do")], version)

    bound = _speed._DEFINITION_DUMPS_SIZE
    recorded: dict[int, dict[str, Any]] = {}
    for version in range(1, bound + 20):
        recorded[version] = started(numbered(version)).definition
        assert len(_speed._DEFINITION_DUMPS) <= bound
    for version in (1, bound + 19):  # long evicted, and still cached
        again = started(numbered(version)).definition
        assert again == recorded[version] == numbered(version).model_dump(mode="json")
        assert again["version"] == version
