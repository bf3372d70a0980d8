"""The manager's clock: a function that says what time it is, in UTC, and one that stands still.

Every decision takes its ``now`` from the manager's clock (``utc_now`` by default), so
tests, the demo and what-if runs pass their own. With a ``ManualClock`` timeouts and
retries fire exactly when the caller says time has passed
(``manager.tick(clock.advance(30))``), never because the machine was slow.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from sagalog.domain.errors import SagalogError

__all__ = ["EPOCH", "Clock", "ClockError", "ManualClock", "utc_now"]

#: What the manager asks for the time: no arguments, an aware ``datetime``.
Clock: TypeAlias = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock in UTC; the manager's default clock."""
    return datetime.now(UTC)


class ClockError(SagalogError, ValueError):
    """A manual clock was told to go backwards by ``advance`` or to tell naive time."""


#: Where a manual clock starts unless told otherwise: a fixed, timezone-aware instant.
EPOCH = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A callable clock for ``SagaManager(clock=...)``, standing still until moved.

    ``clock()`` (or ``clock.now``) reads it; :meth:`advance` and :meth:`move_to` move it
    forward; :meth:`set` puts it anywhere, backwards included (a participant's clock that
    runs behind the manager's, say).
    """

    def __init__(self, start: datetime = EPOCH) -> None:
        self.now = _aware(start)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta | float) -> datetime:
        """Move forward by ``by`` (a timedelta, or seconds) and return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ClockError(f"a saga clock only moves forward, not by {step}")
        self.now += step
        return self.now

    def move_to(self, moment: datetime) -> datetime:
        """Move to ``moment`` unless it lies in the past; return the new time."""
        self.now = max(self.now, _aware(moment))
        return self.now

    def set(self, moment: datetime) -> datetime:
        """Put the clock at ``moment``, earlier or later; return it."""
        self.now = _aware(moment)
        return self.now

    def __repr__(self) -> str:
        return f"ManualClock({self.now.isoformat()})"


def _aware(moment: datetime) -> datetime:
    """``moment`` if timezone-aware: sagas are timed in aware datetimes only."""
    if moment.tzinfo is None:
        raise ClockError("a saga clock tells timezone-aware time; give it a tzinfo")
    return moment
