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

This package exports what an application reads; row rules, the schema, the engine and the
log cursor (``cursor``) are the second tier, in their modules.
"""

from sagalog.domain._exports import names_on_demand
from sagalog.projections.projection import (
    ProjectionStatus,
    SagaLogReader,
    SagaProjection,
    SagaProjector,
    runner_env,
)
from sagalog.projections.rows import ProjectionIntegrityError, SagaSummary, TimelineEntry
from sagalog.projections.stuck import StuckPolicy, StuckReason, StuckSaga
from sagalog.projections.versions import DefinitionVersionUsage, definition_versions
from sagalog.projections.view import SagaViews

__all__ = [
    "DefinitionVersionUsage",
    "ProjectionIntegrityError",
    "ProjectionStatus",
    "SagaLogReader",
    "SagaProjection",
    "SagaProjector",
    "SagaSummary",
    "SagaViews",
    "StuckPolicy",
    "StuckReason",
    "StuckSaga",
    "TimelineEntry",
    "definition_versions",
    "runner_env",
]

#: Exported here before the API was tiered; their homes are the modules named.
MOVED = {
    "create_view_engine": "sagalog.projections.engine",
    "SagaViewsFactory": "sagalog.projections.projection",
    "ACTIVE_STATUSES": "sagalog.projections.rows",
    "apply_event": "sagalog.projections.rows",
    "evolve_summary": "sagalog.projections.rows",
    "timeline_entry": "sagalog.projections.rows",
    "SCHEMA_VERSION": "sagalog.projections.schema",
    "metadata": "sagalog.projections.schema",
    "saga_summary": "sagalog.projections.schema",
    "saga_timeline": "sagalog.projections.schema",
    "tracking": "sagalog.projections.schema",
    "format_duration": "sagalog.projections.stuck",
    "parse_duration": "sagalog.projections.stuck",
    "UNPROJECTED": "sagalog.projections.versions",
    "started_sagas": "sagalog.projections.versions",
    "DEFAULT_PROJECTION_NAME": "sagalog.projections.view",
}
__getattr__ = names_on_demand(globals(), moved=MOVED)
