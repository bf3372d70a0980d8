"""The command relay: the log is the outbox, delivery is at least once, the position lasts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagalog.domain import Command, RetryPolicy, SagaDefinition, Step
from sagalog.infrastructure.relay import CommandRelay
from sagalog.infrastructure.transport import InProcessTransport, TransportError
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
    assert relay.position == position
    transport.down = False
    assert relay.drain() == 1
    assert relay.position > position
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
