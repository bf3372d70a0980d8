"""Topics that moved: old names a stored log or an environment may hold keep resolving.

Stored topics are the stored format. eventsourcing resolves a topic with
``resolve_topic`` and lets a moved object be registered under its old topic
(``register_topic``); this module keeps that table for every module sagalog moved
that an environment can name (``PERSISTENCE_MODULE``, ``*_RECORDER_TOPIC``,
``TRANSCODER_TOPIC``). The saga events' own topics (``sagalog.domain.saga:Saga.*``)
never moved.
"""

from __future__ import annotations

import threading

from eventsourcing.utils import register_topic, resolve_topic

#: Old module topic → the module it moved to (attributes resolve through it).
MOVED_MODULES: dict[str, str] = {
    "sagalog.infrastructure.recorders": "sagalog.infrastructure.persistence.recorders",
    # The recorders module imports the PostgreSQL recorders lazily (psycopg is optional),
    # so the old PostgreSQL module's topics resolve through it too.
    "sagalog.infrastructure.postgres_recorder": "sagalog.infrastructure.persistence.recorders",
    "sagalog.process.transcoding": "sagalog.process.store.codec",
}

_lock = threading.Lock()
_registered = False


def register_moved_topics() -> None:
    """Register every old module topic under the module it moved to; once per process.

    Called before eventsourcing reads an environment that may name an old topic: when
    a database URL becomes an eventsourcing environment, and when the persistence room
    is imported. The new modules are imported here by topic, as eventsourcing would.
    """
    global _registered
    with _lock:
        if _registered:
            return
        for old, new in MOVED_MODULES.items():
            register_topic(old, resolve_topic(new))
        _registered = True
