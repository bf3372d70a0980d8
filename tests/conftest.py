"""One test suite, three storage backends.

``SAGALOG_TEST_BACKEND`` picks where the tests store sagas: ``memory``,
``sqlite``, ``postgres``, a comma-separated list (``sqlite,postgres``) or ``all``
(the default, so plain ``pytest`` runs every database test once per backend,
with the backend in the test id).

Tests ask for ``database_url`` (a fresh, isolated store per test) and, when
they need to know, ``backend``:

* ``memory`` → ``memory://``
* ``sqlite`` → ``sqlite:///<tmp_path>/sagalog.db``
* ``postgres`` → the server at ``SAGALOG_TEST_POSTGRES_URL`` (default
  ``postgresql://postgres@127.0.0.1:5432/postgres``), in a schema ``t_<hex>``
  created for the test and dropped (``CASCADE``) after it, so tests never see
  each other's tables and may run against a shared server.

When PostgreSQL cannot be reached the PostgreSQL tests are skipped with the
reason, unless ``CI`` is set to a true value, where a skipped backend would
pass silently: there they fail.

The suite runs on every core (pytest-xdist, ``-n auto`` in ``pyproject.toml``): a test
shares nothing with another that runs at the same time — its store is a file under
its ``tmp_path`` or a schema of its own, its broker names carry a fresh prefix, its
servers take a port the system picks. A module whose tests share a module fixture is
an ``xdist_group``, run on one worker. Under ``CI`` the run lists its 20 slowest tests
(``--durations``); the notebooks are marked ``slow``, so ``pytest -m "not slow"`` is
the quick loop.

A test that means nothing without a real database (surviving a restart,
sharing a store between two application objects) is marked
``@pytest.mark.requires_database`` (optionally with ``reason=``) and is skipped
on ``memory``. The ``requires_database`` fixture does the same for fixtures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from sagalog.process.store.url import DatabaseUrl, mask_password, parse_database_url
from sagalog.testing.profiles import load_profile

#: Fixtures every folder shares: the broker's (``broker_url``, ``topology``, ``background``).
pytest_plugins = ["support.broker"]

#: The hypothesis profile ``SAGALOG_HYPOTHESIS_PROFILE`` chooses (``dev`` by default), for
#: every property test of the suite (see ``sagalog.testing.profiles``).
PROFILE = load_profile()

BACKENDS = ("memory", "sqlite", "postgres")
BACKEND_ENV_VAR = "SAGALOG_TEST_BACKEND"
POSTGRES_URL_ENV_VAR = "SAGALOG_TEST_POSTGRES_URL"
DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: What an unset ``SAGALOG_TEST_BACKEND`` means ("all" would run every backend).
DEFAULT_BACKENDS = "all"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
#: How many of the slowest tests a CI run lists (``--durations``), unless told otherwise.
CI_DURATIONS = 20


def selected_backends() -> tuple[str, ...]:
    """The backends named by ``SAGALOG_TEST_BACKEND`` (default: all three)."""
    raw = os.environ.get(BACKEND_ENV_VAR, "").strip().lower() or DEFAULT_BACKENDS
    if raw == "all":
        return BACKENDS
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        msg = (
            f"{BACKEND_ENV_VAR}={raw!r} names unknown backend {unknown[0] if unknown else ''!r}; "
            f"use one of {', '.join(BACKENDS)}, a comma-separated list, or 'all'"
        )
        raise pytest.UsageError(msg)
    return names


def in_ci() -> bool:
    """Whether ``CI`` is set to a true value (then unavailable backends fail)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


def postgres_server_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV_VAR, "").strip() or DEFAULT_TEST_POSTGRES_URL


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_database(reason=...): needs a real database; skipped on the memory backend",
    )
    selected_backends()  # A typo in the backend variable stops the run at once.
    if in_ci() and config.option.durations is None:
        config.option.durations = CI_DURATIONS  # CI shows where the suite's time goes.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The notebooks (nbmake's items) run in CI but not in the quick loop: they are ``slow``."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config: pytest.Config) -> list[str]:
    backends = selected_backends()
    lines = [f"sagalog test backend: {', '.join(backends)} (set {BACKEND_ENV_VAR} to change)"]
    if "postgres" in backends:
        lines.append(f"sagalog test PostgreSQL server: {mask_password(postgres_server_url())}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run database tests once per selected backend when more than one is selected."""
    backends = selected_backends()
    if len(backends) > 1 and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends, indirect=True, scope="session")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("requires_database")
    if marker is None:
        return
    backend = item.callspec.params.get("backend") if hasattr(item, "callspec") else None
    if (backend or selected_backends()[0]) == "memory":
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
        pytest.skip(f"needs a real database: {reason or 'meaningless in memory'}")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this test: ``memory``, ``sqlite`` or ``postgres``."""
    return str(getattr(request, "param", None) or selected_backends()[0])


@pytest.fixture(scope="session")
def selected_backend_names() -> tuple[str, ...]:
    """The backends ``SAGALOG_TEST_BACKEND`` selects, for tests that cannot be parametrized.

    unittest classes (eventsourcing's recorder contract tests) are not
    parametrized by ``backend``: they name theirs, override ``backend`` and skip
    when it is not selected.
    """
    return selected_backends()


@pytest.fixture
def requires_database(backend: str) -> None:
    """Skip the requesting test on the memory backend."""
    if backend == "memory":
        pytest.skip("needs a real database: meaningless in memory")


@cache
def _postgres_unreachable_reason(server_url: str) -> str | None:
    """Why the test PostgreSQL server cannot be used, or None; checked once per run."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is in the dev extra
        return "psycopg is not installed (pip install -e '.[dev]')"
    try:
        target = parse_database_url(server_url)
    except ValueError as e:
        return str(e)
    try:
        with psycopg.connect(_conninfo(target), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"cannot reach PostgreSQL at {target.masked}: {first_line}"
    return None


def _conninfo(target: DatabaseUrl) -> str:
    """A libpq connection string for the server (any ``schema`` is not part of it)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=target.host or "",
        port=target.port or 5432,
        user=target.user or "",
        dbname=target.dbname or "",
        password=target.password or None,
    )


def _with_schema(server_url: str, schema: str) -> str:
    """``server_url`` with its ``schema`` query parameter set to ``schema``."""
    parts = urlsplit(server_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty, isolated store on the selected backend, removed afterwards."""
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'sagalog.db'}"
    else:
        yield from _postgres_schema_url()


def _postgres_schema_url() -> Iterator[str]:
    import psycopg
    from psycopg import sql

    server_url = postgres_server_url()
    reason = _postgres_unreachable_reason(server_url)
    if reason is not None:
        if in_ci():
            pytest.fail(f"PostgreSQL backend selected but unusable in CI: {reason}")
        pytest.skip(f"PostgreSQL backend selected but unusable: {reason}")
    target = parse_database_url(server_url)
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(_conninfo(target), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield _with_schema(server_url, schema)
    finally:
        with psycopg.connect(_conninfo(target), autocommit=True) as conn:
            # Connections a test forgot to close hold no locks when idle; the
            # timeout only guards against one left inside a transaction.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
