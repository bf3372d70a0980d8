"""``Worker(metrics_port=...)`` / ``sagalog worker --metrics-port`` serve live metrics."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sagalog.domain import SagaDefinition, Step
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager

ONE_STEP = SagaDefinition("OneStep", [Step(name="a", action="A.Do", timeout=timedelta(seconds=30))])


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([ONE_STEP], database_url)
    yield app
    app.close()


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_serves_metrics_of_what_it_observes(manager: SagaManager) -> None:
    worker = Worker(manager, metrics_port=0, tick_interval=0.05, poll_interval=0.05)
    assert worker.metrics_server is not None
    assert "metrics" in worker.loops
    url = worker.metrics_server.url
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        saga_id = manager.start("OneStep", {})
        manager.handle_step_completed(saga_id, "a")
        key = ("sagalog_sagas_completed_total", frozenset({("saga_type", "OneStep")}))
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for _ in range(200):
            samples = _scrape(url)
            if samples.get(key) == 1.0:
                break
            threading.Event().wait(0.05)
        assert samples.get(key) == 1.0, sorted(k[0] for k in samples)
        assert ("sagalog_stuck_sagas", frozenset({("reason", "DEAD_LETTERED")})) in samples
    finally:
        worker.stop()
        thread.join(10)
        worker.close()
    assert not thread.is_alive()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


class _Sent:
    """A transport that accepts every command."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, command: object) -> None:
        self.sent.append(command)

    def close(self) -> None:
        pass


def test_the_active_worker_reports_re_sent_commands_and_tracking_failures(
    manager: SagaManager, database_url: str
) -> None:
    if database_url.startswith("memory"):
        pytest.skip("the lease (and so the re-send count) needs a shared store")
    transport = _Sent()
    worker = Worker(
        manager,
        transport=transport,
        metrics_port=0,
        tick_interval=0.05,
        poll_interval=0.05,
        lease_seconds=1.0,
    )
    assert worker.metrics_server is not None
    url = worker.metrics_server.url
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        manager.start("OneStep", {})
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for _ in range(200):
            samples = _scrape(url)
            if transport.sent and samples.get(("sagalog_worker_active", frozenset())) == 1.0:
                break
            threading.Event().wait(0.05)
        assert len(transport.sent) == 1
        assert samples[("sagalog_worker_active", frozenset())] == 1.0
        # One worker, no takeover: nothing was sent twice, every position was recorded.
        assert samples[("sagalog_relay_resent_commands_total", frozenset())] == 0.0
        assert samples[("sagalog_relay_tracking_failures_total", frozenset())] == 0.0
    finally:
        worker.stop()
        thread.join(10)
        worker.close()
    assert not thread.is_alive()
