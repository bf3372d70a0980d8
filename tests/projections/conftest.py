"""Fixtures of the projection tests: a manager on the selected backend, its views, a projector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.sagas import DEFINITIONS, T0

from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector, SagaViews


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager(DEFINITIONS, database_url, clock=clock)
    yield app
    app.close()


@pytest.fixture
def views(database_url: str) -> Iterator[SagaViews]:
    """The views on the test's database (a private in-memory one for ``memory://``)."""
    view = SagaViews(database_url)
    yield view
    view.close()


@pytest.fixture
def projector(manager: SagaManager, views: SagaViews) -> SagaProjector:
    return SagaProjector(manager, views)
