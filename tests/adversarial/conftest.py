"""Fixtures of the adversarial tests: issue 15's cases, kept as regressions.

The broker fixtures mirror ``tests/infrastructure/conftest.py`` (each test gets its
own exchange and queues under a fresh prefix, deleted afterwards); the helpers of
the CLI and broker tests are imported from ``tests/infrastructure``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infrastructure"))

from sagalog.infrastructure.transport import TransportError

if TYPE_CHECKING:
    from sagalog.infrastructure.rabbitmq import Topology

#: The store made by sagalog before issue 15's fix: one saga holds a NUL in a stored error.
NUL_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nul_event.sqlite"


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
        names.delete(channel)
