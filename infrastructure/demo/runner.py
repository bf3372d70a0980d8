"""``sagalog demo``: run order-fulfillment and travel-booking sagas against simulated services.

Everything real but the participants: a real ``SagaManager`` on the chosen
database, the real command relay following the log, the in-process transport.
The participants succeed, fail, answer twice, answer late and never answer at
configurable rates, on a simulated clock that starts at the wall clock's time, so that
a run is deterministic for a seed (its outcomes; its times start now) and timeouts fire
without waiting for wall-clock time.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from eventsourcing.utils import get_topic

from sagalog.domain import (
    Command,
    CommandKind,
    Saga,
    SagalogError,
    SagaNotFoundError,
    SagaStatus,
)
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.process import Reply, SagaManager
from sagalog.process.clock import ManualClock


@dataclass(frozen=True)
class DemoRates:
    """How the simulated participants behave, as probabilities per command."""

    failure: float = 0.1
    duplicate: float = 0.05
    late: float = 0.02
    silent: float = 0.02
    compensation_failure: float = 0.1
    compensation_stuck: float = 0.01

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} rate must be between 0 and 1, got {value}")
        if self.failure + self.late + self.silent > 1.0:
            raise ValueError("failure + late + silent rates must not exceed 1")


@dataclass(order=True)
class _Scheduled:
    at: datetime
    seq: int
    reply: Reply = field(compare=False)


class SimulatedParticipants:
    """All the demo's services: each command gets a reply (or none) by chance."""

    def __init__(self, rng: random.Random, rates: DemoRates, clock: ManualClock) -> None:
        self.rng = rng
        self.rates = rates
        self.clock = clock
        self.queue: list[_Scheduled] = []
        self._seq = itertools.count()
        self.seen_commands: set[UUID] = set()
        self.duplicate_commands = 0
        self.stuck: set[tuple[UUID, str]] = set()

    def handle(self, command: Command) -> None:
        """Receive one command: drop duplicates by command id, then decide the reply."""
        if command.command_id in self.seen_commands:
            self.duplicate_commands += 1
            return
        self.seen_commands.add(command.command_id)
        if command.kind is CommandKind.ACTION:
            self._answer_action(command)
        else:
            self._answer_compensation(command)

    def _answer_action(self, command: Command) -> None:
        roll = self.rng.random()
        rates = self.rates
        if roll < rates.silent:
            return
        deadline = command.deadline or self.clock.now + timedelta(seconds=30)
        if roll < rates.silent + rates.late:
            self._schedule(command, "completed", deadline + timedelta(seconds=5))
            return
        delay = timedelta(milliseconds=self.rng.randint(20, 2000))
        if roll < rates.silent + rates.late + rates.failure:
            self._schedule(command, "failed", self.clock.now + delay, error="declined")
        else:
            self._schedule(command, "completed", self.clock.now + delay)
        if self.rng.random() < rates.duplicate:
            self._schedule(
                command,
                "completed" if roll >= rates.silent + rates.late + rates.failure else "failed",
                self.clock.now + delay * 2,
                error="declined",
                copy=True,
            )

    def _answer_compensation(self, command: Command) -> None:
        delay = timedelta(milliseconds=self.rng.randint(20, 1000))
        key = (command.saga_id, command.step)
        if key in self.stuck or (
            command.attempt == 1 and self.rng.random() < self.rates.compensation_stuck
        ):
            self.stuck.add(key)
            self._schedule(command, "failed", self.clock.now + delay, error="ledger unavailable")
        elif self.rng.random() < self.rates.compensation_failure:
            self._schedule(
                command, "failed", self.clock.now + delay, error="temporarily unavailable"
            )
        else:
            self._schedule(command, "completed", self.clock.now + delay)

    def _schedule(
        self,
        command: Command,
        outcome: str,
        at: datetime,
        *,
        error: str = "",
        copy: bool = False,
    ) -> None:
        reply = Reply(
            message_id=f"{command.command_id}:reply",
            saga_id=command.saga_id,
            command_id=command.command_id,
            step=command.step,
            kind=command.kind,
            outcome="completed" if outcome == "completed" else "failed",
            attempt=command.attempt,
            result={"ref": str(command.command_id)[:8]}
            if outcome == "completed" and command.kind is CommandKind.ACTION
            else None,
            error=error if outcome == "failed" else None,
        )
        heapq.heappush(self.queue, _Scheduled(at, next(self._seq), reply))

    def next_time(self) -> datetime | None:
        """When the next reply is due, if any."""
        return self.queue[0].at if self.queue else None

    def pop_due(self, now: datetime) -> list[Reply]:
        """The replies due at ``now``, in time order."""
        due: list[Reply] = []
        while self.queue and self.queue[0].at <= now:
            due.append(heapq.heappop(self.queue).reply)
        return due


@dataclass
class DemoResult:
    """What a demo run did."""

    database: str
    sagas: int
    seconds: float
    by_type: dict[str, Counter[SagaStatus]]
    replies: Counter[str]
    duplicate_commands_dropped: int

    @property
    def sagas_per_second(self) -> float:
        """End-to-end throughput of the run."""
        return self.sagas / self.seconds if self.seconds else 0.0


