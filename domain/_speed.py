"""Shortcuts that make the ``Saga`` aggregate cheaper to run, kept out of its vocabulary.

Each one does exactly what the plain code it stands for does (the same events, state,
errors and stored JSON), only with less work: status members read as plain attributes,
a definition built and dumped once per fingerprint, events built and applied without
eventsourcing's per-call checks. ``saga.py`` imports them under the names used here.
Why each exists and what it saved: docs/performance.md, "Why the code is shaped this way".
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from eventsourcing.domain import OriginatorIDError, OriginatorVersionError

from sagalog.domain.definition import SagaDefinition
from sagalog.domain.status import CommandKind, SagaStatus, StepStatus

if TYPE_CHECKING:
    from sagalog.domain.saga import Saga

#: ``CommandKind``'s members, bound once (see ``SagaStatuses``).
ACTION: Final = CommandKind.ACTION
COMPENSATION: Final = CommandKind.COMPENSATION


class SagaStatuses:
    """``SagaStatus``'s members, read as plain class attributes.

    On Python 3.11 reading a member off its enum class goes through ``EnumType.__getattr__``;
    applying an event reads several. docs/performance.md, "Status members".
    """

    STARTED: Final = SagaStatus.STARTED
    PENDING: Final = SagaStatus.PENDING
    COMPENSATING: Final = SagaStatus.COMPENSATING
    COMPLETED: Final = SagaStatus.COMPLETED
    FAILED: Final = SagaStatus.FAILED
    DEAD_LETTERED: Final = SagaStatus.DEAD_LETTERED


class StepStatuses:
    """``StepStatus``'s members, read as plain class attributes (see ``SagaStatuses``)."""

    NOT_STARTED: Final = StepStatus.NOT_STARTED
    DISPATCHED: Final = StepStatus.DISPATCHED
    RETRY_SCHEDULED: Final = StepStatus.RETRY_SCHEDULED
    COMPLETED: Final = StepStatus.COMPLETED
    FAILED: Final = StepStatus.FAILED
    TIMED_OUT: Final = StepStatus.TIMED_OUT
    ABANDONED: Final = StepStatus.ABANDONED
    RESOLVED: Final = StepStatus.RESOLVED
    COMPENSATION_DISPATCHED: Final = StepStatus.COMPENSATION_DISPATCHED
    COMPENSATION_RETRY_SCHEDULED: Final = StepStatus.COMPENSATION_RETRY_SCHEDULED
    COMPENSATED: Final = StepStatus.COMPENSATED
    COMPENSATION_FAILED: Final = StepStatus.COMPENSATION_FAILED
    COMPENSATION_RESOLVED: Final = StepStatus.COMPENSATION_RESOLVED


# -- definitions, once per fingerprint ------------------------------------------------

_DEFINITION_CACHE: dict[str, SagaDefinition] = {}
_DEFINITION_CACHE_SIZE = 256

#: ``SagaDefinition.model_dump(mode="json")`` by fingerprint, for ``Saga.start``.
_DEFINITION_DUMPS: dict[str, dict[str, Any]] = {}
_DEFINITION_DUMPS_SIZE = 256


def definition_from_dict(data: dict[str, Any], fingerprint: str) -> SagaDefinition:
    """Rebuild (and cache by fingerprint) the definition stored in ``SagaStarted``."""
    cached = _DEFINITION_CACHE.get(fingerprint)
    if cached is None:
        cached = SagaDefinition.model_validate(data)
        if len(_DEFINITION_CACHE) >= _DEFINITION_CACHE_SIZE:
            _DEFINITION_CACHE.pop(next(iter(_DEFINITION_CACHE)))
        _DEFINITION_CACHE[fingerprint] = cached
    return cached


