"""What "stuck" means: five reasons, each a question the summary table can answer.

* ``EFFECT_IN_FORCE`` — the saga ``FAILED`` but a step's action may still be in
  force, uncompensated: it timed out or was in flight under the rules before
  uncertain steps were compensated, or its success came after the saga ended.
  An operator compensates it (``sagalog compensate``).
* ``DEAD_LETTERED`` — retries are exhausted where the saga may not give up; it
  waits for an operator (``sagalog retry | resolve``).
* ``DEADLINE_MISSED`` — the saga's next wake-up (a command's deadline, a
  retry's due time, or the saga's own deadline, ``SagaDefinition.deadline``)
  passed more than ``deadline_grace`` ago and no timeout, retry or
  ``SagaDeadlinePassed`` was recorded: nothing is ticking the timers. Is the
  worker down? (A saga whose deadline *was* recorded as passed is compensating,
  or past its pivot, and is not stuck for that.)
* ``COMPENSATION_TOO_LONG`` — the saga has been compensating for longer than
  ``compensation_too_long``.
* ``NO_PROGRESS`` — a running saga recorded no event for longer than
  ``no_progress_after`` (overridable per saga type: a saga type whose steps
  legitimately take a day needs a longer threshold than one whose steps take
  seconds).

A saga may be stuck for several reasons at once; it is reported once, under
the most urgent one (the order above), with all of them listed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sagalog.projections.rows import SagaSummary

__all__ = [
    "StuckPolicy",
    "StuckReason",
    "StuckSaga",
    "format_duration",
    "parse_duration",
]


class StuckReason(StrEnum):
    """Why a saga is reported as stuck, most urgent first."""

    EFFECT_IN_FORCE = "EFFECT_IN_FORCE"
    DEAD_LETTERED = "DEAD_LETTERED"
    DEADLINE_MISSED = "DEADLINE_MISSED"
    COMPENSATION_TOO_LONG = "COMPENSATION_TOO_LONG"
    NO_PROGRESS = "NO_PROGRESS"

    @property
    def priority(self) -> int:
        """0 for the most urgent reason."""
        return _PRIORITY[self]


_PRIORITY = {reason: index for index, reason in enumerate(StuckReason)}


def _frozen(value: Mapping[str, timedelta]) -> Mapping[str, timedelta]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class StuckPolicy:
    """The thresholds of the stuck query; the defaults suit steps that take seconds."""

    #: How late a wake-up may be before it counts as missed (covers the tick interval).
    deadline_grace: timedelta = timedelta(seconds=30)
    #: A running saga with no event for this long makes no progress.
    no_progress_after: timedelta = timedelta(hours=1)
    #: ``no_progress_after`` for particular saga types.
    no_progress_after_by_type: Mapping[str, timedelta] = field(default_factory=dict)
    #: A saga compensating for longer than this is reported.
    compensation_too_long: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        if self.deadline_grace < timedelta(0):
            raise ValueError("deadline_grace must not be negative")
        for name in ("no_progress_after", "compensation_too_long"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        for saga_type, threshold in self.no_progress_after_by_type.items():
            if threshold <= timedelta(0):
                raise ValueError(f"no_progress_after for {saga_type!r} must be positive")
        object.__setattr__(
            self, "no_progress_after_by_type", _frozen(self.no_progress_after_by_type)
        )

    def no_progress_threshold(self, saga_type: str) -> timedelta:
        """The NO_PROGRESS threshold of ``saga_type``."""
        return self.no_progress_after_by_type.get(saga_type, self.no_progress_after)


@dataclass(frozen=True)
class StuckSaga:
    """One stuck saga: its summary, why (most urgent reason first) and since when."""

    summary: SagaSummary
    reasons: tuple[StuckReason, ...]
    #: When the most urgent condition began (deadline, last event, …).
    since: datetime
    #: One line for people.
    detail: str

    @property
    def reason(self) -> StuckReason:
        """The most urgent reason."""
        return self.reasons[0]

    @property
    def saga_id(self) -> Any:
        """The saga's id."""
        return self.summary.saga_id

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "saga_id": str(self.summary.saga_id),
            "saga_type": self.summary.saga_type,
            "status": self.summary.status,
            "reason": self.reason.value,
            "reasons": [r.value for r in self.reasons],
            "since": self.since.isoformat(),
            "detail": self.detail,
            "summary": self.summary.to_json(),
        }


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or plain seconds (``"45"``) as a timedelta.

    Raises ``ValueError`` with a message fit for a command line.
    """
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    try:
        seconds = float(raw)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(raw) or pos == 0:
            raise ValueError(
                f"invalid duration {text!r}; use e.g. 90s, 15m, 1h30m, 2d or a number of seconds"
            ) from None
    if seconds < 0 or seconds != seconds or seconds > 3650 * 86400:
        raise ValueError(f"invalid duration {text!r}; it must be between 0 and 10 years")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """A short human reading of ``delta``: its largest unit and the next one if not zero.

    ``"3d 4h"``, ``"5m 2s"``, ``"2h"``, ``"0s"``; negative durations get a ``-``.
    """
    total = int(abs(delta.total_seconds()))
    sign = "-" if delta < timedelta(0) else ""
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for index, (unit, size) in enumerate(units):
        if total >= size or unit == "s":
            text = f"{total // size}{unit}"
            if index + 1 < len(units):
                next_unit, next_size = units[index + 1]
                rest = (total % size) // next_size
                if rest:
                    text += f" {rest}{next_unit}"
            return sign + text
    raise AssertionError("unreachable")  # pragma: no cover
