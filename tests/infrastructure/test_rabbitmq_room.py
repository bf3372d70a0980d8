"""The RabbitMQ room: one package of role modules behind the names the single module had."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import sagalog.infrastructure.rabbitmq as rabbitmq

#: Every public name ``sagalog.infrastructure.rabbitmq`` had as one module, by its new
#: name, and the role module that defines it now.
HOMES = {
    "topology": [
        "BROKER_ERRORS",
        "DEFAULT_DEAD_LETTER_MAX_BYTES",
        "DEFAULT_DEAD_LETTER_MAX_LENGTH",
        "DEFAULT_DEAD_LETTER_TTL_MS",
        "DEFAULT_RABBITMQ_URL",
        "HEADER_ATTEMPT",
        "HEADER_CAUSATION_ID",
        "HEADER_COMMAND_ID",
        "HEADER_CORRELATION_ID",
        "HEADER_KIND",
        "HEADER_SAGA_TYPE",
        "HEADER_STEP",
        "RABBITMQ_URL_ENV_VAR",
        "Topology",
        "channel_to",
        "check_rabbitmq_url",
        "close_quietly",
        "connect",
        "queue_depth",
        "rabbitmq_url",
        "unique_topology",
    ],
    "transport": ["RabbitMQTransport", "command_properties"],
    "consumer": ["ConsumerLoop", "ReceivedMessage"],
    "replies": [
        "DATABASE_ERRORS",
        "DEFAULT_REPLY_BATCH_BYTES",
        "DEFAULT_REPLY_BATCH_SIZE",
        "DEFAULT_REPLY_BATCH_WAIT",
        "INVALID_REPLY_ERRORS",
        "DeadLetterCallback",
        "ReplyCallback",
        "ReplyConsumer",
        "publish_reply",
        "reply_properties",
    ],
    "dead_letters": [
        "DEAD_LETTER_KEPT_BYTES",
        "HEADER_DEAD_LETTER_AT",
        "HEADER_DEAD_LETTER_ATTEMPTS",
        "HEADER_DEAD_LETTER_ERROR",
        "HEADER_DEAD_LETTER_QUEUE",
        "HEADER_DEAD_LETTER_REASON",
        "HEADER_DEAD_LETTER_TRUNCATED_FROM",
        "HEADER_REPLAYED_AT",
        "HEADER_REPLAYED_BY",
        "HEADER_REPLAYED_REASON",
        "DeadLetteredMessage",
        "dead_letter_depths",
        "publish_dead_letter",
        "purge_dead_letters",
        "read_dead_letters",
        "replay_dead_letters",
    ],
    "events": [
        "RabbitMQEventBus",
        "RabbitMQEventSubscriber",
        "delete_event_queues",
        "event_properties",
        "events_exchange",
        "events_queue",
        "publish_event",
    ],
}


#: What the room exports itself: what an application wires up (the first tier).
EXPORTED = {
    "ConsumerLoop",
    "DeadLetteredMessage",
    "RabbitMQEventBus",
    "RabbitMQEventSubscriber",
    "RabbitMQTransport",
    "ReceivedMessage",
    "ReplyConsumer",
    "Topology",
    "dead_letter_depths",
    "publish_reply",
    "purge_dead_letters",
    "read_dead_letters",
    "replay_dead_letters",
}


def test_the_package_exports_the_first_tier_from_the_role_modules() -> None:
    assert sorted(rabbitmq.__all__) == sorted(EXPORTED)
    for module, names in HOMES.items():
        home = importlib.import_module(f"sagalog.infrastructure.rabbitmq.{module}")
        for name in set(names) & EXPORTED:
            assert getattr(rabbitmq, name) is getattr(home, name), (module, name)


def test_every_name_the_single_module_had_still_resolves_from_the_package() -> None:
    """The second tier lives in the role modules; the package still hands it out, warning."""
    for module, names in HOMES.items():
        home = importlib.import_module(f"sagalog.infrastructure.rabbitmq.{module}")
        for name in set(names) - EXPORTED:
            with pytest.warns(DeprecationWarning, match=f"now {home.__name__}.{name}"):
                assert getattr(rabbitmq, name) is getattr(home, name), (module, name)


@pytest.mark.parametrize(
    ("old", "new"), [("DeadLetter", "DeadLetteredMessage"), ("Delivery", "ReceivedMessage")]
)
def test_a_renamed_class_still_resolves_under_its_old_name_with_a_warning(
    old: str, new: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old} is now .*[.]{new}"):
        assert getattr(rabbitmq, old) is getattr(rabbitmq, new)


def test_a_name_the_package_never_had_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        rabbitmq.NoSuchName  # noqa: B018


def _import_without_pika(module: str) -> subprocess.CompletedProcess[str]:
    """Import ``module`` in a fresh interpreter where ``import pika`` fails."""
    code = f"import sys; sys.modules['pika'] = None; import {module}"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_without_pika_the_room_refuses_to_import_and_in_process_choreography_still_works() -> None:
    refused = _import_without_pika("sagalog.infrastructure.rabbitmq")
    assert refused.returncode != 0
    assert "ImportError" in refused.stderr or "ModuleNotFoundError" in refused.stderr
    kept = _import_without_pika("sagalog.infrastructure.services.choreography")
    assert kept.returncode == 0, kept.stderr
