"""A participant process for the tracing test: ``python traced_participant.py SERVICE PREFIX URL``.

``inventory`` reserves; ``payment`` declines a charge's first attempt and accepts the
second. ``SAGALOG_TRACING_FILE`` in the environment makes the participant helper export
its spans to that file. Runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from sagalog.domain import Command
from sagalog.infrastructure.rabbitmq import Topology
from sagalog.infrastructure.services.participant import CommandFailed, Participant


def charge(command: Command) -> Any:
    if command.attempt == 1:
        raise CommandFailed("card declined, try later")
    return {"charged": True}


HANDLERS = {
    "inventory": {"Traced.Reserve": lambda command: {"reserved": True}},
    "payment": {"Traced.Charge": charge},
}


def main() -> None:
    service, prefix, url = sys.argv[1:4]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    participant = Participant(service, HANDLERS[service], url=url, topology=Topology(prefix))
    print("ready", flush=True)
    participant.run(stop)


if __name__ == "__main__":
    main()
