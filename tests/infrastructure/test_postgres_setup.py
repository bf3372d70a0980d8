"""PostgreSQL setup a new user meets first: a ``?schema=`` that does not exist yet, a dead port.

The schema is created (or refused in one clear line when the role may not create it);
the CLI waits a few seconds for a connection, not eventsourcing's 30, and says so
configurably (``?connect_timeout=``, ``SAGALOG_CONNECT_TIMEOUT``).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from test_cli_helpers import invoke, invoke_json

from sagalog.domain import SagaDefinition, Step
from sagalog.infrastructure.cli import opening
from sagalog.process import DatabaseUnavailableError, SagaManager, parse_database_url

ONE_STEP = SagaDefinition("OneStep", [Step(name="only", action="Only.Do")])


@pytest.fixture
def server(backend: str, database_url: str) -> str:
    """The test PostgreSQL server's URL, without a schema (PostgreSQL runs only)."""
    if backend != "postgres":
        pytest.skip("PostgreSQL setup")
    return urlsplit(database_url)._replace(query="").geturl()


def _admin(server: str) -> Any:
    import psycopg

    url = parse_database_url(server)
    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.user, dbname=url.dbname, autocommit=True
    )


def _with(server: str, **params: str) -> str:
    parts = urlsplit(server)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return parts._replace(query=query).geturl()


def test_a_schema_that_does_not_exist_is_created(server: str) -> None:
    schema = f"new_{uuid.uuid4().hex[:12]}"
    url = _with(server, schema=schema)
    try:
        manager = SagaManager([ONE_STEP], url)
        try:
            saga_id = manager.start("OneStep", {})
        finally:
            manager.close()
        rows = invoke_json("list", "--database-url", url)
        assert [row["saga_id"] for row in rows] == [str(saga_id)]
    finally:
        with _admin(server) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_schema_the_role_may_not_create_is_one_clear_error(server: str) -> None:
    role = f"nocreate_{uuid.uuid4().hex[:10]}"
    schema = f"new_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        parts = urlsplit(server)
        host = parts.netloc.rpartition("@")[2]
        url = parts._replace(netloc=f"{role}@{host}", query=f"schema={schema}").geturl()
        with pytest.raises(DatabaseUnavailableError) as info:
            SagaManager([ONE_STEP], url)
        message = str(info.value)
        assert f"schema {schema!r} does not exist and could not be created" in message
        assert f"CREATE SCHEMA {schema}" in message
        result = invoke("worker", "--database-url", url)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1
        assert "could not be created" in result.stderr
    finally:
        with _admin(server) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_cli_connect_timeout_is_short_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(opening.CONNECT_TIMEOUT_ENV_VAR, raising=False)

    def timeout_of(url: str) -> list[str]:
        text = opening._with_connect_timeout(url)
        assert text is not None
        return parse_qs(urlsplit(text).query)["connect_timeout"]

    pg = "postgresql://postgres@127.0.0.1:5432/postgres?schema=s1"
    assert timeout_of(pg) == [str(opening.DEFAULT_CONNECT_TIMEOUT)]
    assert opening.DEFAULT_CONNECT_TIMEOUT <= 10
    assert parse_qs(urlsplit(opening._with_connect_timeout(pg) or "").query)["schema"] == ["s1"]
    assert timeout_of(pg + "&connect_timeout=20") == ["20"]
    monkeypatch.setenv(opening.CONNECT_TIMEOUT_ENV_VAR, "2")
    assert timeout_of(pg) == ["2"]
    assert opening._with_connect_timeout("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv(opening.CONNECT_TIMEOUT_ENV_VAR, "soon")
    result = invoke("list", "--database-url", pg)
    assert result.exit_code == 2
    assert "SAGALOG_CONNECT_TIMEOUT must be a whole number of seconds" in result.stderr


def test_an_unreachable_port_is_one_line_naming_the_database() -> None:
    result = invoke("list", "--database-url", "postgresql://postgres@127.0.0.1:1/postgres")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "127.0.0.1:1" in result.stderr


def test_ddl_that_postgres_rolls_back_as_a_deadlock_is_run_again(
    server: str,
) -> None:
    """A manager built while workers write may lose a deadlock on its DDL: run again, not fatal."""
    from eventsourcing.persistence import PersistenceError

    from sagalog.infrastructure.persistence.postgres import create_again_if_concurrent

    manager = SagaManager([ONE_STEP], server)
    datastore = manager.recorder.datastore  # type: ignore[attr-defined]
    runs: list[str] = []

    def create() -> None:
        runs.append("run")
        if len(runs) == 1:  # PostgreSQL's own refusal, as the deadlock detector raises it
            with datastore.transaction(commit=True) as curs:
                curs.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' "
                    "USING ERRCODE = 'deadlock_detected'; END $$"
                )

    def refused() -> None:
        runs.append("refused")
        with datastore.transaction(commit=True) as curs:
            curs.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'permission denied' "
                "USING ERRCODE = 'insufficient_privilege'; END $$"
            )

    try:
        create_again_if_concurrent(create)
        assert runs == ["run", "run"]
        with pytest.raises(PersistenceError):
            create_again_if_concurrent(refused)  # not a collision: raised at once
        assert runs == ["run", "run", "refused"]
    finally:
        manager.close()


def test_many_managers_constructed_at_once_on_one_store_all_start(server: str) -> None:
    """Their DDL runs one after another under the DDL lock instead of colliding in the catalogs."""
    import threading

    url = _with(server, schema=f"many_{uuid.uuid4().hex[:12]}")
    SagaManager([ONE_STEP], url).close()  # the store exists: only the DDL's re-runs race
    barrier = threading.Barrier(16)
    failures: list[BaseException] = []
    managers: list[SagaManager] = []

    def construct() -> None:
        barrier.wait()
        try:
            managers.append(SagaManager([ONE_STEP], url))
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=construct) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(managers) == 16
    finally:
        for manager in managers:
            manager.close()
        with _admin(server) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{urlsplit(url).query.split("=")[1]}" CASCADE')
