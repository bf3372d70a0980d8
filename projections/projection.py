"""Following the saga log into the views: eventsourcing's ``Projection``, and a poller.

Two ways to drive :class:`~sagalog.projections.view.SagaViews`, one set of rules:

* :class:`SagaProjection` is an eventsourcing ``Projection`` whose view is
  ``SagaViews``. eventsourcing's ``ProjectionRunner`` can run it
  (``ProjectionRunner(application_class=SagaLogReader,
  projection_class=SagaProjection, view_class=SagaViews, env=runner_env(url))``):
  it subscribes to the log and hands over one event at a time. That needs a
  recorder with subscriptions — PostgreSQL (LISTEN/NOTIFY) has them;
  eventsourcing's SQLite recorder has none, and a ``memory://`` log cannot be
  reopened by another application object.
* :class:`SagaProjector` polls the log of an application object it is given
  (a ``SagaManager``, or a ``SagaLogReader``), on every backend, and applies
  many events per transaction — this is what the worker, the CLI and the tests
  use. :meth:`SagaProjector.catch_up` processes everything up to the head of the
  log and returns; :meth:`SagaProjector.run` keeps following until stopped.

Either way each event is applied exactly once: the rows and the tracking
position are written in one transaction, and a batch starts by locking and
reading the position (see ``SagaViews.process``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    InterfaceError,
    Mapper,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    Tracking,
)
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from sqlalchemy.exc import DisconnectionError as SQLAlchemyDisconnectionError
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from sagalog.domain.errors import first_line
from sagalog.process.store.codec import SagaMapper
from sagalog.process.store.encryption import EncryptionKeyError, SagaCipher, encryption_configured
from sagalog.process.store.loops import Backoff, run_until_stopped
from sagalog.process.store.url import DatabaseUrl, parse_database_url
from sagalog.projections.cursor import LogCursor
from sagalog.projections.quarantine import QuarantinedEvent, describe_failure
from sagalog.projections.rows import ProjectionIntegrityError
from sagalog.projections.schema import SCHEMA_VERSION
from sagalog.projections.view import SagaViews

__all__ = [
    "ProjectionStatus",
    "SagaLogReader",
    "SagaProjection",
    "SagaProjector",
    "SagaViewsFactory",
    "runner_env",
]

logger = logging.getLogger("sagalog.projections")

Progress = Callable[[int, int], None]

#: Failures that are not one event's fault: the database is unreachable or busy (the
#: batch is retried whole), or the views are damaged (raised). Anything else raised
#: while applying an event is that event's, and it is quarantined.
_NOT_ISOLATED: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    SQLAlchemyOperationalError,
    SQLAlchemyInterfaceError,
    SQLAlchemyDisconnectionError,
    SQLAlchemyTimeoutError,
    ProjectionIntegrityError,
    # The store's keys are missing or wrong: no event's fault, every event fails.
    EncryptionKeyError,
)


class SagaProjection(Projection[SagaViews]):
    """The saga views as an eventsourcing ``Projection``: one event, one transaction."""

    name = "SagaProjection"
    #: Every event of the saga log (an unknown event type still advances the position).
    topics: tuple[str, ...] = ()

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Apply ``domain_event`` to the views and record ``tracking``, atomically."""
        self.view.process([(domain_event, tracking)])


class SagaLogReader(Application[UUID]):
    """The saga manager's log, opened from an environment alone.

    eventsourcing's ``ProjectionRunner`` constructs the followed application as
    ``application_class(env)``; ``SagaManager`` wants its definitions first, and
    following the log needs none of them. This application has the manager's
    name, so it reads the manager's tables and its notifications' tracking
    records carry the manager's name.
    """

    name = "SagaManager"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """The log of the manager's store; with sagalog's store keys when they are set."""
        merged = dict(env or {})
        if encryption_configured({**os.environ, **merged}) and not any(
            key.endswith("CIPHER_TOPIC") for key in merged
        ):
            merged["CIPHER_TOPIC"] = get_topic(SagaCipher)
        super().__init__(merged)

    def construct_mapper(self) -> Mapper[UUID]:
        """A redacting :class:`SagaMapper`: the views never hold saga data."""
        if self.env.get(self.factory.MAPPER_TOPIC):
            return super().construct_mapper()
        mapper = self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=SagaMapper
        )
        assert isinstance(mapper, SagaMapper)
        return mapper.redacted()


