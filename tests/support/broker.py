"""The broker tests' helpers and fixtures (no tests here), for every folder that talks to RabbitMQ.

``tests/conftest.py`` loads this module as a plugin (``pytest_plugins``), so its fixtures
are everywhere: ``broker_url`` makes sure the broker at ``SAGALOG_TEST_RABBITMQ_URL``
(default ``amqp://guest:guest@127.0.0.1:5672/%2F``) answers — if it does not and the URL
is local, it runs ``rabbitmq-server -detached`` once and waits (bounded) for it; if the
broker still cannot be reached the test is skipped with the reason on a laptop, and
*fails* when ``CI`` is true, where a silent skip would hide it. ``topology`` gives each
test its own exchange and queues (a fresh prefix) and deletes them afterwards, so tests
never see each other's messages. ``background`` runs consumers in threads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pika is imported only by the tests that use the broker
    from sagalog.infrastructure.rabbitmq import Topology

RABBITMQ_URL_ENV_VAR = "SAGALOG_TEST_RABBITMQ_URL"
DEFAULT_TEST_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
BROKER_START_TIMEOUT = 90.0
#: Services whose queues a test's topology always deletes, found by rabbitmqctl or not.
KNOWN_SERVICES = ("inventory",)


def rabbitmqctl(*args: str) -> list[str]:
    """The output lines of ``rabbitmqctl args...``; none when it is not installed."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return []
    done = subprocess.run([ctl, *args], check=False, capture_output=True, text=True, timeout=60)
    return done.stdout.splitlines()


def close_connections(name_prefix: str) -> int:
    """Make the broker close every connection whose name starts with ``name_prefix``.

    A real connection loss, caused by the broker (``rabbitmqctl close_connection``).
    Returns how many connections it closed.
    """
    closed = 0
    listed = rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "client_properties")
    for line in listed:
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{name_prefix}' in props:
            rabbitmqctl("close_connection", pid.strip(), "sagalog test: simulated loss")
            closed += 1
    return closed


def wait_until(
    condition: Callable[[], bool], message: str = "condition", *, timeout: float = 60.0
) -> None:
    """Poll ``condition`` until true; fail naming ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    if condition():
        return
    pytest.fail(f"timed out after {timeout}s waiting for: {message}")


class Background:
    """Runs ``target(stop)`` callables in threads; stops and joins them on exit.

    An exception that ends a thread is kept in ``errors`` (by thread name) so the
    test can assert on it; on exit, threads are joined with a bounded wait.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str, target: Callable[[threading.Event], object]) -> threading.Thread:
        def body() -> None:
            try:
                target(self.stop)
            except BaseException as exc:  # kept for the test to inspect
                self.errors[name] = exc

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"background threads did not stop: {alive}"


def worker_command(
    database_url: str, broker_url: str, prefix: str, *options: str, tick: float = 0.1
) -> list[str]:
    """``sagalog worker --transport rabbitmq`` on this store and broker, as a process's argv,
    with quick loops (``options`` go before the loop settings)."""
    return [
        sys.executable,
        "-m",
        "sagalog.infrastructure.cli",
        "worker",
        "--database-url",
        database_url,
        "--transport",
        "rabbitmq",
        "--rabbitmq-url",
        broker_url,
        "--rabbitmq-prefix",
        prefix,
        *options,
        "--tick-interval",
        str(tick),
        "--poll-interval",
        "0.05",
    ]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in _TRUE


def _try_connect(url: str) -> str | None:
    from sagalog.infrastructure.messaging.transport import TransportError
    from sagalog.infrastructure.rabbitmq.topology import connect

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
    from sagalog.infrastructure.rabbitmq.topology import channel_to, unique_topology

    names = unique_topology("sagalog-test")
    yield names
    with channel_to(broker_url) as channel:
        names.delete(channel, services=sorted({*_services_of(names), *KNOWN_SERVICES}))


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
