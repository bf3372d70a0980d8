"""``sagalog list | stuck | show``: what happened, as tables and as JSON."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from support.sagas import TRIP
from test_cli_helpers import (
    CLI_SHOP,
    cli_url_for,
    ids_by_status,
    invoke,
    invoke_json,
    run_demo,
    seed_sagas,
    shared_store,
)

from sagalog.infrastructure.cli.output import console
from sagalog.process import SagaManager

#: One pytest-xdist worker runs this module: its tests share its demo store (a module fixture).
pytestmark = pytest.mark.xdist_group("test_cli_listings")


@pytest.fixture(scope="module")
def seeded(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """One database with one saga per situation, for the tests of this module that only read."""
    with shared_store(backend, tmp_path_factory.mktemp("cli-listings")) as url:
        yield url, seed_sagas(url)


@pytest.fixture
def url(seeded: tuple[str, dict[str, str]]) -> str:
    return seeded[0]


@pytest.fixture
def ids(seeded: tuple[str, dict[str, str]]) -> dict[str, str]:
    return seeded[1]


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough for the full tables."""
    monkeypatch.setattr(console, "_width", 220)


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """An 80-column console."""
    monkeypatch.setattr(console, "_width", 80)


STATUSES = {
    "completed": "COMPLETED",
    "compensated": "FAILED",
    "dead_action": "DEAD_LETTERED",
    "dead_compensation": "DEAD_LETTERED",
    "compensating": "COMPENSATING",
    "running": "PENDING",
    "waiting": "PENDING",
}


# -- list --------------------------------------------------------------------------------


def test_list_shows_every_saga_newest_first(url: str, ids: dict[str, str]) -> None:
    rows = invoke_json("list", "--database-url", url)
    assert {r["saga_id"]: r["status"] for r in rows} == {
        ids[name]: status for name, status in STATUSES.items()
    }
    order = [(r["updated_at"], r["saga_id"]) for r in rows]
    assert order == sorted(order, reverse=True)
    running = next(r for r in rows if r["saga_id"] == ids["running"])
    assert (running["current_step"], running["attempt"], running["event_count"]) == ("charge", 1, 4)


def test_list_filters_by_status_type_and_limit(url: str, ids: dict[str, str]) -> None:
    dead = invoke_json("list", "--database-url", url, "--status", "dead_lettered")
    assert {r["saga_id"] for r in dead} == {ids["dead_action"], ids["dead_compensation"]}
    assert len(invoke_json("list", "--database-url", url, "--type", "CliShop")) == len(ids)
    assert invoke_json("list", "--database-url", url, "--type", "OrderFulfillment") == []
    assert len(invoke_json("list", "--database-url", url, "--limit", "3")) == 3
    both = invoke_json("list", "--database-url", url, "--type", "CliShop", "--status", "FAILED")
    assert [r["saga_id"] for r in both] == [ids["compensated"]]


def test_list_table_in_full(url: str, ids: dict[str, str], wide: None) -> None:
    result = invoke("list", "--database-url", url, "--limit", "100")
    assert result.exit_code == 0, result.output
    assert f"sagas ({len(ids)} shown, newest first)" in result.stdout
    for header in ("saga id", "type", "status", "step (attempt)", "next wake-up", "last error"):
        assert header in result.stdout
    for saga_id in ids.values():
        assert saga_id in result.stdout
    assert "charge (1)" in result.stdout
    assert "smtp down" in result.stdout


