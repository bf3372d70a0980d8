"""Read models built from the saga log: current sagas, stuck sagas, timelines.

``SagaViews`` holds two SQL tables (SQLAlchemy Core, on SQLite or PostgreSQL,
or an in-memory SQLite for ``memory://``) — ``saga_summary`` (one row per saga)
and ``saga_timeline`` (one row per event) — and is an eventsourcing
``TrackingRecorder``, so each event is applied exactly once, in the same
transaction as its tracking record. ``SagaProjector`` keeps it up with a
``SagaManager``'s log (``catch_up``, ``run``, ``rebuild``); ``SagaProjection`` is
the same thing as an eventsourcing ``Projection`` for eventsourcing's
``ProjectionRunner``. ``SagaViews.stuck`` answers "which sagas are stuck, and
why"; ``definition_versions`` which definition versions the sagas run on. See
docs/projections.md.
"""

from sagalog.projections.engine import create_view_engine
from sagalog.projections.projection import (
    ProjectionStatus,
    SagaLogReader,
    SagaProjection,
    SagaProjector,
    SagaViewsFactory,
    runner_env,
)
from sagalog.projections.rows import (
    ACTIVE_STATUSES,
    ProjectionIntegrityError,
    SagaSummary,
    TimelineEntry,
    apply_event,
    evolve_summary,
    timeline_entry,
)
from sagalog.projections.schema import (
    SCHEMA_VERSION,
    metadata,
    saga_summary,
    saga_timeline,
    tracking,
)
from sagalog.projections.stuck import (
    StuckPolicy,
    StuckReason,
    StuckSaga,
    format_duration,
    parse_duration,
)
from sagalog.projections.versions import (
    UNPROJECTED,
    DefinitionVersionUsage,
    definition_versions,
    started_sagas,
)
from sagalog.projections.view import DEFAULT_PROJECTION_NAME, SagaViews

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_PROJECTION_NAME",
    "SCHEMA_VERSION",
    "UNPROJECTED",
    "DefinitionVersionUsage",
    "ProjectionIntegrityError",
    "ProjectionStatus",
    "SagaLogReader",
    "SagaProjection",
    "SagaProjector",
    "SagaSummary",
    "SagaViews",
    "SagaViewsFactory",
    "StuckPolicy",
    "StuckReason",
    "StuckSaga",
    "TimelineEntry",
    "apply_event",
    "create_view_engine",
    "definition_versions",
    "evolve_summary",
    "format_duration",
    "metadata",
    "parse_duration",
    "runner_env",
    "saga_summary",
    "saga_timeline",
    "started_sagas",
    "timeline_entry",
    "tracking",
]
