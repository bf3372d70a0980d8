"""One worker per store runs the relay, the timers and the projections; the lease fences it.

On SQLite and PostgreSQL (a private memory store has no other worker to share with).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking

from sagalog.domain import Command, SagaDefinition, SagaStatus, Step
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.infrastructure.persistence.lease import LeaseLost, StoreLease
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager
from sagalog.process.store.url import parse_database_url

TWO_STEPS = SagaDefinition(
    "Two",
    [
        Step(name="a", action="A.Do", compensation="A.Undo"),
        Step(name="b", action="B.Do"),
    ],
)


class Sent:
    """Records the commands a transport accepted."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def send(self, command: Command) -> None:
        self.commands.append(command)

    def close(self) -> None:
        pass


@pytest.fixture
def store_url(database_url: str, backend: str) -> str:
    if backend == "memory":
        pytest.skip("a private memory store is never shared: it has no lease")
    return database_url


@pytest.fixture
def manager(store_url: str) -> Iterator[SagaManager]:
    app = SagaManager([TWO_STEPS], store_url)
    yield app
    app.close()


def _lease(url: str, seconds: float) -> StoreLease:
    return StoreLease(parse_database_url(url), lease_seconds=seconds)


def test_only_one_holder_at_a_time_and_a_takeover_raises_the_epoch(store_url: str) -> None:
    first, second = _lease(store_url, 0.3), _lease(store_url, 0.3)
    try:
        term = first.acquire("first")
        assert term is not None
        assert second.acquire("second") is None
        assert first.renew(term)
        time.sleep(0.4)  # the first holder stopped renewing: its lease expired
        taken = second.acquire("second")
        assert taken is not None
        assert taken.epoch == term.epoch + 1
        assert not first.renew(term)
        second.release(taken)
        again = first.acquire("first")  # a released lease is free at once
        assert again is not None
        assert again.epoch == taken.epoch + 1
    finally:
        first.close()
        second.close()


def test_a_standby_polls_without_taking_the_sqlite_write_lock(store_url: str, backend: str) -> None:
    """A standby paused mid-poll must not hold the file's write lock (the holder's renewals
    need it): while the lease is held, a poll only reads."""
    if backend != "sqlite":
        pytest.skip("the write lock of the whole file is SQLite's")
    holder, standby = _lease(store_url, 30), _lease(store_url, 30)
    path = parse_database_url(store_url).path
    assert path is not None
    writer = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    try:
        assert holder.acquire("holder") is not None
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock now
        assert standby.acquire("standby") is None  # an upsert would wait, then fail
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        holder.close()
        standby.close()


def test_a_paused_holder_can_neither_send_nor_record_a_position_after_a_takeover(
    manager: SagaManager, store_url: str
) -> None:
    old_lease, new_lease = _lease(store_url, 0.3), _lease(store_url, 0.3)
    old_sent, new_sent = Sent(), Sent()
    old_relay, new_relay = CommandRelay(manager, old_sent), CommandRelay(manager, new_sent)
    try:
        old_term = old_lease.acquire("old")
        assert old_term is not None
        old_relay.send_under(old_term)
        manager.start("Two", {"n": 0})
        assert old_relay.pump() == 1
        before = old_relay.position
        for n in range(1, 4):
            manager.start("Two", {"n": n})
        time.sleep(0.4)  # the old holder is paused past its lease ...
        new_term = new_lease.acquire("new")  # ... and another worker takes over
        assert new_term is not None
        # Resumed, the old holder knows by its own clock that its lease ran out: no send.
        with pytest.raises(LeaseLost):
            old_relay.pump()
        assert len(old_sent.commands) == 1
        # Even if its own clock said otherwise, the database refuses the batch before
        # it is sent (the epoch moved on) ...
        old_term.valid_until = time.monotonic() + 60
        with pytest.raises(LeaseLost, match="not sent"):
            old_relay.pump()
        assert len(old_sent.commands) == 1
        # ... and a position write under the old epoch is refused too.
        with pytest.raises(LeaseLost, match="not recorded"):
            old_term.record_position(
                old_relay.tracking,
                Tracking(manager.name, manager.recorder.max_notification_id() or 0),
            )
        assert old_relay.position == before
        new_relay.send_under(new_term)
        assert new_relay.pump() == 3
        head = manager.recorder.max_notification_id()
        assert new_relay.position == head
    finally:
        old_relay.close()
        new_relay.close()
        old_lease.close()
        new_lease.close()


def _participants(manager: SagaManager, sent: Counter[UUID]) -> InProcessTransport:
    transport = InProcessTransport()

    def handle(command: Command) -> None:
        sent[command.command_id] += 1
        manager.handle_step_completed(
            command.saga_id, command.step, {}, message_id=f"{command.command_id}:reply"
        )

    transport.subscribe_all(handle)
    return transport


