"""Database URLs: every supported form, the fallbacks, and errors that never leak a password."""

from __future__ import annotations

import pickle

import pytest

from sagalog.domain.errors import SagalogError
from sagalog.process.store.url import (
    DATABASE_URL_ENV_VAR,
    DEFAULT_DATABASE_URL,
    DEFAULT_POSTGRES_POOL_SIZE,
    DEFAULT_SQLITE_LOCK_TIMEOUT,
    DatabaseUnavailableError,
    DatabaseUrl,
    DatabaseUrlError,
    mask_password,
    parse_database_url,
)

RECORDERS = "sagalog.infrastructure.persistence.recorders"

# -- the forms -------------------------------------------------------------------


def test_memory_url_is_the_in_process_store() -> None:
    url = parse_database_url("memory://")
    assert url == DatabaseUrl(kind="memory")
    assert url.masked == "memory://"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("sqlite:///sagalog.db", "sagalog.db"),
        ("sqlite:///data/sagas.db", "data/sagas.db"),
        ("sqlite:////var/lib/sagalog/sagas.db", "/var/lib/sagalog/sagas.db"),
        ("sqlite:///my%20sagas.db", "my sagas.db"),
        ("SQLite:///upper.db", "upper.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls_give_the_file_path(text: str, path: str) -> None:
    url = parse_database_url(text)
    assert url.kind == "sqlite"
    assert url.path == path
    assert url.is_sqlite_memory == (path == ":memory:")


def test_sqlite_masked_url_round_trips() -> None:
    url = parse_database_url("sqlite:////tmp/my%20sagas.db?lock_timeout=30")
    assert url.masked == "sqlite:////tmp/my%20sagas.db?lock_timeout=30"
    assert parse_database_url(url.masked) == url


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgres", "postgresql+psycopg", "PostgreSQL", "POSTGRES"]
)
def test_postgresql_schemes_are_synonyms(scheme: str) -> None:
    url = parse_database_url(f"{scheme}://saga:secret@db.example.com:6543/orders")
    assert url == DatabaseUrl(
        kind="postgresql",
        host="db.example.com",
        port=6543,
        user="saga",
        password="secret",
        dbname="orders",
    )


def test_postgresql_defaults_user_port_and_password() -> None:
    url = parse_database_url("postgresql://localhost/orders")
    assert (url.user, url.port, url.password, url.schema) == ("postgres", 5432, None, None)


def test_postgresql_percent_escapes_are_decoded() -> None:
    url = parse_database_url("postgresql://us%40er:p%40ss%2Fw%3Ard@h/my%20db")
    assert (url.user, url.password, url.dbname) == ("us@er", "p@ss/w:rd", "my db")


def test_an_unescaped_at_sign_in_the_password_splits_at_the_last_at() -> None:
    url = parse_database_url("postgresql://u:p@ss@h/db")
    assert (url.user, url.password, url.host) == ("u", "p@ss", "h")


def test_postgresql_ipv6_host() -> None:
    url = parse_database_url("postgresql://u@[::1]:5433/db")
    assert (url.host, url.port) == ("::1", 5433)
    assert url.masked == "postgresql://u@[::1]:5433/db"


def test_postgresql_query_parameters() -> None:
    url = parse_database_url(
        "postgresql://u:pw@h/db?schema=tenant_a&pool_size=3&max_overflow=0&connect_timeout=7"
    )
    assert (url.schema, url.pool_size, url.max_overflow, url.connect_timeout) == (
        "tenant_a",
        3,
        0,
        7,
    )


# -- fallbacks -------------------------------------------------------------------


def test_argument_wins_over_the_environment() -> None:
    url = parse_database_url("memory://", environ={DATABASE_URL_ENV_VAR: "sqlite:///env.db"})
    assert url.kind == "memory"


def test_environment_variable_is_the_fallback() -> None:
    url = parse_database_url(None, environ={DATABASE_URL_ENV_VAR: "sqlite:///env.db"})
    assert url.path == "env.db"


