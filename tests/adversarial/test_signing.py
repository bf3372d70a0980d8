"""Replies (and commands) signed per participant service with HMAC over RabbitMQ.

Issue 15 asked that, optionally and on by default in the RabbitMQ setup, commands and
replies be signed with a key shared per participant service, and that unsigned or
wrongly signed replies be dead-lettered. (Binding a reply to the command id it answers
is the manager's part, tested with it.)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from helpers import first_command_id, publish_raw
from support.broker import Background, wait_until

from sagalog.domain import Command, Saga
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.signing import (
    HEADER_SIGNATURE,
    HEADER_SIGNER,
    SignatureError,
    SigningKeys,
)
from sagalog.infrastructure.rabbitmq import (
    RabbitMQTransport,
    ReplyConsumer,
    Topology,
    read_dead_letters,
)
from sagalog.infrastructure.services.participant import Participant
from sagalog.process import SagaManager

INVENTORY_KEY = "inventory-secret-0123456789"
PAYMENT_KEY = "payment-secret-0123456789ab"
KEYS = SigningKeys({"InventoryService": INVENTORY_KEY, "PaymentService": PAYMENT_KEY})


def test_a_signature_verifies_only_for_its_kind_service_id_and_body() -> None:
    headers = KEYS.sign("reply", "InventoryService", "m1", b"{}")
    assert KEYS.verify("reply", headers, "m1", b"{}") == "InventoryService"
    for kind, message_id, body in (("command", "m1", b"{}"), ("reply", "m2", b"{}"),
                                   ("reply", "m1", b"{ }")):  # fmt: skip
        with pytest.raises(SignatureError, match="does not verify"):
            KEYS.verify(kind, headers, message_id, body)  # type: ignore[arg-type]
    moved = {**headers, HEADER_SIGNER: "PaymentService"}
    with pytest.raises(SignatureError, match="does not verify"):
        KEYS.verify("reply", moved, "m1", b"{}")
    with pytest.raises(SignatureError, match="not by 'PaymentService'"):
        KEYS.verify("reply", headers, "m1", b"{}", service="PaymentService")
    with pytest.raises(SignatureError, match="unsigned reply"):
        KEYS.verify("reply", {}, "m1", b"{}")
    forged = SigningKeys({"InventoryService": "attacker-guessed-key-000"})
    with pytest.raises(SignatureError, match="does not verify"):
        KEYS.verify("reply", forged.sign("reply", "InventoryService", "m1", b"{}"), "m1", b"{}")


def test_keys_come_from_the_environment_and_are_never_shown() -> None:
    keys = SigningKeys.from_env({"SAGALOG_SIGNING_KEYS": f"InventoryService={INVENTORY_KEY}"})
    assert keys is not None
    assert keys.services == {"InventoryService"}
    assert INVENTORY_KEY not in repr(keys)
    assert SigningKeys.from_env({}) is None
    with pytest.raises(ValueError, match="at least 16"):
        SigningKeys({"InventoryService": "short"})
    with pytest.raises(ValueError, match="Service=secret"):
        SigningKeys.from_env({"SAGALOG_SIGNING_KEYS": "no-equals-sign"})


def _first_command(manager: SagaManager, saga_id: Any) -> Command:
    dispatched = [e for e in manager.history(saga_id) if isinstance(e, Saga.StepDispatched)]
    return dispatched[-1].command()


def _reply(saga_id: Any, message_id: str) -> bytes:
    return json.dumps(
        {
            "message_id": message_id,
            "saga_id": str(saga_id),
            "command_id": first_command_id(saga_id),
            "step": "reserve_inventory",
            "outcome": "completed",
        }
    ).encode()


def test_signed_commands_and_replies_flow_and_bad_signatures_are_dead_lettered(
    broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    worker_side = dataclasses.replace(topology, signing=KEYS)
    inventory_side = dataclasses.replace(
        topology, signing=SigningKeys({"InventoryService": INVENTORY_KEY})
    )
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        consumer = ReplyConsumer(manager, broker_url, topology=worker_side)
        inventory = Participant(
            "inventory",
            {"InventoryService.ReserveItems": lambda command: {"reserved": True}},
            url=broker_url,
            topology=inventory_side,
        )
        background.start("replies", consumer.run)
        background.start("inventory", inventory.run)
        wait_until(consumer.ready.is_set, "the reply consumer to consume")
        wait_until(inventory.ready.is_set, "the participant to consume")
        queue = worker_side.replies_queue

        # Forged replies first: unsigned, signed with a guessed key, signed by another
        # service (whose key is real) for an inventory step.
        forged, spoofed, unsigned = (manager.start("OrderFulfillment", {}) for _ in range(3))
        publish_raw(broker_url, queue, _reply(unsigned, "r-unsigned"), "r-unsigned")
        guessed = SigningKeys({"InventoryService": "attacker-guessed-key-000"})
        body = _reply(forged, "r-forged")
        signed = guessed.sign("reply", "InventoryService", "r-forged", body)
        publish_raw(broker_url, queue, body, "r-forged", headers=signed)
        body = _reply(spoofed, "r-spoofed")
        signed = KEYS.sign("reply", "PaymentService", "r-spoofed", body)
        publish_raw(broker_url, queue, body, "r-spoofed", headers=signed)
        # An unsigned command to the participant.
        publish_raw(broker_url, inventory.queue, b"{}", "c-unsigned")
        wait_until(lambda: consumer.dead_lettered == 3, "the forged replies dead-lettered")
        wait_until(lambda: inventory.signatures_refused == 1, "the unsigned command refused")
        letters = read_dead_letters(worker_side.replies_dead_letter_queue, broker_url)
        assert [(x.message_id, x.error) for x in letters] == [
            ("r-unsigned", "SignatureError"),
            ("r-forged", "SignatureError"),
            ("r-spoofed", "SignatureError"),
        ]
        assert "unsigned reply" in letters[0].reason
        assert "does not verify" in letters[1].reason
        assert "answers a command of 'InventoryService'" in letters[2].reason
        for saga_id in (forged, spoofed, unsigned):
            assert manager.get(saga_id).steps["reserve_inventory"].status.value == "DISPATCHED"
        [command_letter] = read_dead_letters(worker_side.commands_dead_letter_queue, broker_url)
        assert (command_letter.message_id, command_letter.error) == ("c-unsigned", "SignatureError")

        # The real thing: a command signed by the relay's transport, answered and signed
        # by the participant, verified and applied by the consumer.
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        transport = RabbitMQTransport(broker_url, topology=worker_side)
        try:
            transport.send(_first_command(manager, saga_id))
        finally:
            transport.close()
        wait_until(lambda: consumer.handled == 1, "the signed reply to be applied")
        assert manager.get(saga_id).steps["reserve_inventory"].status.value == "COMPLETED"
        assert inventory.handled == 1
    finally:
        manager.close()


def test_the_relay_refuses_to_send_a_command_it_has_no_key_for(
    broker_url: str, topology: Topology, database_url: str
) -> None:
    from sagalog.infrastructure.messaging.transport import TransportError

    only_payments = dataclasses.replace(
        topology, signing=SigningKeys({"PaymentService": PAYMENT_KEY})
    )
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    transport = RabbitMQTransport(broker_url, topology=only_payments)
    try:
        saga_id = manager.start("OrderFulfillment", {})
        with pytest.raises(TransportError, match="no signing key for service 'InventoryService'"):
            transport.send(_first_command(manager, saga_id))
    finally:
        transport.close()
        manager.close()


def test_signatures_travel_in_the_documented_headers() -> None:
    headers = KEYS.sign("command", "InventoryService", "c1", b"{}")
    assert set(headers) == {HEADER_SIGNER, HEADER_SIGNATURE}
    assert headers[HEADER_SIGNATURE].startswith("v1:")
