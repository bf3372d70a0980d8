"""A store written by the code before the package reshape opens and carries on today.

``tests/fixtures/before_rooms.sqlite`` is a SQLite saga store written by commit 1b7691e
(``tests/fixtures/make_before_rooms.py`` says how): eleven ``Transfer`` and ``Trip``
sagas (``before_rooms_sagas.py``) in every state, its timer index, the tracking of an
upstream application, and the read projections caught up to the head of its log. On a
copy of it, the code under test rebuilds every saga, lists, shows, replays and explains
them through the CLI, fires the timer that was due, answers what was waiting, acts on
the dead-lettered sagas, and catches the old projections up: to the rows a rebuild from
zero gives.

The fixture is a SQLite file, so these tests run once, on SQLite, whatever
``SAGALOG_TEST_BACKEND`` selects (they do not ask for ``backend``). They import only
the top-level names of ``sagalog.domain`` and ``sagalog.process`` and the CLI through
``test_cli_helpers``, so that modules moving inside the packages change nothing here.
"""

from __future__ import annotations

import importlib
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from test_cli_helpers import invoke, invoke_json

from sagalog.domain import Saga, SagaDefinition, SagaStatus
from sagalog.process import SagaManager, saga_id_for
from sagalog.process.clock import ManualClock

FIXTURES = Path(__file__).parents[1] / "fixtures"
FIXTURE = FIXTURES / "before_rooms.sqlite"
#: The module of the fixture's definitions, importable with ``FIXTURES`` on the path.
DEFINITIONS_SPEC = "before_rooms_sagas:DEFINITIONS"

#: The time of the store's last event (the make script's ``LAST``).
LAST = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
#: Events in the store's log, all projected by the old code.
OLD_HEAD = 88

IDS = {
    "completed": "00000000-0000-4000-8000-00000000000a",
    "failed": "00000000-0000-4000-8000-00000000000b",
    "uncertain": "00000000-0000-4000-8000-00000000000c",
    "late_reply": "00000000-0000-4000-8000-00000000000d",
    "aborted": "00000000-0000-4000-8000-00000000000e",
    "dead_compensation": "00000000-0000-4000-8000-00000000000f",
    "dead_action": "00000000-0000-4000-8000-000000000010",
    "compensating": "00000000-0000-4000-8000-000000000011",
    "pending_due": "00000000-0000-4000-8000-000000000012",
    "pending_future": "00000000-0000-4000-8000-000000000013",
    "from_upstream": "2d15e6d3-540f-5cf4-8c83-eeec70a40baa",
}
NAMES = {saga_id: name for name, saga_id in IDS.items()}

#: name: (type, status, current step) as the old code recorded and projected them.
RECORDED = {
    "completed": ("Transfer", "COMPLETED", None),
    "failed": ("Transfer", "FAILED", None),
    "uncertain": ("Transfer", "FAILED", None),
    "late_reply": ("Transfer", "FAILED", None),
    "aborted": ("Trip", "FAILED", None),
    "dead_compensation": ("Transfer", "DEAD_LETTERED", "debit"),
    "dead_action": ("Transfer", "DEAD_LETTERED", "notify"),
    "compensating": ("Trip", "COMPENSATING", "hotel"),
    "pending_due": ("Transfer", "PENDING", "debit"),
    "pending_future": ("Trip", "PENDING", "flight"),
    "from_upstream": ("Trip", "PENDING", "hotel"),
}


@pytest.fixture
def definitions(monkeypatch: pytest.MonkeyPatch) -> list[SagaDefinition]:
    """The fixture's definitions; their module importable by the CLI's ``--definitions``."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    found: list[SagaDefinition] = importlib.import_module("before_rooms_sagas").DEFINITIONS
    return found


@pytest.fixture
def url(tmp_path: Path, definitions: list[SagaDefinition]) -> str:
    """A copy of the old store (the committed file is never opened in place)."""
    copy = tmp_path / "before_rooms.sqlite"
    shutil.copyfile(FIXTURE, copy)
    return f"sqlite:///{copy}"


def cli(*args: str) -> Any:
    """``sagalog *args --json`` on the store, with the fixture's definitions."""
    return invoke_json(*args, "--definitions", DEFINITIONS_SPEC)


