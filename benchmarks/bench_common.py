"""Shared pieces of the side-by-side benchmarks: the saga shape, statistics, PostgreSQL admin.

Every system runs the same 4-step saga: ``reserve_inventory`` → ``charge_payment``
→ ``create_shipment`` → ``send_confirmation``; the first three have a
compensation, the last has none. Scenario ``a``: every step succeeds. Scenario
``b``: ``create_shipment`` fails, so the compensations of ``charge_payment`` and
``reserve_inventory`` run (two compensations), newest first.
"""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from sagalog.domain import SagaDefinition, Step, parallel

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_ENV = "SAGALOG_BENCH_PG_URL"

#: Every benchmark database is called ``sagalog_bench_<run id>_<what>``.
DB_PREFIX = "sagalog_bench_"

STEPS: tuple[str, ...] = (
    "reserve_inventory",
    "charge_payment",
    "create_shipment",
    "send_confirmation",
)
#: Steps that have a compensation.
COMPENSATABLE: frozenset[str] = frozenset(STEPS[:3])
#: The step that fails in scenario ``b``.
FAILING_STEP = "create_shipment"
SCENARIOS: tuple[str, ...] = ("a", "b")
#: Saga transitions (transactions of the manager) per saga: start + one per reply.
TRANSITIONS: dict[str, int] = {"a": 5, "b": 6}
#: Step actions and compensations run per saga.
EFFECTS: dict[str, int] = {"a": 4, "b": 5}

STEP_TIMEOUT = timedelta(seconds=30)

BENCH_DEFINITION = SagaDefinition(
    "BenchOrder",
    [
        Step(
            name="reserve_inventory",
            action="InventoryService.ReserveItems",
            compensation="InventoryService.ReleaseItems",
            timeout=STEP_TIMEOUT,
        ),
        Step(
            name="charge_payment",
            action="PaymentService.ChargePayment",
            compensation="PaymentService.RefundPayment",
            timeout=STEP_TIMEOUT,
        ),
        Step(
            name="create_shipment",
            action="ShippingService.CreateShipment",
            compensation="ShippingService.CancelShipment",
            timeout=STEP_TIMEOUT,
        ),
        Step(
            name="send_confirmation",
            action="NotificationService.SendConfirmation",
            timeout=STEP_TIMEOUT,
        ),
    ],
)


#: sagalog only (``run.py --parallel``): three steps dispatched together at the start
#: and joined at the end, beside the linear 4-step saga. Every step succeeds: start +
#: three replies, the sagas ending in the transition of the last reply.
BENCH_PARALLEL_DEFINITION = SagaDefinition(
    "BenchTrip",
    [
        parallel(
            *(
                Step(
                    name=f"book_{what}",
                    action=f"{what.capitalize()}Service.Book",
                    compensation=f"{what.capitalize()}Service.Cancel",
                    timeout=STEP_TIMEOUT,
                )
                for what in ("hotel", "flight", "car")
            )
        )
    ],
)


def saga_data(i: int) -> dict[str, Any]:
    """The data every system's saga number ``i`` starts with."""
    return {"order_id": f"o-{i}", "items": 3, "amount": 120}


def step_result(command_ref: str) -> dict[str, Any]:
    """What a participant answers for a completed step."""
    return {"ref": command_ref[:8]}


# -- statistics -------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of ``values`` (and the values themselves)."""
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation of sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# -- PostgreSQL administration ----------------------------------------------------


def admin_url() -> str:
    """The maintenance URL (database ``postgres``) benchmark databases are created from."""
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


def database_url(base_url: str, dbname: str) -> str:
    """``base_url`` pointing at database ``dbname`` instead."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, "", ""))


@contextmanager
def admin_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for DDL and statistics."""
    conn = psycopg.connect(url, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def create_database(admin: str, dbname: str) -> None:
    """(Re)create the database ``dbname``; it must start with :data:`DB_PREFIX`."""
    assert dbname.startswith(DB_PREFIX), dbname
    with admin_connection(admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def drop_database(admin: str, dbname: str) -> None:
    """Drop ``dbname`` (only ever one of ours)."""
    assert dbname.startswith(DB_PREFIX), dbname
    with admin_connection(admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def settled_commits(admin: str, dbname: str, *, timeout: float = 20.0) -> int:
    """``pg_stat_database.xact_commit`` of ``dbname`` once every session has left.

    PostgreSQL 15 keeps cumulative statistics in shared memory; a backend flushes
    its pending counters when it goes idle (at most once a second, else after an
    idle timeout of ten seconds) and always when it exits. So we wait until no
    session is connected to ``dbname`` (all flushed at exit), then read the
    counter after ``pg_stat_clear_snapshot()`` (the reader caches a snapshot per
    transaction otherwise) until two reads 0.2 s apart agree. The reading
    session is connected to the maintenance database, so it adds nothing here.
    """
    deadline = time.monotonic() + timeout
    previous: int | None = None
    with admin_connection(admin) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = %s), "
                "(SELECT xact_commit FROM pg_stat_database WHERE datname = %s)",
                (dbname, dbname),
            ).fetchone()
            assert row is not None
            sessions, commits = int(row[0]), int(row[1] or 0)
            if sessions == 0 and commits == previous:
                return commits
            if time.monotonic() > deadline:
                return commits
            previous = commits if sessions == 0 else None
            time.sleep(0.2)


def table_counters(url: str) -> dict[str, dict[str, int]]:
    """Rows inserted/updated/deleted per user table of the database at ``url``."""
    with admin_connection(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del "
            "FROM pg_stat_user_tables ORDER BY 1, 2"
        ).fetchall()
    return {f"{r[0]}.{r[1]}": {"ins": int(r[2]), "upd": int(r[3]), "del": int(r[4])} for r in rows}


def server_version(admin: str) -> str:
    """The PostgreSQL server version string."""
    with admin_connection(admin) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        settings = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers', "
            "'commit_delay', 'full_page_writes') ORDER BY name"
        ).fetchall()
    assert row is not None
    extra = ", ".join(f"{name}={setting}" for name, setting in settings)
    return f"{row[0]} ({extra})"


# -- the machine ------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What the figures were measured on."""

    nproc: int
    memory_gib: float
    cpu_model: str
    python: str
    sqlite: str
    kernel: str


def machine() -> Machine:
    """Describe this machine (``/proc/cpuinfo``, ``/proc/meminfo``)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return Machine(
        nproc=len(os.sched_getaffinity(0)),
        memory_gib=round(mem_kib / 1024 / 1024, 1),
        cpu_model=cpu,
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        kernel=platform.release(),
    )


PACKAGES: tuple[str, ...] = (
    "sagalog",
    "eventsourcing",
    "orjson",
    "psycopg",
    "pydantic",
    "dbos",
    "sqlalchemy",
    "sagaz",
    "asyncpg",
    "aiosqlite",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages involved (``None`` when missing)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state(repo: Path) -> dict[str, str]:
    """The commit the benchmarked sagalog code is at, and whether the tree was dirty."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "domain", "process", "infrastructure"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"head": "unknown", "library_tree": "unknown"}
    return {"head": head, "library_tree": "modified" if dirty else "clean"}


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the noise other users add)."""
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """This process's resident set size now (``/proc/self/status``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
