"""End to end: a worker SIGKILLed mid-burst leaves no action in force for a FAILED saga.

Issue 14's crash test. A burst of money transfers (``uncertain_transfer.TRANSFER``:
debit → credit → notify, 1.5 s step timeouts) runs on the real pipeline:
``sagalog worker --transport rabbitmq`` (relay, reply consumer, timers) in its own
process, and participant processes (``Payer`` and ``Payee`` two replicas each,
sharing their service's stores, and ``Mail``) built on ``sagalog.infrastructure``
``Participant`` with their SQLite processed-command stores, fencing on, each
service keeping its effects in its own SQLite database keyed by the idempotency
key. One transfer in twenty-four has a slow step (its first attempt waits 2.5 s before
its effect), so timeouts, late replies, retries that meet an earlier attempt's
success, and actions that reach a participant after their deadline really
happen. The worker is SIGKILLed at seeded random moments of the burst and
restarted after a seeded pause, during which commands wait in the log, replies in
the broker and timeouts in the store.

Then, from the participants' own databases: no debit and no credit of a FAILED
transfer is in force (each was refunded/reclaimed, or never made), every
COMPLETED transfer moved its money exactly once, the balances add up, and every
saga ended. The test prints the counts (sagas, timeouts, late replies,
compensations of uncertain steps, commands refused by fencing).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID, uuid5

import pytest
from support.broker import wait_until, worker_command
from uncertain_transfer import SERVICES, STEP_TIMEOUT, TRANSFER

from sagalog.domain import Saga, SagaStatus
from sagalog.infrastructure.demo.rabbitmq import ParticipantProcess
from sagalog.infrastructure.rabbitmq import Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.services.participant import SQLiteProcessedCommands
from sagalog.process import SagaManager

pytestmark = [
    pytest.mark.slow,
    pytest.mark.requires_database(reason="the worker is killed: the store must outlive it"),
]

HERE = Path(__file__).parent
PARTICIPANT = HERE / "uncertain_transfer.py"
SAGAS = 160
#: The burst: WAVES waves of SAGAS // WAVES transfers, WAVE_PAUSE seconds apart.
WAVES = 10
WAVE_PAUSE = 1.5
KILLS = 3
#: Seconds the worker runs before its first kill may come, before each later one may
#: come, how long after a wave began the kill comes, and how long the worker is down.
FIRST_KILL_AFTER = (4.0, 5.0)
RUN_FOR = (0.5, 1.5)
KILL_INTO_WAVE = (0.0, 0.3)
#: Longer than a wave pause plus a step timeout: the wave started while the worker is
#: down has its commands sent after their deadline, and refused by the participants.
DOWN_FOR = (2.5, 3.5)
#: Transfer i has a slow step when i % SLOW_EVERY == SLOW_AT (alternately the credit, the debit).
SLOW_EVERY = 24
SLOW_AT = 5
#: Processes per bank service: they share the service's stores, as replicas would.
REPLICAS = 2
SEED = 20_261_207
NAMESPACE = UUID("6f1c4a52-6d0b-4f8e-9f3a-14c0c0de0014")
#: Bounded waits: they fail the test with a message; they assert nothing about speed.
READY_WITHIN = 60.0
FINISH_WITHIN = 180.0
ENDED = (SagaStatus.COMPLETED, SagaStatus.FAILED, SagaStatus.DEAD_LETTERED)


def saga_id_for(index: int) -> UUID:
    return uuid5(NAMESPACE, f"transfer-{index}")


def transfer_data(index: int) -> dict[str, object]:
    slow = None
    if index % SLOW_EVERY == SLOW_AT:
        slow = "credit" if (index // SLOW_EVERY) % 2 == 0 else "debit"
    return {
        "source": f"payer-{index % 5}",
        "target": f"payee-{index % 3}",
        "amount": 10 + index % 7,
        "slow": slow,
    }


@dataclass
class Worker:
    """``sagalog worker --transport rabbitmq``, started, killed and started again."""

    command: list[str]
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    log_paths: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log_path = self.logs / f"worker-{self.runs}.log"
        self.log_paths.append(log_path)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=log, env=self.env
            )
        self.runs += 1

    def started(self) -> bool:
        return "sagalog worker on " in self.log_paths[-1].read_text(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        text = self.log_paths[-1].read_text(errors="replace") if self.log_paths else ""
        return "\n".join(text.splitlines()[-lines:])


def _participant_command(
    service: str, broker_url: str, topology: Topology, tmp_path: Path
) -> list[str]:
    return [
        sys.executable,
        str(PARTICIPANT),
        service,
        "--prefix",
        topology.prefix,
        "--url",
        broker_url,
        "--store",
        str(tmp_path / f"{service}.processed.db"),
        "--accounts",
        str(tmp_path / f"{service}.accounts.db"),
    ]


def _effects(path: Path) -> list[tuple[UUID, str, str, int]]:
    """(saga, step, state, delta) of every effect row of a service's own database."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT saga_id, step, state, delta FROM effects").fetchall()
    return [(UUID(saga), step, state, int(delta)) for saga, step, state, delta in rows]


