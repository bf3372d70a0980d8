"""End to end across processes: participants as separate processes, one killed and restarted."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from support.broker import Background, wait_until

from sagalog.domain import Saga, SagaStatus
from sagalog.infrastructure.demo.participant import demo_services
from sagalog.infrastructure.demo.rabbitmq import ParticipantProcess, participant_command
from sagalog.infrastructure.demo.runner import DemoRates
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to, queue_depth
from sagalog.process import SagaManager

pytestmark = pytest.mark.slow

NO_FAILURES = DemoRates(
    failure=0.0,
    duplicate=0.0,
    late=0.0,
    silent=0.0,
    compensation_failure=0.0,
    compensation_stuck=0.0,
)


def _rows(store: Path) -> int:
    """Commands the participant recorded as processed (0 before its store exists)."""
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM processed_commands").fetchone()[0])
        except sqlite3.OperationalError:  # table not created yet
            return 0


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager(DEMO_DEFINITIONS, database_url)
    yield app
    app.close()


def test_a_participant_killed_midway_and_restarted_loses_and_repeats_nothing(
    broker_url: str,
    topology: Topology,
    manager: SagaManager,
    background: Background,
    tmp_path: Path,
) -> None:
    services = demo_services()
    with channel_to(broker_url) as channel:
        for service, names in services.items():
            topology.declare_service(channel, service, names)
    stores = {service: tmp_path / f"{service}.db" for service in services}
    children = {
        service: ParticipantProcess(
            service,
            participant_command(
                service, topology, url=broker_url, store=stores[service], seed=1, rates=NO_FAILURES
            ),
        )
        for service in services
    }
    try:
        for child in children.values():
            child.start()
        relay = CommandRelay(manager, RabbitMQTransport(broker_url, topology=topology))
        consumer = ReplyConsumer(manager, broker_url, topology=topology)

        def relay_loop(stop: threading.Event) -> None:
            try:
                relay.run(stop, poll_interval=0.02)
            finally:
                relay.transport.close()

        background.start("relay", relay_loop)
        background.start("replies", consumer.run)
        background.start("timers", lambda stop: manager.run(stop, interval=0.1))

        def ended(ids: list[UUID]) -> bool:
            return all(manager.get(i).status is SagaStatus.COMPLETED for i in ids)

        first = [manager.start("OrderFulfillment", {"n": i}) for i in range(8)]
        wait_until(lambda: ended(first), timeout=60, message="the first wave to complete")
        assert _rows(stores["PaymentService"]) == 8

        payment = children["PaymentService"]
        payment.kill()  # SIGKILL: no goodbye, no ack for anything in hand
        second = [manager.start("OrderFulfillment", {"n": 100 + i}) for i in range(8)]
        payment_queue = topology.service_queue("PaymentService")
        wait_until(
            lambda: queue_depth(payment_queue, broker_url) >= 8,  # 9 if an ack was lost too
            timeout=60,
            message="the second wave's charges to wait in the payment queue",
        )
        for saga_id in second:
            saga = manager.get(saga_id)
            assert saga.status is SagaStatus.PENDING
            assert saga.current_step == "process_payment"

        payment.start()  # a new process, the same SQLite store
        wait_until(lambda: ended(second), timeout=60, message="the second wave to complete")
        payment.stop()
        [after_restart] = payment.counts
        assert after_restart["handled"] == 8
        assert after_restart["refused"] == {"deadline_passed": 0, "compensated": 0}
        assert payment.refused == {"deadline_passed": 0, "compensated": 0}
        assert _rows(stores["PaymentService"]) == 16  # one row per charge: none handled twice
        for saga_id in first + second:
            completed = [
                e.step for e in manager.history(saga_id) if isinstance(e, Saga.StepCompleted)
            ]
            assert completed == [
                "reserve_inventory",
                "process_payment",
                "create_shipment",
                "send_confirmation",
            ]
        assert consumer.dead_lettered == 0
    finally:
        for child in children.values():
            child.kill()


def test_the_demo_runs_over_rabbitmq_with_participant_processes(broker_url: str) -> None:
    from typer.testing import CliRunner

    from sagalog.infrastructure.cli import app

    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--transport",
            "rabbitmq",
            "--rabbitmq-url",
            broker_url,
            "--sagas",
            "6",
            "--failure-rate",
            "0",
            "--compensation-failure-rate",
            "0",
            "--database-url",
            "memory://",
            "--metrics-port",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "6 sagas in" in result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert [cell.strip() for cell in rows["OrderFulfillment"].split("│")[2:4]] == ["3", "0"]
    assert [cell.strip() for cell in rows["TravelBooking"].split("│")[2:4]] == ["3", "0"]
    assert "replies: 24 applied" in result.output  # 4 steps x 3 orders, budget + 3 x 3 trips


def test_the_metrics_port_needs_the_rabbitmq_transport() -> None:
    from typer.testing import CliRunner

    from sagalog.infrastructure.cli import app

    result = CliRunner().invoke(app, ["demo", "--metrics-port", "9000", "--sagas", "1"])
    assert result.exit_code == 2
    assert "--metrics-port needs --transport rabbitmq" in result.output
