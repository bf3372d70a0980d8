"""Structured logs: each transition once, at its level, with the saga's correlation fields."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pika
import pytest
from support.broker import Background, wait_until

from sagalog.domain import RetryPolicy, Saga, SagaDefinition, Step
from sagalog.infrastructure.messaging.observer import SagaEventFollower
from sagalog.infrastructure.observability.logs import (
    TRANSITIONS_LOGGER,
    JsonFormatter,
    KeyValueFormatter,
    SagaTransitionLogger,
    configure_logging,
)
from sagalog.infrastructure.rabbitmq import ReplyConsumer, Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

ORDER = SagaDefinition(
    "Order",
    [
        Step(
            name="reserve",
            action="Inventory.Reserve",
            compensation="Inventory.Release",
            compensation_retry=RetryPolicy(max_attempts=1),
        ),
        Step(
            name="charge",
            action="Payment.Charge",
            compensation="Payment.Refund",
            timeout=timedelta(seconds=30),
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(0)),
        ),
    ],
)


class Capture(logging.Handler):
    """Keeps every record it receives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger("sagalog")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([ORDER], database_url, clock=ManualClock(T0))
    yield app
    app.close()


def _logged(
    manager: SagaManager, act: Callable[[UUID], object], *, json_lines: bool
) -> tuple[UUID, list[str]]:
    """Start an Order, ``act`` on it, and return the lines its transitions were logged as."""
    stream = io.StringIO()
    handler = configure_logging("DEBUG", json_lines=json_lines, stream=stream)
    try:
        follower = SagaEventFollower(manager, [SagaTransitionLogger()])
        saga_id = manager.start("Order", {"n": 1})
        act(saga_id)
        follower.drain()
    finally:
        logging.getLogger("sagalog").removeHandler(handler)
    return saga_id, stream.getvalue().splitlines()


def _record_with_exception(message: str) -> logging.LogRecord:
    """An ERROR record of ``message`` carrying a ``ValueError("boom")`` traceback."""
    try:
        raise ValueError("boom")
    except ValueError:
        return logging.getLogger("sagalog.test").makeRecord(
            "sagalog.test",
            logging.ERROR,
            __file__,
            1,
            message,
            (),
            exc_info=sys.exc_info(),
            extra={"correlation_id": "c-1"},
        )


def _transitions(capture: Capture) -> list[logging.LogRecord]:
    return [r for r in capture.records if r.name == TRANSITIONS_LOGGER]


def test_each_transition_is_logged_once_with_its_fields_and_level(
    manager: SagaManager, capture: Capture
) -> None:
    follower = SagaEventFollower(manager, [SagaTransitionLogger()])
    saga_id = manager.start("Order", {"n": 1}, message_id="order-created-7")
    manager.handle_step_completed(saga_id, "reserve", message_id="reply-1")
    manager.handle_step_failed(saga_id, "charge", "card declined", message_id="reply-2")
    manager.handle_step_failed(saga_id, "charge", "card declined again", message_id="reply-3")
    manager.handle_compensation_failed(saga_id, "reserve", "ledger down", message_id="reply-4")
    follower.drain()
    follower.drain()

    records = _transitions(capture)
    history = manager.history(saga_id)
    assert [r.event for r in records] == [type(e).__name__ for e in history]  # type: ignore[attr-defined]
    assert {r.correlation_id for r in records} == {str(saga_id)}  # type: ignore[attr-defined]
    assert {r.saga_type for r in records} == {"Order"}  # type: ignore[attr-defined]
    by_event = {r.event: r for r in records}  # type: ignore[attr-defined]

    started = by_event["SagaStarted"]
    assert (started.levelno, started.causation_id) == (logging.INFO, "order-created-7")  # type: ignore[attr-defined]
    completed = by_event["StepCompleted"]
    assert completed.levelno == logging.DEBUG
    assert (completed.step, completed.attempt, completed.causation_id, completed.kind) == (  # type: ignore[attr-defined]
        "reserve",
        1,
        "reply-1",
        "action",
    )
    failures = [r for r in records if r.event == "StepFailed"]  # type: ignore[attr-defined]
    assert [(r.levelno, r.attempt, r.causation_id, r.error) for r in failures] == [  # type: ignore[attr-defined]
        (logging.WARNING, 1, "reply-2", "card declined"),
        (logging.WARNING, 2, "reply-3", "card declined again"),
    ]
    retry = by_event["StepRetryScheduled"]
    assert (retry.levelno, retry.attempt, retry.step) == (logging.WARNING, 2, "charge")  # type: ignore[attr-defined]
    dispatched = [r for r in records if r.event == "StepDispatched"]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.DEBUG and r.command_id for r in dispatched)  # type: ignore[attr-defined]
    undo = by_event["CompensationDispatched"]
    assert (undo.kind, undo.step, undo.attempt) == ("compensation", "reserve", 1)  # type: ignore[attr-defined]
    undo_failed = by_event["CompensationFailed"]
    assert (undo_failed.levelno, undo_failed.kind, undo_failed.causation_id) == (  # type: ignore[attr-defined]
        logging.WARNING,
        "compensation",
        "reply-4",
    )
    dead = by_event["SagaDeadLettered"]
    assert dead.levelno == logging.ERROR
    assert (dead.step, dead.kind, dead.attempt, dead.error) == (  # type: ignore[attr-defined]
        "reserve",
        "compensation",
        1,
        "ledger down",
    )
    assert "dead-lettered" in dead.getMessage()


