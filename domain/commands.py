"""Commands a saga asks participants to run, and their deterministic ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from hashlib import sha1
from typing import Any
from uuid import UUID, SafeUUID

from sagalog.domain.status import CommandKind

#: ``uuid5``'s variant and version bits: cleared, then set (RFC 4122, version 5).
_V5_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V5_SET = (0x8000 << 48) | (5 << 76)
#: Each kind's text, looked up once: reading ``.value`` runs Python code on 3.11.
_KIND_TEXT = {kind: kind.value for kind in CommandKind}
_SAFE_UNKNOWN = SafeUUID.unknown


def command_id_for(saga_id: UUID, step: str, kind: CommandKind, attempt: int) -> UUID:
    """The id of the command for ``(saga, step, kind, attempt)``.

    A UUIDv5 in the saga's namespace: the same inputs always give the same id, so
    a command re-sent after a crash keeps its id and participants can drop the
    duplicate; different attempts get different ids. It is
    ``uuid5(saga_id, f"{step}\\x1f{kind.value}\\x1f{attempt}")``, computed as
    ``uuid5`` computes it (the SHA-1 of the namespace's bytes and the name, its
    first 16 bytes with the version and variant bits set) without the checks
    and conversions of the ``UUID`` constructor; every dispatch makes one.
    """
    name = f"{step}\x1f{_KIND_TEXT[kind]}\x1f{attempt}".encode()
    digest = sha1(saga_id.int.to_bytes(16, "big") + name, usedforsecurity=False).digest()
    command_id = object.__new__(UUID)
    object.__setattr__(
        command_id, "int", (int.from_bytes(digest[:16], "big") & _V5_CLEAR) | _V5_SET
    )
    object.__setattr__(command_id, "is_safe", _SAFE_UNKNOWN)
    return command_id


def idempotency_key_for(saga_id: UUID, step: str, kind: CommandKind) -> UUID:
    """The idempotency key of ``(saga, step, kind)``: the same for every attempt.

    ``command_id`` changes with each attempt, so a participant that keyed its own
    database on it would run a step's action twice when an attempt that timed out
    executes late beside the next one. This key is the one to record effects under:
    ``uuid5(saga_id, f"{step}\\x1f{kind.value}")``, one for a step's action and one
    for its compensation.
    """
    name = f"{step}\x1f{_KIND_TEXT[kind]}".encode()
    digest = sha1(saga_id.int.to_bytes(16, "big") + name, usedforsecurity=False).digest()
    return UUID(int=(int.from_bytes(digest[:16], "big") & _V5_CLEAR) | _V5_SET)


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
    #: The W3C ``traceparent`` the relay sent it under, when tracing is on (never stored).
    traceparent: str | None = None

    @property
    def idempotency_key(self) -> UUID:
        """The key shared by every attempt of this command's step and kind."""
        return idempotency_key_for(self.saga_id, self.step, self.kind)

    def to_message(self) -> dict[str, Any]:
        """A JSON-ready dict of the command, for transports (``traceparent`` only when set)."""
        message = {
            "command_id": str(self.command_id),
            "idempotency_key": str(self.idempotency_key),
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
        if self.traceparent is not None:
            message["traceparent"] = self.traceparent
        return message
