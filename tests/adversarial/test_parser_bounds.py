"""Issue 15, cases 2 and 3: every parser has bounds, and a bomb costs one dead letter.

A command nested 100,000 deep used to kill a participant with ``RecursionError`` on
every redelivery; replies were bounded by count only. Now a body is checked for size,
depth and item count before it is parsed, an unreadable message is dead-lettered with
the reason, and the consumer goes on with the next. Reply batches are bounded by bytes
as well as by count. Hypothesis throws arbitrary JSON at both parsers: each answers
with a parsed message or its typed error, never anything else.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from helpers import first_command_id, publish_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.broker import Background, wait_until

from sagalog.domain import Command, CommandKind
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.bounds import (
    COMMAND_BOUNDS,
    REPLY_BOUNDS,
    MessageBounds,
    MessageBoundsError,
    check_message_bounds,
)
from sagalog.infrastructure.rabbitmq import (
    ConsumerLoop,
    RabbitMQTransport,
    ReceivedMessage,
    ReplyConsumer,
    Topology,
    read_dead_letters,
)
from sagalog.infrastructure.rabbitmq.dead_letters import (
    DEAD_LETTER_KEPT_BYTES,
    HEADER_DEAD_LETTER_TRUNCATED_FROM,
)
from sagalog.infrastructure.services.participant import (
    InvalidCommandError,
    Participant,
    command_from_message,
)
from sagalog.process import InvalidReplyError, Reply, SagaManager

DEEP = 100_000


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _command(**changes: Any) -> dict[str, Any]:
    message = Command(
        command_id=uuid4(),
        saga_id=uuid4(),
        saga_type="OrderFulfillment",
        step="reserve_inventory",
        kind=CommandKind.ACTION,
        name="InventoryService.ReserveItems",
        attempt=1,
        payload={"data": {}, "results": {}},
        deadline=None,
    ).to_message()
    message.update(changes)
    return message


# -- the bounds themselves --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        (_nested(DEEP), "nests deeper than"),
        (b'{"payload": ' + _nested(300) + b"}", "nests deeper than"),
        (b"[" + b'"x",' * 600_000 + b"1]", "bytes; the limit"),
        (b" " * (REPLY_BOUNDS.max_bytes + 1), "bytes; the limit"),
    ],
    ids=["deep", "deep-inside", "wide", "large"],
)
def test_a_bomb_breaks_a_named_bound_before_anything_is_parsed(body: bytes, limit: str) -> None:
    with pytest.raises(MessageBoundsError, match=limit):
        check_message_bounds(body, REPLY_BOUNDS, "reply")


def test_the_item_count_is_bounded_separately_from_the_size() -> None:
    bounds = MessageBounds(max_bytes=10_000_000, max_items=1000)
    with pytest.raises(MessageBoundsError, match="more than 1000"):
        check_message_bounds(b"[" + b"[]," * 2000 + b"1]", bounds)
    check_message_bounds(b"[" + b"1," * 2000 + b"1]", bounds)  # numbers are bounded by size


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = json.dumps({"text": "[" * 10_000 + '\\"{' * 100}).encode()
    check_message_bounds(body, MessageBounds(max_bytes=1_000_000, max_depth=2))


# -- the command parser (participants) --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        _nested(DEEP),
        json.dumps(_command()).encode()[:-1] + b', "x": ' + _nested(DEEP) + b"}",
        b" " * (COMMAND_BOUNDS.max_bytes + 1),
    ],
    ids=["deep", "deep-field", "large"],
)
def test_a_command_bomb_is_an_invalid_command_not_a_crash(body: bytes) -> None:
    with pytest.raises(InvalidCommandError, match="unreadable command"):
        command_from_message(body)


def test_a_participant_dead_letters_a_nesting_bomb_and_handles_the_next_command(
    broker_url: str, topology: Topology, background: Background
) -> None:
    handled: list[str] = []
    inventory = Participant(
        "inventory",
        {"InventoryService.ReserveItems": lambda command: handled.append(command.step)},
        url=broker_url,
        topology=topology,
    )
    background.start("inventory", inventory.run)
    wait_until(inventory.ready.is_set, "the participant to consume")
    publish_raw(broker_url, inventory.queue, _nested(DEEP), "c-bomb")
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        transport.send(command_from_message(json.dumps(_command())))
    finally:
        transport.close()
    wait_until(lambda: inventory.handled == 1, "the good command")
    assert "inventory" not in background.errors
    [letter] = read_dead_letters(topology.commands_dead_letter_queue, broker_url)
    assert letter.message_id == "c-bomb"
    assert letter.error == "InvalidCommandError"
    assert "nests deeper than" in letter.reason


# -- the reply parser (the worker's reply consumer) -------------------------------------


def test_the_reply_consumer_dead_letters_bombs_and_handles_the_next_reply(
    broker_url: str, topology: Topology, background: Background, database_url: str
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        consumer = ReplyConsumer(manager, broker_url, topology=topology)
        background.start("replies", consumer.run)
        wait_until(consumer.ready.is_set, "the reply consumer to consume")
        queue = topology.replies_queue
        good = {
            "message_id": "m-good",
            "saga_id": str(saga_id),
            "command_id": first_command_id(saga_id),
            "step": "reserve_inventory",
            "outcome": "completed",
        }
        publish_raw(broker_url, queue, _nested(DEEP), "m-deep")
        big = dict(good, message_id="m-big", result={"blob": "x" * (2 * 1024 * 1024)})
        publish_raw(broker_url, queue, json.dumps(big).encode(), "m-big")
        publish_raw(broker_url, queue, json.dumps(good).encode(), "m-good")
        wait_until(lambda: consumer.handled == 1, "the good reply")
        assert "replies" not in background.errors
        letters = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
        assert [(x.message_id, x.error) for x in letters] == [
            ("m-deep", "MessageBoundsError"),
            ("m-big", "MessageBoundsError"),
        ]
        assert "nests deeper than" in letters[0].reason
        assert "bytes; the limit" in letters[1].reason
        # The oversized reply is kept cut, not whole: a flood must not fill the broker.
        assert len(letters[1].body) == DEAD_LETTER_KEPT_BYTES
        assert letters[1].headers[HEADER_DEAD_LETTER_TRUNCATED_FROM] > 2 * 1024 * 1024
        assert manager.get(saga_id).steps["reserve_inventory"].status.value == "COMPLETED"
    finally:
        manager.close()


def _delivery(size: int) -> ReceivedMessage:
    """A received message of ``size`` bytes (only its body matters to batching)."""
    return ReceivedMessage(channel=None, method=None, properties=None, body=b"x" * size)  # type: ignore[arg-type]


def test_a_batch_is_bounded_by_bytes_as_well_as_by_count() -> None:
    from collections import deque

    loop = ConsumerLoop(None, Topology("sagalog-adv-unused"), connection_name="t")
    loop.prefetch = 10
    loop.max_batch_bytes = 100
    received = deque(_delivery(size) for size in (40, 40, 40, 500, 1, 1))
    batches = []
    while received:
        batches.append([len(d.body) for d in loop._take_batch(received)])
    # Two of 40 fit in 100 bytes; a message larger than the bound is a batch alone.
    assert batches == [[40, 40], [40], [500], [1, 1]]
    loop.max_batch_bytes = None
    received = deque(_delivery(1) for _ in range(25))
    assert len(loop._take_batch(received)) == 10  # the count bound alone


def test_the_reply_consumer_bounds_its_batches_by_bytes() -> None:
    manager = SagaManager(DEMO_DEFINITIONS, "memory://")
    try:
        consumer = ReplyConsumer(manager, "amqp://guest:guest@127.0.0.1:1/%2F")
        assert consumer.max_batch_bytes == 16 * 1024 * 1024
        with pytest.raises(ValueError, match="max_batch_bytes"):
            ReplyConsumer(manager, "amqp://guest:guest@127.0.0.1:1/%2F", max_batch_bytes=0)
    finally:
        manager.close()


# -- the property test ------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)

#: Messages that look like replies or commands, with any field replaced by any JSON.
reply_like = st.fixed_dictionaries(
    {},
    optional={
        "message_id": json_values | st.text(),
        "saga_id": json_values | st.uuids().map(str),
        "step": json_values | st.just("reserve_inventory"),
        "outcome": json_values | st.sampled_from(["completed", "failed"]),
        "kind": json_values | st.sampled_from(["action", "compensation"]),
        "attempt": json_values | st.integers(),
        "result": json_values,
        "error": json_values | st.text(),
    },
)
command_like = st.builds(
    lambda base, extra: {**base, **extra},
    st.builds(_command),
    st.dictionaries(
        st.sampled_from(
            ["command_id", "saga_id", "saga_type", "step", "kind", "name", "attempt",
             "payload", "deadline", "causation_id"]
        ),
        json_values,
    ),
)  # fmt: skip

anything = json_values | reply_like | command_like


def _reply_side(body: bytes) -> object:
    """What the reply consumer does with a body: bounds, then the reply parser."""
    check_message_bounds(body, REPLY_BOUNDS, "reply")
    return Reply.parse(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=anything, nesting=st.integers(min_value=0, max_value=2000))
def test_arbitrary_json_gets_a_message_or_a_typed_error_from_both_parsers(
    value: Any, nesting: int
) -> None:
    body = b"[" * nesting + json.dumps(value).encode("utf-8", "surrogatepass") + b"]" * nesting
    try:
        parsed = _reply_side(body)
        assert isinstance(parsed, Reply)
    except (InvalidReplyError, MessageBoundsError):
        pass
    try:
        command = command_from_message(body)
        assert isinstance(command, Command)
    except InvalidCommandError:
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes_get_a_typed_error_from_both_parsers(body: bytes) -> None:
    with pytest.raises((InvalidReplyError, MessageBoundsError)):
        _reply_side(body + b"\xff")  # never valid UTF-8 JSON
    with pytest.raises(InvalidCommandError):
        command_from_message(body + b"\xff")
