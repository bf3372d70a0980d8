"""Issue 15, case 7: every error of the list prints one line naming its cause, exit 2.

A non-database file as ``--database-url``, a cipher topic without a key and
``--participants os:system`` printed tracebacks; a role or password the server
refuses took 30 s to say "couldn't get a connection"; ``--rabbitmq-url notaurl``
said "list index out of range"; dead-letter reasons repeated the exception type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from helpers import first_command_id, publish_raw
from support.broker import Background, wait_until
from typer.testing import CliRunner

from sagalog.infrastructure.cli import app
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.rabbitmq import ReplyConsumer, Topology, read_dead_letters
from sagalog.process import SagaManager


def _one_line_error(result: Any, *needles: str) -> None:
    """Exit 2, and stderr is one ``error:`` line holding every needle."""
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert "Traceback" not in text
    assert text.count("\n") == 0, text
    assert text.startswith("error: ")
    for needle in needles:
        assert needle in text


def _sagalog(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize("command", [("list",), ("stuck",), ("worker",)])
def test_a_file_that_is_not_a_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, this is not a database\n" * 100)
    result = _sagalog(*command, "--database-url", f"sqlite:///{notes}")
    _one_line_error(result, str(notes), "is not a sagalog database")


def test_a_cipher_topic_without_a_key(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'c.db'}"
    assert _sagalog("demo", "--sagas", "2", "--database-url", store).exit_code == 0
    result = _sagalog("list", "--database-url", store, env={"CIPHER_TOPIC": "helpers:KeyedCipher"})
    _one_line_error(result, "CIPHER_TOPIC", "'CIPHER_KEY' not in env")


def test_participants_that_are_not_a_participants_function(tmp_path: Path) -> None:
    result = _sagalog(
        "worker", "--transport", "in-process", "--participants", "os:system",
        "--database-url", f"sqlite:///{tmp_path / 'w.db'}",
    )  # fmt: skip
    _one_line_error(result, "--participants os:system", "not a function(transport, manager)")


def test_a_role_the_server_refuses_is_named_at_once(backend: str, database_url: str) -> None:
    if backend != "postgres":
        pytest.skip("a PostgreSQL login")
    refused = database_url.replace("postgres@", "sagalog_no_such_role:secret@", 1)
    result = _sagalog("list", "--database-url", refused)
    # The server's own words, not the pool's "couldn't get a connection after 30 s".
    _one_line_error(result, 'role "sagalog_no_such_role" does not exist', "***")
    assert "couldn't get a connection" not in result.stderr
    assert "secret" not in result.stderr


def test_a_rabbitmq_url_that_is_not_one(tmp_path: Path) -> None:
    for url in ("notaurl", "http://user:secret@host/"):
        result = _sagalog(
            "worker", "--transport", "rabbitmq", "--rabbitmq-url", url,
            "--database-url", f"sqlite:///{tmp_path / 'w.db'}",
        )  # fmt: skip
        _one_line_error(result, "--rabbitmq-url: not a RabbitMQ URL", "amqp://")
        assert "secret" not in result.stderr


@pytest.mark.slow
def test_a_subprocess_error_is_one_line_too(tmp_path: Path) -> None:
    """The installed entry point (not only the in-process runner) keeps the promise."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "sagalog.infrastructure.cli", "list",
         "--database-url", f"sqlite:///{notes}"],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr


def test_dead_letter_reasons_do_not_repeat_the_exception_type(
    broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        consumer = ReplyConsumer(manager, broker_url, topology=topology)
        background.start("replies", consumer.run)
        wait_until(consumer.ready.is_set, "the reply consumer to consume")
        unknown = {
            "message_id": "m-nosaga",
            "saga_id": str(unknown := uuid4()),
            "command_id": first_command_id(unknown),
            "step": "reserve_inventory",
            "outcome": "completed",
        }
        publish_raw(broker_url, topology.replies_queue, json.dumps(unknown).encode(), "m-nosaga")
        publish_raw(broker_url, topology.replies_queue, b"{not json", "m-garbage")
        wait_until(lambda: consumer.dead_lettered == 2, "both replies dead-lettered")
        letters = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
        assert [letter.error for letter in letters] == ["SagaNotFoundError", "InvalidReplyError"]
        for letter in letters:
            assert letter.error not in letter.reason
    finally:
        manager.close()