def test_list_table_on_a_narrow_console_folds_columns_but_never_cuts_ids(
    url: str, ids: dict[str, str], narrow: None
) -> None:
    result = invoke("list", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "saga id / type" in result.stdout
    for saga_id in ids.values():
        assert saga_id in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_list_says_so_when_nothing_matches(url: str) -> None:
    result = invoke("list", "--database-url", url, "--type", "Nope")
    assert result.exit_code == 0, result.output
    assert "no sagas matching the filters" in result.stdout


# -- stuck -------------------------------------------------------------------------------


def test_stuck_gives_a_reason_for_every_stuck_saga(url: str, ids: dict[str, str]) -> None:
    found = invoke_json("stuck", "--database-url", url)
    assert [(item["saga_id"], item["reasons"]) for item in found] == [
        (ids["dead_action"], ["DEAD_LETTERED"]),
        (ids["dead_compensation"], ["DEAD_LETTERED"]),
        (ids["waiting"], ["DEADLINE_MISSED", "NO_PROGRESS"]),
        (ids["compensating"], ["COMPENSATION_TOO_LONG", "NO_PROGRESS"]),
        (ids["running"], ["NO_PROGRESS"]),
    ]
    assert found[0]["detail"].startswith("action of notify gave up ")
    assert found[1]["detail"].startswith("compensation of reserve gave up ")
    assert found[1]["detail"].endswith(": warehouse offline")
    assert "is the worker running?" in found[2]["detail"]
    assert found[0]["summary"]["dead_letter_step"] == "notify"


def test_stuck_options_set_the_thresholds_and_the_instant(url: str, ids: dict[str, str]) -> None:
    def reasons(*options: str) -> dict[str, str]:
        found = invoke_json("stuck", "--database-url", url, *options)
        return {item["saga_id"]: item["reason"] for item in found}

    # Judged right after the sagas ran: only the dead letters are stuck yet.
    early = ("--at", "2026-03-01T12:00:10Z")
    assert reasons(*early) == {
        ids["dead_action"]: "DEAD_LETTERED",
        ids["dead_compensation"]: "DEAD_LETTERED",
    }
    assert reasons(*early, "--no-progress-after", "1s")[ids["running"]] == "NO_PROGRESS"
    assert ids["running"] not in reasons(
        *early, "--no-progress-after", "1s", "--no-progress-for", "CliShop=1h"
    )
    assert reasons(*early, "--compensation-too-long", "1s")[ids["compensating"]] == (
        "COMPENSATION_TOO_LONG"
    )
    assert len(invoke_json("stuck", "--database-url", url, "--limit", "2")) == 2


def test_stuck_table(url: str, ids: dict[str, str], wide: None) -> None:
    result = invoke("stuck", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "stuck sagas (5, most urgent first)" in result.stdout
    for reason in ("DEAD_LETTERED", "DEADLINE_MISSED", "COMPENSATION_TOO_LONG", "+NO_PROGRESS"):
        assert reason in result.stdout


def test_stuck_narrow_layout_gives_the_detail_the_whole_width(
    url: str, ids: dict[str, str], narrow: None
) -> None:
    result = invoke("stuck", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert (
        f"DEAD_LETTERED  {ids['dead_action']}\n    CliShop DEAD_LETTERED, since " in result.stdout
    )
    assert f"DEADLINE_MISSED +NO_PROGRESS  {ids['waiting']}\n    CliShop PENDING" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_stuck_says_so_when_nothing_is_stuck(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = cli_url_for(backend, database_url, tmp_path)
    manager = SagaManager([CLI_SHOP], url)
    try:
        saga_id = manager.start("CliShop", {})
        for step in ("reserve", "charge", "ship", "notify"):
            manager.handle_step_completed(saga_id, step)
    finally:
        manager.close()
    result = invoke("stuck", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "no stuck sagas" in result.stdout
    assert invoke_json("stuck", "--database-url", url) == []


# -- show --------------------------------------------------------------------------------


def test_show_tells_the_story_of_a_compensated_saga(
    url: str, ids: dict[str, str], wide: None
) -> None:
    saga_id = ids["compensated"]
    data = invoke_json("show", saga_id, "--database-url", url)
    assert data["summary"]["status"] == "FAILED"
    assert data["summary"]["failure_reason"] == (
        "step 'charge' failed after 1 attempt: card declined"
    )
    assert [(e["event_type"], e["step"]) for e in data["timeline"]] == [
        ("SagaStarted", None),
        ("StepDispatched", "reserve"),
        ("StepCompleted", "reserve"),
        ("StepDispatched", "charge"),
        ("StepFailed", "charge"),
        ("CompensationRequested", None),
        ("CompensationDispatched", "reserve"),
        ("CompensationCompleted", "reserve"),
        ("SagaFailed", None),
    ]
    result = invoke("show", saga_id, "--database-url", url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "timeline (9 events, times in UTC)" in out
    for text in (saga_id, "CliShop v1", "FAILED", "card declined", "Inventory.Release"):
        assert text in out


def test_show_a_dead_lettered_saga_on_a_narrow_console(
    url: str, ids: dict[str, str], narrow: None
) -> None:
    result = invoke("show", ids["dead_compensation"], "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "compensation of reserve" in result.stdout  # the dead letter line
    assert "SagaDeadLettered" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_the_database_url_may_come_from_the_environment(url: str, ids: dict[str, str]) -> None:
    result = invoke("list", "--json", env={"SAGALOG_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert '"saga_id": "' + ids["running"] + '"' in result.stdout


# -- after the demo ----------------------------------------------------------------------


def test_after_the_demo_list_stuck_and_show_say_what_happened(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = run_demo(cli_url_for(backend, database_url, tmp_path))
    before = invoke_json("projections", "status", "--database-url", url)
    assert before["position"] == 0  # nothing projected yet: the listings catch up first
    rows = invoke_json("list", "--database-url", url, "--limit", "1000")
    assert len(rows) == 40
    manager = SagaManager([], url)
    try:
        for row in rows:  # the projection agrees with the sagas themselves
            saga = manager.get(UUID(row["saga_id"]))
            assert row["status"] == saga.status.value
            assert row["event_count"] == saga.version
    finally:
        manager.close()
    stuck = invoke_json("stuck", "--database-url", url, "--at", "2100-01-01T00:00Z")
    by_status = ids_by_status(url)
    assert {item["saga_id"] for item in stuck if item["reason"] == "DEAD_LETTERED"} == set(
        by_status.get("DEAD_LETTERED", [])
    )
    for saga_id in by_status.get("FAILED", [])[:3]:
        timeline = invoke_json("show", saga_id, "--database-url", url)["timeline"]
        events = [entry["event_type"] for entry in timeline]
        assert "CompensationRequested" in events
        # Only late facts (a success that came after its timeout) follow the end.
        end = events.index("SagaFailed")
        assert set(events[end + 1 :]) <= {"StepCompletedLate"}
    after = invoke_json("projections", "status", "--database-url", url)
    assert after["lag"] == 0
    assert after["events"] == after["head"] == before["head"]


def test_a_second_demo_of_one_seed_into_one_store_is_refused_and_another_seed_runs(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = run_demo(cli_url_for(backend, database_url, tmp_path))
    head = invoke_json("projections", "status", "--database-url", url)["head"]
    again = invoke("demo", "--database-url", url, "--sagas", "3", "--seed", "1")
    assert again.exit_code == 2, again.output
    assert "already holds the demo's sagas of seed 1" in again.output
    assert "--seed 2" in again.output
    assert invoke_json("projections", "status", "--database-url", url)["head"] == head
    other = invoke("demo", "--database-url", url, "--sagas", "3", "--seed", "2")
    assert other.exit_code == 0, other.output
    assert len(invoke_json("list", "--database-url", url, "--limit", "1000")) == 43


def test_a_second_demo_of_one_seed_over_rabbitmq_is_refused_before_it_starts_anything(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    from sagalog.infrastructure.demo.rabbitmq import run_rabbitmq_demo
    from sagalog.infrastructure.demo.runner import (
        DemoRates,
        DemoSeedUsedError,
        start_demo_sagas,
    )
    from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS

    url = cli_url_for(backend, database_url, tmp_path)
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:  # what a first run over RabbitMQ with seed 5 started (its ids come first)
        start_demo_sagas(manager, random.Random(5), 1, 5)
    finally:
        manager.close()
    # Before, it waited for endings recorded before it began, until its timeout.
    with pytest.raises(DemoSeedUsedError, match="seed 5"):
        run_rabbitmq_demo(database_url=url, sagas=3, seed=5, rates=DemoRates(), timeout=5)


def test_stuck_names_the_overdue_branch_of_a_parallel_saga(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    url = cli_url_for(backend, database_url, tmp_path)
    manager = SagaManager([TRIP], url)
    try:
        saga_id = manager.start("Trip", {"trip": 1})
        manager.handle_step_completed(saga_id, "budget")
        manager.handle_step_completed(saga_id, "flight")  # hotel (30s) and car (90s) in flight
        hotel = manager.get(saga_id).steps["hotel"].deadline
        assert hotel is not None
    finally:
        manager.close()
    at = (hotel + timedelta(seconds=45)).isoformat()
    found = invoke_json("stuck", "--database-url", url, "--at", at)
    assert [(item["saga_id"], item["reason"]) for item in found] == [
        (str(saga_id), "DEADLINE_MISSED")
    ]
    assert found[0]["detail"].startswith("deadline of hotel (attempt 1) passed 45s ago")
    assert found[0]["summary"]["steps_in_flight"] == ["hotel", "car"]
    assert found[0]["summary"]["wakeup_step"] == "hotel"
    shown = invoke("show", str(saga_id), "--database-url", url)
    assert shown.exit_code == 0, shown.output
    assert re.search(r"in flight +hotel, car", shown.stdout)
    listed = invoke("list", "--database-url", url)
    assert listed.exit_code == 0, listed.output
    assert "hotel, car" in listed.stdout
