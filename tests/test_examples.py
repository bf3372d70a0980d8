"""The runnable examples in examples/ run, as scripts and on every backend, and do what they say."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from uuid import UUID

import pytest

from sagalog.domain import SagaStatus
from sagalog.process import SagaManager

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def examples() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))


def _example(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["money_transfer.py", "approval.py"])
def test_each_example_runs_as_a_script(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "FAILED" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_money_transfer_completes_one_and_refunds_the_other(
    examples: None, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = _example("money_transfer").main(database_url)
    assert statuses == {"alice -> bob": SagaStatus.COMPLETED, "alice -> carol": SagaStatus.FAILED}
    out = capsys.readouterr().out
    assert "account carol is closed" in out
    assert "balances: {'alice': 70, 'bob': 50}" in out  # carol's 50 was refunded to alice


def test_the_approval_expires_by_its_timeout_and_a_revocation_aborts_it(
    examples: None, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    story = _example("approval").main(database_url)
    expired, revoked = story["P-1 (expired)"], story["P-2 (revoked)"]
    assert expired[:3] == ["SagaStarted", "StepDispatched", "StepTimedOut"]
    assert expired[-1] == "SagaFailed"
    # granted, budget reserved, order placed, then the revocation aborts it
    assert revoked.count("StepCompleted") == 2
    assert revoked.index("SagaAborted") > revoked.index("StepCompleted")
    assert revoked[-1] == "SagaFailed"
    out = capsys.readouterr().out
    assert "'reserve_budget' (1 attempt)" in out
    assert "'approve' (1 attempt)" in out
    assert "aborted because of upstream event approval:ApprovalRequest.Revoked@" in out
    assert "budget reserved: {}" in out


@pytest.mark.slow
def test_the_worker_runs_the_money_transfer_participants(tmp_path: Path) -> None:
    """As the example's docstring says: `start` then `worker --transport in-process`."""
    url = f"sqlite:///{tmp_path / 'transfers.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), *sys.path])}
    common = ["--database-url", url, "--definitions", "money_transfer:TRANSFER"]
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagalog.infrastructure.cli",
            "start",
            "MoneyTransfer",
            "--data",
            '{"from": "alice", "to": "bob", "amount": 30}',
            *common,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    saga_id = UUID(started.stdout.strip())
    stderr_path = tmp_path / "worker.err"
    with stderr_path.open("w") as err:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagalog.infrastructure.cli",
                "worker",
                *common,
                "--transport",
                "in-process",
                "--participants",
                "money_transfer:participants",
                "--tick-interval",
                "0.05",
                "--poll-interval",
                "0.05",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        manager = SagaManager([], url)
        try:
            deadline = time.monotonic() + 120
            while manager.get(saga_id).status is not SagaStatus.COMPLETED:
                assert worker.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, stderr_path.read_text()
                time.sleep(0.05)
        finally:
            manager.close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, stderr_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert "commands sent" in stderr_path.read_text()