class DemoSeedUsedError(SagalogError):
    """The store already holds the sagas a demo run with this seed would start."""


def check_seed_unused(manager: SagaManager, rng: random.Random, seed: int) -> None:
    """Raise :class:`DemoSeedUsedError` if an earlier run of this seed left its sagas here.

    A seed starts the same saga ids every run (the first one whatever ``--sagas`` is), and
    starting a saga again records nothing: a second run would run nothing new, report the
    first run's outcomes (over RabbitMQ, wait for endings already recorded until it timed
    out). Peeks at the first id without drawing from ``rng``.
    """
    probe = random.Random()
    probe.setstate(rng.getstate())
    first = UUID(int=probe.getrandbits(128), version=4)
    try:
        manager.get(first)
    except SagaNotFoundError:
        return
    raise DemoSeedUsedError(
        f"this store already holds the demo's sagas of seed {seed} (a seed starts the same "
        f"saga ids every run): pass another --seed, e.g. --seed {seed + 1}, or another "
        "--database-url"
    )


def start_demo_sagas(manager: SagaManager, rng: random.Random, count: int, seed: int) -> list[UUID]:
    """Start ``count`` demo sagas, orders and trips alternating, ids and data from ``rng``.

    Every fourth order starts on ``OrderFulfillment`` version 1, as if it had begun
    before the deploy of version 2; the others start on the newest version.
    """
    ids: list[UUID] = []
    for i in range(count):
        saga_id = UUID(int=rng.getrandbits(128), version=4)
        if i % 2 == 0:
            data = {
                "order_id": f"o-{seed}-{i}",
                "items": rng.randint(1, 5),
                "amount": rng.randint(5, 500),
            }
            version = 1 if i % 8 == 0 else None
            ids.append(manager.start("OrderFulfillment", data, saga_id=saga_id, version=version))
        else:
            data = {"trip_id": f"t-{seed}-{i}", "nights": rng.randint(1, 7)}
            ids.append(manager.start("TravelBooking", data, saga_id=saga_id))
    return ids


def run_demo(
    *,
    database_url: str | None,
    sagas: int,
    seed: int,
    rates: DemoRates,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run ``sagas`` sagas (half orders, half trips) to an end and count how they ended."""
    rng = random.Random(seed)
    # This draw once dated the run up to ten years ahead; it is still drawn so that a seed
    # plays out as it always did, but the run now starts at the wall clock's second, so
    # `list`, `stuck` and the console show the demo's sagas as just run.
    rng.randint(0, 3650)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    manager = SagaManager(DEMO_DEFINITIONS, database_url, clock=clock)
    try:
        check_seed_unused(manager, rng, seed)
    except DemoSeedUsedError:
        manager.close()
        raise
    transport = InProcessTransport()
    participants = SimulatedParticipants(rng, rates, clock)
    transport.subscribe_all(participants.handle)
    relay = CommandRelay(manager, transport)
    replies: Counter[str] = Counter()
    started = time.perf_counter()
    try:
        ids = start_demo_sagas(manager, rng, sagas, seed)
        endings = _EndingCounter(manager)
        while True:
            relay.drain()
            transport.deliver()
            for reply in participants.pop_due(clock.now):
                replies[manager.handle(reply).outcome.value] += 1
            manager.tick(clock.now, limit=10_000)
            relay.drain()
            transport.deliver()
            if progress is not None:
                progress(min(endings.count(), len(ids)), len(ids))
            upcoming = [t for t in (participants.next_time(), _next_timer(manager)) if t]
            if not upcoming and transport.pending() == 0:
                break
            if upcoming:
                clock.move_to(min(upcoming))
        seconds = time.perf_counter() - started
        by_type: dict[str, Counter[SagaStatus]] = {}
        for saga_id in ids:
            saga = manager.get(saga_id)
            by_type.setdefault(saga.saga_type, Counter())[saga.status] += 1
        return DemoResult(
            database=manager.database_url.masked,
            sagas=len(ids),
            seconds=seconds,
            by_type=by_type,
            replies=replies,
            duplicate_commands_dropped=participants.duplicate_commands,
        )
    finally:
        transport.close()
        manager.close()


class _EndingCounter:
    """Counts sagas that ended (or were dead-lettered) by following the log."""

    TOPICS = tuple(
        get_topic(cls) for cls in (Saga.SagaCompleted, Saga.SagaFailed, Saga.SagaDeadLettered)
    )

    def __init__(self, manager: SagaManager) -> None:
        self.manager = manager
        self.position = manager.recorder.max_notification_id() or 0
        self.ended = 0

    def count(self) -> int:
        """Endings recorded since the demo began."""
        while True:
            found = self.manager.recorder.select_notifications(
                start=self.position + 1, limit=1000, topics=self.TOPICS
            )
            if not found:
                return self.ended
            self.ended += len(found)
            self.position = found[-1].id


def _next_timer(manager: SagaManager) -> datetime | None:
    far = datetime.max.replace(tzinfo=UTC)
    due = manager.timers.select_due_timers(far, 1)
    return due[0][1] if due else None
