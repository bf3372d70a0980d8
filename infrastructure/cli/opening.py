"""Opening the saga store a command names: ``--database-url``, ``--app``, ``--definitions``.

Without a URL the embedded SQLite default (``sagalog.db``) is used, but a command
that reads refuses a missing file; a store holding another manager's sagas is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventsourcing.utils import TopicError

from sagalog.domain import SagaDefinition, SagalogError
from sagalog.domain.errors import first_line
from sagalog.infrastructure.cli.app import errors_as_one_line, fail
from sagalog.infrastructure.cli.output import escape, progress
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import SagaManager, parse_database_url
from sagalog.process.loading import definitions_from, manager_class
from sagalog.process.store.contents import check_store_name
from sagalog.process.store.url import DATABASE_URL_ENV_VAR
from sagalog.projections import SagaProjector

#: Catching up more than this many events shows a progress bar.
_PROGRESS_THRESHOLD = 2000

#: Seconds the CLI waits for PostgreSQL when the URL names no ``connect_timeout``.
DEFAULT_CONNECT_TIMEOUT = 5
CONNECT_TIMEOUT_ENV_VAR = "SAGALOG_CONNECT_TIMEOUT"


def _with_connect_timeout(database_url: str | None) -> str | None:
    """``database_url`` with a short PostgreSQL ``connect_timeout`` unless it names one.

    eventsourcing waits 30 s for a connection by default: too long for a command
    typed at a prompt. ``SAGALOG_CONNECT_TIMEOUT`` (seconds) overrides the default.
    """
    url = parse_database_url(database_url)
    if url.kind != "postgresql" or url.connect_timeout is not None:
        return database_url
    raw = os.environ.get(CONNECT_TIMEOUT_ENV_VAR, "").strip()
    if raw and not (raw.isdigit() and int(raw) >= 1):
        raise fail(f"{CONNECT_TIMEOUT_ENV_VAR} must be a whole number of seconds, not {raw!r}")
    text = database_url if database_url is not None else os.environ[DATABASE_URL_ENV_VAR]
    parts = urlsplit(text.strip())
    query = "&".join(
        q for q in (parts.query, f"connect_timeout={raw or DEFAULT_CONNECT_TIMEOUT}") if q
    )
    return urlunsplit(parts._replace(query=query))


def open_manager(
    database_url: str | None,
    app: str | None = None,
    definitions: str | None = None,
    *,
    must_exist: bool = True,
) -> SagaManager:
    """Open the saga store of ``app``; refuse a missing SQLite file or another app's store.

    ``app`` (``--app``) is the user's ``SagaManager`` subclass, whose name names the
    tables; ``definitions`` (``--definitions``) the user's saga definitions, by
    default the subclass's, or the demo's when neither is given. Operator actions
    and timers need no definitions: every saga stores the whole definition it runs.
    """
    url = parse_database_url(database_url)
    if must_exist and url.kind == "sqlite" and not url.is_sqlite_memory:
        assert url.path is not None
        if not Path(url.path).exists():
            raise fail(
                f"no saga database at {url.path} (give --database-url, or run `sagalog demo`)"
            )
    database_url = _with_connect_timeout(database_url)
    url = parse_database_url(database_url)
    _preflight(url)
    manager_type = manager_class(app) if app else SagaManager
    chosen: list[SagaDefinition] | None
    if definitions:
        chosen = definitions_from(definitions)
    elif app:
        chosen = None  # the subclass's own (none for a bare name)
    else:
        chosen = list(DEMO_DEFINITIONS)
    check_store_name(url, manager_type.name)
    try:
        return manager_type(chosen, database_url)
    except (TopicError, OSError, ValueError) as exc:
        if isinstance(exc, SagalogError):
            raise
        raise fail(_store_settings_error(exc)) from None


def _store_settings_error(exc: BaseException) -> str:
    """One line for a store that its environment cannot open (a cipher without key, …)."""
    cause = escape(first_line(exc))
    if any(name.endswith("CIPHER_TOPIC") and value for name, value in os.environ.items()):
        return f"cannot open the saga store with the cipher configured (CIPHER_TOPIC): {cause}"
    return f"cannot open the saga store: {cause}"


def _preflight(url: Any) -> None:
    """One line, at once, when the store cannot be opened (see health.preflight_store)."""
    from sagalog.infrastructure.observability.health import preflight_store

    try:
        preflight_store(url)
    except SagalogError as exc:
        raise fail(escape(str(exc))) from None


@contextmanager
def opened(
    database_url: str | None,
    app: str | None = None,
    definitions: str | None = None,
    *,
    must_exist: bool = True,
) -> Iterator[tuple[SagaManager, SagaProjector]]:
    """The manager and its projector, closed afterwards; errors as one line."""
    with errors_as_one_line():
        manager = open_manager(database_url, app, definitions, must_exist=must_exist)
        try:
            projector = SagaProjector(manager)
            try:
                yield manager, projector
            finally:
                projector.close()
        finally:
            manager.close()


def catch_up(projector: SagaProjector) -> None:
    """Bring the projections up to the head of the log before reading them."""
    if projector.lag() <= _PROGRESS_THRESHOLD:
        projector.catch_up()
        return
    with progress("catching up projections") as report:
        projector.catch_up(report)


@contextmanager
def reading(
    database_url: str | None, app: str | None = None, definitions: str | None = None
) -> Iterator[SagaManager]:
    """The manager alone (no projections), closed afterwards; errors as one line."""
    with errors_as_one_line():
        manager = open_manager(database_url, app, definitions)
        try:
            yield manager
        finally:
            manager.close()
