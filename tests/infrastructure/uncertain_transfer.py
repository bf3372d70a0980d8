"""The money transfer of the uncertain-steps crash test: its definition and its participants.

``TRANSFER`` (debit → credit → notify, short step timeouts) is what the worker runs
(``sagalog worker --definitions uncertain_transfer:TRANSFER``). Each participant
service runs as its own process::

    python uncertain_transfer.py SERVICE --prefix P --url URL --store PROCESSED.db \\
        --accounts ACCOUNTS.db [--slow-seconds S] [--skew-margin M]

``SERVICE`` is ``Payer`` (``Payer.Debit`` / ``Payer.Refund``), ``Payee``
(``Payee.Credit`` / ``Payee.Reclaim``) or ``Mail`` (``Mail.Notify``). Each is a
``sagalog.infrastructure`` :class:`Participant` with its SQLite processed-command
store, fencing on, and keeps its effects in its own SQLite database (``ACCOUNTS``),
keyed by the idempotency key of the action, as docs/services.md shows:

* an action runs its effect at most once per key (the row ``done``); an action that
  finds its key ``undone`` or ``void`` (compensated already) does nothing and
  answers failed;
* a compensation undoes a ``done`` row once (``undone``), and for an action that
  never ran leaves a ``void`` row and answers success.

A transfer whose data says ``"slow": "<step>"`` makes that step's first attempt
slow: the handler waits ``--slow-seconds`` (longer than the step's timeout) before
its effect, so the saga times it out while it runs, and its reply comes late.

On SIGTERM the process finishes the command in hand and prints one JSON line with
its counts: ``handled``, ``duplicates``, ``repeated`` and ``refused`` by reason.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from sagalog.domain import Command, CommandKind, RetryPolicy, SagaDefinition, Step
from sagalog.infrastructure.rabbitmq import Topology
from sagalog.infrastructure.services.fencing import FenceReason, Fencing, action_key
from sagalog.infrastructure.services.participant import (
    CommandFailed,
    Handler,
    Participant,
    SQLiteProcessedCommands,
)

#: Every action's timeout. The issue's deployment used 10 s; 1.5 s keeps the test short.
STEP_TIMEOUT = timedelta(seconds=1.5)
#: A compensation's timeout: compensations are never fenced by deadline and are retried.
COMPENSATION_TIMEOUT = timedelta(seconds=3)
#: How long the slow first attempt of a step waits before its effect (> ``STEP_TIMEOUT``).
DEFAULT_SLOW_SECONDS = 2.5
#: Refuse an action this close to its deadline (the participant's clock skew margin).
DEFAULT_SKEW_MARGIN = 0.25

_KEEP_TRYING = RetryPolicy(
    max_attempts=50, initial_delay=timedelta(seconds=0.3), max_delay=timedelta(seconds=2)
)

TRANSFER = SagaDefinition(
    name="UncertainTransfer",
    steps=[
        Step(
            name="debit",
            action="Payer.Debit",
            compensation="Payer.Refund",
            timeout=STEP_TIMEOUT,
            # A second attempt after a timeout: it must not debit twice.
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=0.3)),
            compensation_timeout=COMPENSATION_TIMEOUT,
            compensation_retry=_KEEP_TRYING,
        ),
        Step(
            name="credit",
            action="Payee.Credit",
            compensation="Payee.Reclaim",
            timeout=STEP_TIMEOUT,
            compensation_timeout=COMPENSATION_TIMEOUT,
            compensation_retry=_KEEP_TRYING,
        ),
        Step(
            name="notify",
            action="Mail.Notify",
            retriable=True,
            timeout=STEP_TIMEOUT,
            retry=_KEEP_TRYING,
        ),
    ],
)

#: Service → (action, compensation, the data field naming the account, sign of the effect).
SERVICES: dict[str, tuple[str, str | None, str, int]] = {
    "Payer": ("Payer.Debit", "Payer.Refund", "source", -1),
    "Payee": ("Payee.Credit", "Payee.Reclaim", "target", +1),
    "Mail": ("Mail.Notify", None, "target", 0),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL);
-- one row per action key: 'done' (in force), 'undone' (compensated), 'void' (compensated
-- before it ever ran: it never will)
CREATE TABLE IF NOT EXISTS effects (
    action_key TEXT PRIMARY KEY,
    saga_id TEXT NOT NULL,
    step TEXT NOT NULL,
    account TEXT NOT NULL,
    delta INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
"""