@pytest.mark.parametrize("environ", [{}, {DATABASE_URL_ENV_VAR: ""}, {DATABASE_URL_ENV_VAR: "  "}])
def test_default_is_a_sqlite_file_in_the_working_directory(environ: dict[str, str]) -> None:
    url = parse_database_url(None, environ=environ)
    assert DEFAULT_DATABASE_URL == "sqlite:///sagalog.db"
    assert (url.kind, url.path) == ("sqlite", "sagalog.db")


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV_VAR, "memory://")
    assert parse_database_url().kind == "memory"
    monkeypatch.delenv(DATABASE_URL_ENV_VAR)
    assert parse_database_url().kind == "sqlite"


def test_a_bad_environment_value_is_reported_like_an_argument() -> None:
    with pytest.raises(DatabaseUrlError, match=r"mysql://u:\*\*\*@h/db"):
        parse_database_url(None, environ={DATABASE_URL_ENV_VAR: "mysql://u:hunter2@h/db"})


# -- masking ---------------------------------------------------------------------


def test_masked_hides_the_password_and_repr_omits_it() -> None:
    url = parse_database_url("postgresql://saga:hunter2@h:5432/db?schema=s")
    assert url.masked == "postgresql://saga:***@h:5432/db?schema=s"
    assert str(url) == url.masked
    assert "hunter2" not in repr(url)
    assert "hunter2" not in str(url)


def test_masked_without_password_has_no_mask() -> None:
    assert parse_database_url("postgresql://saga@h/db").masked == "postgresql://saga@h:5432/db"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pa?ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db?password=pw&schema=s", "postgresql://h/db?password=***&schema=s"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_mask_password_works_on_raw_and_malformed_urls(raw: str, masked: str) -> None:
    assert mask_password(raw) == masked


# -- errors ----------------------------------------------------------------------

BAD_URLS = [
    ("", "empty"),
    ("   ", "empty"),
    ("sagalog.db", "expected scheme"),
    ("mysql://u:pw@h/db", "unsupported scheme 'mysql'"),
    ("postgresql+asyncpg://u:pw@h/db", "unsupported driver"),
    ("memory://somewhere", "takes no host"),
    ("memory://?schema=x", "unknown query parameter 'schema'"),
    ("sqlite://", "no database file"),
    ("sqlite:///", "no database file"),
    ("sqlite://host/x.db", "no host"),
    ("sqlite:///dir/", "directory"),
    ("sqlite:///file:x.db?mode=ro", "URI filenames"),
    ("sqlite:///x.db?schema=s", "unknown query parameter 'schema'"),
    ("sqlite:///x.db?lock_timeout=soon", "lock_timeout must be an integer"),
    ("sqlite:///x.db#frag", "fragment"),
    ("sqlite:///my sagas.db", "whitespace"),
    ("postgresql://u:pw@/db", "no host"),
    ("postgresql://u:pw@h", "no database name"),
    ("postgresql://u:pw@h/", "no database name"),
    ("postgresql://u:pw@h/a/b", "contains '/'"),
    ("postgresql://u:pw@h:99999/db", "port '99999'"),
    ("postgresql://u:pw@h:port/db", "port 'port'"),
    ("postgresql://u:pw@h:1:2/db", "more than one ':'"),
    ("postgresql://u:pw@[::1/db", "IPv6"),
    ("postgresql://u:pw@h/db?sslmode=require", "unknown query parameter 'sslmode'"),
    ("postgresql://u:pw@h/db?schema=", "schema is empty"),
    ("postgresql://u:pw@h/db?schema=" + "s" * 64, "longer than 63"),
    ("postgresql://u:pw@h/db?pool_size=0", "pool_size must be at least 1"),
    ("postgresql://u:pw@h/db?max_overflow=-1", "max_overflow must be at least 0"),
    ("postgresql://u:pw@h/db?connect_timeout=x", "connect_timeout must be an integer"),
    ("postgresql://u:pw@h/db?schema=a&schema=b", "given twice"),
    ("postgresql://u:pw@h/db?schema", "malformed query string"),
    ("postgresql://u:pa/ss@h/db", "percent-escape"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_URLS)
def test_bad_urls_raise_one_line_naming_the_masked_url(text: str, problem: str) -> None:
    with pytest.raises(DatabaseUrlError) as info:
        parse_database_url(text)
    message = str(info.value)
    assert "\n" not in message
    assert problem in message
    assert message.startswith(f"invalid database URL {mask_password(text) or repr('')}")


@pytest.mark.parametrize(
    "text",
    [
        "mysql://u:hunter2@h/db",
        "postgresql://u:hunter2@h:bad/db",
        "postgresql://u:hunter2@h/db?pool_size=many",
        "postgresql://u:hunter2@h/db?sslmode=require",
        "postgresql://u:hun/ter2@h/db",
        "postgresql://u:hun?ter2@h/db",
        "postgresql://u:hun#ter2@h/db",
        "postgresql://u:hun:ter2@h:1:2/db",
        "postgresql://u:hunter2@h/db?password=hunter2",
    ],
)
def test_errors_never_contain_the_password(text: str) -> None:
    with pytest.raises(DatabaseUrlError) as info:
        parse_database_url(text)
    message = str(info.value)
    assert "hunter2" not in message
    assert "hun" not in message.replace("hunter", "")  # no fragment of it either
    assert "***" in message


def test_database_url_error_is_a_sagalog_value_error() -> None:
    assert issubclass(DatabaseUrlError, SagalogError)
    assert issubclass(DatabaseUrlError, ValueError)


def test_unavailable_error_is_one_masked_line() -> None:
    url = parse_database_url("postgresql://u:hunter2@h/db")
    error = DatabaseUnavailableError(url, OSError("connection refused\nIs the server running?"))
    assert str(error) == "cannot reach database postgresql://u:***@h:5432/db: connection refused"
    assert isinstance(error, SagalogError)
    assert isinstance(error, ConnectionError)
    raw = DatabaseUnavailableError("postgresql://u:hunter2@h/db", "timeout")
    assert str(raw) == "cannot reach database postgresql://u:***@h/db: timeout"
    echoed = DatabaseUnavailableError(url, "bad conninfo 'password=hunter2 host=h'")
    assert "hunter2" not in str(echoed)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)


