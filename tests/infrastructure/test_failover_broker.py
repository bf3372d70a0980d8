"""Failover over the broker: three workers, the active one killed again and again, one paused.

Three ``sagalog worker --transport rabbitmq`` processes share one store (default 4 s
lease, four reply partitions); the travel booking's participants run in processes of
their own with the fenced participant helper (a SQLite store of processed commands,
10 % of the actions declined, so some sagas compensate). Sagas are started throughout.
The active worker is SIGKILLed five times at random moments (a fresh worker replaces
each), then the active worker is paused with SIGSTOP past its lease and resumed.

Afterwards every saga has ended; every command recorded in the log reached its
participant (none lost); no step was executed twice under different command ids; no
FAILED saga has an action left in force; and the commands re-sent after a failover
(participants' duplicates) are at most one relay batch per failover. The takeover
times (kill to the new holder's first send, seen as the relay's position moving on)
are printed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from support.broker import wait_until, worker_command

from sagalog.domain import Saga, SagaStatus
from sagalog.infrastructure.demo.participant import demo_services
from sagalog.infrastructure.demo.rabbitmq import ParticipantProcess, participant_command
from sagalog.infrastructure.demo.runner import DemoRates
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS, TRAVEL_BOOKING_V1
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.persistence.lease import DEFAULT_LEASE_SECONDS, StoreLease
from sagalog.infrastructure.rabbitmq import Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.process import SagaManager

pytestmark = [pytest.mark.slow, pytest.mark.requires_database(reason="processes share it")]

#: At least this many sagas are started (about ten a second while the failovers last).
SAGAS = 200
KILLS = 5
PARTITIONS = 4
#: The relay's batch: at most this many commands can be re-sent per failover.
RELAY_BATCH = 500
DECLINES = DemoRates(
    failure=0.1,
    duplicate=0.0,
    late=0.0,
    silent=0.0,
    compensation_failure=0.0,
    compensation_stuck=0.0,
)


class Workers:
    """The worker processes, each logging to a file of its own."""

    def __init__(self, command: list[str], logs: Path) -> None:
        self.command = command
        self.logs = logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.processes)}.err"
        with log.open("wb") as err:
            process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=err)
        self.processes[process.pid] = process
        return process

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes.values() if p.poll() is None]

    def stop_all(self) -> None:
        for process in self.alive():
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


class Watch:
    """The lease row and the relay's position, read from the store."""

    def __init__(self, manager: SagaManager) -> None:
        self.manager = manager
        self.lease = StoreLease(manager.database_url)
        env = manager.database_url.application_env(CommandRelay.name)
        self.factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
            Environment(CommandRelay.name, env)
        )
        self.tracking = self.factory.tracking_recorder()

    def holder_pid(self) -> int | None:
        row = self.lease.holder()
        if row is None or row[2] < 0:
            return None
        return int(row[0].split(":")[-2])

    def epoch(self) -> int:
        row = self.lease.holder()
        return 0 if row is None else row[1]

    def position(self) -> int:
        return self.tracking.max_tracking_id(self.manager.name) or 0

    def close(self) -> None:
        self.lease.close()
        self.factory.close()


def _active(workers: Workers, watch: Watch) -> subprocess.Popen[bytes]:
    found: list[subprocess.Popen[bytes]] = []

    def held() -> bool:
        pid = watch.holder_pid()
        process = workers.processes.get(pid) if pid is not None else None
        found[:] = [process] if process is not None and process.poll() is None else []
        return bool(found)

    wait_until(held, message="a live worker holding the lease", timeout=60)
    return found[0]


def _takeover(watch: Watch, since: int, killed_at: float) -> float:
    """Seconds from ``killed_at`` until the relay's position moves past ``since``."""
    wait_until(lambda: watch.position() > since, message="the new holder to send", timeout=60)
    return time.monotonic() - killed_at


def _processed(store: Path) -> dict[str, str]:
    """command id → its reply (JSON), from a participant's store."""
    if not store.exists():
        return {}
    with sqlite3.connect(store) as db:
        return {
            row[0]: row[1] for row in db.execute("SELECT command_id, reply FROM processed_commands")
        }


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager(DEMO_DEFINITIONS, database_url)
    yield app
    app.close()


