"""Finding sagas in the summary table: filters, keyset pages, and activity over time.

What the operations console's saga list and overview ask, as queries over
``saga_summary``. Pages are *keyset* pages: ordered by ``(updated_at, saga_id)``
newest first, the next page seeks past the last row shown (a :class:`PageCursor`)
instead of skipping rows with ``OFFSET``, so page 1,000 costs what page 1 costs on
the ``(status|saga_type, updated_at, saga_id)`` and ``(updated_at, saga_id)`` indexes.

Step filters go through :func:`step_condition`, the one place that knows which
column says where a saga is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import ColumnElement, Text, and_, cast, func, or_, select

from sagalog.domain import SagalogError, SagaStatus
from sagalog.projections.rows import SagaSummary
from sagalog.projections.schema import saga_summary
from sagalog.projections.view import SagaViews

__all__ = [
    "ActivityBucket",
    "BadCursorError",
    "PageCursor",
    "SagaFilter",
    "SagaPage",
    "activity",
    "count_by_type_and_status",
    "latest_update",
    "search_sagas",
    "step_condition",
]

#: The longest text a filter may hold (error text, step, type).
MAX_FILTER_TEXT = 200


class BadCursorError(SagalogError, ValueError):
    """A page cursor that this module did not write (or that was cut)."""


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page ended: the last row's ``updated_at`` and ``saga_id``."""

    updated_at: datetime
    saga_id: UUID

    def encode(self) -> str:
        """An opaque, URL-safe token for the next page's link."""
        text = f"{self.updated_at.astimezone(UTC).isoformat()}|{self.saga_id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageCursor:
        """Read a token written by :meth:`encode`; :class:`BadCursorError` otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            moment, saga_id = raw.split("|")
            at = datetime.fromisoformat(moment)
            if at.tzinfo is None:
                raise ValueError("naive")
            return cls(at.astimezone(UTC), UUID(saga_id))
        except (ValueError, UnicodeDecodeError):
            raise BadCursorError("not a page cursor (follow the 'next page' link)") from None


@dataclass(frozen=True, slots=True)
class SagaFilter:
    """Which sagas: every field narrows, ``None`` does not.

    ``error`` matches case-insensitively inside ``last_error``; ``updated_after`` /
    ``updated_before`` bound ``updated_at`` (after inclusive, before exclusive).
    """

    status: SagaStatus | None = None
    saga_type: str | None = None
    version: int | None = None
    step: str | None = None
    error: str | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("saga_type", "step", "error"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_FILTER_TEXT:
                raise ValueError(f"{name} filter longer than {MAX_FILTER_TEXT} characters")
        for name in ("updated_after", "updated_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")

    def conditions(self) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions on ``saga_summary``."""
        s = saga_summary.c
        found: list[ColumnElement[bool]] = []
        if self.status is not None:
            found.append(s.status == self.status.value)
        if self.saga_type is not None:
            found.append(s.saga_type == self.saga_type)
        if self.version is not None:
            found.append(s.definition_version == self.version)
        if self.step is not None:
            found.append(step_condition(self.step))
        if self.error:
            pattern = "%" + _like_escaped(self.error.lower()) + "%"
            found.append(func.lower(s.last_error).like(pattern, escape="\\"))
        if self.updated_after is not None:
            found.append(s.updated_at >= self.updated_after)
        if self.updated_before is not None:
            found.append(s.updated_at < self.updated_before)
        return found


def step_condition(step: str) -> ColumnElement[bool]:
    """Sagas whose step ``step`` is in flight (any of a parallel saga's) or dead-lettered.

    A linear saga keeps matching on ``current_step`` (its step waiting for a retry too).
    ``steps_in_flight`` is a JSON list: its text holds the name JSON-quoted, which is what
    is looked for (with LIKE's wildcards escaped), the same on SQLite and PostgreSQL.
    """
    s = saga_summary.c
    quoted = "%" + _like_escaped(json.dumps(step)) + "%"
    in_flight = cast(s.steps_in_flight, Text).like(quoted, escape="\\")
    return or_(
        and_(s.parallel.is_(False), s.current_step == step),
        in_flight,
        s.dead_letter_step == step,
    )


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class SagaPage:
    """One page of sagas, newest first, and the cursor of the next (``None``: the last)."""

    sagas: list[SagaSummary]
    next_cursor: PageCursor | None


