"""Fixtures shared by the process tests: a settable clock and a manager on the test's store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.sagas import ORDER, T0

from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    """A manager running the ``Order`` saga on the selected backend, closed afterwards."""
    app = SagaManager([ORDER], database_url, clock=clock)
    yield app
    app.close()
