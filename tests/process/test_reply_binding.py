"""A reply is trusted only from the command it answers.

A reply message names the ``command_id`` of the command it answers. The saga acts on it
only if it sent that command (any attempt so far): knowing a saga's id and step is not
enough to drive it. A reply without a command id is refused unless the manager is told
to accept unbound replies (an upgrade window for participants that predate the field).
"""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from support.sagas import ORDER, T0

from sagalog.domain import (
    CommandKind,
    Outcome,
    SagaStatus,
    UnexpectedReplyError,
    command_id_for,
)
from sagalog.process import Reply, SagaManager
from sagalog.process.clock import ManualClock


def _reply(saga_id: UUID, command_id: UUID | None, step: str = "reserve") -> dict[str, object]:
    reply: dict[str, object] = {
        "message_id": f"m-{uuid4()}",
        "saga_id": str(saga_id),
        "step": step,
        "outcome": "completed",
    }
    if command_id is not None:
        reply["command_id"] = str(command_id)
    return reply


def test_a_reply_to_the_command_sent_is_applied(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    command = manager.get(saga_id).pending_command
    assert command is not None
    assert manager.handle(Reply.to(command, result={"r": 1})).applied
    assert manager.get(saga_id).steps["reserve"].result == {"r": 1}


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda saga_id: uuid4(), id="a random id"),
        pytest.param(
            lambda saga_id: command_id_for(uuid4(), "reserve", CommandKind.ACTION, 1),
            id="another saga's command",
        ),
        pytest.param(
            lambda saga_id: command_id_for(saga_id, "reserve", CommandKind.ACTION, 2),
            id="an attempt never sent",
        ),
        pytest.param(
            lambda saga_id: command_id_for(saga_id, "reserve", CommandKind.COMPENSATION, 1),
            id="the compensation, never sent",
        ),
    ],
)
def test_a_reply_naming_a_command_the_saga_never_sent_is_refused_and_writes_nothing(
    manager: SagaManager, forged: object
) -> None:
    saga_id = manager.start("Order", {})
    version = manager.get(saga_id).version
    assert callable(forged)
    with pytest.raises(UnexpectedReplyError, match="never"):
        manager.handle(_reply(saga_id, forged(saga_id)))
    saga = manager.get(saga_id)
    assert saga.version == version
    assert saga.status is SagaStatus.PENDING


def test_a_reply_without_a_command_id_is_refused_by_default(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    version = manager.get(saga_id).version
    with pytest.raises(UnexpectedReplyError, match="names no command_id"):
        manager.handle(_reply(saga_id, None))
    [result] = manager.handle_many([_reply(saga_id, None)])
    assert isinstance(result, UnexpectedReplyError)
    # Returned without its traceback, which would keep every reply of the call alive.
    assert result.__traceback__ is None
    assert manager.get(saga_id).version == version


def test_unbound_replies_are_accepted_when_the_manager_is_told_to(database_url: str) -> None:
    manager = SagaManager(
        [ORDER], database_url, env={"SAGALOG_ACCEPT_UNBOUND_REPLIES": "true"}, clock=ManualClock(T0)
    )
    try:
        assert manager.accept_unbound_replies
        saga_id = manager.start("Order", {})
        assert manager.handle(_reply(saga_id, None)).applied
        assert manager.get(saga_id).current_step == "charge"
    finally:
        manager.close()


def test_a_reply_to_an_earlier_attempt_is_bound_to_that_attempt(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {})
    manager.handle_step_completed(saga_id, "reserve")
    clock = manager.clock
    assert isinstance(clock, ManualClock)
    manager.tick(clock.advance(31))  # charge attempt 1 timed out; retry scheduled
    manager.tick(clock.advance(10))  # attempt 2 dispatched
    first = command_id_for(saga_id, "charge", CommandKind.ACTION, 1)
    reply = {**_reply(saga_id, first, "charge"), "attempt": 2}
    with pytest.raises(UnexpectedReplyError, match="attempt 1"):
        manager.handle(reply)  # the command id says attempt 1, the reply says 2
    late = manager.handle(_reply(saga_id, first, "charge"))
    assert late.outcome is Outcome.LATE  # attempt 1 did charge, late: recorded
    assert manager.get(saga_id).steps["charge"].late