def definition_dump(definition: SagaDefinition) -> dict[str, Any]:
    """The JSON dump of ``definition`` that ``SagaStarted`` records, made once per fingerprint.

    The fingerprint (cached on the definition) is the SHA-256 of that very dump's
    canonical JSON, so definitions with equal fingerprints have equal dumps and the
    cache cannot hand one definition another's.

    The same dict (not a copy) goes into every ``SagaStarted`` of the definition. That
    is safe because nothing mutates it: events are immutable values; applying one only
    reads it (``SagaDefinition.model_validate``, which builds its own tuples); storing
    one only encodes it; and what is read back from storage is a new dict. Callers
    that take ``event.definition`` out of an event must copy it before changing it, as
    they must for any value an event holds.
    """
    fingerprint = definition.fingerprint
    dump = _DEFINITION_DUMPS.get(fingerprint)
    if dump is None:
        dump = definition.model_dump(mode="json")
        if len(_DEFINITION_DUMPS) >= _DEFINITION_DUMPS_SIZE:
            _DEFINITION_DUMPS.pop(next(iter(_DEFINITION_DUMPS)))
        _DEFINITION_DUMPS[fingerprint] = dump
    return dump


# -- building and applying events ------------------------------------------------------

#: The dataclass fields of each saga event class, in declaration order (``trigger``).
_EVENT_FIELDS: dict[type[Any], tuple[str, ...]] = {}
_new_object = object.__new__
_set_attribute = object.__setattr__


class MutateWithoutProperties:
    """A mixin for a saga's base event: eventsourcing's ``mutate``, with attributes read directly.

    eventsourcing's ``mutate`` reads and writes the saga's id, version and modification
    time through their properties, three Python calls per event; here the attributes
    behind them are used, with the same checks, errors and changes. Creation events (no
    saga yet) go eventsourcing's way.
    """

    def mutate(self: Any, aggregate: Any) -> Any:
        """Check the event follows ``aggregate``'s version, apply it, and move the version on."""
        if aggregate is None:
            return super().mutate(aggregate)  # type: ignore[misc]  # eventsourcing's
        saga_id = aggregate._id
        if self.originator_id is not saga_id and self.originator_id != saga_id:
            raise OriginatorIDError(self.originator_id, saga_id)
        next_version = aggregate._version + 1
        if self.originator_version != next_version:
            raise OriginatorVersionError(self.originator_version, next_version)
        self.apply(aggregate)
        aggregate._version = self.originator_version
        aggregate._modified_on = self.timestamp
        return aggregate


def create_without_introspection(saga_class: type[Saga], started: Saga.SagaStarted) -> Saga:
    """What eventsourcing's ``Created.mutate`` builds for ``started``, without ``inspect``.

    ``Created.mutate`` looks up, for every saga created or rebuilt, which of the event's
    fields the aggregate's ``__base_init__`` and ``__init__`` take. A ``Saga``'s
    ``__init__`` takes none (its state comes from the event's ``apply``), so the shell
    gets eventsourcing's base attributes directly, then the event is applied.
    """
    saga = saga_class.__new__(saga_class)
    saga.__base_init__(started.originator_id, started.originator_version, started.timestamp)
    saga.__init__()  # type: ignore[misc]  # the (empty) dataclass __init__
    started.apply(saga)
    return saga


def trigger(
    self: Saga, event_class: type[Saga.Event], now: datetime, cause: str | None, **kwargs: Any
) -> None:
    """Trigger ``event_class``: what eventsourcing's ``trigger_event`` does, with less work.

    ``trigger_event`` copies its arguments, checks the class's topic and builds the event
    through its frozen dataclass ``__init__``, one ``object.__setattr__`` per field. Here,
    when the arguments are exactly the event's fields in the order they are declared, the
    fields are set at once: the event is the object ``__init__`` would build (the same
    attributes, in the same order, so it is stored as the same JSON), then it mutates the
    saga and is appended to the pending events as ``trigger_event`` does. Anything else
    (a missing or extra argument, a class with an explicit topic) goes through
    ``trigger_event``, which raises or builds it its way.
    """
    state: dict[str, Any] = {
        "originator_id": self.id,
        "originator_version": self.version + 1,
        "timestamp": now,
        "correlation_id": self.id,
        "causation_id": cause,
    }
    state.update(kwargs)
    names = _EVENT_FIELDS.get(event_class)
    if names is None:
        names = _EVENT_FIELDS[event_class] = tuple(f.name for f in fields(event_class))
    if tuple(state) != names or now is None or getattr(type(self), "TOPIC", None):
        self.trigger_event(
            event_class, timestamp=now, correlation_id=self.id, causation_id=cause, **kwargs
        )
        return
    event = _new_object(event_class)
    _set_attribute(event, "__dict__", state)
    event.mutate(self)
    self._pending_events.append(event)