def search_sagas(
    views: SagaViews,
    wanted: SagaFilter | None = None,
    *,
    after: PageCursor | None = None,
    limit: int = 50,
) -> SagaPage:
    """A page of the sagas ``wanted`` selects, most recently changed first.

    ``after`` is the previous page's ``next_cursor``: the query seeks past it on the
    index rather than counting rows to skip.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    s = saga_summary.c
    query = select(saga_summary).where(*(wanted or SagaFilter()).conditions())
    if after is not None:
        query = query.where(
            or_(
                s.updated_at < after.updated_at,
                and_(s.updated_at == after.updated_at, s.saga_id < after.saga_id),
            )
        )
    query = query.order_by(s.updated_at.desc(), s.saga_id.desc()).limit(limit + 1)
    with views._reading() as conn:
        rows = [SagaSummary.from_row(row) for row in conn.execute(query).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = PageCursor(rows[-1].updated_at, rows[-1].saga_id) if more and rows else None
    return SagaPage(rows, cursor)


def count_by_type_and_status(views: SagaViews) -> dict[str, dict[str, int]]:
    """How many sagas of each type are in each status: ``{type: {status: n}}``."""
    s = saga_summary.c
    query = select(s.saga_type, s.status, func.count()).group_by(s.saga_type, s.status)
    found: dict[str, dict[str, int]] = {}
    with views._reading() as conn:
        for saga_type, status, n in conn.execute(query):
            found.setdefault(str(saga_type), {})[str(status)] = int(n)
    return dict(sorted(found.items()))


def latest_update(views: SagaViews) -> datetime | None:
    """When the most recently changed saga changed (``None``: no saga); an index lookup."""
    with views._reading() as conn:
        found: datetime | None = conn.execute(select(func.max(saga_summary.c.updated_at))).scalar()
    return found


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    """Sagas started, completed and failed in ``[start, start + width)``."""

    start: datetime
    started: int
    completed: int
    failed: int


def activity(
    views: SagaViews, *, until: datetime, buckets: int = 12, width: timedelta = timedelta(hours=1)
) -> list[ActivityBucket]:
    """Started / completed / failed sagas per bucket, the last ending at ``until``.

    Started counts ``started_at``; completed and failed count sagas whose status is
    COMPLETED or FAILED, by ``updated_at`` (when they ended, unless touched since by
    an operator). Three range scans over indexed columns, counted in Python.
    """
    if buckets < 1 or width <= timedelta(0):
        raise ValueError("buckets must be at least 1 and width positive")
    end = until.astimezone(UTC)
    begin = end - buckets * width
    s = saga_summary.c
    counts = {key: [0] * buckets for key in ("started", "completed", "failed")}

    def slot(moment: datetime) -> int | None:
        index = int((moment - begin) / width)
        return index if 0 <= index < buckets else None

    with views._reading() as conn:
        for (moment,) in conn.execute(
            # A saga started in the window changed in it or later: the updated_at
            # bound lets the (updated_at, saga_id) index narrow the scan.
            select(s.started_at).where(
                s.updated_at >= begin, s.started_at >= begin, s.started_at < end
            )
        ):
            if (i := slot(moment)) is not None:
                counts["started"][i] += 1
        for status, key in ((SagaStatus.COMPLETED, "completed"), (SagaStatus.FAILED, "failed")):
            query = select(s.updated_at).where(
                s.status == status.value, s.updated_at >= begin, s.updated_at < end
            )
            for (moment,) in conn.execute(query):
                if (i := slot(moment)) is not None:
                    counts[key][i] += 1
    return [
        ActivityBucket(
            begin + i * width, counts["started"][i], counts["completed"][i], counts["failed"][i]
        )
        for i in range(buckets)
    ]
