"""The command relay: the log is the outbox, delivery is at least once, the position lasts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from sagalog.domain import Command, RetryPolicy, SagaDefinition, Step
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport, TransportError
from sagalog.process import SagaManager

TWO_STEPS = SagaDefinition(
    "Two",
    [
        Step(name="a", action="A.Do", compensation="A.Undo"),
        Step(name="b", action="B.Do", retry=RetryPolicy(max_attempts=1)),
    ],
)


class FlakyTransport:
    """Records what it accepted; refuses while ``down`` is set."""

    def __init__(self) -> None:
        self.accepted: list[Command] = []
        self.down = False
        self.refused = 0

    def send(self, command: Command) -> None:
        if self.down:
            self.refused += 1
            raise TransportError("broker unreachable")
        self.accepted.append(command)

    def close(self) -> None:
        pass


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([TWO_STEPS], database_url)
    yield app
    app.close()


def test_each_dispatch_event_is_sent_once_in_log_order(manager: SagaManager) -> None:
    transport = FlakyTransport()
    relay = CommandRelay(manager, transport)
    first = manager.start("Two", {"n": 1})
    second = manager.start("Two", {"n": 2})
    assert relay.drain() == 2
    manager.handle_step_completed(first, "a")
    manager.handle_step_failed(second, "a", "nope")
    assert relay.drain() == 1  # b for first; second failed at its first step: nothing to undo
    assert [(c.saga_id, c.name) for c in transport.accepted] == [
        (first, "A.Do"),
        (second, "A.Do"),
        (first, "B.Do"),
    ]
    assert relay.drain() == 0
    assert len({c.command_id for c in transport.accepted}) == 3


def test_transport_error_keeps_the_position_and_retry_sends_the_rest(
    manager: SagaManager,
) -> None:
    transport = FlakyTransport()
    relay = CommandRelay(manager, transport, batch_size=10)
    manager.start("Two", {"n": 1})
    relay.drain()
    position = relay.position
    transport.down = True
    manager.start("Two", {"n": 2})
    with pytest.raises(TransportError):
        relay.pump()
    assert relay.position == position  # not past the refused command
    assert relay.lag() == 1
    transport.down = False
    assert relay.drain() == 1
    assert relay.position > position
    assert relay.lag() == 0
    assert len(transport.accepted) == 2


def test_run_loop_backs_off_on_errors_and_delivers_when_the_transport_returns(
    manager: SagaManager,
) -> None:
    transport = FlakyTransport()
    transport.down = True
    relay = CommandRelay(manager, transport, initial_backoff=0.01, max_backoff=0.02)
    manager.start("Two", {})
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,), kwargs={"poll_interval": 0.01})
    worker.start()
    try:
        for _ in range(500):
            if transport.refused >= 2:
                break
            stop.wait(0.01)
        transport.down = False
        for _ in range(500):
            if transport.accepted:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        worker.join(5)
    assert transport.refused >= 2
    assert [c.name for c in transport.accepted] == ["A.Do"]


def test_position_survives_a_restart(database_url: str, backend: str, tmp_path: Path) -> None:
    if backend == "memory":
        pytest.skip("an in-memory store does not survive a restart")
    app = SagaManager([TWO_STEPS], database_url)
    transport = FlakyTransport()
    app.start("Two", {})
    CommandRelay(app, transport).drain()
    app.start("Two", {})
    app.close()
    again = SagaManager([TWO_STEPS], database_url)
    try:
        resumed = FlakyTransport()
        assert CommandRelay(again, resumed).drain() == 1
        assert len(transport.accepted) == 1
        assert transport.accepted[0].command_id != resumed.accepted[0].command_id
    finally:
        again.close()


def test_close_releases_the_relays_store_and_a_new_relay_resumes(
    database_url: str, backend: str
) -> None:
    if backend == "memory":
        pytest.skip("an in-memory store is private to one relay")
    app = SagaManager([TWO_STEPS], database_url)
    try:
        app.start("Two", {})
        relay = CommandRelay(app, FlakyTransport())
        assert relay.drain() == 1
        relay.close()
        app.start("Two", {})
        again = CommandRelay(app, FlakyTransport())
        try:
            assert again.drain() == 1
        finally:
            again.close()
    finally:
        app.close()


def test_in_process_transport_refuses_commands_nobody_handles() -> None:
    transport = InProcessTransport()
    seen: list[str] = []
    transport.subscribe("A.Do", lambda c: seen.append(c.name))
    with pytest.raises(TransportError, match=r"B\.Do"):
        transport.send(_command("B.Do"))
    transport.send(_command("A.Do"))
    assert seen == []
    assert transport.deliver() == 1
    assert seen == ["A.Do"]


def _command(name: str) -> Command:
    from uuid import uuid4

    from sagalog.domain import CommandKind

    return Command(
        command_id=uuid4(),
        saga_id=uuid4(),
        saga_type="T",
        step="s",
        kind=CommandKind.ACTION,
        name=name,
        attempt=1,
        payload={},
        deadline=None,
    )


@pytest.mark.requires_database(reason="each relay on memory:// keeps its position to itself")
def test_the_recorded_position_is_committed_and_the_next_pump_starts_there(
    manager: SagaManager,
) -> None:
    # The relay remembers the position it recorded; what it recorded is in the store.
    transport = FlakyTransport()
    relay = CommandRelay(manager, transport)
    manager.start("Two", {"n": 1})
    assert relay.drain() == 1
    reader = CommandRelay(manager, FlakyTransport())
    try:
        assert reader.position == relay.position > 0
    finally:
        reader.close()
    manager.start("Two", {"n": 2})
    assert relay.pump() == 1
    assert relay.pump() == 0
    assert [c.saga_id for c in transport.accepted][-1] != transport.accepted[0].saga_id
    relay.close()


def test_after_a_failed_pump_the_position_is_read_from_the_store_again(
    manager: SagaManager,
) -> None:
    transport = FlakyTransport()
    relay = CommandRelay(manager, transport)
    manager.start("Two", {"n": 1})
    relay.drain()
    transport.down = True
    manager.start("Two", {"n": 2})
    with pytest.raises(TransportError):
        relay.pump()
    # Moved by hand past saga 2's command (one relay per database is the rule; this
    # only shows that the relay does not trust what it remembered after a failure).
    head = manager.recorder.max_notification_id() or 0
    relay.tracking.insert_tracking(Tracking(manager.name, head))
    transport.down = False
    assert relay.pump() == 0
    assert [c.saga_id for c in transport.accepted] == [transport.accepted[0].saga_id]
    relay.close()


def test_commands_pushed_by_the_manager_are_sent_without_reading_the_log(
    manager: SagaManager,
) -> None:
    transport = FlakyTransport()
    relay = CommandRelay(manager, transport)
    relay.drain()  # the position is known
    reads: list[int] = []
    select = manager.recorder.select_notifications

    def counting_select(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return select(*args, **kwargs)

    manager.recorder.select_notifications = counting_select  # type: ignore[method-assign]
    try:
        first = manager.start("Two", {"n": 1})
        assert relay.pump() == 1
        assert reads == []
        sent = transport.accepted[-1]
        assert sent.saga_id == first
        # Its payload is a copy: a participant in this process cannot change the saga.
        sent.payload["data"]["n"] = 99
        cached = manager.saga_cache.take(first)
        assert cached is not None
        assert cached.data == {"n": 1}
        manager.saga_cache.put(cached)
        # A gap (an id the relay did not see pushed) sends it to the log.
        relay._pushed.clear()
        manager.start("Two", {"n": 2})
        with relay._pushed_lock:
            relay._pushed.popleft()
        assert relay.pump() == 1
        assert reads == [1]
        assert relay.lag() == 0
    finally:
        del manager.recorder.select_notifications
        relay.close()
    assert relay not in manager.followers


def test_postgres_records_a_position_in_one_statement_and_refuses_going_back(
    manager: SagaManager, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("the one-statement tracking recorder is PostgreSQL's")
    from eventsourcing.persistence import IntegrityError, Tracking

    from sagalog.infrastructure.persistence.recorders import PostgresSagaTrackingRecorder

    relay = CommandRelay(manager, FlakyTransport())
    try:
        assert type(relay.tracking) is PostgresSagaTrackingRecorder
        relay.tracking.insert_tracking(Tracking(manager.name, 41))
        assert relay.position == 41
        with pytest.raises(IntegrityError):
            relay.tracking.insert_tracking(Tracking(manager.name, 40))
        assert relay.position == 41
    finally:
        relay.close()
