"""A clock that moves only when a test moves it.

``SagaManager(..., clock=clock)`` reads the time from it, so timeouts and retries
fire exactly when a test says time has passed (``manager.tick(clock.now)``), never
because the machine running the tests was slow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "ManualClock"]

#: Where test clocks start: a fixed, timezone-aware instant.
EPOCH = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A callable clock for ``SagaManager(clock=...)``, standing still until moved."""

    def __init__(self, start: datetime = EPOCH) -> None:
        if start.tzinfo is None:
            raise ValueError("a saga clock tells timezone-aware time; give start a tzinfo")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta | float) -> datetime:
        """Move forward by ``by`` (a timedelta, or seconds) and return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"a saga clock only moves forward, not by {step}")
        self.now += step
        return self.now

    def move_to(self, moment: datetime) -> datetime:
        """Move to ``moment`` unless it lies in the past; return the new time."""
        self.now = max(self.now, moment)
        return self.now

    def __repr__(self) -> str:
        return f"ManualClock({self.now.isoformat()})"
