"""Infrastructure: what connects sagas to the world, one room per job.

``persistence`` (recorders), ``messaging`` (the relay, transports, the log observer),
``rabbitmq``, ``services`` (participants, fencing, choreography), ``observability``
(metrics, logs, health), ``cli``, ``demo``; and the worker, which runs them together.
This package exports the names an application wires up; each is imported on first use,
so ``import sagalog.infrastructure`` needs none of the optional extras (pika,
prometheus-client). See docs/worker.md and the page of each room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagalog.domain._exports import alias_modules, names_on_demand

if TYPE_CHECKING:
    from sagalog.infrastructure.messaging.observer import SagaEventFollower
    from sagalog.infrastructure.messaging.relay import CommandRelay
    from sagalog.infrastructure.messaging.transport import (
        InProcessTransport,
        Transport,
        TransportError,
    )
    from sagalog.infrastructure.observability.logs import JsonFormatter, configure_logging
    from sagalog.infrastructure.observability.metrics import SagaMetrics
    from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
    from sagalog.infrastructure.services.fencing import Fence, InMemoryProcessedCommands
    from sagalog.infrastructure.services.participant import (
        CommandFailed,
        Participant,
        SQLiteProcessedCommands,
    )
    from sagalog.infrastructure.worker import Worker

#: Each public name and the module that defines it.
_HOMES: dict[str, str] = {
    "CommandRelay": "sagalog.infrastructure.messaging.relay",
    "Transport": "sagalog.infrastructure.messaging.transport",
    "TransportError": "sagalog.infrastructure.messaging.transport",
    "InProcessTransport": "sagalog.infrastructure.messaging.transport",
    "SagaEventFollower": "sagalog.infrastructure.messaging.observer",
    "Worker": "sagalog.infrastructure.worker",
    "SagaMetrics": "sagalog.infrastructure.observability.metrics",
    "configure_logging": "sagalog.infrastructure.observability.logs",
    "JsonFormatter": "sagalog.infrastructure.observability.logs",
    "Participant": "sagalog.infrastructure.services.participant",
    "CommandFailed": "sagalog.infrastructure.services.participant",
    "SQLiteProcessedCommands": "sagalog.infrastructure.services.participant",
    "Fence": "sagalog.infrastructure.services.fencing",
    "InMemoryProcessedCommands": "sagalog.infrastructure.services.fencing",
    "RabbitMQTransport": "sagalog.infrastructure.rabbitmq",
    "ReplyConsumer": "sagalog.infrastructure.rabbitmq",
    "Topology": "sagalog.infrastructure.rabbitmq",
}

__all__ = [
    "CommandFailed",
    "CommandRelay",
    "Fence",
    "InMemoryProcessedCommands",
    "InProcessTransport",
    "JsonFormatter",
    "Participant",
    "RabbitMQTransport",
    "ReplyConsumer",
    "SQLiteProcessedCommands",
    "SagaEventFollower",
    "SagaMetrics",
    "Topology",
    "Transport",
    "TransportError",
    "Worker",
    "configure_logging",
]


#: Modules that moved into the rooms, importable by their old paths with a warning.
MOVED_MODULES = {
    "sagalog.infrastructure.recorders": "sagalog.infrastructure.persistence.recorders",
    "sagalog.infrastructure.postgres_recorder": "sagalog.infrastructure.persistence.postgres",
    "sagalog.infrastructure.relay": "sagalog.infrastructure.messaging.relay",
    "sagalog.infrastructure.transport": "sagalog.infrastructure.messaging.transport",
    "sagalog.infrastructure.follower": "sagalog.infrastructure.messaging.observer",
    "sagalog.infrastructure.bounds": "sagalog.infrastructure.messaging.bounds",
    "sagalog.infrastructure.signing": "sagalog.infrastructure.messaging.signing",
    "sagalog.infrastructure.fencing": "sagalog.infrastructure.services.fencing",
    "sagalog.infrastructure.participant": "sagalog.infrastructure.services.participant",
    "sagalog.infrastructure.choreography": "sagalog.infrastructure.services.choreography",
    "sagalog.infrastructure.metrics": "sagalog.infrastructure.observability.metrics",
    "sagalog.infrastructure.logs": "sagalog.infrastructure.observability.logs",
    "sagalog.infrastructure.health": "sagalog.infrastructure.observability.health",
    "sagalog.infrastructure.demo_sagas": "sagalog.infrastructure.demo.sagas",
    "sagalog.infrastructure.demo_participant": "sagalog.infrastructure.demo.participant",
    "sagalog.infrastructure.demo_rabbitmq": "sagalog.infrastructure.demo.rabbitmq",
    "sagalog.infrastructure.cli_operations": "sagalog.infrastructure.cli.poison",
}
alias_modules(MOVED_MODULES)

__getattr__ = names_on_demand(globals(), lazy=_HOMES)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
