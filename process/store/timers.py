"""The durable timer index that ``SagaManager.tick`` reads.

Every saga has at most one wake-up time: the deadline of the command in flight,
or the due time of a scheduled retry (``Saga.next_wakeup``, derived from its
latest event). The manager hands the new wake-up time of each saga it saves to
the recorder, which writes it in the *same transaction* as the saga's events, so
the index can never disagree with the log. ``tick`` then asks the recorder for
the due sagas by an indexed query instead of loading every saga.

The recorders that implement this protocol live in ``sagalog.infrastructure``
and are chosen by topic through the eventsourcing environment, the same way
eventsourcing chooses its own persistence module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable
from uuid import UUID

#: Keyword argument of ``insert_events`` carrying ``{saga_id: wakeup_at or None}``.
SAGA_TIMERS_KWARG = "saga_timers"


@runtime_checkable
class TimerIndex(Protocol):
    """A recorder that keeps one wake-up time per saga, written with its events."""

    def select_due_timers(self, now: datetime, limit: int) -> Sequence[tuple[UUID, datetime]]:
        """Sagas whose wake-up time is at or before ``now``, earliest first, at most ``limit``."""
        ...

    def count_timers(self) -> int:
        """How many sagas have a wake-up time (for metrics and tests)."""
        ...


@runtime_checkable
class BulkEventReader(Protocol):
    """A recorder that reads the events of many sagas in one query."""

    def select_event_rows_of(
        self, saga_ids: Sequence[UUID]
    ) -> dict[UUID, list[tuple[int, str, bytes]]]:
        """``(originator_version, topic, state)`` of each saga's events, oldest first.

        Sagas without events are left out. Plain rows rather than
        ``StoredEvent`` objects, which would be built only to be taken apart
        (``SagaMapper.event_from_row`` decodes the columns): see
        docs/performance.md, "Bulk reads".
        """
        ...
