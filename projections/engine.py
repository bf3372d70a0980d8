"""A SQLAlchemy engine for the read model, from a sagalog database URL.

The views live in the same database as the saga log when that is a file or a
server (one URL to configure, one backup), but they are written through their
own SQLAlchemy engine, not through eventsourcing's connections: the view rows
and the view's tracking row need to be in one transaction with each other, not
with the log.

* ``sqlite:///path.db`` → the same file. Connections run in autocommit mode and
  every transaction is opened explicitly: ``BEGIN IMMEDIATE`` for writes, so a
  writer takes SQLite's write lock *before* it reads the tracking position and
  waits (up to the lock timeout) instead of failing on a lock upgrade; plain
  ``BEGIN`` for reads, so a query reads one snapshot. WAL mode, as eventsourcing
  uses. ``synchronous=NORMAL``: a power cut may lose the last view transactions,
  never half of one, and the projection simply redoes them.
* ``memory://`` and ``sqlite:///:memory:`` → a private in-memory SQLite database
  (one connection shared by all threads; :class:`~sagalog.projections.SagaViews`
  serialises access to it). The saga log then lives in process memory too, so a
  view in the same process is all that can follow it anyway.
* ``postgresql://…`` → psycopg 3 through SQLAlchemy, in the URL's ``schema``
  (``schema_translate_map``), with ``pool_pre_ping``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from sagalog.process.store.sqlite import use_wal
from sagalog.process.store.url import DEFAULT_SQLITE_LOCK_TIMEOUT, DatabaseUrl, parse_database_url

__all__ = ["WRITE_OPTION", "create_view_engine", "is_private_memory"]

#: Execution option that makes a SQLite transaction ``BEGIN IMMEDIATE``.
WRITE_OPTION = "sagalog_write"


def is_private_memory(url: DatabaseUrl) -> bool:
    """Whether the views of ``url`` live in a private in-memory database."""
    return url.kind == "memory" or url.is_sqlite_memory


def create_view_engine(database_url: DatabaseUrl | str | None) -> Engine:
    """An engine on the database that holds the views of ``database_url``."""
    url = (
        database_url if isinstance(database_url, DatabaseUrl) else parse_database_url(database_url)
    )
    if is_private_memory(url):
        engine = create_engine(
            "sqlite+pysqlite://",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
        _explicit_sqlite_transactions(engine, wal_timeout=None)
        return engine
    if url.kind == "sqlite":
        assert url.path is not None
        engine = create_engine(
            URL.create("sqlite+pysqlite", database=url.path),
            connect_args={
                "timeout": float(url.lock_timeout or DEFAULT_SQLITE_LOCK_TIMEOUT),
                "check_same_thread": False,
            },
        )
        _explicit_sqlite_transactions(
            engine, wal_timeout=float(url.lock_timeout or DEFAULT_SQLITE_LOCK_TIMEOUT)
        )
        return engine
    connect_args: dict[str, Any] = {}
    if url.connect_timeout is not None:
        connect_args["connect_timeout"] = url.connect_timeout
    engine = create_engine(
        URL.create(
            "postgresql+psycopg",
            username=url.user,
            password=url.password,
            host=url.host,
            port=url.port,
            database=url.dbname,
        ),
        pool_pre_ping=True,
        pool_size=url.pool_size or 2,
        max_overflow=url.max_overflow if url.max_overflow is not None else 4,
        connect_args=connect_args,
    )
    if url.schema:
        engine = engine.execution_options(schema_translate_map={None: url.schema})
    return engine


def _explicit_sqlite_transactions(engine: Engine, *, wal_timeout: float | None) -> None:
    """Let SQLAlchemy, not pysqlite, decide where SQLite transactions begin.

    pysqlite's own handling starts a transaction lazily at the first write,
    which would let a read-then-write transaction see a snapshot older than
    its write lock. SQLAlchemy's documented recipe: autocommit at the driver,
    and an explicit ``BEGIN`` from the ``begin`` event. With ``wal_timeout``
    (a file), each new connection puts the file in WAL mode, waiting up to that
    many seconds for other connections to let it (:func:`use_wal`).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        if wal_timeout is not None:
            use_wal(dbapi_connection, wal_timeout)
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
