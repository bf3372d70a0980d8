"""Issue 15, case 6: outages are visible while they last, and survivable.

A PostgreSQL outage used to log nothing (20 s) or one line (75 s); the reply
consumer lost its AMQP connection during a long database stall; ``sagalog worker
--transport rabbitmq`` refused to start while the broker was down. Outages here are
made with a TCP proxy the test takes down and up (the shared servers are never
touched), or a table lock held by the test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from helpers import TcpProxy, first_command_id, publish_raw
from support.broker import Background, wait_until

from sagalog.domain import SagaDefinition, Step
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.observability.health import DependencyHealth
from sagalog.infrastructure.rabbitmq import (
    RabbitMQTransport,
    ReplyConsumer,
    Topology,
    read_dead_letters,
)
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager

#: A saga whose only step times out at once (its command is never answered).
QUICK = SagaDefinition(
    "Quick", [Step(name="wait", action="Nobody.Answers", timeout=timedelta(milliseconds=1))]
)


class Clock:
    """A settable monotonic clock: seconds as a float, as ``time.monotonic`` reads them.

    Not a ``ManualClock``: ``DependencyHealth`` measures intervals on a monotonic clock,
    not the timezone-aware datetimes sagas are timed in.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_when_it_starts_every_interval_while_it_lasts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    health = DependencyHealth(log_interval=10, clock=clock)
    health.watch("store")
    with caplog.at_level(logging.WARNING, logger="sagalog.health"):
        health.down("store", "connection refused")
        clock.now += 4
        health.down("store", "connection refused")  # within the interval: quiet
        clock.now += 7
        health.down("store", "connection refused")  # 11 s in: logged again
        down = health.report()
        clock.now += 9
        health.up("store")
        health.up("store")  # already up: quiet
    assert [r.getMessage() for r in caplog.records] == [
        "store unreachable: connection refused",
        "store still unreachable after 11s: connection refused",
        "store reachable again after 20s",
    ]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
    assert (down["status"], down["down"]) == ("degraded", ["store"])
    assert down["dependencies"]["store"]["error"] == "connection refused"
    assert health.report()["status"] == "ok"


