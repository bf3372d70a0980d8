"""The process manager: replies, upstream events and the clock in; saga events out."""

from sagalog.process.aio import AsyncSagaManager
from sagalog.process.debugging.explain import Outbox, explain
from sagalog.process.debugging.replay import (
    PendingCommand,
    ReplayStep,
    SagaSnapshot,
    StepSnapshot,
    VersionOutOfRangeError,
    replay,
    snapshot_of,
    state_at,
)
from sagalog.process.debugging.timeline import (
    ChartBar,
    ChartMarker,
    PlotUnavailableError,
    TimelineChart,
    plot_timeline,
    timeline_chart,
)
from sagalog.process.debugging.whatif import (
    CommandRecord,
    DefinitionImportError,
    DefinitionMismatchError,
    WhatIfReport,
    WhatIfSummary,
    load_definition,
    what_if,
    what_if_events,
    what_if_many,
)
from sagalog.process.manager import ConcurrencyConflictError, SagaManager, utc_now
from sagalog.process.messages import InvalidReplyError, Reply
from sagalog.process.reactions import (
    AbortSaga,
    CompleteCompensation,
    CompleteStep,
    FailCompensation,
    FailStep,
    Reaction,
    ReplyReaction,
    StartSaga,
    saga_id_for,
)
from sagalog.process.registry import DefinitionRegistry
from sagalog.process.store.timers import TimerIndex
from sagalog.process.store.url import (
    DEFAULT_DATABASE_URL,
    DatabaseUnavailableError,
    DatabaseUrl,
    DatabaseUrlError,
    parse_database_url,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AbortSaga",
    "AsyncSagaManager",
    "ChartBar",
    "ChartMarker",
    "CommandRecord",
    "CompleteCompensation",
    "CompleteStep",
    "ConcurrencyConflictError",
    "DatabaseUnavailableError",
    "DatabaseUrl",
    "DatabaseUrlError",
    "DefinitionImportError",
    "DefinitionMismatchError",
    "DefinitionRegistry",
    "FailCompensation",
    "FailStep",
    "InvalidReplyError",
    "Outbox",
    "PendingCommand",
    "PlotUnavailableError",
    "Reaction",
    "ReplayStep",
    "Reply",
    "ReplyReaction",
    "SagaManager",
    "SagaSnapshot",
    "StartSaga",
    "StepSnapshot",
    "TimelineChart",
    "TimerIndex",
    "VersionOutOfRangeError",
    "WhatIfReport",
    "WhatIfSummary",
    "explain",
    "load_definition",
    "parse_database_url",
    "plot_timeline",
    "replay",
    "saga_id_for",
    "snapshot_of",
    "state_at",
    "timeline_chart",
    "utc_now",
    "what_if",
    "what_if_events",
    "what_if_many",
]
