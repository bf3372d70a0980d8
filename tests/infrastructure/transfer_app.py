"""A user's own saga manager, declared as the docs show: a ``SagaManager`` subclass in a System.

``TransferSagas`` names its tables ``transfersagas_*`` on PostgreSQL; the CLI and the
worker reach them through ``--app transfer_app:TransferSagas``. Upstream, ``Transfers``
records a ``Transfer.Requested`` event that starts a ``MoneyTransfer`` saga whose debit
times out after two seconds if nobody answers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import SingleThreadedRunner, System

from sagalog.domain import SagaDefinition, Step
from sagalog.process import Reaction, SagaManager, StartSaga

#: How long the debit may take before the saga times it out (wall clock: the worker fires it).
DEBIT_TIMEOUT = timedelta(seconds=2)

TRANSFER = SagaDefinition(
    name="MoneyTransfer",
    steps=[
        Step(
            name="debit",
            action="Accounts.Debit",
            compensation="Accounts.Refund",
            timeout=DEBIT_TIMEOUT,
        ),
        Step(name="credit", action="Accounts.Credit"),
    ],
)


class Transfer(Aggregate):
    """A transfer a customer asked for (the upstream domain's aggregate)."""

    @event("Requested")
    def __init__(self, amount: int) -> None:
        self.amount = amount


class Transfers(Application[UUID]):
    """The upstream application whose events start transfer sagas."""

    def request(self, amount: int) -> UUID:
        transfer = Transfer(amount)
        self.save(transfer)
        return transfer.id


class TransferSagas(SagaManager):
    """The user's saga manager: its tables are named after it."""

    definitions: ClassVar[list[SagaDefinition]] = [TRANSFER]
    reactions: ClassVar[list[Reaction]] = [
        StartSaga(
            Transfer.Requested,  # type: ignore[attr-defined]  # made by @event
            "MoneyTransfer",
            data=lambda e: {"amount": e.amount},
        )
    ]


def runner(database_url: str) -> SingleThreadedRunner[UUID]:
    """The System of the upstream application and the saga manager, on ``database_url``."""
    system = System(pipes=[[Transfers, TransferSagas]])
    return SingleThreadedRunner(system, env={"SAGALOG_DATABASE_URL": database_url})
