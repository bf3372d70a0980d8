"""A worker that meets an event under a store key it lacks stops in one line, no traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.worker import Worker, WorkerError
from sagalog.process import SagaManager
from sagalog.process.store.encryption import new_key

K1 = new_key("k1")
K2 = new_key("k2")


def test_a_key_the_worker_lacks_is_logged_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys rotated without restarting the worker: it stops, saying which key, no traceback."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    old = SagaManager(DEMO_DEFINITIONS, url, env={"SAGALOG_ENCRYPTION_KEYS": K1})
    try:
        old.start("OrderFulfillment", {"n": 1})
        rotated = SagaManager(DEMO_DEFINITIONS, url, env={"SAGALOG_ENCRYPTION_KEYS": f"{K2},{K1}"})
        try:
            rotated.start("OrderFulfillment", {"n": 2})  # written under k2
        finally:
            rotated.close()
        worker = Worker(old, tick_interval=0.01, poll_interval=0.01)
        with caplog.at_level(logging.ERROR), pytest.raises(WorkerError, match="'k2'"):
            worker.run()
        worker.close()
    finally:
        old.close()
    failures = [r for r in caplog.records if "loop failed" in r.getMessage()]
    assert failures, "the failing loop was not logged"
    assert not any(r.exc_info for r in failures)
    assert all("'k2'" in r.getMessage() for r in failures)