def _via(url: str, port: int) -> str:
    """``url`` with its port replaced by ``port`` (through the proxy)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")
    netloc = f"{host[0]}{host[1]}127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_worker_logs_a_store_outage_and_serves_it_on_health(
    backend: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if backend != "postgres":
        pytest.skip("a store outage is a server outage")
    proxy = TcpProxy("127.0.0.1", urlsplit(database_url).port or 5432)
    proxy.up()
    url = _via(database_url, proxy.port)
    manager = SagaManager(DEMO_DEFINITIONS, url)
    worker = Worker(
        manager, metrics_port=0, health_interval=0.1, outage_log_interval=0.5, poll_interval=0.1
    )
    assert worker.metrics_server is not None
    port = worker.metrics_server.port
    with caplog.at_level(logging.WARNING, logger="sagalog.health"):
        worker.start()
        try:
            wait_until(lambda: _health(port)[0] == 200, "the worker to report healthy")
            proxy.down()
            wait_until(lambda: _health(port)[0] == 503, "the outage on /health")
            _, report = _health(port)
            assert report["down"] == ["store"]
            assert report["dependencies"]["store"]["error"]
            wait_until(
                lambda: any("still unreachable" in r.getMessage() for r in caplog.records),
                "the outage to be logged again",
            )
            proxy.up()
            wait_until(lambda: _health(port)[0] == 200, "the store back on /health")
        finally:
            worker.stop()
            worker.join(30)
            worker.close()
            proxy.down()
            manager.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "sagalog.health"]
    assert messages[0].startswith("store unreachable: ")
    assert any(m.startswith("store reachable again after") for m in messages)
    assert worker._errors == []


def test_a_worker_started_while_the_broker_is_down_runs_its_timers_and_connects_later(
    broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    proxy = TcpProxy("127.0.0.1", urlsplit(broker_url).port or 5672)  # down: nothing listens
    url = _via(broker_url, proxy.port)
    manager = SagaManager([*DEMO_DEFINITIONS, QUICK], database_url)
    consumer = ReplyConsumer(manager, url, topology=topology, initial_backoff=0.05, max_backoff=0.2)
    transport = RabbitMQTransport(url, topology=topology)
    worker = Worker(
        manager, transport=transport, replies=consumer, tick_interval=0.05, health_interval=0.1
    )
    worker.start()
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        wait_until(lambda: worker.health.report()["down"] == ["broker"], "the broker to be down")
        # The timers run without the broker: a step that times out at once fails its saga.
        quick = manager.start("Quick", {})
        wait_until(lambda: manager.get(quick).status.value == "FAILED", "the timeout to fire")
        assert worker.relay is not None
        assert worker.relay.position == 0  # the command waits in the log
        with channel_to(broker_url) as channel:
            queue = topology.declare_service(
                channel, "inventory", ["InventoryService.ReserveItems"]
            )
        proxy.up()
        wait_until(consumer.ready.is_set, "the reply consumer to connect")
        wait_until(lambda: transport.confirmed == 1, "the relay to send the waiting command")
        [command] = read_dead_letters(queue, broker_url)  # a plain read of the service queue
        assert json.loads(command.body)["saga_id"] == str(saga_id)
        wait_until(lambda: worker.health.report()["status"] == "ok", "the broker to be up")
        assert not worker.stop_event.is_set()
    finally:
        worker.stop()
        worker.join(30)
        worker.close()
        proxy.down()
        manager.close()
    assert worker._errors == []


@pytest.mark.slow
def test_the_cli_worker_starts_with_the_broker_down(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "sagalog.infrastructure.cli", "worker",
            "--transport", "rabbitmq", "--rabbitmq-url", "amqp://guest:guest@127.0.0.1:1/%2F",
            "--rabbitmq-prefix", "sagalog-adv-down", "--database-url", f"sqlite:///{db}",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if line.startswith("sagalog worker on"):
                break
        assert any("cannot reach RabbitMQ" in line and "starts anyway" in line for line in lines)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_the_reply_consumer_keeps_its_connection_through_a_database_stall(
    backend: str, broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    if backend != "postgres":
        pytest.skip("the stall is a PostgreSQL table lock")
    import psycopg
    from psycopg import sql

    from sagalog.process import parse_database_url

    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    heartbeat = 2
    consumer = ReplyConsumer(
        manager, f"{broker_url}?heartbeat={heartbeat}", topology=topology, batch_wait=0
    )
    try:
        saga_id = manager.start("OrderFulfillment", {"order_id": "o"})
        background.start("replies", consumer.run)
        wait_until(consumer.ready.is_set, "the reply consumer to consume")
        target = parse_database_url(database_url)
        events_table: str = getattr(manager.recorder, "events_table_name")  # noqa: B009
        table = sql.Identifier(target.schema or "public", events_table)
        with psycopg.connect(
            host="127.0.0.1", port=target.port or 5432, user=target.user, dbname=target.dbname
        ) as lock:
            lock.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
            reply = {
                "message_id": "m1",
                "saga_id": str(saga_id),
                "command_id": first_command_id(saga_id),
                "step": "reserve_inventory",
                "outcome": "completed",
            }
            publish_raw(broker_url, topology.replies_queue, json.dumps(reply).encode(), "m1")
            time.sleep(4 * heartbeat)  # the stall: several heartbeat intervals
            assert consumer.handled == 0  # still blocked on the lock
            lock.rollback()
        wait_until(lambda: consumer.handled == 1, "the reply once the lock is gone")
        assert consumer.reconnects == 0
        assert "replies" not in background.errors
    finally:
        background.close()
        manager.close()
