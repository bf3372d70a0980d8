"""``SagaViews``: the read model's tables, and an eventsourcing ``TrackingRecorder``.

eventsourcing's projection machinery (``Projection``, ``ProjectionRunner``)
expects the materialised view to *be* a ``TrackingRecorder``: whatever the view
writes for an event, it writes in the same transaction as the tracking record
of that event, so that each event is applied exactly once, crash or no crash.
This class is that recorder for the saga views. It manages its own SQLAlchemy
engine on the saga database (see :mod:`sagalog.projections.engine`) and keeps
its tracking rows in its own table, ``sagalog_projection_tracking``, next to
the view tables:

* ``insert_tracking`` / ``max_tracking_id`` / ``has_tracking_id`` / ``wait``
  behave as eventsourcing's recorders do (a tracking id that is not greater
  than the recorded one is an ``IntegrityError``), so eventsourcing's own
  ``ProjectionRunner`` can drive it (see :mod:`sagalog.projections.projection`);
* :meth:`process` applies a batch of events and moves the tracking position,
  all in one transaction. It first locks the tracking row (``SELECT … FOR
  UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite) and skips events at or
  below the recorded position, so two processes catching up at once (the
  worker and a CLI command) still apply every event once.

Reads (:meth:`list_sagas`, :meth:`get`, :meth:`timeline`, :meth:`stuck`) are plain
indexed queries over the tables.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder
from eventsourcing.utils import get_topic
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

import sagalog.projections.quarantine as held_events
from sagalog.domain import Saga, SagaStatus
from sagalog.process.store.url import DatabaseUrl, parse_database_url
from sagalog.projections.engine import WRITE_OPTION, create_view_engine, is_private_memory
from sagalog.projections.rows import (
    Row,
    SagaSummary,
    TimelineEntry,
    apply_event,
    timeline_entry,
)
from sagalog.projections.schema import (
    SCHEMA_VERSION,
    metadata,
    saga_summary,
    saga_timeline,
    stale_view_tables,
    tracking,
)
from sagalog.projections.schema import quarantine as quarantine_table
from sagalog.projections.stuck import StuckPolicy, StuckReason, StuckSaga, format_duration

__all__ = ["DEFAULT_PROJECTION_NAME", "SagaViews"]

#: The tracking key of the saga views; carries the schema version (see schema.py).
DEFAULT_PROJECTION_NAME = f"saga_views_v{SCHEMA_VERSION}"

#: How many saga ids go in one ``IN (…)`` when loading summary rows.
_IN_CHUNK = 500


class SagaViews(TrackingRecorder):
    """The saga summary and timeline tables, written exactly once per event.

    ``database_url`` is a sagalog URL (``memory://``, ``sqlite:///…``,
    ``postgresql://…``); the tables are created unless ``create_tables`` is
    false. ``engine`` may be given instead, for tests and benchmarks.
    """

    def __init__(
        self,
        database_url: DatabaseUrl | str | None = None,
        *,
        engine: Engine | None = None,
        create_tables: bool = True,
        projection_name: str = DEFAULT_PROJECTION_NAME,
    ) -> None:
        self.database_url = (
            database_url
            if isinstance(database_url, DatabaseUrl)
            else parse_database_url(database_url)
            if engine is None
            else None
        )
        self.engine = engine if engine is not None else create_view_engine(self.database_url)
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self.projection_name = projection_name
        self.dialect = self.engine.dialect.name
        # A private in-memory database has one connection shared by all threads.
        shared = self.database_url is not None and is_private_memory(self.database_url)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if shared else contextlib.nullcontext()
        )
        if create_tables:
            self.create_tables()

    # -- schema ------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the tables and indexes that are missing; safe to call concurrently.

        On PostgreSQL an advisory lock serialises concurrent creators (DDL is
        transactional there); on SQLite ``BEGIN IMMEDIATE`` does.
        """
        with self._writing() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('sagalog_views'))"))
            metadata.create_all(conn, checkfirst=True)

    def stale_tables(self) -> list[str]:
        """View tables of older schema versions still present (safe to drop once unused)."""
        schema = (self.engine.get_execution_options().get("schema_translate_map") or {}).get(None)
        with self._reading() as conn:
            # The views' own schema (``?schema=``), not the connection's default one.
            names = set(inspect(conn).get_table_names(schema=schema))
        return stale_view_tables(names)

    def reset(self) -> None:
        """Empty the view tables and forget the tracking position, in one transaction.

        The next catch-up rebuilds everything from the start of the log.
        """
        with self._writing() as conn:
            if self.dialect == "postgresql":
                conn.execute(
                    text(
                        f"TRUNCATE {self._qualified(saga_timeline.name)}, "
                        f"{self._qualified(saga_summary.name)}"
                    )
                )
            else:
                conn.execute(delete(saga_timeline))
                conn.execute(delete(saga_summary))
            conn.execute(delete(tracking).where(tracking.c.projection_name == self.projection_name))
            # What was set aside is met again by the rebuild (and set aside again if it
            # still cannot be applied).
            conn.execute(
                delete(quarantine_table).where(quarantine_table.c.follower == self.projection_name)
            )

    def _qualified(self, table_name: str) -> str:
        preparer = self.engine.dialect.identifier_preparer
        schema = (self.engine.get_execution_options().get("schema_translate_map") or {}).get(None)
        name = preparer.quote(table_name)
        return f"{preparer.quote_schema(schema)}.{name}" if schema else name

    # -- transactions --------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._lock, self._write_engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._lock, self.engine.connect() as conn, conn.begin():
            yield conn

    def _insert(self) -> Any:
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    def _lock_position(self, conn: Connection, application_name: str) -> int | None:
        """The recorded position, with the tracking row locked until the transaction ends."""
        conn.execute(
            self._insert()(tracking)
            .values(
                projection_name=self.projection_name,
                application_name=application_name,
                notification_id=None,
            )
            .on_conflict_do_nothing()
        )
        position = conn.execute(
            select(tracking.c.notification_id)
            .where(
                tracking.c.projection_name == self.projection_name,
                tracking.c.application_name == application_name,
            )
            .with_for_update()
        ).scalar_one()
        return None if position is None else int(position)

    def _set_position(self, conn: Connection, application_name: str, notification_id: int) -> None:
        conn.execute(
            update(tracking)
            .where(
                tracking.c.projection_name == self.projection_name,
                tracking.c.application_name == application_name,
            )
            .values(notification_id=notification_id)
        )

    # -- TrackingRecorder ------------------------------------------------------------

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record that ``tracking`` was processed; refuse a position that is not ahead."""
        with self._writing() as conn:
            position = self._lock_position(conn, tracking.application_name)
            if position is not None and tracking.notification_id <= position:
                raise IntegrityError(
                    f"{self.projection_name} already tracked {tracking.application_name} "
                    f"{position}; cannot record {tracking.notification_id}"
                )
            self._set_position(conn, tracking.application_name, tracking.notification_id)

    def max_tracking_id(self, application_name: str) -> int | None:
        """The position of the views in ``application_name``'s log (``None``: nothing yet)."""
        with self._reading() as conn:
            value = conn.execute(
                select(tracking.c.notification_id).where(
                    tracking.c.projection_name == self.projection_name,
                    tracking.c.application_name == application_name,
                )
            ).scalar_one_or_none()
        return None if value is None else int(value)

    # -- writing -----------------------------------------------------------------------

    def process(self, items: Sequence[tuple[object, Tracking]]) -> int:
        """Apply ``items`` (events with their tracking, in log order) in one transaction.

        Items at or below the recorded position were applied already and are
        skipped; events that are not saga events only move the position.
        Returns how many items were new. Either everything (rows and position)
        is written or, on any error, nothing.
        """
        if not items:
            return 0
        application_name = items[0][1].application_name
        previous = 0
        for _, item_tracking in items:
            if item_tracking.application_name != application_name:
                raise ValueError("one batch must come from one application")
            if item_tracking.notification_id <= previous:
                raise ValueError("a batch must be in increasing notification order")
            previous = item_tracking.notification_id
        with self._writing() as conn:
            position = self._lock_position(conn, application_name)
            fresh = [
                event
                for event, item_tracking in items
                if position is None or item_tracking.notification_id > position
            ]
            if not fresh:
                return 0
            events = [event for event in fresh if isinstance(event, Saga.Event)]
            held = held_events.held_sagas(conn, self.projection_name, application_name)
            if held:
                # A saga with an event in quarantine waits: its later events join it.
                numbers = {id(event): t.notification_id for event, t in items}
                for event in events:
                    if event.originator_id in held:
                        held_events.record(
                            conn,
                            follower=self.projection_name,
                            application_name=application_name,
                            notification_id=numbers[id(event)],
                            saga_id=event.originator_id,
                            topic=get_topic(type(event)),
                            error=held_events.HELD_BEHIND,
                        )
                events = [event for event in events if event.originator_id not in held]
            self._apply(conn, events)
            self._set_position(conn, application_name, items[-1][1].notification_id)
            return len(fresh)

    def _apply(self, conn: Connection, events: Sequence[Saga.Event]) -> None:
        """Write the rows of ``events`` (in log order) in ``conn``'s transaction."""
        rows = self._load_summaries(conn, {event.originator_id for event in events})
        changed: dict[UUID, Row] = {}
        timeline: list[dict[str, Any]] = []
        for event in events:
            row = apply_event(rows.get(event.originator_id), event)
            rows[event.originator_id] = changed[event.originator_id] = row
            timeline.append(timeline_entry(event).as_row())
        if changed:
            self._upsert_summaries(conn, list(changed.values()))
        if timeline:
            conn.execute(saga_timeline.insert(), timeline)

    # -- quarantine ------------------------------------------------------------------

    def quarantine(
        self, item_tracking: Tracking, *, saga_id: UUID | None, topic: str, error: str
    ) -> bool:
        """Set one event aside and move the position past it, in one transaction.

        Returns ``False`` if the position was past it already (another process
        applied or quarantined it first).
        """
        with self._writing() as conn:
            position = self._lock_position(conn, item_tracking.application_name)
            if position is not None and item_tracking.notification_id <= position:
                return False
            held_events.record(
                conn,
                follower=self.projection_name,
                application_name=item_tracking.application_name,
                notification_id=item_tracking.notification_id,
                saga_id=saga_id,
                topic=topic,
                error=error,
            )
            self._set_position(conn, item_tracking.application_name, item_tracking.notification_id)
            return True

    def quarantined(self, *, saga_id: UUID | None = None) -> list[held_events.QuarantinedEvent]:
        """The events these views hold in quarantine, oldest first (of one saga if given)."""
        with self._reading() as conn:
            return held_events.select_rows(conn, follower=self.projection_name, saga_id=saga_id)

    def quarantine_counts(self) -> dict[str, int]:
        """Events in quarantine per follower (the views, the relay, the observer)."""
        with self._reading() as conn:
            return held_events.count_by_follower(conn)

    def quarantine_log(self) -> held_events.QuarantineLog:
        """The quarantine table through these views' engine, for the other followers."""
        return held_events.QuarantineLog(engine=self.engine, lock=self._lock)

    def release(
        self,
        application_name: str,
        saga_id: UUID,
        load: Callable[[list[int]], Sequence[Saga.Event]],
    ) -> int:
        """Apply ``saga_id``'s quarantined events again, all or none; return how many.

        ``load(notification_ids)`` reads those events from the log, in order. On
        success they leave the quarantine; on failure the error is raised and
        nothing changes (but the retry is counted, with its error).
        """
        try:
            with self._writing() as conn:
                # The position's lock keeps a concurrent batch from adding to the saga's
                # quarantine while its events are applied.
                self._lock_position(conn, application_name)
                rows = [
                    row
                    for row in held_events.select_rows(
                        conn, follower=self.projection_name, saga_id=saga_id
                    )
                    if row.application_name == application_name
                ]
                ids = [row.notification_id for row in rows]
                if not ids:
                    return 0
                self._apply(conn, list(load(ids)))
                held_events.remove(conn, self.projection_name, application_name, ids)
                return len(ids)
        except Exception as exc:
            with self._writing() as conn:
                held = [
                    row.notification_id
                    for row in held_events.select_rows(
                        conn, follower=self.projection_name, saga_id=saga_id
                    )
                ]
                held_events.note_retry_failed(
                    conn,
                    self.projection_name,
                    application_name,
                    held[:1],
                    held_events.describe_failure(exc),
                )
            raise

    def _load_summaries(self, conn: Connection, saga_ids: Iterable[UUID]) -> dict[UUID, Row]:
        ids = list(saga_ids)
        found: dict[UUID, Row] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            query = select(saga_summary).where(saga_summary.c.saga_id.in_(chunk))
            for row in conn.execute(query).mappings().all():
                found[row["saga_id"]] = dict(row)
        return found

    def _upsert_summaries(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        statement = self._insert()(saga_summary)
        statement = statement.on_conflict_do_update(
            index_elements=[saga_summary.c.saga_id],
            set_={
                column.name: statement.excluded[column.name]
                for column in saga_summary.columns
                if not column.primary_key
            },
        )
        conn.execute(statement, rows)

    # -- reading -------------------------------------------------------------------------

    def get(self, saga_id: UUID) -> SagaSummary | None:
        """The summary of ``saga_id``, or ``None`` if the views have not seen it."""
        with self._reading() as conn:
            row = conn.execute(
                select(saga_summary).where(saga_summary.c.saga_id == saga_id)
            ).one_or_none()
        return None if row is None else SagaSummary.from_row(row)

    def list_sagas(
        self,
        *,
        status: SagaStatus | str | None = None,
        saga_type: str | None = None,
        limit: int = 50,
    ) -> list[SagaSummary]:
        """Sagas, most recently changed first, optionally of one status and/or type."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        query = select(saga_summary)
        if status is not None:
            query = query.where(saga_summary.c.status == SagaStatus(status).value)
        if saga_type is not None:
            query = query.where(saga_summary.c.saga_type == saga_type)
        query = query.order_by(
            saga_summary.c.updated_at.desc(), saga_summary.c.saga_id.desc()
        ).limit(limit)
        with self._reading() as conn:
            return [SagaSummary.from_row(row) for row in conn.execute(query).all()]

    def timeline(self, saga_id: UUID) -> list[TimelineEntry]:
        """The events of ``saga_id``, oldest first (empty if the views have not seen it)."""
        query = (
            select(saga_timeline)
            .where(saga_timeline.c.saga_id == saga_id)
            .order_by(saga_timeline.c.version)
        )
        with self._reading() as conn:
            return [TimelineEntry.from_row(row) for row in conn.execute(query).all()]

    def count_sagas(self) -> int:
        """How many sagas the summary holds."""
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(saga_summary)).scalar_one())

    def count_events(self) -> int:
        """How many events the timeline holds."""
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(saga_timeline)).scalar_one())

    def count_by_status(self) -> dict[str, int]:
        """How many sagas are in each status."""
        query = select(saga_summary.c.status, func.count()).group_by(saga_summary.c.status)
        with self._reading() as conn:
            return {str(status): int(n) for status, n in conn.execute(query)}

    def steps_in_flight_counts(self) -> dict[tuple[str, str], int]:
        """How many sagas have each step in flight now, by (saga type, step).

        Every step of a parallel saga in flight counts. Only running and dead-lettered
        sagas can have one, and the partial indexes of those states find them, so the
        count reads the live sagas only, however many finished ones the table holds.
        """
        s = saga_summary.c
        query = select(s.saga_type, s.steps_in_flight).where(
            or_(s.last_progress_at.is_not(None), s.dead_lettered_at.is_not(None))
        )
        counts: dict[tuple[str, str], int] = {}
        with self._reading() as conn:
            for saga_type, steps in conn.execute(query):
                for step in steps or ():
                    key = (str(saga_type), str(step))
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def dump(self) -> tuple[list[SagaSummary], list[TimelineEntry]]:
        """Every row of both tables in a stable order (for comparing two views)."""
        with self._reading() as conn:
            summaries = [
                SagaSummary.from_row(row)
                for row in conn.execute(select(saga_summary).order_by(saga_summary.c.saga_id))
            ]
            entries = [
                TimelineEntry.from_row(row)
                for row in conn.execute(
                    select(saga_timeline).order_by(saga_timeline.c.saga_id, saga_timeline.c.version)
                )
            ]
        return summaries, entries

    # -- the stuck query -------------------------------------------------------------------

    def stuck(
        self,
        *,
        now: datetime | None = None,
        policy: StuckPolicy | None = None,
        limit: int = 100,
    ) -> list[StuckSaga]:
        """Sagas that are stuck at ``now`` (default: the wall clock), most urgent first.

        Five narrow queries, one per reason, each an ordered range scan of its
        own partial index with a ``LIMIT`` that returns only ids and times; the
        results are merged in Python so a saga appears once, under its most
        urgent reason; then the summary rows of the ``limit`` sagas kept are
        read — all in one read transaction. Within one urgency the longest
        stuck come first.

        ``reasons`` lists every reason found among each reason's ``limit``
        longest-stuck sagas; the most urgent reason is always right (a saga can
        only be missed from a reason's list if that list alone fills ``limit``
        sagas that all rank before it).
        """
        if limit < 0:
            raise ValueError("limit must not be negative")
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        rules = policy or StuckPolicy()
        s = saga_summary.c
        by_type = dict(rules.no_progress_after_by_type)
        loosest = moment - min([rules.no_progress_after, *by_type.values()])
        no_progress: ColumnElement[bool] = s.last_progress_at < loosest
        if by_type:
            no_progress = and_(
                no_progress,
                or_(
                    *(
                        and_(s.saga_type == saga_type, s.last_progress_at < moment - threshold)
                        for saga_type, threshold in by_type.items()
                    ),
                    and_(
                        s.saga_type.not_in(list(by_type)),
                        s.last_progress_at < moment - rules.no_progress_after,
                    ),
                ),
            )
        queries: list[tuple[StuckReason, ColumnElement[Any], ColumnElement[bool]]] = [
            (StuckReason.EFFECT_IN_FORCE, s.in_force_since, s.in_force_since.is_not(None)),
            (StuckReason.DEAD_LETTERED, s.dead_lettered_at, s.dead_lettered_at.is_not(None)),
            (
                StuckReason.DEADLINE_MISSED,
                s.next_deadline,
                s.next_deadline < moment - rules.deadline_grace,
            ),
            (
                StuckReason.COMPENSATION_TOO_LONG,
                s.compensating_since,
                s.compensating_since < moment - rules.compensation_too_long,
            ),
            (StuckReason.NO_PROGRESS, s.last_progress_at, no_progress),
        ]
        found: dict[UUID, list[tuple[StuckReason, datetime]]] = {}
        with self._reading() as conn:
            for reason, since_column, condition in queries:
                query = (
                    select(s.saga_id, since_column)
                    .where(condition)
                    .order_by(since_column, s.saga_id)
                    .limit(limit)
                )
                for saga_id, since in conn.execute(query).all():
                    found.setdefault(saga_id, []).append((reason, since))
            ranked = sorted(
                (
                    (saga_id, sorted(reasons, key=lambda r: r[0].priority))
                    for saga_id, reasons in found.items()
                ),
                key=lambda item: (item[1][0][0].priority, item[1][0][1], item[0].hex),
            )[:limit]
            rows = self._load_summaries(conn, [saga_id for saga_id, _ in ranked])
        return [
            _stuck_saga(SagaSummary(**rows[saga_id]), reasons, moment)
            for saga_id, reasons in ranked
        ]

    # -- retention (sagalog.infrastructure.retention) ----------------------------------

    def remove_sagas(self, saga_ids: Sequence[UUID]) -> int:
        """Delete the summary and timeline rows of ``saga_ids``, retired from the store.

        Returns how many summary rows went. The position does not move: the
        retired events lie behind it, and the log no longer holds them.
        """
        if not saga_ids:
            return 0
        ids = list(saga_ids)
        with self._writing() as conn:
            conn.execute(delete(saga_timeline).where(saga_timeline.c.saga_id.in_(ids)))
            gone = conn.execute(delete(saga_summary).where(saga_summary.c.saga_id.in_(ids)))
        return int(gone.rowcount or 0)

    def restore_sagas(self, events: Sequence[Saga.Event]) -> None:
        """Write the rows of restored sagas' events (whole streams, in order), in one transaction.

        The restored events went back at their own notification ids, behind the
        position, so the projector never meets them again: their rows are written
        here instead.
        """
        with self._writing() as conn:
            self._apply(conn, events)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()


def _stuck_saga(
    summary: SagaSummary, reasons: list[tuple[StuckReason, datetime]], now: datetime
) -> StuckSaga:
    reason, since = reasons[0]
    # Sagas run on their own clock (the demo's is simulated): a "since" in the
    # future is shown as a date rather than as a negative age.
    ago = (
        f"{format_duration(now - since)} ago"
        if since <= now
        else f"at {since.isoformat(timespec='seconds')}"
    )
    step = ", ".join(summary.steps_in_flight) or summary.current_step or "-"
    if reason is StuckReason.EFFECT_IN_FORCE:
        detail = (
            f"failed {ago} with {summary.in_force_steps} possibly in force, uncompensated; "
            f"compensate it with: sagalog compensate {summary.saga_id} --actor NAME --reason TEXT"
        )
    elif reason is StuckReason.DEAD_LETTERED:
        detail = (
            f"{summary.dead_letter_kind} of {summary.dead_letter_step} gave up {ago}: "
            f"{summary.last_error or 'no error recorded'}"
        )
    elif reason is StuckReason.DEADLINE_MISSED and summary.wakeup_kind == "saga_deadline":
        detail = (
            f"the saga's deadline passed {ago} and it did not compensate; is the worker running?"
        )
    elif reason is StuckReason.DEADLINE_MISSED:
        what = "retry" if summary.wakeup_kind == "retry" else "deadline"
        late, attempt = _wakeup_step(summary)
        detail = (
            f"{what} of {late} (attempt {attempt}) passed {ago} and no timeout "
            "was recorded; is the worker running?"
        )
    elif reason is StuckReason.COMPENSATION_TOO_LONG:
        detail = f"compensating since {ago} (now at {step})"
    else:
        detail = f"last event {ago} (at {step}, status {summary.status})"
    return StuckSaga(
        summary=summary,
        reasons=tuple(r for r, _ in reasons),
        since=since,
        detail=detail,
    )


def _wakeup_step(summary: SagaSummary) -> tuple[str, int]:
    """The step whose timer is the saga's next wake-up, and its latest attempt.

    In a parallel saga that is the overdue branch, not the step dispatched last.
    """
    name = summary.wakeup_step
    timer = summary.step_timers.get(name) if name is not None else None
    if name is None or timer is None:
        return summary.current_step or "-", summary.attempt
    return name, int(timer[2])
