"""What the console's pages and API show, read through the same functions as the CLI.

``ConsoleStore`` holds one ``SagaManager`` and its ``SagaProjector`` for the life of the
server, catches the projections up before each read (as the CLI's listings do), and
answers with plain dataclasses that both the HTML pages and the JSON API render.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

from sqlalchemy import inspect

from sagalog.domain import Saga, SagaNotFoundError
from sagalog.infrastructure.messaging.relay import outbox_of
from sagalog.infrastructure.retention.audit import AUDIT_TABLE_NAME, RetentionAudit
from sagalog.process import SagaManager
from sagalog.process.debugging.explain import explain as explain_saga
from sagalog.process.debugging.replay import SagaSnapshot, snapshot_of
from sagalog.process.debugging.timeline import TimelineChart, timeline_chart
from sagalog.projections import SagaProjector, SagaSummary, StuckPolicy, StuckSaga, TimelineEntry
from sagalog.projections.search import (
    ActivityBucket,
    PageCursor,
    SagaFilter,
    SagaPage,
    activity,
    count_by_type_and_status,
    latest_update,
    search_sagas,
)

__all__ = [
    "EXPLAINED_STUCK",
    "ConsoleStore",
    "Erasure",
    "Lag",
    "Overview",
    "SagaStory",
    "jsonable",
]

#: How many stuck sagas the overview counts by reason, and the stuck page lists (the
#: default of ``sagalog stuck``).
STUCK_LIMIT = 100
#: How many of the most urgent stuck sagas the stuck page explains (each reads its log).
EXPLAINED_STUCK = 10


@dataclass(frozen=True)
class Lag:
    """How far the relay and the projections are behind the log's head (in notifications)."""

    head: int
    relay_position: int
    projection_position: int

    @property
    def relay(self) -> int:
        return max(0, self.head - self.relay_position)

    @property
    def projections(self) -> int:
        return max(0, self.head - self.projection_position)


@dataclass(frozen=True)
class Overview:
    """The first page: counts, stuck reasons, recent activity and lag."""

    by_type: dict[str, dict[str, int]]
    stuck_by_reason: dict[str, int]
    #: Whether the stuck query's limit was reached (the counts are then lower bounds).
    stuck_capped: bool
    activity: list[ActivityBucket]
    lag: Lag


@dataclass(frozen=True)
class SagaStory:
    """One saga: its summary, explanation, timeline, chart, path and raw events."""

    summary: SagaSummary
    explanation: list[str]
    timeline: list[TimelineEntry]
    chart: TimelineChart
    snapshot: SagaSnapshot
    #: The definition's steps: name, action, compensation (``None``: a retriable step).
    steps: list[tuple[str, str, str | None]]
    events: list[dict[str, Any]]
    #: Who erased its data, when and why (``sagalog forget``); ``None``: not erased.
    erased: Erasure | None = None
    #: The steps each step waits for (``SagaDefinition.dependencies``).
    dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Steps whose action ended without an answer and no late success: it may have been done.
    uncertain: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Erasure:
    """A ``SagaForgotten`` event as the saga page shows it."""

    actor: str
    at: datetime
    reason: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"actor": self.actor, "at": jsonable(self.at), "reason": self.reason}


