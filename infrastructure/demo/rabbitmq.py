"""``sagalog demo --transport rabbitmq``: the demo across processes, over a real broker.

The manager side runs here — ``SagaManager``, the command relay publishing to
RabbitMQ, the reply consumer, the timer loop — and every participant service
(inventory, payment, shipping, …) runs as its own process
(:mod:`sagalog.infrastructure.demo.participant`), each remembering the commands it
processed in a SQLite file. Time is real: the simulated late and silent replies
of the in-process demo would only make this one wait for 30-second timeouts, so
here participants answer at once and only the failure rates apply.

Everything lives under a fresh topology prefix, deleted at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from sagalog.domain import ReplyOutcome, Saga, SagaStatus
from sagalog.infrastructure.demo.participant import demo_services
from sagalog.infrastructure.demo.runner import (
    DemoRates,
    DemoResult,
    DemoSeedUsedError,
    check_seed_unused,
    start_demo_sagas,
)
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.observer import ObservedEvent, SagaEventFollower
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.signing import SIGNING_KEYS_ENV_VAR, SigningKeys
from sagalog.infrastructure.rabbitmq.consumer import ReceivedMessage
from sagalog.infrastructure.rabbitmq.replies import ReplyConsumer
from sagalog.infrastructure.rabbitmq.topology import (
    Topology,
    channel_to,
    rabbitmq_url,
    unique_topology,
)
from sagalog.infrastructure.rabbitmq.transport import RabbitMQTransport
from sagalog.process import Reply, SagaManager

_ENDINGS = (Saga.SagaCompleted, Saga.SagaFailed, Saga.SagaDeadLettered)


@dataclass
class ParticipantProcess:
    """One participant service running as a child process."""

    service: str
    command: list[str]
    process: subprocess.Popen[str] | None = None
    counts: list[dict[str, object]] = field(default_factory=list)
    #: Environment added to the process's (its signing key).
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """Start (or restart) the process."""
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **self.env} if self.env else None,
        )

    def kill(self) -> None:
        """SIGKILL: the process dies at once, its unacked command goes back to the queue."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait, and keep the counts it prints on the way out."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        for line in (out or "").splitlines():
            try:
                self.counts.append(json.loads(line))
            except ValueError:
                continue

    @property
    def duplicates(self) -> int:
        """Duplicate commands the process reported dropping (over its lives)."""
        return sum(int(str(c.get("duplicates", 0))) for c in self.counts)

    @property
    def refused(self) -> Counter[str]:
        """Commands the process refused by fencing, by reason (over its lives)."""
        total: Counter[str] = Counter()
        for counts in self.counts:
            refused = counts.get("refused")
            if isinstance(refused, dict):
                total.update({str(k): int(v) for k, v in refused.items()})
        return total


def participant_command(
    service: str,
    topology: Topology,
    *,
    url: str,
    store: Path,
    seed: int,
    rates: DemoRates,
) -> list[str]:
    """The command line that runs demo participant ``service``."""
    return [
        sys.executable,
        "-m",
        "sagalog.infrastructure.demo.participant",
        service,
        "--prefix",
        topology.prefix,
        "--url",
        url,
        "--store",
        str(store),
        "--seed",
        str(seed),
        "--failure-rate",
        str(rates.failure),
        "--compensation-failure-rate",
        str(rates.compensation_failure),
    ]


class EndingCounter:
    """Counts sagas that ended or were dead-lettered, as a follower handler."""

    def __init__(self) -> None:
        self.ended: set[UUID] = set()

    def __call__(self, observed: ObservedEvent) -> None:
        if isinstance(observed.event, _ENDINGS):
            self.ended.add(observed.saga_id)


def run_rabbitmq_demo(
    *,
    database_url: str | None,
    sagas: int,
    seed: int,
    rates: DemoRates,
    url: str | None = None,
    metrics_port: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_metrics: Callable[[str], None] | None = None,
    timeout: float = 600.0,
) -> DemoResult:
    """Run ``sagas`` sagas with participants as separate processes over RabbitMQ."""
    broker = rabbitmq_url(url)
    services = demo_services()
    # Signed by default: one fresh key per service, each participant given only its own.
    keys = {service: secrets.token_urlsafe(32) for service in services}
    topology = dataclasses.replace(unique_topology("sagalog-demo"), signing=SigningKeys(keys))
    rng = random.Random(seed)
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        check_seed_unused(manager, rng, seed)  # before any process or queue is made
    except DemoSeedUsedError:
        manager.close()
        raise
    replies: Counter[str] = Counter()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    workdir = tempfile.TemporaryDirectory(prefix="sagalog-demo-")
    children: list[ParticipantProcess] = []
    server = None
    try:
        with channel_to(broker) as channel:  # queues first: commands wait for their services
            for service, names in services.items():
                topology.declare_service(channel, service, names)
        for service in services:
            store = Path(workdir.name) / f"{service}.db"
            child = ParticipantProcess(
                service,
                participant_command(
                    service, topology, url=broker, store=store, seed=seed, rates=rates
                ),
                env={SIGNING_KEYS_ENV_VAR: f"{service}={keys[service]}"},
            )
            child.start()
            children.append(child)

        def note(reply: Reply, outcome: ReplyOutcome, delivery: ReceivedMessage) -> None:
            replies[outcome.outcome.value] += 1

        relay = CommandRelay(manager, RabbitMQTransport(broker, topology=topology))
        consumer = ReplyConsumer(manager, broker, topology=topology, on_reply=note)
        endings = EndingCounter()
        follower = SagaEventFollower(manager, [endings])
        if metrics_port is not None:
            from sagalog.infrastructure.observability.metrics import SagaMetrics

            metrics = SagaMetrics()
            follower.subscribe(metrics.observe)
            metrics.watch_relay(relay)
            metrics.watch_lag("observer", follower)
            server = metrics.serve(metrics_port)
            if on_metrics is not None:
                on_metrics(server.url)

        def relay_loop(event: threading.Event) -> None:
            try:
                relay.run(event, poll_interval=0.02)
            finally:
                relay.transport.close()

        for name, target in (
            ("relay", relay_loop),
            ("replies", consumer.run),
            ("timers", lambda event: manager.run(event, interval=0.2)),
            ("follower", lambda event: follower.run(event, poll_interval=0.05)),
        ):
            thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
            thread.start()
            threads.append(thread)

        started = time.perf_counter()
        ids = start_demo_sagas(manager, rng, sagas, seed)
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = len(endings.ended & wanted)
            if progress is not None:
                progress(done, len(ids))
            if done >= len(ids):
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        by_type: dict[str, Counter[SagaStatus]] = {}
        for saga_id in ids:
            saga = manager.get(saga_id)
            by_type.setdefault(saga.saga_type, Counter())[saga.status] += 1
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for child in children:
            child.stop()
        return DemoResult(
            database=manager.database_url.masked,
            sagas=len(ids),
            seconds=seconds,
            by_type=by_type,
            replies=replies,
            duplicate_commands_dropped=sum(c.duplicates for c in children),
        )
    finally:
        stop.set()
        for child in children:
            child.kill()
        if server is not None:
            server.close()
        try:
            with channel_to(broker) as channel:
                topology.delete(channel, services=services)
        finally:
            manager.close()
            workdir.cleanup()
