"""OpenTelemetry: one saga is one trace, across the relay, participants, replies and timers.

In process, with the SDK's ``InMemorySpanExporter``: every span of a saga has the saga's
id as its trace id, a participant's span is the child of the relay's send span (through
the command's ``traceparent``), and a retry fired by the timer loop of a manager opened
again after a restart continues the same trace. With tracing off, nothing of
OpenTelemetry is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.broker import Background, wait_until
from support.sagas import ORDER, T0

from sagalog.domain import Command, RetryPolicy, Saga, SagaDefinition, SagaStatus, Step
from sagalog.infrastructure import CommandRelay, InProcessTransport, Participant
from sagalog.infrastructure.observability.tracing import (
    TRACING_FILE_ENV_VAR,
    active,
    disable_tracing,
    enable_tracing,
)
from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.services.participant import CommandFailed
from sagalog.process import Reply, SagaManager
from sagalog.process.clock import ManualClock


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    enable_tracing(provider)
    yield spans
    disable_tracing()
    provider.shutdown()


class Services:
    """The ORDER saga's participants in process; ``charge`` fails its first attempt."""

    def __init__(self, clock: ManualClock) -> None:
        self.participant = Participant("shop", clock=clock)
        for name in ("Inventory.Reserve", "Shipping.Create", "Mail.Send"):
            self.participant.handlers[name] = lambda command: {"ok": command.step}
        self.participant.handlers["Payment.Charge"] = self.charge
        self.replies: list[Reply] = []
        self.transport = InProcessTransport()
        self.transport.subscribe_all(self.receive)
        self.received: list[Command] = []

    @staticmethod
    def charge(command: Command) -> Any:
        if command.attempt == 1:
            raise CommandFailed("card declined, try later")
        return {"charged": True}

    def receive(self, command: Command) -> None:
        self.received.append(command)
        self.replies.append(self.participant.answer(command).reply)

    def run(self, manager: SagaManager, relay: CommandRelay) -> None:
        """Relay, deliver and answer until nothing moves."""
        while True:
            relay.drain()
            self.transport.deliver()
            if not self.replies:
                return
            replies, self.replies = self.replies, []
            for reply in replies:
                manager.handle(reply)


def _by_trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


@pytest.mark.requires_database(reason="a manager is opened again on the same store")
def test_one_saga_is_one_trace_across_relay_participant_replies_and_a_restart(
    exporter: InMemorySpanExporter, database_url: str
) -> None:
    clock = ManualClock(T0)
    services = Services(clock)
    manager = SagaManager([ORDER], database_url, clock=clock)
    relay = CommandRelay(manager, services.transport)
    saga_id = manager.start("Order", {"order": 1})
    services.run(manager, relay)
    assert manager.get(saga_id).status is SagaStatus.PENDING  # charge waits for its retry
    relay.close()
    manager.close()

    # A worker restart: another manager object on the same store fires the retry.
    manager = SagaManager([ORDER], database_url, clock=clock)
    relay = CommandRelay(manager, services.transport)
    clock.advance(timedelta(seconds=11))
    assert manager.tick() == 1
    services.run(manager, relay)
    assert manager.get(saga_id).status is SagaStatus.COMPLETED
    relay.close()
    manager.close()

    spans = exporter.get_finished_spans()
    mine = _by_trace(spans, saga_id.int)
    assert len(mine) == len(spans)  # every span belongs to the saga's trace
    names = [s.name for s in mine]
    assert names.count("saga.send Payment.Charge") == 2
    assert names.count("saga.handle Payment.Charge") == 2
    assert names.count("saga.reply charge") == 2
    # Each participant span is the child of the send span whose traceparent it got.
    sends = {s.context.span_id: s for s in mine if s.name.startswith("saga.send")}
    handles = [s for s in mine if s.name.startswith("saga.handle")]
    assert len(handles) == len(sends) == 5
    for span in handles:
        assert span.parent is not None
        parent = sends[span.parent.span_id]
        assert parent.attributes is not None
        assert span.attributes is not None
        assert parent.attributes["saga.command.id"] == span.attributes["saga.command.id"]
    # The retry fired by the timer after the restart: a transition of attempt 2, traced.
    retried = [
        s
        for s in mine
        if s.name == "saga.transition Order"
        and s.attributes is not None
        and s.attributes["saga.outcome"] == "StepDispatched"
        and s.attributes["saga.attempt"] == 2
    ]
    assert len(retried) == 1
    assert retried[0].attributes is not None
    assert retried[0].attributes["saga.step"] == "charge"
    charges = [
        s.attributes["saga.outcome"]
        for s in handles
        if s.attributes and s.attributes["saga.step"] == "charge"
    ]
    assert charges == ["failed", "completed"]
    reply_outcomes = {
        s.attributes["saga.outcome"]
        for s in mine
        if s.name.startswith("saga.reply") and s.attributes
    }
    assert reply_outcomes == {"applied"}
    # The commands carried the traceparent of their send span.
    assert all(
        c.traceparent and c.traceparent[3:35] == f"{saga_id.int:032x}" for c in services.received
    )


def test_a_saga_started_inside_another_trace_links_to_it(
    exporter: InMemorySpanExporter, database_url: str
) -> None:
    manager = SagaManager([ORDER], database_url)
    tracing = active()
    assert tracing is not None
    with tracing.tracer.start_as_current_span("POST /orders") as request:
        saga_id = manager.start("Order", {"order": 2})
    manager.close()
    spans = exporter.get_finished_spans()
    [started] = [s for s in spans if s.name == "saga.transition Order"]
    assert started.context is not None
    assert started.context.trace_id == saga_id.int
    assert [link.context.span_id for link in started.links] == [request.get_span_context().span_id]


