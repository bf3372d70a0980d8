"""The pure saga domain: definitions, the ``Saga`` aggregate, its events and rules.

Nothing here touches a database, a clock or a network; time is passed in. This package
exports what a saga's author uses; the modules (``definition``, ``saga``, ``status``,
``commands``, ``payload``, ``errors``) are the second tier. See docs/domain.md.
"""

from sagalog.domain._exports import names_on_demand
from sagalog.domain.commands import Command, command_id_for, idempotency_key_for
from sagalog.domain.definition import RetryPolicy, SagaDefinition, Step, parallel
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
from sagalog.domain.saga import Saga
from sagalog.domain.status import CommandKind, Outcome, ReplyOutcome, SagaStatus, StepStatus

__all__ = [
    "Command",
    "CommandKind",
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
    "StepStatus",
    "UnexpectedReplyError",
    "UnknownSagaTypeError",
    "UnknownStepError",
    "command_id_for",
    "idempotency_key_for",
    "parallel",
]

#: Exported here before the API was tiered; their homes are the modules named.
MOVED = {
    "DEFAULT_COMPENSATION_RETRY": "sagalog.domain.definition",
    "DEFAULT_RETRIABLE_RETRY": "sagalog.domain.definition",
    "MAX_PAYLOAD_BYTES": "sagalog.domain.payload",
    "MAX_TEXT_LENGTH": "sagalog.domain.payload",
    "DeadLetter": "sagalog.domain.saga",
    "StepState": "sagalog.domain.saga",
}
__getattr__ = names_on_demand(globals(), moved=MOVED)
