"""The manager's clock: a function that says what time it is, in UTC.

Every decision takes its ``now`` from here, so tests and what-if runs can pass
their own clock and replay time exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

__all__ = ["Clock", "utc_now"]

#: What the manager asks for the time: no arguments, an aware ``datetime``.
Clock: TypeAlias = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock in UTC; the manager's default clock."""
    return datetime.now(UTC)
