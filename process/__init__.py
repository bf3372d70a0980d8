"""The process manager: replies, upstream events and the clock in; saga events out.

This package exports what an application calls: ``SagaManager`` and its asyncio front,
replies, reactions to upstream events, the debugging functions and the database URL.
The second tier is the modules: ``manager``, ``batch`` (how transitions are committed),
``routing`` (how upstream events find their reactions), ``reactions``, ``messages``,
``clock``, ``registry``, and the rooms ``store`` and ``debugging``.
See docs/process-manager.md, docs/store.md and docs/debugging.md.
"""

from sagalog.domain._exports import alias_modules, names_on_demand
from sagalog.process.aio import AsyncSagaManager
from sagalog.process.batch import ConcurrencyConflictError
from sagalog.process.debugging.explain import explain
from sagalog.process.debugging.replay import replay, state_at
from sagalog.process.debugging.timeline import plot_timeline, timeline_chart
from sagalog.process.debugging.whatif import load_definition, what_if, what_if_events, what_if_many
from sagalog.process.manager import SagaManager
from sagalog.process.messages import InvalidReplyError, Reply
from sagalog.process.reactions import (
    AbortSaga,
    CompleteCompensation,
    CompleteStep,
    FailCompensation,
    FailStep,
    Reaction,
    StartSaga,
    saga_id_for,
)
from sagalog.process.store.encryption import EncryptionKeyError, EncryptionKeyMissingError
from sagalog.process.store.shredding import ErasureError
from sagalog.process.store.url import (
    DatabaseUnavailableError,
    DatabaseUrlError,
    parse_database_url,
)

__all__ = [
    "AbortSaga",
    "AsyncSagaManager",
    "CompleteCompensation",
    "CompleteStep",
    "ConcurrencyConflictError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
    "EncryptionKeyError",
    "EncryptionKeyMissingError",
    "ErasureError",
    "FailCompensation",
    "FailStep",
    "InvalidReplyError",
    "Reaction",
    "Reply",
    "SagaManager",
    "StartSaga",
    "explain",
    "load_definition",
    "parse_database_url",
    "plot_timeline",
    "replay",
    "saga_id_for",
    "state_at",
    "timeline_chart",
    "what_if",
    "what_if_events",
    "what_if_many",
]

#: Exported here before the API was tiered; their homes are the modules named.
MOVED = {
    "DEFAULT_DATABASE_URL": "sagalog.process.store.url",
    "DatabaseUrl": "sagalog.process.store.url",
    "TimerIndex": "sagalog.process.store.timers",
    "ChartBar": "sagalog.process.debugging.timeline",
    "ChartMarker": "sagalog.process.debugging.timeline",
    "TimelineChart": "sagalog.process.debugging.timeline",
    "PlotUnavailableError": "sagalog.process.debugging.timeline",
    "CommandRecord": "sagalog.process.debugging.whatif",
    "WhatIfReport": "sagalog.process.debugging.whatif",
    "WhatIfSummary": "sagalog.process.debugging.whatif",
    "DefinitionMismatchError": "sagalog.process.debugging.whatif",
    "DefinitionImportError": "sagalog.process.debugging.whatif",
    "PendingCommand": "sagalog.process.debugging.replay",
    "ReplayStep": "sagalog.process.debugging.replay",
    "SagaSnapshot": "sagalog.process.debugging.replay",
    "StepSnapshot": "sagalog.process.debugging.replay",
    "VersionOutOfRangeError": "sagalog.process.debugging.replay",
    "snapshot_of": "sagalog.process.debugging.replay",
    "Outbox": "sagalog.process.debugging.explain",
    "DefinitionRegistry": "sagalog.process.registry",
    "ReplyReaction": "sagalog.process.reactions",
    "utc_now": "sagalog.process.clock",
}
__getattr__ = names_on_demand(globals(), moved=MOVED)

#: Modules that moved into the store and debugging rooms, importable by their old paths.
#: (``replay`` and ``explain`` are not: those names are the package's functions.)
MOVED_MODULES = {
    "sagalog.process.database": "sagalog.process.store.url",
    "sagalog.process.transcoding": "sagalog.process.store.codec",
    "sagalog.process.timers": "sagalog.process.store.timers",
    "sagalog.process.sqlite_wal": "sagalog.process.store.sqlite",
    "sagalog.process.stores": "sagalog.process.store.contents",
    "sagalog.process.whatif": "sagalog.process.debugging.whatif",
    "sagalog.process.timeline_plot": "sagalog.process.debugging.timeline",
    "sagalog.process.asyncio_front": "sagalog.process.aio",
}
alias_modules(MOVED_MODULES)
