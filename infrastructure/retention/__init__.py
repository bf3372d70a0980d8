"""Retention: retire ended sagas into an archive, and restore them from it.

``retire_sagas`` (``sagalog retention``) archives the streams of ended sagas that
the :class:`RetentionPolicy` lets go and removes them from the store, the timer
index and the views; ``restore_sagas`` (``sagalog restore``) brings them back.
Both are audited. See docs/retention.md.
"""

from __future__ import annotations

from sagalog.infrastructure.retention.archive import ArchivedSaga, ArchiveReader
from sagalog.infrastructure.retention.audit import AuditRecord, RetentionAudit
from sagalog.infrastructure.retention.policy import RetentionError, RetentionPolicy, parse_age
from sagalog.infrastructure.retention.retire import (
    RestoreReport,
    RetentionReport,
    restore_sagas,
    retire_sagas,
)

__all__ = [
    "ArchiveReader",
    "ArchivedSaga",
    "AuditRecord",
    "RestoreReport",
    "RetentionAudit",
    "RetentionError",
    "RetentionPolicy",
    "RetentionReport",
    "parse_age",
    "restore_sagas",
    "retire_sagas",
]
