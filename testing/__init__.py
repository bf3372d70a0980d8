"""The sagalog testing kit: test your own sagas the way sagalog tests itself.

* :mod:`sagalog.testing.strategies` — hypothesis strategies for definitions, saga
  data and reply schedules;
* :class:`SagaLawsMachine` — a hypothesis state machine you subclass with your
  definition (and, optionally, participants with effects on a world you model)
  to check the laws of DESIGN.md and the Garcia-Molina property on it, with
  participants that may run commands late, fenced or not (:class:`Fencing`);
* :func:`scenario` (in :mod:`sagalog.testing.scenarios`) — given / when / then for
  one saga on a real manager;
* :mod:`sagalog.testing.laws` — the laws as checks over any saga's events;
* :mod:`sagalog.testing.plugin` — pytest fixtures (``saga_manager``,
  ``saga_manager_factory``, ``saga_clock``, ...), loaded automatically;
* :class:`ManualClock` and :mod:`sagalog.testing.profiles` (hypothesis profiles).

Install with ``pip install "sagalog[testing]"``. Names are imported on first use,
so ``import sagalog.testing`` (and the pytest plugin) needs hypothesis only for
the names that use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagalog.domain._exports import names_on_demand

if TYPE_CHECKING:
    from sagalog.testing.clock import EPOCH, ManualClock
    from sagalog.testing.laws import LawViolation, check_all
    from sagalog.testing.machine import Participant, SagaLawsMachine
    from sagalog.testing.plugin import SagaManagerFactory
    from sagalog.testing.profiles import load_profile
    from sagalog.testing.replies import send_reply
    from sagalog.testing.scenarios import (
        Scenario,
        aborted,
        compensated,
        compensation_failed,
        completed,
        failed,
        resolved,
        retried,
        scenario,
        time_passes,
    )
    from sagalog.testing.strategies import (
        definitions,
        reply_schedules,
        saga_data,
    )
    from sagalog.testing.world import Fencing

#: Where each public name lives.
_HOMES = {
    "EPOCH": "clock",
    "ManualClock": "clock",
    "LawViolation": "laws",
    "check_all": "laws",
    "Participant": "machine",
    "SagaLawsMachine": "machine",
    "SagaManagerFactory": "plugin",
    "load_profile": "profiles",
    "send_reply": "replies",
    "Scenario": "scenarios",
    "aborted": "scenarios",
    "compensated": "scenarios",
    "compensation_failed": "scenarios",
    "completed": "scenarios",
    "failed": "scenarios",
    "resolved": "scenarios",
    "retried": "scenarios",
    "scenario": "scenarios",
    "time_passes": "scenarios",
    "definitions": "strategies",
    "reply_schedules": "strategies",
    "saga_data": "strategies",
    "Fencing": "world",
}

__all__ = [
    "EPOCH",
    "Fencing",
    "LawViolation",
    "ManualClock",
    "Participant",
    "SagaLawsMachine",
    "SagaManagerFactory",
    "Scenario",
    "aborted",
    "check_all",
    "compensated",
    "compensation_failed",
    "completed",
    "definitions",
    "failed",
    "load_profile",
    "reply_schedules",
    "resolved",
    "retried",
    "saga_data",
    "scenario",
    "send_reply",
    "time_passes",
]


__getattr__ = names_on_demand(
    globals(), lazy={name: f"{__name__}.{home}" for name, home in _HOMES.items()}
)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
