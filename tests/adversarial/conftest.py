"""Fixtures of the adversarial tests: issue 15's cases, kept as regressions.

The broker fixtures mirror ``tests/infrastructure/conftest.py``: each test gets its
own exchange and queues under a fresh prefix (``sagalog-adv-…``), deleted afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from helpers import Background

from sagalog.infrastructure.messaging.transport import TransportError

if TYPE_CHECKING:
    from sagalog.infrastructure.rabbitmq import Topology


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The test broker's URL; skip (or fail in CI) when it cannot be reached."""
    from sagalog.infrastructure.rabbitmq import connect

    url = os.environ.get("SAGALOG_TEST_RABBITMQ_URL", "").strip() or (
        "amqp://guest:guest@127.0.0.1:5672/%2F"
    )
    try:
        connect(url, name="sagalog-test-probe").close()
    except TransportError as exc:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(f"RabbitMQ unusable in CI: {exc}")
        pytest.skip(f"RabbitMQ unusable: {exc}")
    return url


@pytest.fixture
def topology(broker_url: str) -> Iterator[Topology]:
    """A fresh exchange/queue namespace for this test, deleted afterwards."""
    from sagalog.infrastructure.rabbitmq import channel_to, unique_topology

    names = unique_topology("sagalog-adv")
    yield names
    with channel_to(broker_url) as channel:
        names.delete(channel, services=["inventory"])


@pytest.fixture
def background() -> Iterator[Background]:
    """Threads for consumers and participants, stopped and joined after the test."""
    runner = Background()
    try:
        yield runner
    finally:
        runner.close()
