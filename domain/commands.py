"""Commands a saga asks participants to run, and their deterministic ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from sagalog.domain.status import CommandKind


def command_id_for(saga_id: UUID, step: str, kind: CommandKind, attempt: int) -> UUID:
    """The id of the command for ``(saga, step, kind, attempt)``.

    A UUIDv5 in the saga's namespace: the same inputs always give the same id, so
    a command re-sent after a crash keeps its id and participants can drop the
    duplicate; different attempts get different ids.
    """
    return uuid5(saga_id, f"{step}\x1f{kind.value}\x1f{attempt}")


@dataclass(frozen=True, slots=True)
class Command:
    """A command to deliver to a participant, as recorded in the saga's log."""

    command_id: UUID
    saga_id: UUID
    saga_type: str
    step: str
    kind: CommandKind
    name: str
    attempt: int
    payload: dict[str, Any]
    deadline: datetime | None
    causation_id: str | None = None

    def to_message(self) -> dict[str, Any]:
        """A JSON-ready dict of the command, for transports."""
        return {
            "command_id": str(self.command_id),
            "saga_id": str(self.saga_id),
            "correlation_id": str(self.saga_id),
            "causation_id": self.causation_id,
            "saga_type": self.saga_type,
            "step": self.step,
            "kind": self.kind.value,
            "name": self.name,
            "attempt": self.attempt,
            "payload": self.payload,
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }
