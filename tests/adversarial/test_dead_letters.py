"""Issue 15, case 4: dead-letter queues are bounded, measured, and an operator drains them.

The dead-letter queues used to be declared with no bounds (2,040 letters, 400 MB kept
whole) and only a library function drained them. Now they are declared with a length,
a byte and an age bound (oldest dropped first), an existing unbounded queue is kept
with a warning instead of failing the declaration, their depth is a metric, and
``sagalog dead-letters list | replay | purge`` read, replay (recording who and why) and
drop them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest
from helpers import publish_raw
from prometheus_client import generate_latest
from support.broker import wait_until
from typer.testing import CliRunner

from sagalog.infrastructure.cli import app
from sagalog.infrastructure.observability.metrics import SagaMetrics
from sagalog.infrastructure.rabbitmq import Topology, dead_letter_depths, read_dead_letters
from sagalog.infrastructure.rabbitmq.dead_letters import (
    HEADER_DEAD_LETTER_QUEUE,
    HEADER_DEAD_LETTER_REASON,
    HEADER_REPLAYED_BY,
)
from sagalog.infrastructure.rabbitmq.topology import channel_to, queue_depth


def _sagalog(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _letter(broker_url: str, topology: Topology, message_id: str) -> None:
    """A reply dead-lettered as the reply consumer does it."""
    publish_raw(
        broker_url,
        topology.replies_dead_letter_queue,
        json.dumps({"message_id": message_id}).encode(),
        message_id,
        headers={
            HEADER_DEAD_LETTER_REASON: "unknown saga",
            HEADER_DEAD_LETTER_QUEUE: topology.replies_queue,
        },
    )


def test_a_dead_letter_queue_keeps_at_most_its_length_dropping_the_oldest(
    broker_url: str, topology: Topology
) -> None:
    bounded = dataclasses.replace(topology, dead_letter_max_length=3)
    with channel_to(broker_url) as channel:
        bounded.declare(channel)
    for n in range(5):
        _letter(broker_url, bounded, f"m{n}")
    letters = read_dead_letters(bounded.replies_dead_letter_queue, broker_url)
    assert [letter.message_id for letter in letters] == ["m2", "m3", "m4"]


def test_a_dead_letter_expires_after_its_age_bound(broker_url: str, topology: Topology) -> None:
    short = dataclasses.replace(topology, dead_letter_ttl_ms=50)
    with channel_to(broker_url) as channel:
        short.declare(channel)
    _letter(broker_url, short, "old")
    wait_until(
        lambda: queue_depth(short.replies_dead_letter_queue, broker_url) == 0,
        "the letter to expire",
    )


def test_the_bounds_are_the_documented_defaults() -> None:
    arguments = Topology("x").dead_letter_arguments()
    assert arguments == {
        "x-max-length": 100_000,
        "x-max-length-bytes": 1024**3,
        "x-message-ttl": 14 * 24 * 3600 * 1000,
        "x-overflow": "drop-head",
    }
    assert Topology("x", None, None, None).dead_letter_arguments() == {}


def test_an_existing_unbounded_dead_letter_queue_is_kept_with_a_warning(
    broker_url: str, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    with channel_to(broker_url) as channel:
        channel.queue_declare(topology.replies_dead_letter_queue, durable=True)  # as before
        with caplog.at_level(logging.WARNING, logger="sagalog.rabbitmq"):
            topology.declare(channel)  # PRECONDITION_FAILED is handled, the channel lives
        channel.queue_declare(topology.replies_queue, passive=True)
    warned = [r.getMessage() for r in caplog.records if "exists with other arguments" in r.message]
    assert len(warned) == 1
    assert topology.replies_dead_letter_queue in warned[0]
    assert "dead-letters purge --delete-queue" in warned[0]


def test_the_depth_of_each_dead_letter_queue_is_a_metric(
    broker_url: str, topology: Topology
) -> None:
    with channel_to(broker_url) as channel:
        topology.declare(channel)
    _letter(broker_url, topology, "a")
    _letter(broker_url, topology, "b")
    metrics = SagaMetrics()
    metrics.watch_dead_letters(lambda: dead_letter_depths(topology, broker_url))
    text = generate_latest(metrics.registry).decode()
    assert f'sagalog_dead_letter_messages{{queue="{topology.replies_dead_letter_queue}"}} 2.0' in (
        text
    )
    assert f'sagalog_dead_letter_messages{{queue="{topology.commands_dead_letter_queue}"}} 0.0' in (
        text
    )


def test_operators_list_replay_and_purge_dead_letters(
    broker_url: str, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    with channel_to(broker_url) as channel:
        topology.declare(channel)
    for message_id in ("r1", "r2", "r3"):
        _letter(broker_url, topology, message_id)
    where = ("--rabbitmq-url", broker_url, "--rabbitmq-prefix", topology.prefix)

    listed = _sagalog("dead-letters", "list", *where, "--json")
    assert listed.exit_code == 0, listed.output
    assert [(x["message_id"], x["reason"]) for x in json.loads(listed.stdout)] == [
        ("r1", "unknown saga"),
        ("r2", "unknown saga"),
        ("r3", "unknown saga"),
    ]

    with caplog.at_level(logging.WARNING, logger="sagalog.rabbitmq"):
        replayed = _sagalog(
            "dead-letters", "replay", *where, "--message-id", "r2",
            "--actor", "alice", "--reason", "saga restored",
        )  # fmt: skip
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 letters" in replayed.stdout
    [back] = read_dead_letters(topology.replies_queue, broker_url)
    assert back.message_id == "r2"
    assert back.headers[HEADER_REPLAYED_BY] == "alice"
    assert HEADER_DEAD_LETTER_REASON not in back.headers
    assert any("replayed" in r.getMessage() and "alice" in r.getMessage() for r in caplog.records)
    remaining = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
    assert [letter.message_id for letter in remaining] == ["r1", "r3"]

    purged = _sagalog("dead-letters", "purge", *where, "--actor", "alice", "--reason", "triaged")
    assert purged.exit_code == 0, purged.output
    assert "2 letters dropped" in purged.stdout
    assert queue_depth(topology.replies_dead_letter_queue, broker_url) == 0


def test_dead_letter_commands_refuse_unstorable_actors_and_bad_queues(
    broker_url: str, topology: Topology
) -> None:
    where = ("--rabbitmq-url", broker_url, "--rabbitmq-prefix", topology.prefix)
    bad_actor = _sagalog("dead-letters", "purge", *where, "--actor", "a\x00", "--reason", "r")
    assert bad_actor.exit_code == 2
    assert "actor contains the character U+0000" in bad_actor.stderr
    bad_queue = _sagalog("dead-letters", "list", *where, "--queue", "nope")
    assert bad_queue.exit_code == 2
    assert "--queue takes replies or commands" in bad_queue.stderr
