"""Validated reply messages: what participants send back about a command."""

from __future__ import annotations

from typing import Any, Literal, Self, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from sagalog.domain import Command, CommandKind, SagalogError


class InvalidReplyError(SagalogError, ValueError):
    """A reply message is malformed: a missing field, a wrong type, an impossible combination."""


class Reply(BaseModel):
    """A participant's answer to one command.

    ``saga_id`` is the correlation id; ``message_id`` identifies this reply so a
    redelivered copy is recognised; ``command_id`` names the command it answers
    (the saga refuses a reply to a command it never sent); ``attempt`` (optional,
    implied by ``command_id``) names the attempt the reply is about.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(min_length=1, max_length=200)
    saga_id: UUID
    #: Optional in the message's shape (replies stored by older participants lack it);
    #: ``SagaManager`` refuses a reply without one unless told to accept unbound replies.
    command_id: UUID | None = None
    step: str = Field(min_length=1, max_length=100)
    kind: CommandKind = CommandKind.ACTION
    outcome: Literal["completed", "failed"]
    attempt: int | None = Field(default=None, ge=1)
    result: JsonValue = None
    error: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _outcome_fields(self) -> Self:
        if self.outcome == "failed" and not (self.error and self.error.strip()):
            raise ValueError("a failed reply must say why in 'error'")
        if self.outcome == "completed" and self.error is not None:
            raise ValueError("a completed reply carries no 'error'")
        if self.kind is CommandKind.COMPENSATION and self.result is not None:
            raise ValueError("a compensation reply carries no 'result'")
        return self

    @classmethod
    def parse(cls, value: ReplyInput) -> Reply:
        """Validate ``value`` (a Reply, a dict or JSON); raise :class:`InvalidReplyError`."""
        if isinstance(value, Reply):
            return value
        try:
            if isinstance(value, str | bytes):
                return cls.model_validate_json(value)
            return cls.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'reply'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidReplyError(f"invalid reply: {problems}") from None

    @classmethod
    def to(cls, command: Command, *, result: JsonValue = None, error: str | None = None) -> Reply:
        """The reply to ``command``: completed with ``result``, or failed with ``error``.

        Its message id is derived from the command id, so answering the same
        command twice gives the same reply id, which the manager recognises as a
        duplicate. A compensation reply carries no result.
        """
        failed = error is not None
        return cls(
            message_id=f"{command.command_id}:reply",
            saga_id=command.saga_id,
            command_id=command.command_id,
            step=command.step,
            kind=command.kind,
            outcome="failed" if failed else "completed",
            attempt=command.attempt,
            result=None if failed or command.kind is CommandKind.COMPENSATION else result,
            error=error,
        )


#: What a reply may arrive as: a :class:`Reply`, its dict, or its JSON (text or bytes).
ReplyInput: TypeAlias = Reply | dict[str, Any] | str | bytes
