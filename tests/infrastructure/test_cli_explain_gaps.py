"""``sagalog explain`` tells a command still in the outbox from one sent, and says an abort once."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_helpers import CLI_SHOP, cli_url_for, invoke

from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.process import SagaManager


@pytest.fixture
def url(backend: str, database_url: str, tmp_path: Path) -> str:
    return cli_url_for(backend, database_url, tmp_path)


def _explain(url: str, saga_id: object) -> str:
    result = invoke("explain", str(saga_id), "--database-url", url)
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def test_a_command_the_relay_never_sent_is_said_to_be_in_the_outbox(url: str) -> None:
    manager = SagaManager([CLI_SHOP], url)
    try:
        saga_id = manager.start("CliShop", {"n": 1})
        unsent = _explain(url, saga_id)
        assert "Inventory.Reserve" in unsent
        assert "is still in the outbox: the relay has not sent it" in unsent
        assert "position 0 of 2 in the log (2 behind, 1 command waiting)" in unsent
        assert "It waits for the reply" not in unsent

        transport = InProcessTransport()
        transport.subscribe_all(lambda command: None)  # received; no reply yet
        relay = CommandRelay(manager, transport)
        try:
            assert relay.drain() == 1
        finally:
            relay.close()
        sent = _explain(url, saga_id)
        assert "It waits for the reply to Inventory.Reserve" in sent
        assert "outbox" not in sent
    finally:
        manager.close()


def test_an_aborted_saga_names_who_and_why_once(url: str) -> None:
    manager = SagaManager([CLI_SHOP], url)
    try:
        saga_id = manager.start("CliShop", {"n": 2})
        manager.abort(saga_id, actor="bob", reason="customer cancelled")
    finally:
        manager.close()
    text = _explain(url, saga_id)
    assert "It was aborted by bob: customer cancelled." in text
    assert "aborted by bob: aborted by bob" not in text
