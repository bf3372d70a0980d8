"""Dead letters with store keys set: the broker keeps them encrypted; with the keys they read
and replay as they were sent, without them they read as ``<encrypted>`` and do not replay."""

from __future__ import annotations

import json

import pika
import pytest

from sagalog.infrastructure.rabbitmq.dead_letters import (
    HEADER_DEAD_LETTER_REASON,
    HEADER_DEAD_LETTER_SEALED,
    publish_dead_letter,
    read_dead_letters,
    replay_dead_letters,
)
from sagalog.infrastructure.rabbitmq.topology import Topology, channel_to
from sagalog.process.store.encryption import EncryptionKeyMissingError, new_key

SECRET = "IBAN-DE89370400440532013000"


def test_a_dead_letter_is_kept_encrypted_and_replayed_in_the_clear(
    broker_url: str, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key("k1")
    monkeypatch.setenv("SAGALOG_ENCRYPTION_KEYS", key)
    body = json.dumps({"result": {"iban": SECRET}}).encode()
    queue = topology.replies_dead_letter_queue
    with channel_to(broker_url) as channel:
        topology.declare(channel)
        publish_dead_letter(
            channel,
            queue,
            pika.BasicProperties(message_id="m-1", headers={}),
            body,
            origin=topology.replies_queue,
            reason=f"invalid reply: result {SECRET} refused",
        )
        method, props, raw = channel.basic_get(queue, auto_ack=False)
        assert method is not None
        assert props is not None
        assert raw is not None
        assert SECRET.encode() not in raw
        headers = dict(props.headers or {})
        assert SECRET not in json.dumps(headers)
        assert headers[HEADER_DEAD_LETTER_REASON] == "<encrypted>"
        assert headers[HEADER_DEAD_LETTER_SEALED] == "k1"
        channel.basic_nack(method.delivery_tag or 0, requeue=True)

    (letter,) = read_dead_letters(queue, broker_url)
    assert letter.body == body
    assert SECRET in letter.reason

    monkeypatch.delenv("SAGALOG_ENCRYPTION_KEYS")
    (locked,) = read_dead_letters(queue, broker_url)
    assert locked.reason == "<encrypted>"
    assert SECRET.encode() not in locked.body
    with pytest.raises(EncryptionKeyMissingError, match="dead letters are encrypted"):
        replay_dead_letters(topology, queue, broker_url, actor="ops", reason="retry")

    monkeypatch.setenv("SAGALOG_ENCRYPTION_KEYS", key)
    (replayed,) = replay_dead_letters(topology, queue, broker_url, actor="ops", reason="retry")
    assert replayed.body == body
    with channel_to(broker_url) as channel:
        method, props, raw = channel.basic_get(topology.replies_queue, auto_ack=True)
        assert method is not None
        assert props is not None
        assert raw == body  # the participant's reply again, as it was sent
        assert HEADER_DEAD_LETTER_SEALED not in (props.headers or {})
