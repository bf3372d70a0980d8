"""Which sagas retention may retire: ended ones, long enough ago, with nothing left to resolve.

The rule is applied to each saga as its own events tell it (the aggregate, not the
read model), in :func:`why_kept`. A saga is retired only if every condition holds:

* it ended — ``COMPLETED``, or ``FAILED`` when the policy names ``FAILED``; a running
  (``STARTED``, ``PENDING``, ``COMPENSATING``) or ``DEAD_LETTERED`` saga never goes;
* its last event is older than the cut-off (``--ended-before 30d``);
* a ``FAILED`` saga's failure is resolved: its compensations ran to the end and no
  step's effect may still be in force (``Saga.effects_in_force`` is empty — a late
  success or an uncertain step left uncompensated is not resolved);
* no follower set one of its events aside (quarantine): someone has to look at it.

``FAILED`` is not in the default statuses: failures are what people come back to, so
retiring them is asked for by name (``--status FAILED``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sagalog.domain import Saga, SagalogError, SagaStatus

__all__ = [
    "DEFAULT_STATUSES",
    "RETIRABLE_STATUSES",
    "RetentionError",
    "RetentionPolicy",
    "parse_age",
    "why_kept",
]

#: What retention may retire at all: the two statuses nothing changes any more.
RETIRABLE_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED})
#: What it retires unless told otherwise.
DEFAULT_STATUSES = frozenset({SagaStatus.COMPLETED})

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class RetentionError(SagalogError, ValueError):
    """A retention or restore request that cannot be carried out as given."""


def parse_age(text: str) -> timedelta:
    """``"30d"`` → 30 days; units ``s``, ``m``, ``h``, ``d``, ``w``; a positive whole number."""
    found = _AGE.match(text) if isinstance(text, str) else None
    if found is None or int(found.group(1)) == 0:
        raise RetentionError(
            f"--ended-before must be a positive age such as 30d, 12h or 2w, not {text!r}"
        )
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


@dataclass(frozen=True)
class RetentionPolicy:
    """Retire the sagas of ``statuses`` whose last event is older than ``ended_before``."""

    ended_before: timedelta
    statuses: frozenset[SagaStatus] = field(default=DEFAULT_STATUSES)

    def __post_init__(self) -> None:
        if not isinstance(self.ended_before, timedelta) or self.ended_before <= timedelta(0):
            raise RetentionError("ended_before must be a positive timedelta")
        try:
            statuses = frozenset(SagaStatus(str(s).upper()) for s in self.statuses)
        except ValueError:
            raise RetentionError(
                f"unknown status in {sorted(map(str, self.statuses))}; "
                f"retention retires {', '.join(sorted(RETIRABLE_STATUSES))} sagas only"
            ) from None
        refused = statuses - RETIRABLE_STATUSES
        if refused or not statuses:
            raise RetentionError(
                f"retention retires ended sagas only ({', '.join(sorted(RETIRABLE_STATUSES))}), "
                f"not {', '.join(sorted(refused)) or 'nothing'}"
            )
        object.__setattr__(self, "statuses", statuses)

    @classmethod
    def parse(cls, ended_before: str, statuses: list[str] | None = None) -> RetentionPolicy:
        """The policy of the command line's ``--ended-before`` and ``--status`` values."""
        return cls(parse_age(ended_before), frozenset(statuses or DEFAULT_STATUSES))  # type: ignore[arg-type]

    def cutoff(self, now: datetime) -> datetime:
        """Sagas whose last event is before this instant may go."""
        return now - self.ended_before


def why_kept(saga: Saga, ended_at: datetime, policy: RetentionPolicy, cutoff: datetime) -> str:
    """Why ``saga`` stays (``""``: it may be retired). ``ended_at`` is its last event's time."""
    if not saga.is_terminal:
        return "running" if saga.status is not SagaStatus.DEAD_LETTERED else "dead-lettered"
    if saga.status not in policy.statuses:
        return f"status {saga.status} not asked for"
    if ended_at >= cutoff:
        return "ended too recently"
    if saga.status is SagaStatus.FAILED and saga.effects_in_force:
        return "unresolved failure"
    return ""
