"""The CLI and the worker on a user's ``SagaManager`` subclass (``--app``), as a new user has it.

On PostgreSQL the subclass's tables are named after it; a CLI or worker that opened
``sagamanager_*`` instead would see no sagas and fire no timeouts, so they refuse,
in one line, a store that holds another manager's sagas.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from uuid import UUID

import pytest
import test_cli_worker as worker_support
import transfer_app
from test_cli_helpers import invoke, invoke_json

from sagalog.domain import SagaStatus
from sagalog.process import saga_id_for

APP = "transfer_app:TransferSagas"

pytestmark = pytest.mark.requires_database(reason="the CLI and the worker are other processes")


def _one_saga_started_in_a_system(url: str) -> str:
    """Run the System once: an upstream event starts a transfer saga; return its id."""
    runner = transfer_app.runner(url)
    runner.start()
    try:
        transfer_id = runner.get(transfer_app.Transfers).request(amount=40)
        saga_id = saga_id_for("MoneyTransfer", transfer_id)
        assert runner.get(transfer_app.TransferSagas).get(saga_id).status is SagaStatus.PENDING
    finally:
        runner.stop()
    return str(saga_id)


def test_the_cli_reads_the_subclass_store_and_refuses_to_guess(
    backend: str, database_url: str
) -> None:
    saga_id = _one_saga_started_in_a_system(database_url)

    listed = invoke_json("list", "--database-url", database_url, "--app", APP)
    assert [row["saga_id"] for row in listed] == [saga_id]
    shown = invoke("show", saga_id, "--database-url", database_url, "--app", APP)
    assert shown.exit_code == 0, shown.output
    assert "MoneyTransfer" in shown.stdout
    by_env = invoke("list", "--database-url", database_url, env={"SAGALOG_APP": APP})
    assert by_env.exit_code == 0, by_env.output
    assert saga_id in by_env.stdout
    by_name = invoke_json("list", "--database-url", database_url, "--app", "TransferSagas")
    assert [row["saga_id"] for row in by_name] == [saga_id]

    plain = invoke("list", "--database-url", database_url)
    if backend == "postgres":  # SQLite stores do not name tables per application
        assert plain.exit_code == 2
        assert plain.stderr.startswith("error: ")
        assert plain.stderr.count("\n") == 1
        assert "'transfersagas'" in plain.stderr
        assert "--app" in plain.stderr
        assert "no sagas" not in plain.stdout


def test_the_worker_fires_the_subclass_sagas_timeouts(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    saga_id = _one_saga_started_in_a_system(database_url)
    if backend == "postgres":
        refused = worker_support.WorkerProcess(database_url, tmp_path)
        assert refused.process.wait(60) == 2
        assert "'transfersagas'" in refused.stderr
        assert "--app" in refused.stderr

    worker = worker_support.WorkerProcess(database_url, tmp_path, "--app", APP)
    try:
        worker.wait_ready()
        sagas = transfer_app.TransferSagas(database_url=database_url)
        try:
            deadline = time.monotonic() + 120
            while sagas.get(UUID(saga_id)).status is SagaStatus.PENDING:
                assert worker.process.poll() is None, worker.stderr
                assert time.monotonic() < deadline, f"no timeout fired:\n{worker.stderr}"
                time.sleep(0.1)
            saga = sagas.get(UUID(saga_id))
            history = [type(event).__name__ for event in sagas.history(UUID(saga_id))]
        finally:
            sagas.close()
        assert worker.stop(signal.SIGINT) == 0, worker.stderr
    finally:
        worker.kill()
    # The timeout moved the saga on: the debit may have been made, so it is refunded.
    assert saga.status is SagaStatus.COMPENSATING
    assert history[:5] == [
        "SagaStarted",
        "StepDispatched",
        "StepTimedOut",
        "CompensationRequested",
        "CompensationDispatched",
    ]
    assert "1 sagas moved by timers" in worker.stderr