def test_completed_and_compensated_sagas_log_at_info(
    manager: SagaManager, capture: Capture
) -> None:
    follower = SagaEventFollower(manager, [SagaTransitionLogger()])
    done = manager.start("Order", {"n": 1})
    manager.handle_step_completed(done, "reserve")
    manager.handle_step_completed(done, "charge")
    undone = manager.start("Order", {"n": 2})
    manager.handle_step_completed(undone, "reserve")
    manager.abort(undone, actor="ops", reason="customer cancelled")
    manager.handle_compensation_completed(undone, "charge")  # in flight at the abort
    manager.handle_compensation_completed(undone, "reserve")
    follower.drain()
    levels = {(r.correlation_id, r.event): r.levelno for r in _transitions(capture)}  # type: ignore[attr-defined]
    assert levels[(str(done), "SagaCompleted")] == logging.INFO
    assert levels[(str(undone), "SagaAborted")] == logging.WARNING
    assert levels[(str(undone), "CompensationCompleted")] == logging.INFO
    assert levels[(str(undone), "SagaFailed")] == logging.INFO


def test_the_json_formatter_writes_one_object_per_line_with_the_fields(
    manager: SagaManager,
) -> None:
    saga_id, logged = _logged(
        manager,
        lambda saga_id: manager.handle_step_failed(
            saga_id, "reserve", "out of stock", message_id="r-9"
        ),
        json_lines=True,
    )
    lines = [json.loads(line) for line in logged]
    assert [line["event"] for line in lines] == [type(e).__name__ for e in manager.history(saga_id)]
    failed = next(line for line in lines if line["event"] == "StepFailed")
    assert failed["level"] == "WARNING"
    assert failed["correlation_id"] == str(saga_id)
    assert failed["step"] == "reserve"
    assert failed["attempt"] == 1
    assert failed["causation_id"] == "r-9"
    assert failed["error"] == "out of stock"
    assert failed["logger"] == TRANSITIONS_LOGGER
    assert str(saga_id) in failed["message"]
    assert datetime.fromisoformat(failed["ts"]).tzinfo is not None


def test_a_text_line_cannot_be_forged_by_an_actor_or_a_reason(manager: SagaManager) -> None:
    saga_id, lines = _logged(
        manager,
        lambda saga_id: manager.abort(
            saga_id, actor="ops\nERROR forged", reason="why\r\nWARNING x\x1b[2J"
        ),
        json_lines=False,
    )
    assert len(lines) == len(manager.history(saga_id))
    aborted = next(line for line in lines if "aborted" in line)
    assert "ops\\nERROR forged" in aborted
    assert "why\\r\\nWARNING x\\x1b[2J" in aborted
    assert not any(line.startswith(("ERROR", "WARNING")) for line in lines)


def test_a_traceback_still_follows_its_line() -> None:
    record = _record_with_exception("failed\nhere")
    first, *rest = KeyValueFormatter().format(record).splitlines()
    assert first.endswith("failed\\nhere [correlation_id=c-1]")
    assert rest[-1] == "ValueError: boom"


def test_the_json_formatter_includes_exceptions() -> None:
    record = _record_with_exception("failed")
    line = json.loads(JsonFormatter().format(record))
    assert line["correlation_id"] == "c-1"
    assert "ValueError: boom" in line["exc"]


def test_a_dead_lettered_reply_is_logged_at_error_with_its_saga(
    broker_url: str,
    topology: Topology,
    manager: SagaManager,
    background: Background,
    capture: Capture,
) -> None:
    saga_id = manager.start("Order", {"n": 1})
    consumer = ReplyConsumer(manager, broker_url, topology=topology)
    background.start("replies", consumer.run)
    wait_until(consumer.ready.is_set, message="consumer ready")
    body = json.dumps(
        {
            "message_id": "m-x",
            "saga_id": str(saga_id),
            "command_id": str(uuid4()),
            "step": "nope",
            "outcome": "completed",
        }
    )
    with channel_to(broker_url) as channel:
        channel.basic_publish(
            "",
            topology.replies_queue,
            body.encode(),
            pika.BasicProperties(
                delivery_mode=2,
                message_id="m-x",
                correlation_id=str(saga_id),
                headers={"sagalog-causation-id": str(uuid4())},
            ),
            mandatory=True,
        )
    wait_until(lambda: consumer.dead_lettered == 1, message="the dead letter")
    [record] = [r for r in capture.records if r.name == "sagalog.rabbitmq" and r.levelno >= 40]
    assert record.levelno == logging.ERROR
    assert record.correlation_id == str(saga_id)  # type: ignore[attr-defined]
    assert record.step == "nope"  # type: ignore[attr-defined]
    assert record.message_id == "m-x"  # type: ignore[attr-defined]
    assert record.error == "UnknownStepError"  # type: ignore[attr-defined]
    assert isinstance(manager.history(saga_id)[-1], Saga.StepDispatched)