# -- the eventsourcing environment -------------------------------------------------


def test_memory_env_names_the_popo_saga_factory_and_recorder() -> None:
    env = parse_database_url("memory://").eventsourcing_env("")
    assert env == {
        "PERSISTENCE_MODULE": f"{RECORDERS}:POPOSagaFactory",
        "PROCESS_RECORDER_TOPIC": f"{RECORDERS}:POPOSagaRecorder",
        "APPLICATION_RECORDER_TOPIC": f"{RECORDERS}:POPOSagaRecorder",
    }


def test_sqlite_env() -> None:
    env = parse_database_url("sqlite:////data/s.db").eventsourcing_env("")
    assert env == {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": "/data/s.db",
        "SQLITE_LOCK_TIMEOUT": str(DEFAULT_SQLITE_LOCK_TIMEOUT),
        "PROCESS_RECORDER_TOPIC": f"{RECORDERS}:SQLiteSagaRecorder",
        "APPLICATION_RECORDER_TOPIC": f"{RECORDERS}:SQLiteSagaRecorder",
    }
    timed = parse_database_url("sqlite:///s.db?lock_timeout=30").eventsourcing_env("")
    assert timed["SQLITE_LOCK_TIMEOUT"] == "30"


def test_sqlite_memory_env_is_a_private_shared_cache_database() -> None:
    url = parse_database_url("sqlite:///:memory:")
    first = url.eventsourcing_env("")["SQLITE_DBNAME"]
    second = url.eventsourcing_env("")["SQLITE_DBNAME"]
    assert first.startswith("file:sagalog-")
    assert first.endswith("?mode=memory&cache=shared")
    assert first != second


