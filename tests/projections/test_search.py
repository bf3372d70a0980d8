"""Finding sagas (``sagalog.projections.search``): filters, and keyset pages that together
hold every matching saga once, in order, whatever the page size."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from support.sagas import TRIP

from sagalog.domain import CommandKind, SagaStatus
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import SagaManager
from sagalog.projections import SagaProjector
from sagalog.projections.search import (
    BadCursorError,
    PageCursor,
    SagaFilter,
    activity,
    count_by_type_and_status,
    search_sagas,
)
from sagalog.testing import send_reply


@pytest.fixture
def projector(database_url: str) -> Iterator[SagaProjector]:
    manager = SagaManager(list(DEMO_DEFINITIONS), database_url)
    for i in range(9):
        manager.start("OrderFulfillment", {"order_id": f"o{i}", "items": 1, "amount": 5})
        manager.start("TravelBooking", {"trip_id": f"t{i}", "nights": 2})
    manager.start("OrderFulfillment", {"order_id": "old", "items": 1, "amount": 5}, version=1)
    odd = manager.start("OrderFulfillment", {"order_id": "odd", "items": 1, "amount": 5})
    error = "Gateway TIMEOUT at 100%_of quota"
    send_reply(manager, odd, "reserve_inventory", CommandKind.ACTION, False, error=error)
    projector = SagaProjector(manager)
    projector.catch_up()
    yield projector
    projector.close()
    manager.close()


def test_keyset_pages_hold_every_saga_once_newest_first(projector: SagaProjector) -> None:
    views = projector.views
    everyone = search_sagas(views, limit=1000).sagas
    assert len(everyone) == 20
    for size in (1, 3, 7, 20):
        seen, cursor = [], None
        while True:
            page = search_sagas(views, after=cursor, limit=size)
            seen += page.sagas
            if page.next_cursor is None:
                break
            cursor = PageCursor.decode(page.next_cursor.encode())
        assert [s.saga_id for s in seen] == [s.saga_id for s in everyone]
    keys = [(s.updated_at, s.saga_id) for s in everyone]
    assert keys == sorted(keys, reverse=True)


def test_filters_narrow_and_error_text_is_matched_literally(projector: SagaProjector) -> None:
    views = projector.views
    orders = search_sagas(views, SagaFilter(saga_type="OrderFulfillment"), limit=100).sagas
    assert len(orders) == 11
    assert [
        s.definition_version
        for s in search_sagas(
            views, SagaFilter(saga_type="OrderFulfillment", version=1), limit=100
        ).sagas
    ] == [1]
    found = search_sagas(views, SagaFilter(error="timeout at 100%_"), limit=100).sagas
    assert [s.last_error for s in found] == ["Gateway TIMEOUT at 100%_of quota"]
    assert search_sagas(views, SagaFilter(error="100%%"), limit=100).sagas == []
    status = SagaStatus(found[0].status)
    assert found[0].saga_id in {
        s.saga_id for s in search_sagas(views, SagaFilter(status=status), limit=100).sagas
    }
    latest = max(s.updated_at for s in orders)
    assert search_sagas(views, SagaFilter(updated_after=latest + timedelta(seconds=1))).sagas == []


def test_counts_and_activity_agree_with_the_rows(projector: SagaProjector) -> None:
    views = projector.views
    counts = count_by_type_and_status(views)
    assert sum(sum(c.values()) for c in counts.values()) == 20
    rows = search_sagas(views, limit=100).sagas
    until = max(s.updated_at for s in rows) + timedelta(minutes=1)
    buckets = activity(views, until=until, buckets=3)
    assert sum(b.started for b in buckets) == 20


def test_a_cursor_the_module_did_not_write_is_refused() -> None:
    with pytest.raises(BadCursorError):
        PageCursor.decode("not-a-cursor")


def test_the_step_filter_matches_any_step_in_flight_of_a_parallel_saga(
    database_url: str,
) -> None:
    manager = SagaManager([TRIP], database_url)
    projector = SagaProjector(manager)
    try:
        both = manager.start("Trip", {"trip": "both"})
        manager.handle_step_completed(both, "budget")  # hotel, flight and car in flight
        manager.handle_step_completed(both, "car")  # car, dispatched last, is done
        first = manager.start("Trip", {"trip": "first"})  # only budget in flight
        projector.catch_up()
        views = projector.views

        def found(step: str) -> set[object]:
            return {s.saga_id for s in search_sagas(views, SagaFilter(step=step)).sagas}

        assert found("hotel") == found("flight") == {both}
        assert found("car") == set()  # current_step of ``both``, but no longer in flight
        assert found("budget") == {first}
        assert found("hot") == found("%") == found('"') == set()
    finally:
        projector.close()
        manager.close()
