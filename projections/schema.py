"""The read-model tables, as SQLAlchemy 2.0 Core metadata.

Three tables, created together and idempotently (``CREATE ... IF NOT EXISTS``
semantics via ``metadata.create_all(checkfirst=True)``):

* ``saga_summary_v<N>``: one row per saga, what an operator asks first — where is
  it, since when, what went wrong, when will it wake up, which steps are in flight;
* ``saga_timeline_v<N>``: one row per saga event, the saga's story in order;
* ``sagalog_projection_tracking``: one row per (projection, upstream application),
  the notification id up to which the tables above are built. It is written in
  the same transaction as the rows, which is what makes each event count once.

Schema evolution: the two view tables carry :data:`SCHEMA_VERSION` in their
names and the projection name (the tracking key) carries it too. Changing a
table (a column, an index, what a column means) bumps the version: the new
tables are created empty next to the old ones and rebuilt from the log by the
next catch-up, while readers of the old version keep working until they are
upgraded; then the old tables can be dropped (:func:`stale_view_tables`).
The tracking table is generic and never changes shape.

The columns whose names end in ``_at`` / ``_since`` hold UTC instants
(:class:`UTCDateTime`: ``timestamptz`` on PostgreSQL, fixed-width ISO text on
SQLite, which sorts and compares correctly because every value is UTC).

Indexes, and the query each serves:

* ``(status, updated_at, saga_id)`` — ``list --status``, newest first;
* ``(saga_type, updated_at, saga_id)`` — ``list --type``;
* ``(updated_at, saga_id)`` — ``list`` without a filter;
* five *partial* indexes on columns that are NULL unless the saga is a
  candidate for one stuck reason, so they hold only the few live sagas and stay
  small however many finished sagas the table holds (each also ends in
  ``saga_id``, the tie-breaker of every ordered query): ``next_deadline``
  (DEADLINE_MISSED), ``last_progress_at`` (NO_PROGRESS), ``compensating_since``
  (COMPENSATION_TOO_LONG), ``dead_lettered_at`` (DEAD_LETTERED), ``in_force_since``
  (EFFECT_IN_FORCE). Their
  predicate is ``col IS NOT NULL``, which both PostgreSQL and SQLite prove from
  a query's ``col < :cutoff`` even when ``:cutoff`` is a bound parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
)

__all__ = [
    "QUARANTINE_TABLE_NAME",
    "SCHEMA_VERSION",
    "SUMMARY_TABLE_NAME",
    "TIMELINE_TABLE_NAME",
    "TRACKING_TABLE_NAME",
    "UTCDateTime",
    "metadata",
    "quarantine",
    "saga_summary",
    "saga_timeline",
    "stale_view_tables",
    "tracking",
]

#: Version of the view tables' shape and meaning; part of their names.
SCHEMA_VERSION = 4

SUMMARY_TABLE_NAME = f"saga_summary_v{SCHEMA_VERSION}"
TIMELINE_TABLE_NAME = f"saga_timeline_v{SCHEMA_VERSION}"
TRACKING_TABLE_NAME = "sagalog_projection_tracking"
QUARANTINE_TABLE_NAME = "sagalog_quarantine"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant, stored in UTC, returned aware in UTC.

    PostgreSQL stores ``timestamptz``. SQLite has no timestamp type: values are
    stored as naive UTC text in SQLAlchemy's fixed-width format, so that text
    comparison is time comparison. Naive datetimes are refused rather than
    guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        moment = value.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

saga_summary = Table(
    SUMMARY_TABLE_NAME,
    metadata,
    Column("saga_id", Uuid(as_uuid=True), primary_key=True),
    Column("saga_type", String(200), nullable=False),
    Column("definition_version", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    # The step whose action or compensation is in flight (NULL between phases).
    Column("current_step", String(200)),
    # Attempt number of the latest command dispatched for ``current_step``.
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The saga's next wake-up: a command's deadline, a retry's due time or the saga's deadline.
    Column("next_deadline", UTCDateTime),
    # What ``next_deadline`` is: 'deadline' (timeout), 'retry' or 'saga_deadline'.
    Column("wakeup_kind", String(16)),
    Column("last_error", Text),
    Column("failure_reason", Text),
    Column("event_count", Integer, nullable=False),
    # Version of the saga's latest event applied (= event_count while the log is whole).
    Column("last_version", Integer, nullable=False),
    # When the saga's compensation began (kept after it ends).
    Column("compensation_started_at", UTCDateTime),
    # The stuck-query candidates: NULL unless the saga is in the matching state.
    Column("last_progress_at", UTCDateTime),
    Column("compensating_since", UTCDateTime),
    Column("dead_lettered_at", UTCDateTime),
    Column("dead_letter_step", String(200)),
    Column("dead_letter_kind", String(16)),
    # Per compensatable step, what the log says of its action's outcome and its
    # compensation (see ``sagalog.projections.rows``); NULL for a saga without any.
    Column("step_marks", JSON),
    # A FAILED saga whose steps named in ``in_force_steps`` may still be in force,
    # uncompensated (recorded before uncertain steps were compensated, or a late
    # success after the end): since when. NULL otherwise.
    Column("in_force_since", UTCDateTime),
    Column("in_force_steps", Text),
    # The saga's own deadline (``SagaDefinition.deadline`` after its start) while it can
    # still fire; NULL for a definition without one, and once ``SagaDeadlinePassed``.
    Column("saga_deadline", UTCDateTime),
    # Whether steps may run in parallel (some step waits for other than the previous one).
    Column("parallel", Boolean, nullable=False),
    # Every step whose action or compensation is in flight, in list order (a JSON list;
    # ``current_step`` is only the latest dispatched, kept for older readers).
    Column("steps_in_flight", JSON, nullable=False),
    # The step whose timer ``next_deadline`` is (NULL for the saga's deadline or none).
    Column("wakeup_step", String(200)),
    # Per step, in list order: [phase, due, attempt] (see ``sagalog.projections.rows``),
    # what a parallel saga's next wake-up, the earliest of its timers, is computed from.
    Column("step_timers", JSON, nullable=False),
)

# saga_id ends every index so that ties come out of the index in the queries' order
# (ORDER BY <col>, saga_id), with no sort step before the LIMIT.
_c = saga_summary.c
Index(f"ix_{SUMMARY_TABLE_NAME}_status_updated", _c.status, _c.updated_at, _c.saga_id)
Index(f"ix_{SUMMARY_TABLE_NAME}_type_updated", _c.saga_type, _c.updated_at, _c.saga_id)
Index(f"ix_{SUMMARY_TABLE_NAME}_updated", _c.updated_at, _c.saga_id)
for _name in (
    "next_deadline",
    "last_progress_at",
    "compensating_since",
    "dead_lettered_at",
    "in_force_since",
):
    _column = _c[_name]
    Index(
        f"ix_{SUMMARY_TABLE_NAME}_{_name}",
        _column,
        _c.saga_id,
        postgresql_where=_column.is_not(None),
        sqlite_where=_column.is_not(None),
    )

saga_timeline = Table(
    TIMELINE_TABLE_NAME,
    metadata,
    Column("saga_id", Uuid(as_uuid=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("step", String(200)),
    Column("attempt", Integer),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("saga_id", "version"),
)

tracking = Table(
    TRACKING_TABLE_NAME,
    metadata,
    Column("projection_name", String(200), nullable=False),
    Column("application_name", String(200), nullable=False),
    # NULL: the row exists (so it can be locked) but nothing was processed yet.
    Column("notification_id", BigInteger),
    PrimaryKeyConstraint("projection_name", "application_name"),
)


#: Events a follower could not apply, set aside so that the follower carries on
#: (see :mod:`sagalog.projections.quarantine`). Like the tracking table it is
#: generic (one row per follower and event) and never changes shape.
quarantine = Table(
    QUARANTINE_TABLE_NAME,
    metadata,
    # Who set the event aside: a projection name, "CommandRelay", "metrics".
    Column("follower", String(200), nullable=False),
    Column("application_name", String(200), nullable=False),
    Column("notification_id", BigInteger, nullable=False),
    # NULL only when not even the event's originator could be read.
    Column("saga_id", Uuid(as_uuid=True)),
    Column("topic", String(500), nullable=False),
    # Why: the error, or that an earlier event of the same saga is quarantined.
    Column("error", Text, nullable=False),
    Column("quarantined_at", UTCDateTime, nullable=False),
    Column("retries", Integer, nullable=False),
    PrimaryKeyConstraint("follower", "application_name", "notification_id"),
)
Index(f"ix_{QUARANTINE_TABLE_NAME}_saga", quarantine.c.follower, quarantine.c.saga_id)


def stale_view_tables(existing: set[str]) -> list[str]:
    """Names in ``existing`` that are view tables of an older :data:`SCHEMA_VERSION`."""
    stale: list[str] = []
    for base in ("saga_summary_v", "saga_timeline_v"):
        for name in existing:
            suffix = name.removeprefix(base)
            if suffix != name and suffix.isdigit() and int(suffix) < SCHEMA_VERSION:
                stale.append(name)
    return sorted(stale)
