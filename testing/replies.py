"""Handing one reply to a ``SagaManager``, whichever kind and outcome it is.

Tests that draw the kind and outcome as data (a reply schedule, a scenario) go
through :func:`send_reply`, which hands them to ``SagaManager.answer`` — the
manager's own routing to the matching ``handle_*`` transition, shared with
reply messages and reactions — and passes a missing message id on as ``None``
(a reply that cannot be recognised when redelivered).
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
    return manager.answer(
        saga_id,
        step,
        kind,
        succeeded,
        result=result,
        error=error,
        attempt=attempt,
        message_id=message_id,
    )