class SagaViewsFactory(InfrastructureFactory[SagaViews]):
    """An eventsourcing infrastructure factory whose tracking recorder is ``SagaViews``.

    ``ProjectionRunner`` builds the view with
    ``InfrastructureFactory.construct(env).tracking_recorder(view_class)``,
    where ``env`` is named after the projection; naming this class as the
    projection's ``PERSISTENCE_MODULE`` makes that a ``SagaViews`` on the
    URL in ``VIEW_DATABASE_URL``. It builds nothing else.
    """

    VIEW_DATABASE_URL = "VIEW_DATABASE_URL"

    def tracking_recorder(
        self, tracking_recorder_class: type[SagaViews] | None = None
    ) -> SagaViews:
        view_class = tracking_recorder_class or SagaViews
        return view_class(self.env.get(self.VIEW_DATABASE_URL) or None)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        raise NotImplementedError("SagaViewsFactory only builds SagaViews")

    def application_recorder(self) -> ApplicationRecorder:
        raise NotImplementedError("SagaViewsFactory only builds SagaViews")

    def process_recorder(self) -> ProcessRecorder:
        raise NotImplementedError("SagaViewsFactory only builds SagaViews")


def runner_env(database_url: str) -> dict[str, str]:
    """The environment for eventsourcing's ``ProjectionRunner`` on ``database_url``.

    The log is read as ``SagaLogReader`` (keys prefixed ``SAGAMANAGER_``), the
    views are built by :class:`SagaViewsFactory` (keys prefixed ``SAGAPROJECTION_``).
    """
    url = parse_database_url(database_url)
    env = url.eventsourcing_env(SagaLogReader.name)
    prefix = SagaProjection.name.upper() + "_"
    env[prefix + "PERSISTENCE_MODULE"] = get_topic(SagaViewsFactory)
    env[prefix + SagaViewsFactory.VIEW_DATABASE_URL] = database_url
    return env


@dataclass(frozen=True)
class ProjectionStatus:
    """Where the views stand against the log."""

    name: str
    schema_version: int
    application: str
    position: int
    head: int
    sagas: int
    events: int
    #: Events set aside by these views (see :mod:`sagalog.projections.quarantine`).
    quarantined: int = 0

    @property
    def lag(self) -> int:
        """Notifications in the log not yet applied to the views."""
        return max(0, self.head - self.position)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "schema_version": self.schema_version,
            "application": self.application,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "sagas": self.sagas,
            "events": self.events,
            "quarantined": self.quarantined,
        }