def test_with_tracing_off_nothing_of_opentelemetry_is_imported(tmp_path: Any) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from sagalog.infrastructure import CommandRelay, InProcessTransport
        from sagalog.process import Reply, SagaManager
        from sagalog.domain import SagaDefinition, Step

        one = SagaDefinition("One", [Step(name="do", action="A.Do")])
        manager = SagaManager([one], "sqlite:///{tmp_path}/off.db")
        transport = InProcessTransport()
        replies = []
        transport.subscribe_all(lambda c: replies.append(Reply.to(c, result={{}})))
        relay = CommandRelay(manager, transport)
        saga_id = manager.start("One", {{}})
        relay.drain()
        transport.deliver()
        manager.handle_many(replies)
        assert manager.get(saga_id).status == "COMPLETED"
        assert manager.tracer is None
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]"


TRACED = SagaDefinition(
    "Traced",
    [
        Step(name="reserve", action="Traced.Reserve", timeout=timedelta(seconds=60)),
        Step(
            name="charge",
            action="Traced.Charge",
            timeout=timedelta(seconds=60),
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=3)),
        ),
    ],
)


def _worker(manager: SagaManager, broker_url: str, topology: Topology) -> Background:
    """The relay, the reply consumer and the timer loop of one worker, in threads."""
    threads = Background()
    relay = CommandRelay(manager, RabbitMQTransport(broker_url, topology=topology))
    consumer = ReplyConsumer(manager, broker_url, topology=topology)

    def relay_loop(stop: threading.Event) -> None:
        try:
            relay.run(stop, poll_interval=0.02)
        finally:
            relay.transport.close()
            relay.close()

    threads.start("relay", relay_loop)
    threads.start("replies", consumer.run)
    threads.start("timers", lambda stop: manager.run(stop, interval=0.1))
    return threads


@pytest.mark.slow
@pytest.mark.requires_database(reason="the worker restarts on the same store")
def test_one_saga_over_rabbitmq_with_two_participant_processes_is_one_trace(
    exporter: InMemorySpanExporter,
    broker_url: str,
    topology: Topology,
    database_url: str,
    tmp_path: Path,
) -> None:
    script = Path(__file__).with_name("traced_participant.py")
    handlers = {"inventory": ["Traced.Reserve"], "payment": ["Traced.Charge"]}
    with channel_to(broker_url) as channel:
        for service, names in handlers.items():
            topology.declare_service(channel, service, names)
    files = {service: tmp_path / f"{service}.spans.jsonl" for service in handlers}
    children = [
        subprocess.Popen(
            [sys.executable, str(script), service, topology.prefix, broker_url],
            env={**os.environ, TRACING_FILE_ENV_VAR: str(files[service])},
            stdout=subprocess.DEVNULL,
        )
        for service in handlers
    ]
    try:
        manager = SagaManager([TRACED], database_url)
        first = _worker(manager, broker_url, topology)
        saga_id = manager.start("Traced", {"order": 1})

        def retry_scheduled() -> bool:
            return any(isinstance(e, Saga.StepRetryScheduled) for e in manager.history(saga_id))

        wait_until(retry_scheduled, timeout=60, message="the declined charge to be retried")
        first.close()  # the worker stops before the retry is due
        stopped_at = datetime.now(UTC)
        manager.close()

        manager = SagaManager([TRACED], database_url)  # a new worker on the same store
        second = _worker(manager, broker_url, topology)
        wait_until(
            lambda: manager.get(saga_id).status is SagaStatus.COMPLETED,
            timeout=60,
            message="the saga to complete after the restart",
        )
        second.close()
        history = manager.history(saga_id)
        manager.close()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
    [retry] = [e for e in history if isinstance(e, Saga.StepDispatched) and e.attempt == 2]
    assert retry.timestamp > stopped_at  # fired by the second worker's timer loop

    trace_id = f"{saga_id.int:032x}"
    here = [s for s in exporter.get_finished_spans() if s.context is not None]
    assert {f"{s.context.trace_id:032x}" for s in here if s.context} == {trace_id}
    sends = {f"{s.context.span_id:016x}": s for s in here if s.name.startswith("saga.send")}
    remote = {
        service: [json.loads(line) for line in path.read_text().splitlines()]
        for service, path in files.items()
    }
    assert [s["name"] for s in remote["inventory"]] == ["saga.handle Traced.Reserve"]
    assert [s["attributes"]["saga.attempt"] for s in remote["payment"]] == [1, 2]
    assert [s["attributes"]["saga.outcome"] for s in remote["payment"]] == ["failed", "completed"]
    for span in remote["inventory"] + remote["payment"]:
        assert span["trace_id"] == trace_id
        assert span["parent_span_id"] in sends  # the relay's send span, through the header
    # Each reply span is the child of the participant span that answered (reply header).
    handled = {span["span_id"] for span in remote["inventory"] + remote["payment"]}
    replies = [s for s in here if s.name.startswith("saga.reply")]
    assert len(replies) == 3
    assert {f"{s.parent.span_id:016x}" for s in replies if s.parent} == handled
    transitions = [
        s.attributes
        for s in here
        if s.name == "saga.transition Traced" and s.attributes is not None
    ]
    outcomes = [(a["saga.outcome"], a.get("saga.step"), a.get("saga.attempt")) for a in transitions]
    assert ("StepDispatched", "charge", 2) in outcomes
    assert outcomes[-1][0] == "SagaCompleted"
