"""Issue 15, case 1 over the broker and the CLI: unstorable text is refused there too.

A reply whose error, result or message id holds a NUL (or a lone surrogate) is
dead-lettered with the field named and writes nothing; the participant helper writes
such characters in an exception's text visibly, so the saga still learns that its
step failed; an operator's actor or reason holding one is refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import first_command_id, publish_raw
from support.broker import Background, wait_until
from typer.testing import CliRunner

from sagalog.domain import Command, Saga
from sagalog.infrastructure.cli import app
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.rabbitmq import (
    RabbitMQTransport,
    ReplyConsumer,
    Topology,
    read_dead_letters,
)
from sagalog.infrastructure.services.participant import Participant, reply_to
from sagalog.process import SagaManager


def _first_command(manager: SagaManager, saga_id: Any) -> Command:
    dispatched = [e for e in manager.history(saga_id) if isinstance(e, Saga.StepDispatched)]
    return dispatched[0].command()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outcome": "failed", "error": "declined\u0000"}, "error of step"),
        ({"result": {"note": "a\u0000b"}}, "result of step"),
        ({"message_id": "m\u0000"}, "message_id"),
    ],
    ids=["error", "result", "message_id"],
)
def test_a_reply_with_a_nul_is_dead_lettered_naming_the_field_and_writes_nothing(
    broker_url: str,
    topology: Topology,
    database_url: str,
    background: Background,
    changes: dict[str, Any],
    field: str,
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        before = manager.history(saga_id)
        consumer = ReplyConsumer(manager, broker_url, topology=topology)
        background.start("replies", consumer.run)
        wait_until(consumer.ready.is_set, "the reply consumer to consume")
        reply = {
            "message_id": "m1",
            "saga_id": str(saga_id),
            "command_id": first_command_id(saga_id),
            "step": "reserve_inventory",
            "outcome": "completed",
            **changes,
        }
        publish_raw(broker_url, topology.replies_queue, json.dumps(reply).encode(), "bad")
        wait_until(lambda: consumer.dead_lettered == 1, "the reply to be dead-lettered")
        [letter] = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
        assert letter.error == "InvalidPayloadError"
        assert field in letter.reason
        assert "U+0000" in letter.reason
        assert manager.history(saga_id) == before
    finally:
        manager.close()


def test_the_participant_helper_writes_a_nul_in_an_exception_visibly() -> None:
    manager = SagaManager(DEMO_DEFINITIONS, "memory://")
    try:
        saga_id = manager.start("OrderFulfillment", {})
        reply = reply_to(_first_command(manager, saga_id), error="declined\u0000 caf\udce9")
        assert reply.error == "declined\\x00 caf\\udce9"
        manager.handle(reply)
        assert manager.get(saga_id).failure_reason is not None
    finally:
        manager.close()


def test_a_participant_whose_handler_raises_with_a_nul_fails_the_step(
    broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    def reserve(command: Command) -> None:
        raise ValueError("card declined\u0000")

    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        inventory = Participant(
            "inventory",
            {"InventoryService.ReserveItems": reserve},
            url=broker_url,
            topology=topology,
            max_attempts=1,
        )
        consumer = ReplyConsumer(manager, broker_url, topology=topology)
        background.start("inventory", inventory.run)
        background.start("replies", consumer.run)
        wait_until(inventory.ready.is_set, "the participant to consume")
        wait_until(consumer.ready.is_set, "the reply consumer to consume")
        transport = RabbitMQTransport(broker_url, topology=topology)
        try:
            transport.send(_first_command(manager, saga_id))
        finally:
            transport.close()
        wait_until(lambda: consumer.handled == 1, "the failed reply to be applied")
        failed = [e for e in manager.history(saga_id) if isinstance(e, Saga.StepFailed)]
        assert len(failed) == 1
        assert "card declined\\x00" in failed[0].error
        assert consumer.dead_lettered == 0
    finally:
        manager.close()


def _cli_store(backend: str, database_url: str, tmp_path: Path) -> str:
    if backend == "memory":
        pytest.skip("each CLI command is a new process: memory:// holds nothing between them")
    return database_url if backend == "postgres" else f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.mark.parametrize(
    ("option", "value"), [("--actor", "ops\u0000"), ("--reason", "asked\u0000")]
)
def test_an_operator_action_with_a_nul_is_one_line_and_writes_nothing(
    backend: str, database_url: str, tmp_path: Path, option: str, value: str
) -> None:
    url = _cli_store(backend, database_url, tmp_path)
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        before = manager.history(saga_id)
    finally:
        manager.close()
    arguments = {"--actor": "ops", "--reason": "asked", option: value}
    result = CliRunner().invoke(
        app,
        [
            "abort",
            str(saga_id),
            "--database-url",
            url,
            *(x for kv in arguments.items() for x in kv),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0
    assert f"{option.removeprefix('--')} contains the character U+0000" in result.stderr
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:
        assert manager.history(saga_id) == before
    finally:
        manager.close()


@pytest.mark.slow
def test_an_operator_reason_that_is_not_unicode_is_refused_from_a_real_command_line(
    tmp_path: Path,
) -> None:
    """Bytes that are not UTF-8 on a command line reach Python as lone surrogates."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        before = manager.history(saga_id)
    finally:
        manager.close()
    done = subprocess.run(
        [
            os.fsencode(sys.executable), b"-m", b"sagalog.infrastructure.cli", b"abort",
            str(saga_id).encode(), b"--actor", b"ops", b"--reason", b"caf\xe9",
            b"--database-url", url.encode(),
        ],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert b"reason must be valid Unicode text" in done.stderr
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:
        assert manager.history(saga_id) == before
    finally:
        manager.close()
