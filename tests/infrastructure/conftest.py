"""Fixtures for tests against the real local RabbitMQ broker.

``broker_url`` makes sure the broker at ``SAGALOG_TEST_RABBITMQ_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/%2F``) answers: if it does not and the URL is
local, it runs ``rabbitmq-server -detached`` once and waits (bounded) for it. If
the broker still cannot be reached the test is skipped with the reason on a
laptop, and *fails* when ``CI`` is true, where a silent skip would hide it.

``topology`` gives each test its own exchange and queues (a fresh prefix) and
deletes them afterwards, so tests never see each other's messages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING

import pytest
from broker import Background, rabbitmqctl

from sagalog.infrastructure.messaging.transport import TransportError

if TYPE_CHECKING:  # pika is imported only by the tests that use the broker
    from sagalog.infrastructure.rabbitmq import Topology

RABBITMQ_URL_ENV_VAR = "SAGALOG_TEST_RABBITMQ_URL"
DEFAULT_TEST_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
BROKER_START_TIMEOUT = 90.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in _TRUE


def _try_connect(url: str) -> str | None:
    from sagalog.infrastructure.rabbitmq import connect

    try:
        connect(url, name="sagalog-test-probe").close()
    except TransportError as exc:
        return str(exc)
    return None


@cache
def _broker_unreachable_reason(url: str) -> str | None:
    """Why the test broker cannot be used (after trying to start it), or None."""
    reason = _try_connect(url)
    if reason is None:
        return None
    local = "@127.0.0.1" in url or "@localhost" in url
    server = shutil.which("rabbitmq-server")
    if not local or server is None:
        return reason + ("" if server else " (and rabbitmq-server is not installed)")
    subprocess.run(
        [server, "-detached"], check=False, capture_output=True, timeout=60
    )  # returns at once; the node boots in the background
    deadline = time.monotonic() + BROKER_START_TIMEOUT
    while time.monotonic() < deadline:
        reason = _try_connect(url)
        if reason is None:
            return None
        time.sleep(1.0)
    return f"{reason} (started rabbitmq-server, still unreachable after {BROKER_START_TIMEOUT}s)"


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The URL of a running RabbitMQ broker (started if needed); skip or fail otherwise."""
    url = os.environ.get(RABBITMQ_URL_ENV_VAR, "").strip() or DEFAULT_TEST_RABBITMQ_URL
    reason = _broker_unreachable_reason(url)
    if reason is not None:
        if _in_ci():
            pytest.fail(f"RabbitMQ unusable in CI: {reason}")
        pytest.skip(f"RabbitMQ unusable: {reason}")
    return url


@pytest.fixture
def topology(broker_url: str) -> Iterator[Topology]:
    """A fresh exchange/queue namespace for this test, deleted afterwards."""
    from sagalog.infrastructure.rabbitmq import channel_to, unique_topology

    names = unique_topology("sagalog-test")
    yield names
    with channel_to(broker_url) as channel:
        names.delete(channel, services=_services_of(names))


def _services_of(topology: Topology) -> list[str]:
    """Services whose queues exist under ``topology``'s prefix (found with rabbitmqctl)."""
    listed = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name")
    prefix = topology.service_queue("")
    return [line.strip()[len(prefix) :] for line in listed if line.strip().startswith(prefix)]


@pytest.fixture
def background() -> Iterator[Background]:
    """Background threads for consumers, participants and relays, stopped after the test."""
    runner = Background()
    try:
        yield runner
    finally:
        runner.close()
