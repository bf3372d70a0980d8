"""The kit's clock: :class:`ManualClock` and :data:`EPOCH`, at home in :mod:`sagalog.process.clock`.

``SagaManager(..., clock=clock)`` reads the time from it, so timeouts and retries
fire exactly when a test says time has passed (``manager.tick(clock.now)``), never
because the machine running the tests was slow.
"""

from __future__ import annotations

from sagalog.process.clock import EPOCH, ManualClock

__all__ = ["EPOCH", "ManualClock"]
