"""Topics that moved: old names a stored log or an environment may hold keep resolving.

Stored topics are the stored format. eventsourcing resolves a topic with
``resolve_topic`` and lets a moved object be registered under its old topic
(``register_topic``); this module keeps that table for every module sagalog moved
that an environment can name (``PERSISTENCE_MODULE``, ``*_RECORDER_TOPIC``,
``TRANSCODER_TOPIC``). The saga events' own topics (``sagalog.domain.saga:Saga.*``)
never moved.
"""

from __future__ import annotations

from eventsourcing.utils import register_topic, resolve_topic

#: Old module topic → the module it moved to (attributes resolve through it).
MOVED_MODULES: dict[str, str] = {
    "sagalog.infrastructure.recorders": "sagalog.infrastructure.persistence.recorders",
    # The recorders module imports the PostgreSQL recorders lazily (psycopg is optional),
    # so the old PostgreSQL module's topics resolve through it too.
    "sagalog.infrastructure.postgres_recorder": "sagalog.infrastructure.persistence.recorders",
    "sagalog.process.transcoding": "sagalog.process.store.codec",
}


def register_moved_topics() -> None:
    """Register every old module topic under the module it moved to.

    Called before eventsourcing reads an environment that may name an old topic (when a
    manager or a projection runner is built). The new modules are imported by topic, as
    eventsourcing would; registering again is a no-op, and it survives a cleared cache.
    """
    for old, new in MOVED_MODULES.items():
        register_topic(old, resolve_topic(new))