def _balances(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COALESCE(SUM(balance), 0) FROM accounts").fetchone()[0])


def _in_force_by_fence_store(path: Path) -> set[tuple[UUID, str]]:
    store = SQLiteProcessedCommands(path)
    try:
        return store.actions_in_force()
    finally:
        store.close()


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([TRANSFER], database_url)  # creates the tables before the worker
    yield app
    app.close()


def test_a_worker_killed_mid_burst_leaves_no_action_in_force_for_a_failed_saga(
    broker_url: str,
    topology: Topology,
    manager: SagaManager,
    database_url: str,
    backend: str,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    with channel_to(broker_url) as channel:  # queues first: commands wait for their services
        topology.declare(channel)
        for service, (action, compensation, _, _) in SERVICES.items():
            names = [action] if compensation is None else [action, compensation]
            topology.declare_service(channel, service, names)
    participants = {
        f"{service}-{replica}": ParticipantProcess(
            service, _participant_command(service, broker_url, topology, tmp_path)
        )
        for service in SERVICES
        for replica in range(1 if service == "Mail" else REPLICAS)
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    worker = Worker(
        worker_command(
            database_url,
            broker_url,
            topology.prefix,
            "--definitions",
            "uncertain_transfer:TRANSFER",
        ),
        env,
        tmp_path,
    )
    ids = [saga_id_for(i) for i in range(SAGAS)]

    def statuses() -> Counter[SagaStatus]:
        return Counter(saga.status for saga in manager.get_many(ids).values())

    def ended() -> int:
        found = statuses()
        return sum(found[status] for status in ENDED)

    unfinished_at_kill: list[int] = []
    try:
        for participant in participants.values():
            participant.start()
        worker.start()
        wait_until(worker.started, timeout=READY_WITHIN, message="the worker to start")

        # The burst, with the worker SIGKILLed at random moments: each kill hits a
        # worker that has been running for a while (not one still starting up), a
        # moment after a wave of transfers began; the first only after the first slow
        # steps timed out and answered late with the worker up (so each of those is
        # certain to happen at least once).
        per_wave = SAGAS // WAVES
        started = 0
        next_wave = time.monotonic()
        armed_at: float | None = time.monotonic() + rng.uniform(*FIRST_KILL_AFTER)
        kill_at: float | None = None
        restart_at: float | None = None
        restarted_at = time.monotonic()
        while started < SAGAS or len(unfinished_at_kill) < KILLS or restart_at is not None:
            now = time.monotonic()
            wave_began = started < SAGAS and now >= next_wave
            if wave_began:
                for index in range(started, started + per_wave):
                    manager.start(TRANSFER.name, transfer_data(index), saga_id=ids[index])
                started += per_wave
                next_wave += WAVE_PAUSE
            if armed_at is not None and now >= armed_at and (wave_began or started == SAGAS):
                armed_at = None
                kill_at = now + rng.uniform(*KILL_INTO_WAVE)
            elif kill_at is not None and now >= kill_at:
                assert worker.running(), f"the worker died on its own\n{worker.tail()}"
                worker.kill()
                found = manager.get_many(ids[:started]).values()
                unfinished_at_kill.append(sum(saga.status not in ENDED for saga in found))
                kill_at = None
                restart_at = now + rng.uniform(*DOWN_FOR)
            elif restart_at is not None and now >= restart_at:
                worker.start()
                restart_at = None
                restarted_at = now
            elif (
                armed_at is None
                and kill_at is None
                and restart_at is None
                and len(unfinished_at_kill) < KILLS
            ):
                if worker.started():
                    armed_at = now + rng.uniform(*RUN_FOR)
                elif now - restarted_at > READY_WITHIN:
                    pytest.fail(f"the worker did not start again\n{worker.tail()}")
            time.sleep(0.02)
        burst_seconds = time.monotonic() - began

        wait_until(
            lambda: ended() == SAGAS,
            timeout=FINISH_WITHIN,
            message=f"every saga to end ({statuses()}); worker log:\n{worker.tail()}",
        )
        wait_until(worker.started, timeout=READY_WITHIN, message="the last worker to start")
        assert worker.stop() == 0, worker.tail()
    finally:
        worker.kill()
        for participant in participants.values():
            participant.stop()
    run_seconds = time.monotonic() - began

    # -- the saga log ------------------------------------------------------------
    sagas = manager.get_many(ids)
    by_status = Counter(saga.status.value for saga in sagas.values())
    assert set(by_status) <= {"COMPLETED", "FAILED"}, f"every saga ends: {by_status}"
    completed = {i for i, saga in sagas.items() if saga.status is SagaStatus.COMPLETED}
    failed = {i for i, saga in sagas.items() if saga.status is SagaStatus.FAILED}
    kinds: Counter[str] = Counter()
    uncertain_compensated = 0
    for saga_id in ids:
        history = manager.history(saga_id)
        kinds.update(type(event).__name__ for event in history)
        uncertain = {
            step
            for event in history
            if isinstance(event, Saga.CompensationRequested)
            for step in event.uncertain_steps or ()
        }
        undone = {e.step for e in history if isinstance(e, Saga.CompensationCompleted)}
        uncertain_compensated += len(uncertain & undone)
    assert [i for i in failed if sagas[i].effects_in_force] == []
    failed_by = Counter(
        f"{sagas[i].failed_step} "
        + ("refused" if "not executed" in (sagas[i].failure_reason or "") else "timed out")
        for i in failed
    )

    # -- the participants' own stores ----------------------------------------------
    effects = {
        service: _effects(tmp_path / f"{service}.accounts.db") for service in ("Payer", "Payee")
    }
    in_force = {
        service: {(saga, step) for saga, step, state, _ in rows if state == "done"}
        for service, rows in effects.items()
    }
    left_behind = {
        service: sorted((str(saga), step) for saga, step in pairs if saga in failed)
        for service, pairs in in_force.items()
    }
    assert left_behind == {"Payer": [], "Payee": []}, "FAILED transfers left effects in force"
    fenced_in_force = {
        service: {
            pair
            for pair in _in_force_by_fence_store(tmp_path / f"{service}.processed.db")
            if pair[0] in failed
        }
        for service in ("Payer", "Payee")
    }
    assert fenced_in_force == {"Payer": set(), "Payee": set()}
    # Every completed transfer moved its money exactly once (one row per action key).
    assert {saga for saga, _ in in_force["Payer"]} == completed
    assert {saga for saga, _ in in_force["Payee"]} == completed
    amounts = {saga_id: int(str(transfer_data(i)["amount"])) for i, saga_id in enumerate(ids)}
    moved = sum(amounts[saga_id] for saga_id in completed)
    assert _balances(tmp_path / "Payer.accounts.db") == -moved
    assert _balances(tmp_path / "Payee.accounts.db") == moved
    states = {
        service: Counter(state for _, _, state, _ in rows) for service, rows in effects.items()
    }

    refused: Counter[str] = Counter()
    repeated = 0
    for participant in participants.values():
        refused.update(participant.refused)
        repeated += sum(int(str(c.get("repeated", 0))) for c in participant.counts)
    # The run exercised what it claims to.
    assert len(unfinished_at_kill) == KILLS
    assert max(unfinished_at_kill) > 0, "no kill hit a saga in flight"
    assert kinds["StepTimedOut"] > 0
    assert kinds["StepCompletedLate"] > 0
    assert uncertain_compensated > 0
    assert sum(refused.values()) > 0
    assert completed
    assert failed

    print(
        f"\nuncertain-steps crash test [{backend}]: {SAGAS} transfers {dict(by_status)} "
        f"(failed: {dict(failed_by)}); "
        f"step timeout {STEP_TIMEOUT.total_seconds():g}s; worker SIGKILLed {KILLS} times "
        f"(unfinished sagas at each kill: {unfinished_at_kill}), {worker.runs} runs; "
        f"timeouts {kinds['StepTimedOut']} (compensation timeouts "
        f"{kinds['CompensationTimedOut']}), late replies {kinds['StepCompletedLate']}, "
        f"retries {kinds['StepRetryScheduled']}, compensations of uncertain steps "
        f"{uncertain_compensated}, refused by fencing {dict(refused)}, answered by "
        f"idempotency {repeated}; effects Payer {dict(states['Payer'])} Payee "
        f"{dict(states['Payee'])}; left in force for FAILED sagas: 0; burst "
        f"{burst_seconds:.1f}s, whole run {run_seconds:.1f}s"
    )
