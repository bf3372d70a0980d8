"""Fixtures shared by the process tests: a settable clock and a manager on the test's store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sagas import ORDER, FakeClock

from sagalog.process import SagaManager


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(database_url: str, clock: FakeClock) -> Iterator[SagaManager]:
    """A manager running the ``Order`` saga on the selected backend, closed afterwards."""
    app = SagaManager([ORDER], database_url, clock=clock)
    yield app
    app.close()
