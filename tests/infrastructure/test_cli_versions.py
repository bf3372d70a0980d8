"""``sagalog versions``: sagas per definition version, after the demo and on edge cases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_helpers import CLI_SHOP, invoke, invoke_json, run_demo, seed_sagas, shared_store

from sagalog.infrastructure.cli.output import console
from sagalog.infrastructure.demo.sagas import (
    ORDER_FULFILLMENT,
    ORDER_FULFILLMENT_V1,
    TRAVEL_BOOKING,
)
from sagalog.process import SagaManager

#: One pytest-xdist worker runs this module: its tests share its store (a module fixture).
pytestmark = pytest.mark.xdist_group("test_cli_versions")


@pytest.fixture(scope="module")
def demo_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo's 40 sagas, on SQLite for the memory backend (the CLI needs a real store)."""
    with shared_store(backend, tmp_path_factory.mktemp("cli-versions")) as url:
        yield run_demo(url)


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(row["saga_type"], row["version"]): row for row in rows}


def test_after_the_demo_versions_counts_every_saga_by_the_version_it_started_on(
    demo_url: str,
) -> None:
    rows = _by_key(invoke_json("versions", "--database-url", demo_url))
    assert set(rows) == {
        ("OrderFulfillment", 1),
        ("OrderFulfillment", 2),
        ("TravelBooking", 1),
        ("TravelBooking", 2),
    }
    assert sum(r["in_flight_total"] + r["ended_total"] for r in rows.values()) == 40
    old, new = rows[("OrderFulfillment", 1)], rows[("OrderFulfillment", 2)]
    assert old["fingerprint"] == ORDER_FULFILLMENT_V1.fingerprint
    assert new["fingerprint"] == ORDER_FULFILLMENT.fingerprint
    assert old["in_flight_total"] + old["ended_total"] == 5  # every fourth of the 20 orders
    assert (old["registered"], old["newest"], new["newest"]) == (True, False, True)
    # Trips start on version 2 (in parallel); version 1 stays registered, with none.
    trips, sequential = rows[("TravelBooking", 2)], rows[("TravelBooking", 1)]
    assert trips["fingerprint"] == TRAVEL_BOOKING.fingerprint
    assert trips["in_flight_total"] + trips["ended_total"] == 20
    assert sequential["in_flight_total"] + sequential["ended_total"] == 0
    # The counts agree with the listing, status by status.
    listed = invoke_json("list", "--database-url", demo_url, "--limit", "1000")
    by_status: dict[str, int] = {}
    for row in rows.values():
        for status, n in {**row["in_flight"], **row["ended"]}.items():
            by_status[status] = by_status.get(status, 0) + n
    expected: dict[str, int] = {}
    for row in listed:
        expected[row["status"]] = expected.get(row["status"], 0) + 1
    assert by_status == expected


def test_versions_prints_a_table_naming_each_version_and_whether_the_code_has_it(
    demo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_width", 160)
    result = invoke("versions", "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    for text in ("OrderFulfillment", ORDER_FULFILLMENT_V1.fingerprint[:8], "registered", "newest"):
        assert text in result.stdout
    monkeypatch.setattr(console, "_width", 80)
    narrow = invoke("versions", "--database-url", demo_url)
    assert "OrderFulfillment v1" in narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80


def test_sagas_of_a_type_the_code_does_not_register_are_listed_as_not_registered(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}" if backend == "memory" else database_url
    seed_sagas(url)
    rows = _by_key(invoke_json("versions", "--database-url", url))
    shop = rows[("CliShop", 1)]
    assert (shop["registered"], shop["newest"], shop["fingerprint"]) == (
        False,
        False,
        CLI_SHOP.fingerprint,
    )
    assert shop["in_flight"] == {"COMPENSATING": 1, "DEAD_LETTERED": 2, "PENDING": 2}
    assert shop["ended"] == {"COMPLETED": 1, "FAILED": 1}
    assert "not registered" in invoke("versions", "--database-url", url).stdout


def test_an_empty_database_lists_the_registered_versions_with_no_sagas(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}" if backend == "memory" else database_url
    SagaManager([], url).close()  # creates the store, records nothing
    rows = invoke_json("versions", "--database-url", url)
    assert {(r["saga_type"], r["version"]) for r in rows} == {
        ("OrderFulfillment", 1),
        ("OrderFulfillment", 2),
        ("TravelBooking", 1),
        ("TravelBooking", 2),
    }
    assert all(r["in_flight_total"] == r["ended_total"] == 0 for r in rows)
    assert "no sagas recorded yet" in invoke("versions", "--database-url", url).stdout


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://localhost/x", "unsupported scheme 'mysql'"),
        ("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", "cannot reach database"),
    ],
)
def test_a_bad_or_unreachable_database_is_one_line_exit_2(url: str, fragment: str) -> None:
    result = invoke("versions", "--database-url", url)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert fragment in result.stderr


def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = invoke("versions", "--database-url", f"sqlite:///{missing}")
    assert result.exit_code == 2
    assert f"no saga database at {missing}" in result.stderr
    assert not missing.exists()


def test_versions_and_show_have_help_naming_their_options() -> None:
    versions = invoke("versions", "--help")
    assert versions.exit_code == 0
    assert "--json" in versions.stdout
    show = invoke("show", "--help")
    assert show.exit_code == 0
    assert "--plot" in show.stdout
