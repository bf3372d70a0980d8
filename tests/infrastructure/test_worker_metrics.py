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
