"""Cross-service approval, compensated automatically when it expires or is revoked.

Run it:  python examples/approval.py  [DATABASE_URL]   (default memory://)

A purchase needs a manager's approval (the Approvals service, an eventsourcing
application upstream of the saga manager), then a budget reservation (Finance) and
an order at a supplier (Purchasing, in-process participants). Two requests:

* **expired** — nobody decides: the ``approve`` step's timeout (two days) is its
  expiry. ``tick`` at a moment past it (the worker does this on the wall clock)
  records ``StepTimedOut``, and the saga fails, compensating whatever it had done;
* **revoked** — the approval is granted (``CompleteStep`` from the upstream
  ``Decided`` event, ``when=lambda e: e.granted``), the budget is reserved and the
  order is placed; the supplier has not confirmed when the approver revokes. The
  upstream ``Revoked`` event aborts the saga (``AbortSaga``), recorded with that
  event as its cause, and the saga compensates what it has done, newest first.

See docs/process-manager.md ("Reactions", "In-process participants").
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import SingleThreadedRunner, System

from sagalog.domain import Command, Saga, SagaDefinition, Step
from sagalog.infrastructure import CommandRelay, InProcessTransport
from sagalog.process import (
    AbortSaga,
    CompleteStep,
    FailStep,
    Reaction,
    Reply,
    SagaManager,
    explain,
    saga_id_for,
)

#: How long an approval request stays open: the ``approve`` step's timeout.
APPROVAL_EXPIRES_AFTER = timedelta(days=2)

PURCHASE = SagaDefinition(
    name="PurchaseApproval",
    steps=[
        Step(
            name="approve",
            action="Approvals.RequestApproval",
            compensation="Approvals.WithdrawRequest",
            timeout=APPROVAL_EXPIRES_AFTER,
        ),
        Step(name="reserve_budget", action="Finance.Reserve", compensation="Finance.Release"),
        Step(
            name="place_order",
            action="Purchasing.PlaceOrder",
            compensation="Purchasing.CancelOrder",
            timeout=timedelta(days=7),
        ),
    ],
)


class ApprovalRequest(Aggregate):
    """One request for approval, in the Approvals service."""

    @event("Opened")
    def __init__(self, purchase_id: str, amount: int) -> None:
        self.purchase_id = purchase_id
        self.amount = amount
        self.open = True

    @event("Decided")
    def decide(self, purchase_id: str, granted: bool, by: str, note: str) -> None:
        self.open = False
        self.granted = granted

    @event("Revoked")
    def revoke(self, purchase_id: str, by: str, reason: str) -> None:
        self.granted = False

    @event("Withdrawn")
    def withdraw(self) -> None:
        self.open = False


class Approvals(Application[UUID]):
    """The approvals service: requests open, get decided, revoked or withdrawn."""

    def open(self, purchase_id: str, amount: int) -> UUID:
        request = ApprovalRequest(purchase_id, amount)
        self.save(request)
        return request.id

    def decide(self, request_id: UUID, *, granted: bool, by: str, note: str = "") -> None:
        request: ApprovalRequest = self.repository.get(request_id)
        request.decide(request.purchase_id, granted, by, note)
        self.save(request)

    def revoke(self, request_id: UUID, *, by: str, reason: str) -> None:
        request: ApprovalRequest = self.repository.get(request_id)
        request.revoke(request.purchase_id, by, reason)
        self.save(request)

    def withdraw(self, request_id: UUID) -> None:
        request: ApprovalRequest = self.repository.get(request_id)
        if request.open:
            request.withdraw()
            self.save(request)


Decided: Any = ApprovalRequest.Decided  # type: ignore[attr-defined]  # made by @event
Revoked: Any = ApprovalRequest.Revoked  # type: ignore[attr-defined]


def _purchase(e: Any) -> str:
    """The business key: the purchase the approval is for (every event carries it)."""
    return str(e.purchase_id)


class PurchaseSagas(SagaManager):
    """The saga manager: its reactions turn Approvals' events into saga decisions."""

    definitions: ClassVar[list[SagaDefinition]] = [PURCHASE]
    reactions: ClassVar[list[Reaction]] = [
        CompleteStep(
            Decided,
            "PurchaseApproval",
            "approve",
            key=_purchase,
            result=lambda e: {"by": e.by},
            when=lambda e: e.granted,
        ),
        FailStep(
            Decided,
            "PurchaseApproval",
            "approve",
            key=_purchase,
            error=lambda e: f"declined by {e.by}: {e.note}",
            when=lambda e: not e.granted,
        ),
        AbortSaga(
            Revoked,
            "PurchaseApproval",
            key=_purchase,
            actor=lambda e: e.by,
            reason=lambda e: f"approval revoked: {e.reason}",
        ),
    ]


