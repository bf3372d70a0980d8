"""The log cursor: a follower's place in the manager's notification log.

The command relay, the metrics/log observer and the projector each follow the
same log from a position of their own. What they share is written here once:
where the head is, how far behind they are, reading the next batch, reading one
notification again (to retry a quarantined event) and draining to the head.
Each keeps its own idea of the position (the relay's tracking table, written
only after the transport accepted a batch; the observer's memory; the views'
tracking table) and its own way of handling a batch (:meth:`LogCursor.pump`).
This is eventsourcing's ``Follower.pull_notifications`` / ``process_event`` split,
for followers that are not process applications.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

__all__ = ["LogCursor"]


class LogCursor(ABC):
    """Follows ``app``'s notification log in batches of up to ``batch_size`` notifications.

    A subclass says where it stands (:meth:`tracked_position`) and handles one
    batch (:meth:`pump`); head, lag and drain follow from those two.
    """

    def __init__(self, app: Application[Any], *, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.app = app
        self.batch_size = batch_size

    @abstractmethod
    def tracked_position(self) -> int:
        """The notification id up to which this follower is done (0: none yet)."""

    @abstractmethod
    def pump(self) -> int:
        """Handle the next batch after the position, move the position; return how many."""

    def head(self) -> int:
        """The notification id of the newest event in the log (0: empty)."""
        return self.app.recorder.max_notification_id() or 0

    def lag(self) -> int:
        """How many notifications lie beyond the position."""
        return max(0, self.head() - self.tracked_position())

    def read_after(
        self, position: int, *, topics: Sequence[str] = (), stop: int | None = None
    ) -> Sequence[Notification]:
        """The next batch after ``position`` (only ``topics``, if given; none past ``stop``)."""
        return self.app.recorder.select_notifications(
            start=position + 1, limit=self.batch_size, stop=stop, topics=topics
        )

    def read_one(self, notification_id: int) -> Notification:
        """The notification ``notification_id``; ``LookupError`` if the log no longer has it."""
        found = self.app.recorder.select_notifications(start=notification_id, limit=1)
        if not found or found[0].id != notification_id:
            raise LookupError(f"notification {notification_id} is no longer in the log")
        return found[0]

    def drain(self, *, stop: threading.Event | None = None) -> int:
        """Pump until the position stops moving (or ``stop`` is set); return the total handled."""
        total = 0
        while stop is None or not stop.is_set():
            before = self.tracked_position()
            total += self.pump()
            if self.tracked_position() == before:
                break
        return total