def test_postgresql_env_has_only_what_the_url_says_plus_required_keys() -> None:
    env = parse_database_url("postgresql://saga@h/db").eventsourcing_env("")
    assert env == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "db",
        "POSTGRES_HOST": "h",
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": "saga",
        "POSTGRES_PASSWORD": "",
        "PROCESS_RECORDER_TOPIC": f"{RECORDERS}:PostgresSagaRecorder",
        "APPLICATION_RECORDER_TOPIC": f"{RECORDERS}:PostgresSagaRecorder",
        "TRACKING_RECORDER_TOPIC": f"{RECORDERS}:PostgresSagaTrackingRecorder",
    }


def test_postgresql_env_with_every_option() -> None:
    env = parse_database_url(
        "postgresql://saga:pw@h:6000/db?schema=s&pool_size=2&max_overflow=1&connect_timeout=4"
    ).eventsourcing_env("")
    assert {k: v for k, v in env.items() if k.startswith("POSTGRES_")} == {
        "POSTGRES_DBNAME": "db",
        "POSTGRES_HOST": "h",
        "POSTGRES_PORT": "6000",
        "POSTGRES_USER": "saga",
        "POSTGRES_PASSWORD": "pw",
        "POSTGRES_SCHEMA": "s",
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "1",
        "POSTGRES_CONNECT_TIMEOUT": "4",
    }


def test_env_keys_are_prefixed_with_the_application_name() -> None:
    url = parse_database_url("memory://")
    assert set(url.eventsourcing_env()) == {
        "SAGAMANAGER_PERSISTENCE_MODULE",
        "SAGAMANAGER_PROCESS_RECORDER_TOPIC",
        "SAGAMANAGER_APPLICATION_RECORDER_TOPIC",
    }
    assert all(key.startswith("MYAPP_") for key in url.eventsourcing_env("MyApp"))


def test_process_layer_does_not_import_infrastructure() -> None:
    import ast
    from pathlib import Path

    import sagalog.process.store.url as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert all(name.split(".")[0] != "eventsourcing" for name in imported)
    assert all(
        not name.startswith("sagalog.") or name == "sagalog.domain.errors" for name in imported
    )


def test_the_application_env_defaults_the_postgres_pool_to_one_connection() -> None:
    url = parse_database_url("postgresql://saga@h/db")
    env = url.application_env("SagaManager", environ={})
    assert env["SAGAMANAGER_POSTGRES_POOL_SIZE"] == str(DEFAULT_POSTGRES_POOL_SIZE) == "1"
    assert {k: v for k, v in env.items() if k != "SAGAMANAGER_POSTGRES_POOL_SIZE"} == (
        url.eventsourcing_env("SagaManager")
    )


@pytest.mark.parametrize(
    ("url", "environ"),
    [
        ("postgresql://saga@h/db?pool_size=4", {}),
        ("postgresql://saga@h/db", {"POSTGRES_POOL_SIZE": "4"}),
        ("postgresql://saga@h/db", {"SAGAMANAGER_POSTGRES_POOL_SIZE": "4"}),
    ],
)
def test_a_pool_size_from_the_url_or_the_environment_is_left_alone(
    url: str, environ: dict[str, str]
) -> None:
    env = parse_database_url(url).application_env("SagaManager", environ=environ)
    assert env.get("SAGAMANAGER_POSTGRES_POOL_SIZE") in (None, "4")
    assert env.get("SAGAMANAGER_POSTGRES_POOL_SIZE") != str(DEFAULT_POSTGRES_POOL_SIZE)


@pytest.mark.parametrize("url", ["memory://", "sqlite:///x.db"])
def test_other_backends_get_no_pool_default(url: str) -> None:
    parsed = parse_database_url(url)
    assert parsed.application_env("SagaManager", environ={}).keys() == (
        parsed.eventsourcing_env("SagaManager").keys()
    )


def test_a_postgresql_url_gives_its_libpq_connection_string() -> None:
    from psycopg.conninfo import conninfo_to_dict

    url = parse_database_url("postgresql://saga:s3cret@db.example:6543/sagas?schema=app")
    assert conninfo_to_dict(url.conninfo(connect_timeout=3)) == {
        "host": "db.example",
        "port": "6543",
        "user": "saga",
        "dbname": "sagas",
        "password": "s3cret",
        "connect_timeout": "3",
    }