class ConsoleStore:
    """The saga store a console serves: reads through the projections and the log."""

    def __init__(self, manager: SagaManager, projector: SagaProjector) -> None:
        self.manager = manager
        self.projector = projector
        self.lock = threading.RLock()
        self.policy = StuckPolicy()

    def catch_up(self) -> None:
        """Apply the log's new events to the projections before a read."""
        with self.lock:
            if self.projector.lag() > 0:
                self.projector.catch_up()

    def head(self) -> int:
        """The log's head: changes whenever any saga does (what live pages poll)."""
        return int(self.manager.recorder.max_notification_id() or 0)

    def lag(self) -> Lag:
        """Positions only: ``projector.status()`` would also count every row."""
        return Lag(
            head=self.head(),
            relay_position=self._relay_position(),
            projection_position=self.projector.position(),
        )

    def _relay_position(self) -> int:
        from eventsourcing.persistence import InfrastructureFactory
        from eventsourcing.utils import Environment

        from sagalog.infrastructure.messaging.relay import CommandRelay

        env = self.manager.database_url.application_env(CommandRelay.name)
        factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
            Environment(CommandRelay.name, env)
        )
        try:
            return int(factory.tracking_recorder().max_tracking_id(self.manager.name) or 0)
        finally:
            factory.close()

    def overview(self, *, hours: int = 12) -> Overview:
        """Counts by type and status, stuck by reason, activity over the last ``hours``."""
        self.catch_up()
        views = self.projector.views
        stuck: dict[str, int] = {}
        found = views.stuck(policy=self.policy, limit=STUCK_LIMIT)
        for item in found:
            stuck[item.reason.value] = stuck.get(item.reason.value, 0) + 1
        # Sagas may run on their own clock (the demo's is simulated): the chart ends at
        # the later of now and the latest change, so it always shows the latest activity.
        now = datetime.now(UTC)
        latest = latest_update(views)
        until = now if latest is None or latest < now else latest
        until = until.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return Overview(
            by_type=count_by_type_and_status(views),
            stuck_by_reason=stuck,
            stuck_capped=len(found) >= STUCK_LIMIT,
            activity=activity(views, until=until, buckets=hours),
            lag=self.lag(),
        )

    def sagas(
        self, wanted: SagaFilter, *, after: PageCursor | None = None, limit: int = 50
    ) -> SagaPage:
        """A keyset page of the sagas ``wanted`` selects, newest first."""
        self.catch_up()
        return search_sagas(self.projector.views, wanted, after=after, limit=limit)

    def stuck(self, *, limit: int = STUCK_LIMIT) -> list[StuckSaga]:
        """Stuck sagas, most urgent first, with the stuck query's reasons and words."""
        self.catch_up()
        return self.projector.views.stuck(policy=self.policy, limit=limit)

    def advice(self, saga_ids: list[UUID]) -> dict[UUID, str]:
        """``explain``'s last sentence (what would move the saga on) for each of ``saga_ids``.

        Reads each saga's log, so the stuck page asks it only for its most urgent few.
        """
        found: dict[UUID, str] = {}
        with self.lock:
            for saga_id in saga_ids:
                try:
                    sentences = explain_saga(self.manager.get(saga_id))
                except SagaNotFoundError:
                    continue
                if len(sentences) > 1:
                    found[saga_id] = sentences[-1]
        return found

    def story(self, saga_id: UUID) -> SagaStory:
        """Everything the saga page shows; ``SagaNotFoundError`` if there is no such saga."""
        self.catch_up()
        summary = self.projector.views.get(saga_id)
        if summary is None:
            raise SagaNotFoundError(f"no saga with id {saga_id}{self._retired_hint()}")
        with self.lock:
            saga = self.manager.get(saga_id)
            history = self.manager.history(saga_id)
            outbox = outbox_of(self.manager, saga) if saga.pending_command is not None else None
        return SagaStory(
            summary=summary,
            explanation=explain_saga(saga, outbox=outbox),
            timeline=self.projector.views.timeline(saga_id),
            chart=timeline_chart(history),
            snapshot=snapshot_of(saga),
            steps=[(s.name, s.action, s.compensation) for s in saga.definition.steps],
            events=[event_json(event) for event in history],
            erased=next(
                (
                    Erasure(e.actor, e.timestamp, e.reason)
                    for e in reversed(history)
                    if isinstance(e, Saga.SagaForgotten)
                ),
                None,
            ),
            dependencies=dict(saga.definition.dependencies),
            uncertain=frozenset(
                name for name, st in saga.steps.items() if st.uncertain and not st.late
            ),
        )

    def _retired_hint(self) -> str:
        """What the retention audit says of retired sagas (it names runs, not sagas)."""
        engine = self.projector.views.engine
        schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
        if not inspect(engine).has_table(AUDIT_TABLE_NAME, schema=schema):
            return ""
        runs = [
            r
            for r in RetentionAudit(engine).records(limit=1000)
            if r.action == "retire" and r.state in ("done", "failed") and r.sagas
        ]
        if not runs:
            return ""
        newest = runs[0]
        return (
            f"; retention archived {sum(r.sagas for r in runs)} sagas in {len(runs)} runs, "
            f"the last on {newest.started_at[:10]} into {newest.archive} — if it was one of "
            "them, `sagalog restore ARCHIVE` brings it back"
        )


def event_json(event: object) -> dict[str, Any]:
    """A stored event as JSON: its class name and its attributes."""
    fields = {key: jsonable(value) for key, value in vars(event).items() if not key.startswith("_")}
    return {"event": type(event).__name__, **fields}


def jsonable(value: Any) -> Any:
    """``value`` with ids, instants, enums and dataclasses turned into JSON types."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    return str(value)
