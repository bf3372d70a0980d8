"""A demo participant service, run as its own process, answering over RabbitMQ.

``python -m sagalog.infrastructure.demo.participant InventoryService --prefix P``
serves every command of the demo sagas whose name starts with ``InventoryService.``
(the part before the dot names the service). Each command succeeds or fails by a
draw seeded with the command id, so a run is repeatable and a command redelivered
to a restarted process gets the same answer. With ``--store`` the processed
command ids live in a SQLite file, so a participant killed and restarted midway
does not handle a command twice. Fencing is on (``--skew-margin SECONDS`` sets its
margin, ``--no-fencing`` turns it off, to compare).

On SIGTERM or SIGINT it stops after the command in hand and prints one JSON line
with its counts (``{"service": …, "handled": …, "duplicates": …, "repeated": …,
"refused": {"deadline_passed": …, "compensated": …}}``) on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any

from sagalog.domain import Command, CommandKind, SagaDefinition
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.signing import SigningKeys, service_of
from sagalog.infrastructure.rabbitmq.topology import Topology
from sagalog.infrastructure.services.fencing import FenceReason, Fencing
from sagalog.infrastructure.services.participant import (
    CommandFailed,
    Handler,
    Participant,
    ProcessedCommandStore,
    SQLiteProcessedCommands,
)


def demo_services(definitions: Iterable[SagaDefinition] = DEMO_DEFINITIONS) -> dict[str, list[str]]:
    """Service name → the command names it handles, for ``definitions``."""
    services: dict[str, list[str]] = {}
    for definition in definitions:
        for step in definition.steps:
            for name in (step.action, step.compensation):
                if name is not None:
                    services.setdefault(service_of(name), []).append(name)
    return {service: sorted(set(names)) for service, names in sorted(services.items())}


def demo_handler(seed: int, failure_rate: float, compensation_failure_rate: float) -> Handler:
    """A handler that fails actions and compensations at the given rates, by command id."""

    def handle(command: Command) -> Any:
        draw = random.Random(f"{seed}:{command.command_id}").random()
        if command.kind is CommandKind.ACTION:
            if draw < failure_rate:
                raise CommandFailed("declined")
            return {"ref": str(command.command_id)[:8]}
        if draw < compensation_failure_rate:
            raise CommandFailed("temporarily unavailable")
        return None

    return handle


def build(
    service: str,
    *,
    url: str | None,
    topology: Topology,
    store: ProcessedCommandStore | None,
    seed: int = 7,
    failure_rate: float = 0.0,
    compensation_failure_rate: float = 0.0,
    fencing: Fencing | None = None,
) -> Participant:
    """The participant for ``service`` with the demo's handlers."""
    names = demo_services().get(service)
    if not names:
        raise SystemExit(f"no demo command belongs to service {service!r}")
    handler = demo_handler(seed, failure_rate, compensation_failure_rate)
    return Participant(
        service,
        dict.fromkeys(names, handler),
        url=url,
        topology=topology,
        store=store,
        fencing=fencing,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one demo participant until SIGTERM/SIGINT; print its counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("service", help="e.g. InventoryService")
    parser.add_argument("--prefix", default="sagalog-demo", help="topology prefix")
    parser.add_argument("--url", default=None, help="amqp:// URL (default: local broker)")
    parser.add_argument("--store", default=None, help="SQLite file of processed command ids")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--compensation-failure-rate", type=float, default=0.0)
    parser.add_argument(
        "--skew-margin", type=float, default=None, help="seconds before a deadline to refuse"
    )
    parser.add_argument("--no-fencing", action="store_true", help="turn every fence off")
    args = parser.parse_args(argv)
    if args.no_fencing:
        fencing = Fencing.off()
    elif args.skew_margin is not None:
        if args.skew_margin < 0:
            parser.error("--skew-margin must not be negative")
        fencing = Fencing(skew_margin=timedelta(seconds=args.skew_margin))
    else:
        fencing = Fencing()
    store = SQLiteProcessedCommands(args.store) if args.store else None
    participant = build(
        args.service,
        url=args.url,
        topology=Topology(args.prefix, signing=SigningKeys.from_env()),
        store=store,
        seed=args.seed,
        failure_rate=args.failure_rate,
        compensation_failure_rate=args.compensation_failure_rate,
        fencing=fencing,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    participant.run(stop)
    if store is not None:
        store.close()
    counts = {
        "service": args.service,
        "handled": participant.handled,
        "duplicates": participant.duplicates,
        "repeated": participant.repeated,
        "refused": {reason.value: participant.refused[reason] for reason in FenceReason},
        "dead_lettered": participant.dead_lettered,
    }
    sys.stdout.write(json.dumps(counts) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process
    raise SystemExit(main())
