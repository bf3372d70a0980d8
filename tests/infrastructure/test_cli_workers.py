"""``sagalog workers`` lists the live workers on a store from the rows their heartbeats write."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from support.broker import wait_until
from test_cli_helpers import invoke

from sagalog.domain import SagaDefinition, Step
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager

ONE = SagaDefinition("One", [Step(name="hold", action="Hotel.Hold")])


@pytest.fixture
def shared_url(database_url: str) -> str:
    if database_url.startswith("memory"):
        pytest.skip("workers share a SQLite or PostgreSQL store")
    return database_url


@pytest.fixture
def two_workers(shared_url: str) -> Iterator[list[Worker]]:
    managers = [SagaManager([ONE], shared_url) for _ in range(2)]
    workers = [
        Worker(m, tick_interval=0.05, poll_interval=0.05, lease_seconds=1.0) for m in managers
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(20)
        for worker in workers:
            worker.close()
        for manager in managers:
            manager.close()


def _listed(url: str) -> list[dict[str, object]]:
    result = invoke("workers", "--database-url", url, "--lease-seconds", "1", "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_workers_lists_each_live_worker_with_its_role(
    shared_url: str, two_workers: list[Worker]
) -> None:
    wait_until(
        lambda: sorted(str(r["role"]) for r in _listed(shared_url)) == ["active", "standby"],
        message="both workers listed, one active",
    )
    rows = {str(r["holder"]): r for r in _listed(shared_url)}
    assert set(rows) == {w.holder for w in two_workers}
    active = next(w for w in two_workers if w.active.is_set())
    assert rows[active.holder]["role"] == "active"
    assert rows[active.holder]["lag"] is None  # no transport: no relay, no relay lag
    assert int(str(rows[active.holder]["epoch"])) >= 1
    assert all(r["live"] is True for r in rows.values())
    table = invoke("workers", "--database-url", shared_url)
    assert table.exit_code == 0, table.output
    assert active.holder in table.stdout
    assert "2 worker(s)" in table.output
    # A worker that stops deletes its row; the other one takes the lease over.
    active.stop()
    wait_until(
        lambda: [str(r["role"]) for r in _listed(shared_url)] == ["active"],
        message="the other worker alone, and active",
    )


def test_workers_on_a_memory_store_is_a_one_line_error() -> None:
    result = invoke("workers", "--database-url", "memory://")
    assert result.exit_code == 2
    assert "error:" in result.output
    assert "SQLite or PostgreSQL" in result.output


def test_workers_on_a_store_no_worker_ran_on_lists_none_and_writes_nothing(
    shared_url: str,
) -> None:
    SagaManager([ONE], shared_url).close()  # a store with sagas' tables, never a worker
    result = invoke("workers", "--database-url", shared_url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    from sagalog.infrastructure.persistence.lease import LEASE_TABLE, StoreLease
    from sagalog.process.store.url import parse_database_url

    lease = StoreLease(parse_database_url(shared_url), create=False)
    try:
        with pytest.raises(Exception, match=f"{LEASE_TABLE}|no such table|does not exist"):
            lease.holder()
    finally:
        lease.close()
