"""Workers as real processes on one store: a SIGKILLed holder's standby takes over; a fresh
PostgreSQL store's schema is created safely by workers starting at the same instant."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from failover_sagas import TRIP

from sagalog.domain import Saga, SagaStatus
from sagalog.process import SagaManager

HERE = Path(__file__).resolve().parent
LEASE_SECONDS = 1.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def _start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagalog.infrastructure.cli",
                "worker",
                "--database-url",
                url,
                "--tick-interval",
                "0.05",
                "--poll-interval",
                "0.05",
                "--transport",
                "in-process",
                "--participants",
                "test_cli_participants:complete_everything",
                "--lease-seconds",
                str(LEASE_SECONDS),
                "--definitions",
                "failover_sagas:TRIP",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    """Poll ``log`` for ``text``; return when it was seen (``time.monotonic()``)."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the worker died:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.01)
    return time.monotonic()


@pytest.mark.slow
def test_a_killed_holders_standby_takes_over_within_the_lease_time(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    if backend == "memory":
        pytest.skip("workers in other processes need a shared store")
    starter = SagaManager([TRIP], database_url)
    processes: list[subprocess.Popen[bytes]] = []
    takeovers: list[float] = []
    try:
        logs = [tmp_path / "w0.err"]
        processes.append(_start_worker(database_url, logs[0]))
        _wait_for(logs[0], "is active", processes[0], 60)
        sagas = []
        for kill in range(3):
            standby_log = tmp_path / f"w{kill + 1}.err"
            standby = _start_worker(database_url, standby_log)
            processes.append(standby)
            _wait_for(standby_log, "sagalog worker on ", standby, 60)
            sagas += [starter.start("FailoverTrip", {"n": n}) for n in range(20)]
            time.sleep(0.2)  # some of them in flight
            processes[-2].kill()
            killed_at = time.monotonic()
            processes[-2].wait(10)
            takeovers.append(_wait_for(standby_log, "is active", standby, 30) - killed_at)
        deadline = time.monotonic() + 90
        ended = (SagaStatus.COMPLETED, SagaStatus.FAILED)
        while any(starter.get(s).status not in ended for s in sagas):
            assert time.monotonic() < deadline, "the sagas did not end after the takeovers"
            time.sleep(0.05)
        # A saga that did not complete lost a delivery queued in a killed worker's memory:
        # its step timed out, and it was compensated, leaving nothing in force.
        failed = [s for s in sagas if starter.get(s).status is SagaStatus.FAILED]
        for saga_id in failed:
            history = starter.history(saga_id)
            assert any(isinstance(e, Saga.StepTimedOut) for e in history), history
            assert starter.get(saga_id).effects_in_force == []
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        starter.close()
    print(
        f"takeover after SIGKILL ({backend}): {sorted(round(t, 2) for t in takeovers)} s; "
        f"{len(sagas) - len(failed)} of {len(sagas)} sagas completed, the rest compensated "
        "after a delivery lost with a killed worker"
    )
    # The lease runs out at most LEASE_SECONDS after the last renewal; a standby polls
    # every eighth of it (and a log line is read every 10 ms).
    assert max(takeovers) <= LEASE_SECONDS * 1.125 + 0.5


_START_ONE = """
import sys
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager
manager = SagaManager(DEMO_DEFINITIONS, sys.argv[1])
Worker(manager, transport=InProcessTransport()).close()  # the relay's tables too
manager.close()
"""


@pytest.mark.slow
def test_workers_starting_at_once_on_a_fresh_postgres_schema_all_start(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's catalogs are what collide")
    server = os.environ.get(
        "SAGALOG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    failures = []
    schemas = []
    try:
        for _ in range(10):
            schema = f"t_{uuid.uuid4().hex[:12]}"
            schemas.append(schema)
            url = f"{server}{'&' if '?' in server else '?'}schema={schema}"
            processes = [
                subprocess.Popen(
                    [sys.executable, "-c", _START_ONE, url],
                    stderr=subprocess.PIPE,
                    env=_env(),
                )
                for _ in range(3)
            ]
            for process in processes:
                _, err = process.communicate(timeout=120)
                if process.returncode != 0:
                    failures.append(err.decode(errors="replace").strip().splitlines()[-1])
    finally:
        _drop_schemas(server, schemas)
    assert failures == []


def _drop_schemas(server: str, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(server.split("?")[0], autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
