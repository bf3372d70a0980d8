"""In-process participants for the ``sagalog worker`` tests (no tests here).

``sagalog worker --transport in-process --participants
test_cli_participants:complete_everything`` imports this module in the worker's
process: every command it receives succeeds at once.
"""

from __future__ import annotations

from sagalog.domain import Command, CommandKind
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.process import SagaManager


def complete_everything(transport: InProcessTransport, manager: SagaManager) -> None:
    """Subscribe a participant that answers every action and compensation with success."""

    def handle(command: Command) -> None:
        reply_id = f"{command.command_id}:reply"
        if command.kind is CommandKind.ACTION:
            manager.handle_step_completed(
                command.saga_id, command.step, {"by": "worker-test"}, message_id=reply_id
            )
        else:
            manager.handle_compensation_completed(
                command.saga_id, command.step, message_id=reply_id
            )

    transport.subscribe_all(handle)
