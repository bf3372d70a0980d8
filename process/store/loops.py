"""Running until stopped, with backoff: the one loop behind every follower, relay and consumer.

Each long-running part of sagalog (the timers, the projector, the relay, the
observer, the worker's health probe) repeats one step until a ``threading.Event``
is set, waits when the step found nothing to do, and waits longer and longer
while a transient error lasts. :func:`run_until_stopped` is that loop, written
once; :class:`Backoff` is its delay arithmetic, for the loops (RabbitMQ
reconnects, retried replies and commands) that only need the delays.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["Backoff", "run_until_stopped"]


class Backoff:
    """Exponential delays: ``initial``, doubled after each failure, at most ``maximum``.

    :meth:`next` gives the delay to wait after one more failure, :meth:`reset`
    starts again from ``initial`` once something succeeded.
    """

    def __init__(self, initial: float, maximum: float = math.inf) -> None:
        if initial < 0 or maximum < 0:
            raise ValueError("delays cannot be negative")
        self.initial = initial
        self.maximum = maximum
        #: Failures since the last reset.
        self.failures = 0

    def next(self) -> float:
        """The delay after one more failure: ``min(maximum, initial * 2 ** (failures - 1))``."""
        self.failures += 1
        return min(self.maximum, self.initial * 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.failures = 0


def run_until_stopped(
    step: Callable[[], int],
    stop: threading.Event,
    *,
    interval: float,
    backoff: Backoff | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    on_error: Callable[[BaseException, float], None] | None = None,
    idle: Callable[[float], object] | None = None,
) -> None:
    """Call ``step`` until ``stop`` is set; wait ``interval`` whenever it returns 0.

    An error in ``retry_on`` is reported to ``on_error(error, delay)``, then the loop
    waits ``delay`` (from ``backoff``; by default ``interval`` every time) and tries
    again; any other error propagates. Waits end as soon as ``stop`` is set; ``idle``
    replaces the wait after a step that did nothing (e.g. to be woken by new work too).
    """
    delays = backoff if backoff is not None else Backoff(interval, interval)
    wait_idle = idle if idle is not None else stop.wait
    while not stop.is_set():
        try:
            done = step()
        except retry_on as exc:
            delay = delays.next()
            if on_error is not None:
                on_error(exc, delay)
            stop.wait(delay)
            continue
        delays.reset()
        if done == 0:
            wait_idle(interval)
