"""Who runs on a store: each worker's heartbeat row, and the reply partitions it is given.

Every worker on a shared store (SQLite, PostgreSQL) writes a row in ``sagalog_workers``
(next to the lease, through the lease's connection) every quarter of the lease time:
its host, pid, role, lease epoch, the reply partitions it consumes and its relay lag,
stamped with the database's clock. A row whose heartbeat is older than the lease time
is a worker that is gone. ``sagalog workers`` lists the rows, and the live ones share
the reply partitions among themselves: sorted by name, the ``i``-th of ``n`` live
workers consumes the partitions ``k`` with ``k % n == i`` — every worker computes the
same split from the same rows, and the broker's single-active-consumer queues keep one
consumer per partition while a split moves. See docs/deployment.md.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sagalog.infrastructure.persistence.lease import StoreLease

__all__ = ["WORKERS_TABLE", "WorkerBeat", "WorkerRegistry", "share_of"]

WORKERS_TABLE = "sagalog_workers"
#: Rows whose heartbeat is older than this many lease times are deleted.
FORGET_AFTER_LEASES = 30


@dataclass(frozen=True)
class WorkerBeat:
    """One worker's row: what it is and does, as of its last heartbeat."""

    holder: str
    host: str
    pid: int
    #: ``active`` (holds the lease) or ``standby``.
    role: str
    #: The lease epoch it holds (active) or last saw (0: none yet).
    epoch: int
    #: The reply partitions it consumes now.
    partitions: tuple[int, ...]
    #: Commands waiting for its relay (active only; ``None`` otherwise).
    lag: int | None
    #: Seconds since its last heartbeat (by the database's clock; 0 when written).
    age: float = 0.0


def share_of(holder: str, live: list[str], partitions: int) -> tuple[int, ...]:
    """The reply partitions ``holder`` consumes when ``live`` workers share ``partitions``."""
    names = sorted(set(live) | {holder})
    index, count = names.index(holder), len(names)
    return tuple(k for k in range(partitions) if k % count == index)


class WorkerRegistry:
    """The heartbeat rows of the workers on the store of ``lease``."""

    def __init__(self, lease: StoreLease, *, create: bool = True) -> None:
        self.lease = lease
        ph, now = lease.placeholder, lease.now
        table = f'"{lease.schema}".{WORKERS_TABLE}' if lease.schema else WORKERS_TABLE
        self.table = table
        if create:
            lease.run_ddl(
                f"CREATE TABLE IF NOT EXISTS {table} (holder TEXT PRIMARY KEY, "
                "host TEXT NOT NULL, pid BIGINT NOT NULL, role TEXT NOT NULL, "
                "epoch BIGINT NOT NULL, partitions TEXT NOT NULL, lag BIGINT, "
                "heartbeat_at DOUBLE PRECISION NOT NULL)"
            )
        columns = "holder, host, pid, role, epoch, partitions, lag"
        values = ", ".join(ph(c.strip()) for c in columns.split(","))
        self._beat = (
            f"INSERT INTO {table} ({columns}, heartbeat_at) VALUES ({values}, {now}) "
            "ON CONFLICT (holder) DO UPDATE SET role = excluded.role, epoch = excluded.epoch, "
            "partitions = excluded.partitions, lag = excluded.lag, "
            "heartbeat_at = excluded.heartbeat_at"
        )
        self._select = f"SELECT {columns}, {now} - heartbeat_at FROM {table} ORDER BY holder"
        self._leave = f"DELETE FROM {table} WHERE holder = {ph('holder')}"
        self._forget = f"DELETE FROM {table} WHERE heartbeat_at < {now} - {ph('seconds')}"

    def beat(self, beat: WorkerBeat) -> None:
        """Write ``beat`` as this worker's row, stamped now."""
        self.lease.execute(
            self._beat,
            {
                "holder": beat.holder,
                "host": beat.host,
                "pid": beat.pid,
                "role": beat.role,
                "epoch": beat.epoch,
                "partitions": ",".join(str(k) for k in beat.partitions),
                "lag": beat.lag,
            },
        )

    def workers(self) -> list[WorkerBeat]:
        """Every row, live or not, by name; ``age`` says how old each heartbeat is."""
        return [
            WorkerBeat(
                holder=str(holder),
                host=str(host),
                pid=int(pid),
                role=str(role),
                epoch=int(epoch),
                partitions=tuple(int(k) for k in str(partitions).split(",") if k),
                lag=None if lag is None else int(lag),
                age=max(0.0, float(age)),
            )
            for holder, host, pid, role, epoch, partitions, lag, age in self.lease.execute(
                self._select, {}
            )
        ]

    def live(self) -> list[WorkerBeat]:
        """The workers whose heartbeat is younger than the lease time."""
        return [w for w in self.workers() if w.age < self.lease.lease_seconds]

    def leave(self, holder: str) -> None:
        """Delete ``holder``'s row (a clean stop: the others take its partitions at once)."""
        self.lease.execute(self._leave, {"holder": holder})

    def forget_gone(self) -> None:
        """Delete the rows of workers gone for ``FORGET_AFTER_LEASES`` lease times."""
        self.lease.execute(
            self._forget, {"seconds": self.lease.lease_seconds * FORGET_AFTER_LEASES}
        )


def this_host() -> tuple[str, int]:
    """This process's host name and pid."""
    return socket.gethostname(), os.getpid()
