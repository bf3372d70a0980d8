"""Handing one reply to a ``SagaManager``, whichever kind and outcome it is.

The manager has one method per outcome (``handle_step_completed``, ...) plus
``handle(Reply)`` for messages, which require a message id. Tests that draw the
kind and outcome as data (a reply schedule, a scenario) go through
:func:`send_reply`, which picks the method and passes a missing message id on as
``None`` (a reply that cannot be recognised when redelivered).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sagalog.domain import CommandKind, ReplyOutcome
from sagalog.process import SagaManager

__all__ = ["send_reply"]


def send_reply(
    manager: SagaManager,
    saga_id: UUID,
    step: str,
    kind: CommandKind,
    succeeded: bool,
    *,
    result: Any = None,
    error: str = "failed",
    attempt: int | None = None,
    message_id: str | None = None,
) -> ReplyOutcome:
    """Tell ``manager`` that the ``kind`` command of ``step`` succeeded or failed."""
    if kind is CommandKind.ACTION:
        if succeeded:
            return manager.handle_step_completed(
                saga_id, step, result, attempt=attempt, message_id=message_id
            )
        return manager.handle_step_failed(
            saga_id, step, error, attempt=attempt, message_id=message_id
        )
    if succeeded:
        return manager.handle_compensation_completed(
            saga_id, step, attempt=attempt, message_id=message_id
        )
    return manager.handle_compensation_failed(
        saga_id, step, error, attempt=attempt, message_id=message_id
    )
