"""Typed errors raised by the saga domain.

Every error that a caller can provoke with bad input is a subclass of
:class:`SagalogError`, so outside code can catch the whole family in one place.
A method that raises one of these has recorded nothing: the aggregate is left
exactly as it was.
"""

from __future__ import annotations


class SagalogError(Exception):
    """Base class of every error sagalog raises on purpose."""


class InvalidDefinitionError(SagalogError, ValueError):
    """A saga definition breaks one of the rules checked when it is built."""


class InvalidPayloadError(SagalogError, ValueError):
    """Saga data, a step result or an error text is not JSON, or is too large."""


class UnknownSagaTypeError(SagalogError, LookupError):
    """No definition is registered under the requested saga type (and version)."""


class SagaNotFoundError(SagalogError, LookupError):
    """No saga with the given id exists in the store."""


class UnknownStepError(SagalogError, LookupError):
    """A reply or an operator action names a step the saga's definition lacks."""


class UnexpectedReplyError(SagalogError, ValueError):
    """A reply that can never be valid for this saga.

    For example an outcome for a step that was never dispatched, a compensation
    outcome for a step that has no compensation, or an attempt number that was
    never sent. Duplicate and stale replies are *not* errors: they are normal in
    an at-least-once world and are reported through :class:`ReplyOutcome`.
    """


class InvalidTransitionError(SagalogError, ValueError):
    """An operator action or command that the saga's current state forbids."""


def first_line(exc: BaseException, *, named: bool = False) -> str:
    """The first line of ``exc``'s message (its type's name when it has none).

    Errors are reported in one line everywhere: a CLI message, a log line, a stored
    reason. ``named`` prefixes the type's name unless the line already starts with it.
    """
    name = type(exc).__name__
    lines = str(exc).strip().splitlines()
    if not lines:
        return name
    if named and not lines[0].startswith(name):
        return f"{name}: {lines[0]}"
    return lines[0]
