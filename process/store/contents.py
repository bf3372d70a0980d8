"""Which saga managers a store holds, read from its table names before anything is opened.

On PostgreSQL eventsourcing names an application's tables after its ``name`` (a
``SagaManager`` subclass ``TransferSagas`` writes ``transfersagas_events`` and
sagalog adds ``transfersagas_timers``). A tool that opened the store under
another name would create empty tables and see no sagas, so the CLI and the
worker first ask which names hold sagas and refuse to open one that does not.
SQLite and memory stores do not name tables per application.
"""

from __future__ import annotations

from sagalog.domain import SagalogError
from sagalog.process.store.url import DatabaseUnavailableError, DatabaseUrl

__all__ = ["ForeignStoreError", "check_store_name", "saga_store_names"]

#: Seconds to wait for PostgreSQL when only table names are wanted.
_LOOKUP_CONNECT_TIMEOUT = 5


class ForeignStoreError(SagalogError, LookupError):
    """The store holds sagas under other application names than the one to open."""


def saga_store_names(url: DatabaseUrl) -> list[str]:
    """The table prefixes of the saga managers in the store at ``url``, sorted.

    A saga manager's tables are ``<prefix>_events`` with ``<prefix>_timers``
    beside them; the prefix is ``Application.name`` in lower case. Empty for
    SQLite and memory, and for a PostgreSQL schema that does not exist yet.
    """
    if url.kind != "postgresql":
        return []
    import psycopg

    conninfo = url.conninfo(connect_timeout=url.connect_timeout or _LOOKUP_CONNECT_TIMEOUT)
    try:
        with psycopg.connect(conninfo) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (url.schema or "public",),
            ).fetchall()
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(url, exc) from None
    tables = {str(row[0]) for row in rows}
    return sorted(
        name[: -len("_timers")]
        for name in tables
        if name.endswith("_timers") and f"{name[: -len('_timers')]}_events" in tables
    )


def check_store_name(url: DatabaseUrl, app_name: str) -> None:
    """Refuse (:class:`ForeignStoreError`) to open ``app_name`` where other managers' sagas are.

    Passes when the store holds no saga tables yet, or holds ``app_name``'s.
    """
    found = saga_store_names(url)
    wanted = app_name.lower()
    if not found or wanted in found:
        return
    names = ", ".join(repr(name) for name in found)
    raise ForeignStoreError(
        f"{url.masked} holds sagas of {names}, not of {wanted!r}: give --app "
        "module:ManagerClass (or SAGALOG_APP) for the SagaManager subclass whose name "
        f"is {found[0]!r} (case aside), or --app {found[0]}"
    )
