"""Helpers shared by the CLI tests (no tests here).

The CLI runs each command as a fresh application, so the ``memory`` backend
cannot carry sagas from one command to the next: there the CLI tests use a
SQLite file. :func:`shared_store` gives a module a database of its own on the
selected backend, for tests that only read.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner

from sagalog.domain import RetryPolicy, SagaDefinition, Step
from sagalog.infrastructure.cli import app
from sagalog.process import SagaManager, parse_database_url
from sagalog.process.clock import ManualClock

runner = CliRunner()

#: ``demo --sagas 40 --seed 1 --stuck-rate 0.3`` ends 32 completed, 6 compensated, 2 dead-lettered.
DEMO_ARGS = ("--sagas", "40", "--seed", "1", "--stuck-rate", "0.3")


#: A definition the CLI does not register (it knows the demo's): operator actions on
#: its sagas work all the same, because each saga stores the definition it runs.
CLI_SHOP = SagaDefinition(
    "CliShop",
    [
        Step(
            name="reserve",
            action="Inventory.Reserve",
            compensation="Inventory.Release",
            timeout=timedelta(seconds=30),
            compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
        ),
        Step(name="charge", action="Payment.Charge", compensation="Payment.Refund"),
        Step(name="ship", action="Shipping.Create", compensation="Shipping.Cancel"),
        Step(
            name="notify",
            action="Mail.Send",
            retriable=True,
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
        ),
    ],
)

#: When the seeded sagas ran: long enough ago that every wait is overdue now.
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def seed_sagas(url: str) -> dict[str, str]:
    """Record one ``CliShop`` saga per situation in ``url``; their ids by situation.

    completed; compensated (FAILED); dead_action and dead_compensation
    (DEAD_LETTERED); compensating (waits for a compensation: COMPENSATING);
    running (waits on a step without timeout); waiting (its deadline passed,
    no timer fired: nobody ticked).
    """
    clock = ManualClock(T0)
    manager = SagaManager([CLI_SHOP], url, clock=clock)
    ids: dict[str, str] = {}
    try:
        s = manager.start("CliShop", {"n": "completed"})
        for step in ("reserve", "charge", "ship", "notify"):
            manager.handle_step_completed(s, step)
        ids["completed"] = str(s)

        s = manager.start("CliShop", {"n": "compensated"})
        manager.handle_step_completed(s, "reserve")
        manager.handle_step_failed(s, "charge", "card declined")
        manager.handle_compensation_completed(s, "reserve")
        ids["compensated"] = str(s)

        s = manager.start("CliShop", {"n": "dead_action"})
        for step in ("reserve", "charge", "ship"):
            manager.handle_step_completed(s, step)
        manager.handle_step_failed(s, "notify", "smtp down")
        manager.tick(clock.advance(2))
        manager.handle_step_failed(s, "notify", "smtp down")
        ids["dead_action"] = str(s)

        s = manager.start("CliShop", {"n": "dead_compensation"})
        manager.handle_step_completed(s, "reserve")
        manager.handle_step_failed(s, "charge", "declined")
        manager.handle_compensation_failed(s, "reserve", "warehouse offline")
        manager.tick(clock.advance(6))
        manager.handle_compensation_failed(s, "reserve", "warehouse offline")
        ids["dead_compensation"] = str(s)

        s = manager.start("CliShop", {"n": "compensating"})
        for step in ("reserve", "charge"):
            manager.handle_step_completed(s, step)
        manager.handle_step_failed(s, "ship", "no courier")  # refund has no timeout
        ids["compensating"] = str(s)

        s = manager.start("CliShop", {"n": "running"})
        manager.handle_step_completed(s, "reserve")
        ids["running"] = str(s)

        ids["waiting"] = str(manager.start("CliShop", {"n": "waiting"}))
    finally:
        manager.close()
    return ids


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``sagalog *args`` in-process; the click ``Result``."""
    return runner.invoke(app, list(args), env=env)


def invoke_json(*args: str) -> Any:
    """Run ``sagalog *args --json``, check it succeeded, and parse its stdout."""
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_demo(url: str) -> str:
    """Fill ``url`` with the demo's 40 sagas; return ``url``."""
    result = invoke("demo", "--database-url", url, *DEMO_ARGS)
    assert result.exit_code == 0, result.output
    return url


def ids_by_status(url: str) -> dict[str, list[str]]:
    """Saga ids in ``url`` by status (through ``sagalog list --json``)."""
    found: dict[str, list[str]] = {}
    for row in invoke_json("list", "--database-url", url, "--limit", "1000"):
        found.setdefault(row["status"], []).append(row["saga_id"])
    return found


def cli_url_for(backend: str, database_url: str, tmp_path: Path) -> str:
    """The CLI tests' database: the backend's, or a SQLite file for ``memory``."""
    return f"sqlite:///{tmp_path / 'cli.db'}" if backend == "memory" else database_url


@contextmanager
def shared_store(backend: str, directory: Path) -> Iterator[str]:
    """A database for one test module: a SQLite file, or a PostgreSQL schema dropped after."""
    if backend != "postgres":
        yield f"sqlite:///{directory / 'shared.db'}"
        return
    import psycopg
    from psycopg import sql

    server = os.environ.get("SAGALOG_TEST_POSTGRES_URL", "").strip() or (
        "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    target = parse_database_url(server)
    params: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "dbname": target.dbname,
        "autocommit": True,
    }
    if target.password:
        params["password"] = target.password
    schema = f"t_{uuid.uuid4().hex}"
    try:
        with psycopg.connect(**params, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL backend selected but unusable: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "y", "on", "t"}:
            pytest.fail(reason)
        pytest.skip(reason)
    parts = urlsplit(server)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", schema)]
    try:
        yield urlunsplit(parts._replace(query=urlencode(query)))
    finally:
        with psycopg.connect(**params) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
