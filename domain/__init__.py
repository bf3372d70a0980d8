"""The pure saga domain: definitions, the ``Saga`` aggregate, its events and rules.

Nothing here touches a database, a clock or a network; time is passed in.
"""

from sagalog.domain.commands import Command, command_id_for, idempotency_key_for
from sagalog.domain.definition import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRIABLE_RETRY,
    RetryPolicy,
    SagaDefinition,
    Step,
)
from sagalog.domain.errors import (
    InvalidDefinitionError,
    InvalidPayloadError,
    InvalidTransitionError,
    SagalogError,
    SagaNotFoundError,
    UnexpectedReplyError,
    UnknownSagaTypeError,
    UnknownStepError,
)
from sagalog.domain.payload import MAX_PAYLOAD_BYTES, MAX_TEXT_LENGTH
from sagalog.domain.saga import DeadLetter, Saga, StepState
from sagalog.domain.status import CommandKind, Outcome, ReplyOutcome, SagaStatus, StepStatus

__all__ = [
    "DEFAULT_COMPENSATION_RETRY",
    "DEFAULT_RETRIABLE_RETRY",
    "MAX_PAYLOAD_BYTES",
    "MAX_TEXT_LENGTH",
    "Command",
    "CommandKind",
    "DeadLetter",
    "InvalidDefinitionError",
    "InvalidPayloadError",
    "InvalidTransitionError",
    "Outcome",
    "ReplyOutcome",
    "RetryPolicy",
    "Saga",
    "SagaDefinition",
    "SagaNotFoundError",
    "SagaStatus",
    "SagalogError",
    "Step",
    "StepState",
    "StepStatus",
    "UnexpectedReplyError",
    "UnknownSagaTypeError",
    "UnknownStepError",
    "command_id_for",
    "idempotency_key_for",
]
