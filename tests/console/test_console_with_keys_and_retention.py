"""The console with encryption at rest and retention.

Without the store key the console refuses to start in one ``error:`` line (as every
command does), and a store that becomes encrypted under a running console answers one
line with 503, never a traceback. With the key it shows the data; a forgotten saga's
page says who erased its data, when and why. A saga retention archived is a 404 that
says so, and the list no longer shows it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import uvicorn
from console_support import Client, _free_port
from support.sagas import ORDER, T0
from typer.testing import CliRunner

from sagalog.infrastructure.cli import app
from sagalog.infrastructure.console.app import create_app
from sagalog.infrastructure.console.guard import ConsoleGuard
from sagalog.infrastructure.console.reading import ConsoleStore
from sagalog.infrastructure.retention import RetentionPolicy, retire_sagas
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.process.store.encryption import new_key
from sagalog.process.store.shredding import ERASED
from sagalog.projections import SagaProjector

SECRET = "DE89370400440532013000"
KEYS = {"SAGALOG_ENCRYPTION_KEYS": new_key("k1")}


def completed(manager: SagaManager) -> UUID:
    saga_id = manager.start("Order", {"iban": SECRET})
    for step in ("reserve", "charge", "ship", "notify"):
        manager.handle_step_completed(saga_id, step, {"ref": SECRET})
    return saga_id


@contextmanager
def served(manager: SagaManager) -> Iterator[Client]:
    """A read-only console over ``manager``'s store on a free port."""
    projector = SagaProjector(manager)
    port = _free_port()
    config = uvicorn.Config(
        create_app(ConsoleStore(manager, projector), ConsoleGuard(None)),
        host="127.0.0.1",
        port=port,
        log_level="critical",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the console did not start"
        time.sleep(0.05)
    try:
        yield Client(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        projector.close()


def test_without_the_key_the_console_refuses_to_start_in_one_line(
    database_url: str, requires_database: None
) -> None:
    writer = SagaManager([ORDER], database_url, env=KEYS)
    completed(writer)
    writer.close()
    result = CliRunner().invoke(
        app,
        ["console", "--database-url", database_url, "--definitions", "support.sagas:DEFINITIONS"],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: the saga store is encrypted")
    assert "Traceback" not in result.output


def test_a_store_encrypted_under_a_running_console_answers_one_line(
    database_url: str, requires_database: None
) -> None:
    bare = SagaManager([ORDER], database_url)  # opened while the store is still empty
    writer = SagaManager([ORDER], database_url, env=KEYS)
    saga_id = completed(writer)
    try:
        with served(bare) as client:
            api = client.get(f"/api/sagas/{saga_id}")
            assert api.status == 503
            assert json.loads(api.text)["error"].startswith("the saga store is encrypted")
            page = client.get(f"/sagas/{saga_id}")
            assert page.status == 503
            assert "the saga store is encrypted" in page.text
            assert "Traceback" not in page.text
            assert SECRET not in page.text
    finally:
        writer.close()
        bare.close()


def test_with_the_key_it_shows_the_data_and_a_forgotten_saga_says_who_erased_it(
    database_url: str, requires_database: None
) -> None:
    manager = SagaManager([ORDER], database_url, env=KEYS)
    kept = completed(manager)
    gone = completed(manager)
    manager.forget(gone, actor="dpo@example.com", reason="erasure request 17")
    try:
        with served(manager) as client:
            shown = client.json(f"/api/sagas/{kept}")
            assert shown["erased"] is None
            assert shown["events"][0]["data"] == {"iban": SECRET}

            erased = client.json(f"/api/sagas/{gone}")
            assert erased["erased"]["actor"] == "dpo@example.com"
            assert erased["erased"]["reason"] == "erasure request 17"
            assert erased["erased"]["at"]
            assert erased["events"][0]["data"] == {ERASED: True}
            assert SECRET not in json.dumps(erased)
            page = client.get(f"/sagas/{gone}")
            assert page.status == 200
            assert "data was erased by dpo@example.com" in page.text
            assert "erasure request 17" in page.text
            assert SECRET not in page.text
    finally:
        manager.close()


def test_a_retired_saga_is_a_404_that_says_it_was_archived(
    database_url: str, requires_database: None, tmp_path: Path
) -> None:
    clock = ManualClock(T0)
    manager = SagaManager([ORDER], database_url, clock=clock)
    retired = completed(manager)
    manager.start("Order", {"n": 2})  # holds the newest event (SQLite keeps that saga)
    clock.advance(timedelta(days=31))
    archive = tmp_path / "retired.jsonl.gz"
    try:
        with served(manager) as client:
            listed = client.json("/api/sagas")
            assert str(retired) in json.dumps(listed)
            report = retire_sagas(
                manager,
                RetentionPolicy.parse("30d", ["COMPLETED"]),
                archive=archive,
                actor="ops",
                reason="monthly",
            )
            assert report.sagas == 1
            api = client.get(f"/api/sagas/{retired}")
            assert api.status == 404
            message = json.loads(api.text)["error"]
            assert "retention archived 1 sagas" in message
            assert str(archive) in message
            page = client.get(f"/sagas/{retired}")
            assert page.status == 404
            assert "sagalog restore" in page.text
            assert str(retired) not in json.dumps(client.json("/api/sagas"))
            never = client.get("/api/sagas/00000000-0000-4000-8000-000000000000")
            assert never.status == 404
    finally:
        manager.close()