def cli_text(*args: str) -> str:
    """``sagalog *args`` on the store: its output, words joined by single spaces."""
    result = invoke(*args, "--definitions", DEFINITIONS_SPEC)
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def listed(url: str) -> dict[str, dict[str, Any]]:
    """The ``list --json`` rows by saga name."""
    rows = cli("list", "--database-url", url, "--limit", "1000")
    return {NAMES[row["saga_id"]]: row for row in rows}


def shown(url: str) -> dict[str, Any]:
    """``show --json`` of every saga, by name: its summary row and its timeline rows."""
    return {name: cli("show", saga_id, "--database-url", url) for name, saga_id in IDS.items()}


def event_types(manager: SagaManager, name: str) -> list[str]:
    return [type(event).__name__ for event in manager.history(UUID(IDS[name]))]


def test_the_fixture_holds_the_old_tables(url: str) -> None:
    """The copy, before any sagalog code opens it, is the store the old code left."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        tables = {
            name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        tracked = connection.execute("SELECT * FROM tracking ORDER BY application_name").fetchall()
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    connection.close()
    assert tables == {
        "stored_events": OLD_HEAD,
        "stored_timers": 4,
        "tracking": 2,
        "saga_summary_v2": 11,
        "saga_timeline_v2": OLD_HEAD,
        "sagalog_projection_tracking": 1,
        "sagalog_quarantine": 0,
    }
    assert tracked == [("Bookings", 1), ("__migration__", 1)]
    assert mode == "wal"
    assert FIXTURE.stat().st_size < 300_000


def test_every_saga_rebuilds_to_the_state_it_had(
    url: str, definitions: list[SagaDefinition]
) -> None:
    manager = SagaManager(definitions, url)
    try:
        sagas = {name: manager.get(UUID(saga_id)) for name, saga_id in IDS.items()}
        assert {name: saga.status.value for name, saga in sagas.items()} == {
            name: status for name, (_, status, _) in RECORDED.items()
        }
        assert {name: saga.current_step for name, saga in sagas.items()} == {
            name: step for name, (_, _, step) in RECORDED.items()
        }
        assert {name: saga.next_wakeup for name, saga in sagas.items() if saga.next_wakeup} == {
            "pending_due": datetime(2026, 3, 2, 9, 8, 30, tzinfo=UTC),
            "compensating": datetime(2026, 3, 2, 10, 1, tzinfo=UTC),
            "pending_future": datetime(2026, 3, 2, 10, 9, tzinfo=UTC),
            "from_upstream": datetime(2026, 3, 2, 10, 10, tzinfo=UTC),
        }
        assert sagas["uncertain"].compensation_plan == ["debit"]
        assert sagas["uncertain"].steps["debit"].uncertain
        assert not sagas["failed"].steps["debit"].uncertain
        assert sagas["late_reply"].compensation_plan == ["credit", "debit"]
        assert all(saga.effects_in_force == [] for saga in sagas.values())
        assert event_types(manager, "late_reply")[-6:] == [
            "CompensationDispatched",
            "StepCompletedLate",
            "CompensationCompleted",
            "CompensationDispatched",
            "CompensationCompleted",
            "SagaFailed",
        ]
        assert event_types(manager, "aborted")[4:6] == ["SagaAborted", "CompensationRequested"]
        started = manager.history(UUID(IDS["from_upstream"]))[0]
        assert isinstance(started, Saga.SagaStarted)
        assert started.causation_id == (
            "bookings:Booking.Requested@792ff0c3-dda7-58b6-8c7e-15c6c1898698/1"
        )
        assert started.data == {"ref": "BK-0001", "traveller": "Grace"}
    finally:
        manager.close()
    # The reaction's saga id is derived from the business key, today as then.
    assert str(saga_id_for("Trip", "BK-0001")) == IDS["from_upstream"]


def test_the_projections_of_the_new_schema_are_rebuilt_from_the_log(url: str) -> None:
    # The store holds ``_v2`` view tables; schema version 4 (steps in parallel) builds
    # ``_v4`` tables from the first event, leaving the old ones listed as stale.
    status = cli("projections", "status", "--database-url", url)
    assert {key: status[key] for key in ("position", "head", "lag", "sagas", "events")} == {
        "position": 0,
        "head": OLD_HEAD,
        "lag": OLD_HEAD,
        "sagas": 0,
        "events": 0,
    }
    assert sorted(status["stale_tables"]) == ["saga_summary_v2", "saga_timeline_v2"]
    rows = listed(url)
    assert {
        name: (row["saga_type"], row["status"], row["current_step"]) for name, row in rows.items()
    } == RECORDED
    assert (rows["pending_due"]["updated_at"], rows["pending_due"]["next_deadline"]) == (
        "2026-03-02T09:08:00+00:00",
        "2026-03-02T09:08:30+00:00",
    )
    assert rows["dead_compensation"]["last_error"] == "bank offline"
    assert rows["dead_action"]["attempt"] == 3
    # The columns new in version 4, rebuilt for the old linear sagas from their events.
    assert {
        name: row["steps_in_flight"] for name, row in rows.items() if row["steps_in_flight"]
    } == {
        "compensating": ["hotel"],
        "pending_due": ["debit"],
        "pending_future": ["flight"],
        "from_upstream": ["hotel"],
    }
    assert not any(row["parallel"] for row in rows.values())
    assert rows["pending_due"]["wakeup_step"] == "debit"
    pending = cli("list", "--database-url", url, "--status", "PENDING")
    assert [NAMES[row["saga_id"]] for row in pending] == [
        "from_upstream",
        "pending_future",
        "pending_due",
    ]  # most recently changed first


def test_stuck_finds_the_dead_letters_and_the_missed_deadline(url: str) -> None:
    stuck = cli("stuck", "--database-url", url, "--at", LAST.isoformat())
    assert [(NAMES[item["saga_id"]], item["reason"]) for item in stuck] == [
        ("dead_compensation", "DEAD_LETTERED"),
        ("dead_action", "DEAD_LETTERED"),
        ("pending_due", "DEADLINE_MISSED"),
    ]
    assert "compensation of debit gave up 8m ago: bank offline" in stuck[0]["detail"]
    assert "action of notify gave up 7m ago: smtp down" in stuck[1]["detail"]
    assert "deadline of debit (attempt 1) passed 1m 30s ago" in stuck[2]["detail"]


def test_show_replay_and_explain_read_the_old_log(url: str) -> None:
    late = cli("show", IDS["late_reply"], "--database-url", url)
    assert late["summary"]["status"] == "FAILED"
    assert [(row["event_type"], row["step"]) for row in late["timeline"]][4:9] == [
        ("StepTimedOut", "credit"),
        ("CompensationRequested", None),
        ("CompensationDispatched", "credit"),
        ("StepCompletedLate", "credit"),
        ("CompensationCompleted", "credit"),
    ]
    assert 'result={"credit":"C-4"}' in late["timeline"][7]["detail"]
    upstream = cli("show", IDS["from_upstream"], "--database-url", url)
    assert [row["event_type"] for row in upstream["timeline"]] == ["SagaStarted", "StepDispatched"]
    assert upstream["timeline"][1]["detail"] == "Hotels.Book, deadline 2026-03-02T10:10:00+00:00"

    states = cli("replay", IDS["late_reply"], "--database-url", url)
    assert [(s["version"], s["state"]["status"]) for s in states][::4] == [
        (1, "STARTED"),
        (5, "PENDING"),
        (9, "COMPENSATING"),
    ]
    assert [s["event_type"] for s in states][-1] == "SagaFailed"
    assert states[-1]["state"]["status"] == "FAILED"
    at = cli("replay", IDS["aborted"], "--database-url", url, "--at", "7")
    assert (at["status"], at["current_step"]) == ("COMPENSATING", "flight")
    assert at["pending"]["name"] == "Airline.Cancel"

    said = cli_text("explain", IDS["late_reply"], "--database-url", url)
    assert "is FAILED after 12 events" in said
    assert "credit: succeeded late (attempt 1, after the saga stopped waiting); compensated" in said
    said = cli_text("explain", IDS["dead_compensation"], "--database-url", url)
    assert "is DEAD_LETTERED after 12 events" in said
    assert f"sagalog retry {IDS['dead_compensation']}" in said
    assert "(attempt 3)" in said
    said = cli_text("explain", IDS["uncertain"], "--database-url", url)
    assert "Compensated: 'debit' (1 attempt)" in said


def test_carries_on_and_the_projections_catch_up_from_where_they_were(
    url: str, definitions: list[SagaDefinition]
) -> None:
    clock = ManualClock(LAST + timedelta(minutes=1))
    manager = SagaManager(definitions, url, clock=clock)

    def status(name: str) -> SagaStatus:
        return manager.get(UUID(IDS[name])).status

    try:
        # Only pending_due's timer is due: its debit times out and is refunded.
        assert manager.tick() == 1
        assert status("pending_due") is SagaStatus.COMPENSATING
        assert manager.get(UUID(IDS["pending_due"])).compensation_plan == ["debit"]
        assert (status("pending_future"), status("compensating")) == (
            SagaStatus.PENDING,
            SagaStatus.COMPENSATING,
        )
        manager.handle_compensation_completed(UUID(IDS["pending_due"]), "debit")
        assert status("pending_due") is SagaStatus.FAILED

        manager.handle_compensation_completed(UUID(IDS["compensating"]), "hotel")
        assert status("compensating") is SagaStatus.FAILED

        saga = UUID(IDS["dead_compensation"])
        manager.retry(saga, actor="ops", reason="bank back online")
        assert status("dead_compensation") is SagaStatus.COMPENSATING
        assert manager.get(saga).steps["debit"].compensation_attempt == 3
        manager.handle_compensation_completed(saga, "debit")
        assert status("dead_compensation") is SagaStatus.FAILED

        manager.resolve(UUID(IDS["dead_action"]), actor="ops", reason="mail sent by hand")
        assert status("dead_action") is SagaStatus.COMPLETED

        manager.handle_step_completed(UUID(IDS["pending_future"]), "flight", {"seat": "12A"})
        assert status("pending_future") is SagaStatus.COMPLETED

        saga = UUID(IDS["from_upstream"])
        manager.handle_step_completed(saga, "hotel", {"booking": "H-4"})
        manager.handle_step_completed(saga, "flight", {"seat": "3C"})
        assert status("from_upstream") is SagaStatus.COMPLETED
        assert event_types(manager, "dead_action")[-2:] == ["OperatorResolved", "SagaCompleted"]
    finally:
        manager.close()

    before = cli("projections", "status", "--database-url", url)
    assert before["position"] == 0  # the ``_v4`` tables start from the first event
    assert before["head"] > OLD_HEAD
    assert before["lag"] == before["head"]

    caught_up = listed(url)  # ``list`` catches the projections up first
    after = cli("projections", "status", "--database-url", url)
    assert (after["position"], after["lag"]) == (before["head"], 0)
    assert after["by_status"] == {"COMPLETED": 4, "FAILED": 7}
    assert {name: row["status"] for name, row in caught_up.items()} == {
        **{name: status for name, (_, status, _) in RECORDED.items()},
        "dead_compensation": "FAILED",
        "dead_action": "COMPLETED",
        "compensating": "FAILED",
        "pending_due": "FAILED",
        "pending_future": "COMPLETED",
        "from_upstream": "COMPLETED",
    }
    caught_up_shown = shown(url)

    rebuilt = invoke("projections", "rebuild", "--database-url", url)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"{before['head']} events, 11 sagas" in rebuilt.stdout
    assert listed(url) == caught_up
    assert shown(url) == caught_up_shown
