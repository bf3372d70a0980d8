"""Fixtures of the console's tests: a console over demo sagas, with or without a token.

The store follows ``SAGALOG_TEST_BACKEND`` (SQLite, PostgreSQL; the demo runs its own
manager, so the memory backend has nothing to share and is skipped).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from console_support import TOKEN, Console, serve


@pytest.fixture
def console(database_url: str, requires_database: None) -> Iterator[Console]:
    """A console with actions enabled by :data:`TOKEN`."""
    yield from serve(database_url, TOKEN)


@pytest.fixture
def read_only_console(database_url: str, requires_database: None) -> Iterator[Console]:
    """A console without a token: read-only."""
    yield from serve(database_url, None)
