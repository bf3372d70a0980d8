"""``definition_versions``: sagas per definition version, and what the code registers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from sagalog.domain import SagaDefinition, Step
from sagalog.process import SagaManager
from sagalog.projections import (
    DefinitionVersionUsage,
    SagaProjector,
    SagaViews,
    definition_versions,
)
from sagalog.projections.versions import UNPROJECTED

PARCEL_V1 = SagaDefinition(
    "Parcel",
    [
        Step(name="label", action="Post.Label", compensation="Post.Void"),
        Step(name="pickup", action="Post.Pickup", compensation="Post.CancelPickup"),
    ],
    version=1,
)
PARCEL_V2 = SagaDefinition(
    "Parcel",
    [*PARCEL_V1.steps, Step(name="track", action="Post.Track", retriable=True)],
    version=2,
)
PARCEL_V3 = SagaDefinition(
    "Parcel",
    [*PARCEL_V2.steps[:2], Step(name="track", action="Post.Track", timeout=timedelta(hours=1))],
    version=3,
)
#: A version 1 that differs from the one the sagas ran on (another deployment's).
PARCEL_V1_ELSEWHERE = SagaDefinition("Parcel", [PARCEL_V1.steps[0]], version=1)


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    """The two ``Parcel`` versions (overrides the folder's ``manager``; ``views`` is its)."""
    app = SagaManager([PARCEL_V1, PARCEL_V2], database_url)
    yield app
    app.close()


def _by_version(usages: list[DefinitionVersionUsage]) -> dict[int, DefinitionVersionUsage]:
    assert {u.saga_type for u in usages} == {"Parcel"}
    return {u.version: u for u in usages}


def _record_sagas(manager: SagaManager) -> None:
    """On v1: one completed, one compensated, one waiting. On v2: one waiting."""
    done = manager.start("Parcel", {"n": 1}, version=1)
    manager.handle_step_completed(done, "label")
    manager.handle_step_completed(done, "pickup")
    failed = manager.start("Parcel", {"n": 2}, version=1)
    manager.handle_step_failed(failed, "label", "printer jam")
    manager.start("Parcel", {"n": 3}, version=1)
    waiting = manager.start("Parcel", {"n": 4})
    manager.handle_step_completed(waiting, "label")
    manager.handle_step_failed(waiting, "pickup", "no van")  # compensating


def test_counts_sagas_in_flight_by_status_and_ended_per_version(
    manager: SagaManager, views: SagaViews
) -> None:
    _record_sagas(manager)
    SagaProjector(manager, views).catch_up()
    found = _by_version(definition_versions(manager, views))
    assert found[1].fingerprint == PARCEL_V1.fingerprint
    assert found[1].in_flight == {"PENDING": 1}
    assert found[1].ended == {"COMPLETED": 1, "FAILED": 1}
    assert (found[1].registered, found[1].newest) == (True, False)
    assert found[2].in_flight == {"COMPENSATING": 1}
    assert (found[2].ended_total, found[2].registered, found[2].newest) == (0, True, True)
    assert found[2].to_json()["in_flight_total"] == 1


def test_says_which_versions_the_code_registers_and_lists_unused_ones(
    manager: SagaManager, views: SagaViews
) -> None:
    _record_sagas(manager)
    SagaProjector(manager, views).catch_up()
    found = {
        u.fingerprint: u
        for u in definition_versions(manager, views, [PARCEL_V1_ELSEWHERE, PARCEL_V3])
    }
    recorded_v1 = found[PARCEL_V1.fingerprint]
    assert (recorded_v1.registered, recorded_v1.in_flight_total) == (False, 1)
    assert recorded_v1.registered_fingerprint == PARCEL_V1_ELSEWHERE.fingerprint
    assert found[PARCEL_V1_ELSEWHERE.fingerprint].registered is True
    later = {u.version: u for u in found.values() if u.version > 1}
    assert later[2].registered is False  # retired: its sagas still run on the stored copy
    assert later[2].registered_fingerprint is None
    assert later[2].in_flight_total == 1
    assert (later[3].newest, later[3].in_flight_total, later[3].ended_total) == (True, 0, 0)
    # The recorded version 1 and the registered one are listed apart, sorted by fingerprint.
    listed = definition_versions(manager, views, [PARCEL_V1_ELSEWHERE])
    assert [(u.version, u.fingerprint, u.registered) for u in listed] == [
        *sorted([(1, PARCEL_V1.fingerprint, False), (1, PARCEL_V1_ELSEWHERE.fingerprint, True)]),
        (2, PARCEL_V2.fingerprint, False),
    ]


def test_sagas_the_views_have_not_seen_count_as_unprojected(
    manager: SagaManager, views: SagaViews
) -> None:
    _record_sagas(manager)
    found = _by_version(definition_versions(manager, views))
    assert found[1].in_flight == {UNPROJECTED: 3}
    assert found[2].in_flight == {UNPROJECTED: 1}


def test_an_empty_store_lists_the_registered_versions_with_nothing_on_them(
    manager: SagaManager, views: SagaViews
) -> None:
    found = _by_version(definition_versions(manager, views))
    assert sorted(found) == [1, 2]
    assert all(u.in_flight_total == u.ended_total == 0 for u in found.values())