def test_the_active_worker_killed_five_times_and_paused_once_loses_and_doubles_nothing(
    broker_url: str,
    topology: Topology,
    manager: SagaManager,
    database_url: str,
    backend: str,
    tmp_path: Path,
) -> None:
    partitioned = Topology(topology.prefix, reply_partitions=PARTITIONS)
    services = {
        service: names
        for service, names in demo_services([TRAVEL_BOOKING_V1]).items()
        if service in ("HotelService", "FlightService", "CarService")
    }
    with channel_to(broker_url) as channel:
        partitioned.declare(channel)
        for service, names in services.items():
            partitioned.declare_service(channel, service, names)
    stores = {service: tmp_path / f"{service}.db" for service in services}
    participants = {
        service: ParticipantProcess(
            service,
            participant_command(
                service, topology, url=broker_url, store=stores[service], seed=5, rates=DECLINES
            ),
        )
        for service in services
    }
    workers = Workers(
        worker_command(
            database_url,
            broker_url,
            topology.prefix,
            "--reply-partitions",
            str(PARTITIONS),
            tick=0.2,
        ),
        tmp_path,
    )
    watch = Watch(manager)
    sagas: list[UUID] = []
    starting = threading.Event()
    rng = random.Random(19)

    def start_sagas() -> None:
        starter = SagaManager(DEMO_DEFINITIONS, database_url)
        try:
            # A steady stream until the failovers are over, so a new holder always has
            # something to send (its first send is what the takeover time is timed to).
            while not starting.wait(0.1):
                sagas.append(starter.start("TravelBooking", {"n": len(sagas)}, version=1))
        finally:
            starter.close()

    takeovers: list[float] = []
    paused_takeover = 0.0
    starter = threading.Thread(target=start_sagas, daemon=True)
    try:
        for participant in participants.values():
            participant.start()
        for _ in range(3):
            workers.start()
        _active(workers, watch)
        starter.start()
        wait_until(lambda: len(sagas) >= 15, message="the first sagas")
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 2.0))
            victim = _active(workers, watch)
            since = watch.position()
            victim.kill()
            killed_at = time.monotonic()
            workers.start()  # a fresh standby replaces it
            takeovers.append(_takeover(watch, since, killed_at))
        # The holder paused past its lease (SIGSTOP), then resumed: it must step down.
        paused = _active(workers, watch)
        paused_epoch = watch.epoch()
        since = watch.position()
        os.kill(paused.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        # Resumed after 1.5 lease times whatever happened meanwhile: on SQLite a process
        # frozen while it holds the file's write lock stops every writer until it resumes.
        time.sleep(DEFAULT_LEASE_SECONDS * 1.5)
        os.kill(paused.pid, signal.SIGCONT)
        paused_takeover = _takeover(watch, since, stopped_at)
        # Its term is over however the race after SIGCONT went (a lapsed term is never
        # renewed), and it stands back a lease time, so a standby holds the next one.
        wait_until(lambda: watch.epoch() > paused_epoch, message="a new lease term")
        wait_until(lambda: watch.holder_pid() != paused.pid, message="another holder")
        starting.set()
        starter.join(30)
        assert len(sagas) >= SAGAS
        wait_until(
            lambda: all(manager.get(s).is_terminal for s in sagas),
            timeout=120,
            message="every saga to end",
        )
        assert paused.poll() is None  # resumed, it carries on as a standby
    finally:
        starting.set()
        starter.join(30)
        workers.stop_all()
        for participant in participants.values():
            participant.stop()
        watch.close()
        with channel_to(broker_url) as channel:
            partitioned.delete(channel)

    # What the log says was sent, and what the participants executed.
    dispatched: dict[str, tuple[UUID, str, str]] = {}
    statuses: Counter[SagaStatus] = Counter()
    for saga_id in sagas:
        saga = manager.get(saga_id)
        statuses[saga.status] += 1
        if saga.status is SagaStatus.FAILED:
            assert saga.effects_in_force == [], f"{saga_id} left {saga.effects_in_force} in force"
        for event in manager.history(saga_id):
            if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                kind = "action" if isinstance(event, Saga.StepDispatched) else "compensation"
                dispatched[str(event.command_id)] = (saga_id, event.step, kind)
    assert set(statuses) <= {SagaStatus.COMPLETED, SagaStatus.FAILED}
    assert statuses[SagaStatus.FAILED] > 0  # compensations ran through the failovers too
    processed: dict[str, str] = {}
    for store in stores.values():
        processed.update(_processed(store))
    assert set(processed) == set(dispatched)  # none lost, none unknown
    succeeded = Counter(
        dispatched[command_id]
        for command_id, reply in processed.items()
        if json.loads(reply).get("outcome") == "completed"
    )
    assert [key for key, n in succeeded.items() if n > 1] == []  # nothing executed twice
    resent = sum(p.duplicates for p in participants.values())
    failovers = KILLS + 1
    assert resent <= failovers * RELAY_BATCH
    print(
        f"\nfailover over RabbitMQ ({backend}, lease {DEFAULT_LEASE_SECONDS:g} s): "
        f"{len(sagas)} sagas, { {s.value: n for s, n in statuses.items()} }, "
        f"{len(dispatched)} commands, {resent} re-sent over {failovers} failovers; "
        f"kill to first send: median {statistics.median(takeovers):.2f} s, "
        f"max {max(takeovers):.2f} s ({sorted(round(t, 2) for t in takeovers)}); "
        f"SIGSTOP to first send: {paused_takeover:.2f} s"
    )