class Services:
    """The in-process participants: Approvals (through its application), Finance, Purchasing."""

    def __init__(self, approvals: Approvals, sagas: PurchaseSagas) -> None:
        self.approvals, self.sagas = approvals, sagas
        self.requests: dict[str, UUID] = {}
        self.reserved: dict[str, int] = {}
        self.orders: dict[str, str] = {}

    def subscribe(self, transport: InProcessTransport) -> None:
        transport.subscribe("Approvals.RequestApproval", self.request_approval)
        transport.subscribe("Approvals.WithdrawRequest", self.withdraw_request)
        transport.subscribe_all(self.finance_and_purchasing)

    def request_approval(self, command: Command) -> None:
        # No reply now: the answer is the approver's decision, an upstream event.
        purchase = command.payload["data"]["purchase_id"]
        if purchase not in self.requests:
            self.requests[purchase] = self.approvals.open(
                purchase, command.payload["data"]["amount"]
            )

    def withdraw_request(self, command: Command) -> None:
        request_id = self.requests.get(command.payload["data"]["purchase_id"])
        if request_id is not None:  # safe when the request was never opened
            self.approvals.withdraw(request_id)
        self.sagas.handle(Reply.to(command))

    def finance_and_purchasing(self, command: Command) -> None:
        data = command.payload["data"]
        purchase = data["purchase_id"]
        if command.name == "Finance.Reserve":
            self.reserved[purchase] = data["amount"]
            self.sagas.handle(Reply.to(command, result={"reserved": data["amount"]}))
        elif command.name == "Finance.Release":
            self.reserved.pop(purchase, None)
            self.sagas.handle(Reply.to(command))
        elif command.name == "Purchasing.PlaceOrder":
            self.orders[purchase] = "placed"  # the supplier confirms later (or never)
        elif command.name == "Purchasing.CancelOrder":
            if purchase in self.orders:
                self.orders[purchase] = "cancelled"
            self.sagas.handle(Reply.to(command))


def settle(relay: CommandRelay, transport: InProcessTransport) -> None:
    """Send and deliver commands until none is left."""
    while relay.drain() + transport.deliver():
        pass


def main(database_url: str = "memory://") -> dict[str, list[str]]:
    """Run both requests; print what happened; return each saga's event names."""
    runner: SingleThreadedRunner[UUID] = SingleThreadedRunner(
        System(pipes=[[Approvals, PurchaseSagas]]), env={"SAGALOG_DATABASE_URL": database_url}
    )
    runner.start()
    approvals, sagas = runner.get(Approvals), runner.get(PurchaseSagas)
    transport = InProcessTransport()
    services = Services(approvals, sagas)
    services.subscribe(transport)
    relay = CommandRelay(sagas, transport)
    try:
        expired = sagas.start(
            "PurchaseApproval",
            {"purchase_id": "P-1", "amount": 900},
            saga_id=saga_id_for("PurchaseApproval", "P-1"),
        )
        revoked = sagas.start(
            "PurchaseApproval",
            {"purchase_id": "P-2", "amount": 4000},
            saga_id=saga_id_for("PurchaseApproval", "P-2"),
        )
        settle(relay, transport)

        # P-2: granted, budget reserved, order placed; the supplier has not confirmed yet.
        approvals.decide(services.requests["P-2"], granted=True, by="dana", note="ok")
        settle(relay, transport)
        # ...then the approver takes it back: the upstream event aborts the saga.
        approvals.revoke(services.requests["P-2"], by="dana", reason="budget frozen")
        settle(relay, transport)

        # P-1: nobody decided; two days later its approval has expired.
        later = datetime.now(UTC) + APPROVAL_EXPIRES_AFTER + timedelta(minutes=1)
        sagas.tick(now=later)
        settle(relay, transport)

        story: dict[str, list[str]] = {}
        for label, saga_id in (("P-1 (expired)", expired), ("P-2 (revoked)", revoked)):
            saga = sagas.get(saga_id)
            history = sagas.history(saga_id)
            story[label] = [type(e).__name__ for e in history]
            print(f"{label}: {saga.status.value}")
            for sentence in explain(saga):
                print(f"    {sentence}")
            aborted = [e for e in history if isinstance(e, Saga.SagaAborted)]
            if aborted:
                print(f"    aborted because of upstream event {aborted[0].causation_id}")
        print(f"budget reserved: {services.reserved}; orders: {services.orders}")
        return story
    finally:
        relay.close()
        runner.stop()


if __name__ == "__main__":
    main(*sys.argv[1:2])