def test_two_workers_on_one_store_send_each_command_once(store_url: str) -> None:
    sent: Counter[UUID] = Counter()
    managers = [SagaManager([TWO_STEPS], store_url) for _ in range(2)]
    workers = [
        Worker(
            m,
            transport=_participants(m, sent),
            tick_interval=0.05,
            poll_interval=0.02,
            lease_seconds=1.0,
        )
        for m in managers
    ]
    starter = SagaManager([TWO_STEPS], store_url)
    try:
        for worker in workers:
            worker.start()
        sagas = [starter.start("Two", {"n": n}) for n in range(40)]
        deadline = time.monotonic() + 60
        while any(starter.get(s).status is not SagaStatus.COMPLETED for s in sagas):
            assert time.monotonic() < deadline, "the sagas did not finish"
            time.sleep(0.05)
        assert sum(w.active.is_set() for w in workers) == 1
        assert len(sent) == 80  # two commands per saga ...
        assert set(sent.values()) == {1}  # ... each sent once
        assert sum(w.stats.commands_sent for w in workers) == 80
    finally:
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(30)
            worker.close()
        for m in [*managers, starter]:
            m.close()


@contextmanager
def holder_and_standby(store_url: str, lease_seconds: float) -> Iterator[list[Worker]]:
    """Two workers on the store: the first holds the lease, the second stands by."""
    managers = [SagaManager([TWO_STEPS], store_url) for _ in range(2)]
    workers = [
        Worker(m, tick_interval=0.05, poll_interval=0.02, lease_seconds=lease_seconds)
        for m in managers
    ]
    try:
        workers[0].start()
        assert workers[0].active.wait(10)
        workers[1].start()
        time.sleep(0.3)
        assert not workers[1].active.is_set()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
            worker.join(30)
            worker.close()
        for m in managers:
            m.close()


def test_a_stopped_holder_hands_the_lease_over_at_once(store_url: str) -> None:
    with holder_and_standby(store_url, lease_seconds=30) as workers:
        workers[0].stop()
        assert workers[0].join(30)
        assert workers[1].active.wait(10)  # far sooner than the 30 s lease


def test_a_holder_whose_lease_time_lapsed_steps_down_and_lets_a_standby_take_over(
    store_url: str,
) -> None:
    """A holder paused or starved past its lease time ends its term even if no one took it.

    It is not renewed back to life; it hands the row over at once and waits a lease time
    before competing again, so the standby (polling every eighth of it) takes over.
    """
    with holder_and_standby(store_url, lease_seconds=4) as workers:
        term = workers[0].term
        assert term is not None
        lease = workers[0].lease
        assert lease is not None
        term.valid_until = time.monotonic() - 1  # as if it had been paused past its lease
        assert workers[1].active.wait(10)
        holder = lease.holder()
        assert holder is not None
        assert holder[0] == workers[1].holder
        assert holder[1] == term.epoch + 1
        assert term.ended.is_set()
        assert not workers[0].active.is_set()


class DiesAfter(Sent):
    """Accepts ``count`` commands, then fails the way a killed process stops: for good."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def send(self, command: Command) -> None:
        if len(self.commands) == self.count:
            raise KeyboardInterrupt  # not a transport error: the process is gone
        super().send(command)


def test_the_next_holder_counts_the_commands_it_sends_again_after_a_holder_died(
    manager: SagaManager, store_url: str
) -> None:
    old_lease, new_lease = _lease(store_url, 0.3), _lease(store_url, 0.3)
    dying, sent = DiesAfter(3), Sent()
    old_relay, new_relay = CommandRelay(manager, dying), CommandRelay(manager, sent)
    try:
        old_term = old_lease.acquire("old")
        assert old_term is not None
        old_relay.send_under(old_term)
        for n in range(5):
            manager.start("Two", {"n": n})
        with pytest.raises(KeyboardInterrupt):
            old_relay.pump()  # 3 of the batch of 5 sent, then the process stops
        time.sleep(0.4)
        new_term = new_lease.acquire("new")
        assert new_term is not None
        new_relay.send_under(new_term)
        # The old holder recorded its position past the 3 it sent; the other 2 it had
        # marked as going out: the new holder sends them and counts them as maybe re-sent.
        assert new_relay.pump() == 2
        assert new_relay.resent == 2
        assert {c.command_id for c in sent.commands}.isdisjoint(
            c.command_id for c in dying.commands
        )
        for n in range(2):
            manager.start("Two", {"n": 10 + n})
        assert new_relay.pump() == 2
        assert new_relay.resent == 2  # commands past the old holder's mark are new
    finally:
        old_relay.close()
        new_relay.close()
        old_lease.close()
        new_lease.close()
