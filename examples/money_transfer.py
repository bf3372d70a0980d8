"""A money transfer between two banks' accounts, with in-process participants, end to end.

Run it:  python examples/money_transfer.py  [DATABASE_URL]   (default memory://)

What it shows (docs/process-manager.md, "In-process participants"):

* a ``SagaDefinition``: debit the payer, credit the payee, notify both; a failed
  credit refunds the debit;
* participants as plain functions subscribed to an ``InProcessTransport`` by
  command name (``subscribe``), plus one catch-all (``subscribe_all``);
* how a participant answers: ``Reply.to(command, result=...)`` for success,
  ``Reply.to(command, error=...)`` for failure, handed to ``manager.handle``;
* the ``CommandRelay`` following the manager's log (the outbox) and the loop
  that moves commands until nothing is left to do.

The same ``participants`` function serves the worker::

    sagalog worker --database-url sqlite:///transfers.db --transport in-process \\
        --participants money_transfer:participants --definitions money_transfer:TRANSFER
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from uuid import UUID

from sagalog.domain import Command, RetryPolicy, SagaDefinition, SagaStatus, Step
from sagalog.infrastructure import CommandRelay, InProcessTransport
from sagalog.process import Reply, SagaManager, explain

TRANSFER = SagaDefinition(
    name="MoneyTransfer",
    steps=[
        Step(name="debit", action="Accounts.Debit", compensation="Accounts.Refund"),
        Step(name="credit", action="Accounts.Credit", compensation="Accounts.Reclaim"),
        # After the pivot: notifying cannot undo money, so it is retried, never compensated.
        Step(
            name="notify", action="Mail.Notify", retriable=True, retry=RetryPolicy(max_attempts=3)
        ),
    ],
)


@dataclass
class Bank:
    """The accounts service: balances, and the commands it already handled (at least once!)."""

    balances: dict[str, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    done: dict[UUID, Reply] = field(default_factory=dict)

    def handle(self, command: Command) -> Reply:
        """Run ``command`` once; a repeat (same command id) gets the first reply again."""
        if command.command_id in self.done:
            return self.done[command.command_id]
        data = command.payload["data"]
        amount = int(data["amount"])
        payer, payee = data["from"], data["to"]
        if command.name == "Accounts.Debit":
            if self.balances.get(payer, 0) < amount:
                reply = Reply.to(command, error=f"{payer} has less than {amount}")
            else:
                self.balances[payer] -= amount
                reply = Reply.to(command, result={"debited": amount})
        elif command.name == "Accounts.Credit":
            if payee in self.closed:
                reply = Reply.to(command, error=f"account {payee} is closed")
            else:
                self.balances[payee] = self.balances.get(payee, 0) + amount
                reply = Reply.to(command, result={"credited": amount})
        elif command.name == "Accounts.Refund":
            # A compensation must be safe when its action never ran: refund only what
            # this service really debited for this saga.
            if command.payload.get("result"):
                self.balances[payer] += amount
            reply = Reply.to(command)
        elif command.name == "Accounts.Reclaim":
            if command.payload.get("result"):
                self.balances[payee] -= amount
            reply = Reply.to(command)
        else:
            reply = Reply.to(command, error=f"the bank does not know {command.name}")
        self.done[command.command_id] = reply
        return reply


def participants(
    transport: InProcessTransport, manager: SagaManager, bank: Bank | None = None
) -> Bank:
    """Subscribe the bank and the mailer to ``transport``; replies go to ``manager``.

    The worker calls ``participants(transport, manager)`` (``--participants``).
    """
    accounts = bank or Bank(balances={"alice": 100, "bob": 20})

    def bank_participant(command: Command) -> None:
        manager.handle(accounts.handle(command))  # the reply goes back to the manager

    for name in ("Accounts.Debit", "Accounts.Credit", "Accounts.Refund", "Accounts.Reclaim"):
        transport.subscribe(name, bank_participant)
    sent: list[str] = []

    def anything_else(command: Command) -> None:
        # subscribe_all: every command without its own handler (here: the mailer).
        sent.append(f"{command.payload['data']['to']}: you got {command.payload['data']['amount']}")
        manager.handle(Reply.to(command, result={"mails": len(sent)}))

    transport.subscribe_all(anything_else)
    return accounts


def settle(relay: CommandRelay, transport: InProcessTransport) -> None:
    """Send what the log holds and deliver it, until no command is left (in-process only)."""
    while relay.drain() + transport.deliver():
        pass


def main(database_url: str = "memory://") -> dict[str, SagaStatus]:
    """Run two transfers (one completes, one is refunded); print what happened; return statuses."""
    manager = SagaManager([TRANSFER], database_url)
    transport = InProcessTransport()
    bank = participants(
        transport, manager, Bank(balances={"alice": 100, "bob": 20}, closed={"carol"})
    )
    relay = CommandRelay(manager, transport)
    try:
        ok = manager.start("MoneyTransfer", {"from": "alice", "to": "bob", "amount": 30})
        refunded = manager.start("MoneyTransfer", {"from": "alice", "to": "carol", "amount": 50})
        settle(relay, transport)
        statuses: dict[str, SagaStatus] = {}
        for label, saga_id in (("alice -> bob", ok), ("alice -> carol", refunded)):
            saga = manager.get(saga_id)
            statuses[label] = saga.status
            print(f"{label}: {saga.status.value}")
            for sentence in explain(saga):
                print(f"    {sentence}")
        print(f"balances: {bank.balances}")
        return statuses
    finally:
        relay.close()
        manager.close()


if __name__ == "__main__":
    main(*sys.argv[1:2])