def open_accounts(path: str | Path) -> sqlite3.Connection:
    """The service's own database (created if needed), in autocommit mode."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


class Accounts:
    """The handlers of one service over its own database."""

    def __init__(self, service: str, db: sqlite3.Connection, slow_seconds: float) -> None:
        self.action, self.compensation, self.field, self.sign = SERVICES[service]
        self.db = db
        self.slow_seconds = slow_seconds

    def handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {self.action: self.act}
        if self.compensation is not None:
            handlers[self.compensation] = self.undo
        return handlers

    def act(self, command: Command) -> dict[str, Any]:
        data = command.payload["data"]
        if data.get("slow") == command.step and command.attempt == 1:
            time.sleep(self.slow_seconds)  # the saga times this attempt out meanwhile
        key, account = str(command.idempotency_key), str(data[self.field])
        delta = self.sign * int(data["amount"])
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                "SELECT state FROM effects WHERE action_key = ?", (key,)
            ).fetchone()
            if row is not None and row[0] != "done":
                raise CommandFailed(f"{command.step} already compensated ({row[0]}); not done")
            if row is None:  # else: done by an earlier attempt; the same answer
                self.db.execute(
                    "INSERT INTO accounts VALUES (?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET balance = balance + excluded.balance",
                    (account, delta),
                )
                self.db.execute(
                    "INSERT INTO effects VALUES (?, ?, ?, ?, ?, 'done', ?)",
                    (key, str(command.saga_id), command.step, account, delta, command.attempt),
                )
        return {"amount": int(data["amount"])}

    def undo(self, command: Command) -> None:
        assert command.kind is CommandKind.COMPENSATION
        key = str(action_key(command))
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                "SELECT state, account, delta FROM effects WHERE action_key = ?", (key,)
            ).fetchone()
            if row is None:  # never done: a no-op that answers success, and a tombstone
                self.db.execute(
                    "INSERT INTO effects VALUES (?, ?, ?, '', 0, 'void', ?)",
                    (key, str(command.saga_id), command.step, command.attempt),
                )
            elif row[0] == "done":
                self.db.execute(
                    "UPDATE accounts SET balance = balance - ? WHERE id = ?", (row[2], row[1])
                )
                self.db.execute("UPDATE effects SET state = 'undone' WHERE action_key = ?", (key,))
            # 'undone' or 'void': compensated before; the same answer


def main(argv: Sequence[str] | None = None) -> int:
    """Run one participant service until SIGTERM/SIGINT; print its counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--store", required=True, help="SQLite processed-command store")
    parser.add_argument("--accounts", required=True, help="the service's own SQLite database")
    parser.add_argument("--slow-seconds", type=float, default=DEFAULT_SLOW_SECONDS)
    parser.add_argument("--skew-margin", type=float, default=DEFAULT_SKEW_MARGIN)
    args = parser.parse_args(argv)
    accounts = Accounts(args.service, open_accounts(args.accounts), args.slow_seconds)
    store = SQLiteProcessedCommands(args.store)
    participant = Participant(
        args.service,
        accounts.handlers(),
        url=args.url,
        topology=Topology(args.prefix),
        store=store,
        fencing=Fencing(skew_margin=timedelta(seconds=args.skew_margin)),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    participant.run(stop)
    store.close()
    accounts.db.close()
    counts = {
        "service": args.service,
        "handled": participant.handled,
        "duplicates": participant.duplicates,
        "repeated": participant.repeated,
        "refused": {reason.value: participant.refused[reason] for reason in FenceReason},
    }
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