class SagaProjector(LogCursor):
    """Keeps :class:`SagaViews` up with an application's log by polling it in batches.

    ``app`` is the application whose log is followed (a ``SagaManager`` or
    ``SagaLogReader``); ``views`` defaults to the views on the same database
    as ``app`` (``app.database_url``). Each batch of up to ``batch_size``
    notifications is one transaction.
    """

    def __init__(
        self,
        app: Application[UUID],
        views: SagaViews | None = None,
        *,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(app, batch_size=batch_size)
        if views is None:
            url = getattr(app, "database_url", None)
            if not isinstance(url, DatabaseUrl):
                raise TypeError("give the views explicitly: the application has no database_url")
            views = SagaViews(url)
        self.views = views
        mapper = app.mapper
        #: How events are read: sealed payloads as ``<encrypted>`` (the views hold no saga data).
        self.mapper: Mapper[UUID] = (
            mapper.redacted()
            if isinstance(mapper, SagaMapper) and mapper.data_keys is not None
            else mapper
        )
        #: Events this projector applied since it was created (for metrics and the worker).
        self.events_applied = 0
        #: Events this projector set aside since it was created.
        self.events_quarantined = 0

    @property
    def application_name(self) -> str:
        """The name under which the followed log is tracked."""
        return self.app.name

    def position(self) -> int:
        """The notification id up to which the views are built (0: none)."""
        return self.views.max_tracking_id(self.app.name) or 0

    def tracked_position(self) -> int:
        return self.position()

    def pump(self) -> int:
        """Apply the next batch after the position; return how many events were new."""
        notifications = self.read_after(self.position())
        if not notifications:
            return 0
        new = self._apply_batch(notifications)
        self.events_applied += new
        return new

    def drain(self, *, stop: threading.Event | None = None) -> int:
        """Apply everything up to the current head (:meth:`catch_up` without progress)."""
        return self.catch_up(stop=stop)

    def catch_up(
        self,
        progress: Progress | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> int:
        """Apply everything recorded up to the current head; return how many events were new.

        ``progress(done, total)`` is called after each batch, in notifications.
        ``stop`` ends the catch-up early, between two batches (each batch is
        committed whole or not at all).
        """
        head = self.head()
        start = position = self.position()
        applied = 0
        if progress is not None:
            progress(0, max(0, head - start))
        while position < head:
            if stop is not None and stop.is_set():
                break
            notifications = self.read_after(position, stop=head)
            if not notifications:
                break
            new = self._apply_batch(notifications)
            applied += new
            self.events_applied += new
            position = notifications[-1].id
            if progress is not None:
                progress(position - start, head - start)
        return applied

    def _apply_batch(self, notifications: Sequence[Notification]) -> int:
        """Apply a batch in one transaction; if it fails for good, isolate the culprit.

        A transient database error is raised (the caller retries the batch). Any
        other failure is narrowed down: the events are applied one transaction
        each, and one that still fails — or that does not decode — is quarantined
        (recorded, with its error, and passed over), so one bad event never stops
        the views. A damaged view (``ProjectionIntegrityError``) is raised.
        """
        items: list[tuple[Any, Tracking]] = []
        undecodable: dict[int, BaseException] = {}
        for notification in notifications:
            try:
                event = self.mapper.to_domain_event(notification)
            except _NOT_ISOLATED:
                raise
            except Exception as exc:
                undecodable[notification.id] = exc
                event = None
            items.append((event, Tracking(self.app.name, notification.id)))
        if not undecodable:
            try:
                return self.views.process(items)
            except _NOT_ISOLATED:
                raise
            except Exception as exc:
                logger.warning(
                    "projection: a batch of %d events failed (%s); applying them one by one",
                    len(items),
                    describe_failure(exc),
                )
        new = 0
        for notification, (event, item_tracking) in zip(notifications, items, strict=True):
            failure = undecodable.get(notification.id)
            if failure is None:
                try:
                    new += self.views.process([(event, item_tracking)])
                    continue
                except _NOT_ISOLATED:
                    raise
                except Exception as exc:
                    failure = exc
            saga_id = notification.originator_id
            if self.views.quarantine(
                item_tracking,
                saga_id=saga_id if isinstance(saga_id, UUID) else None,
                topic=notification.topic,
                error=describe_failure(failure),
            ):
                self.events_quarantined += 1
                logger.error(
                    "projection: event %d (%s) of saga %s quarantined: %s; "
                    "the saga's views wait, the others go on (sagalog quarantine retry)",
                    notification.id,
                    notification.topic,
                    saga_id,
                    describe_failure(failure),
                )
        return new

    def quarantined(self, saga_id: UUID | None = None) -> list[QuarantinedEvent]:
        """The events these views set aside, oldest first."""
        return self.views.quarantined(saga_id=saga_id)

    def retry_quarantined(self, saga_id: UUID | None = None) -> tuple[int, dict[UUID, str]]:
        """Apply the quarantined events again, saga by saga, each saga all or none.

        Returns how many events were applied and, per saga that still fails, why.
        """
        sagas: list[UUID] = []
        for held in self.views.quarantined(saga_id=saga_id):
            mine = held.application_name == self.app.name and held.saga_id is not None
            if mine and held.saga_id not in sagas:
                assert held.saga_id is not None
                sagas.append(held.saga_id)
        applied = 0
        failed: dict[UUID, str] = {}
        for held_saga in sagas:
            try:
                applied += self.views.release(self.app.name, held_saga, self._load_events)
            except _NOT_ISOLATED:
                raise
            except Exception as exc:
                failed[held_saga] = describe_failure(exc)
        return applied, failed

    def _load_events(self, notification_ids: list[int]) -> list[Any]:
        """The events of ``notification_ids`` read from the log, in order."""
        return [self.mapper.to_domain_event(self.read_one(n)) for n in sorted(notification_ids)]

    def rebuild(self, progress: Progress | None = None) -> int:
        """Empty the views and build them again from the start of the log.

        Readers see the views empty, then filling, until this returns. A worker
        following at the same time is harmless: both lock the tracking row, so
        every event is still applied once.
        """
        self.views.reset()
        return self.catch_up(progress)

    def run(
        self,
        stop: threading.Event,
        *,
        poll_interval: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        """Follow the log until ``stop`` is set; retry database errors with backoff.

        A damaged view (``ProjectionIntegrityError``) is not retried: it is raised.
        """

        def retrying(exc: BaseException, delay: float) -> None:
            logger.warning("projection: %s; retrying in %.2fs", first_line(exc), delay)

        run_until_stopped(
            lambda: self.catch_up(stop=stop),
            stop,
            interval=poll_interval,
            backoff=Backoff(poll_interval, max_backoff),
            retry_on=(PersistenceError, SQLAlchemyOperationalError),
            on_error=retrying,
        )

    def status(self) -> ProjectionStatus:
        """Position, head, lag and row counts."""
        return ProjectionStatus(
            name=self.views.projection_name,
            schema_version=SCHEMA_VERSION,
            application=self.app.name,
            position=self.position(),
            head=self.head(),
            sagas=self.views.count_sagas(),
            events=self.views.count_events(),
            quarantined=len(self.views.quarantined()),
        )

    def close(self) -> None:
        """Release the views' connections (the application is the caller's to close)."""
        self.views.close()
