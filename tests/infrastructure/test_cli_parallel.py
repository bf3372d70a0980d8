"""``show`` and ``replay`` on the demo's travel booking, whose hotel, flight and car run at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_helpers import cli_url_for, invoke, invoke_json, run_demo, shared_store

from sagalog.infrastructure.cli.output import console
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import SagaManager

#: One pytest-xdist worker runs this module: its tests share its demo store (a module fixture).
pytestmark = pytest.mark.xdist_group("test_cli_parallel")


@pytest.fixture(scope="module")
def demo_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shared_store(backend, tmp_path_factory.mktemp("cli-parallel")) as url:
        yield run_demo(url)


@pytest.fixture(scope="module")
def rolled_back_trip(demo_url: str) -> str:
    """A trip whose branches went out together and which was rolled back."""
    for row in invoke_json("list", "--database-url", demo_url, "--limit", "1000"):
        if row["saga_type"] != "TravelBooking" or row["status"] != "FAILED":
            continue
        shown = invoke_json("show", row["saga_id"], "--database-url", demo_url)
        dispatched = [e for e in shown["timeline"] if e["event_type"] == "StepDispatched"]
        if len(dispatched) == 4 and any(
            e["event_type"] == "CompensationCompleted" for e in shown["timeline"]
        ):
            return str(row["saga_id"])
    raise AssertionError("the demo rolled back no trip after its fan-out")


def test_show_names_the_steps_that_run_in_parallel(
    demo_url: str, rolled_back_trip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_width", 160)
    result = invoke("show", rolled_back_trip, "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    assert "TravelBooking v2" in result.stdout
    assert "book_hotel, book_flight, rent_car (after check_budget)" in result.stdout


def test_replay_says_what_ran_concurrently(
    demo_url: str, rolled_back_trip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_width", 160)
    result = invoke("replay", rolled_back_trip, "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    assert "in flight together" in result.stdout  # in the steps cell of the rows
    assert "ran concurrently (v5 to v7): book_hotel, book_flight, rent_car" in result.stdout
    at_fan_out = invoke("replay", rolled_back_trip, "--database-url", demo_url, "--at", "6")
    assert "in flight together" in at_fan_out.stdout
    steps = invoke_json("replay", rolled_back_trip, "--database-url", demo_url)
    assert steps[5]["state"]["in_flight"] == ["book_hotel", "book_flight", "rent_car"]


def test_show_of_an_order_has_no_parallel_row(demo_url: str) -> None:
    rows = invoke_json("list", "--database-url", demo_url, "--limit", "1000")
    order = next(r["saga_id"] for r in rows if r["saga_type"] == "OrderFulfillment")
    result = invoke("show", str(order), "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    assert "in parallel" not in result.stdout


def test_show_of_a_trip_in_flight_says_which_branches_it_waits_for(
    backend: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = cli_url_for(backend, database_url, tmp_path)
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:
        saga_id = manager.start("TravelBooking", {"trip_id": "t-1", "nights": 2})
        manager.handle_step_completed(saga_id, "check_budget", {"limit": 900})
        manager.handle_step_completed(saga_id, "book_flight", {"seat": "12A"})
    finally:
        manager.close()
    monkeypatch.setattr(console, "_width", 160)
    result = invoke("show", str(saga_id), "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "waiting for book_hotel, rent_car at once" in result.stdout
