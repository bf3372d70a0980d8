"""Logs recorded before uncertain steps were compensated: found, explained and repaired.

``tests/fixtures/before_uncertain_fix.json`` holds four ``Transfer`` sagas exactly as the
older sagalog stored them (``make_before_uncertain_fix.py`` beside it says how). Two of
them ended ``FAILED`` leaving an action that may be in force: a debit that timed out (its
late success was answered "stale") and a credit that was in flight at an abort. Loaded
unchanged into today's store, they rebuild to the same statuses, ``stuck`` reports them
(``EFFECT_IN_FORCE``), ``explain`` says what to do, and ``sagalog compensate`` rolls the
step back as an audited operator action.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from test_cli_helpers import cli_url_for, invoke, invoke_json

from sagalog.domain import Saga, SagaStatus
from sagalog.process import SagaManager

FIXTURE = Path(__file__).parents[1] / "fixtures" / "before_uncertain_fix.json"


@pytest.fixture
def old_log(backend: str, database_url: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store holding the fixture's events, inserted as they were stored."""
    url = cli_url_for(backend, database_url, tmp_path)
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    manager = SagaManager([], url)
    try:
        manager.recorder.insert_events(
            [
                StoredEvent(
                    originator_id=UUID(event["originator_id"]),
                    originator_version=event["originator_version"],
                    topic=event["topic"],
                    state=base64.b64decode(event["state"]),
                )
                for event in recorded["events"]
            ]
        )
    finally:
        manager.close()
    return url, recorded["sagas"]


def test_old_logs_rebuild_to_the_statuses_they_had(old_log: tuple[str, dict[str, str]]) -> None:
    url, ids = old_log
    manager = SagaManager([], url)
    try:
        sagas = {name: manager.get(UUID(saga_id)) for name, saga_id in ids.items()}
    finally:
        manager.close()
    assert {name: saga.status for name, saga in sagas.items()} == {
        "timed_out": SagaStatus.FAILED,
        "aborted": SagaStatus.FAILED,
        "refunded": SagaStatus.FAILED,
        "completed": SagaStatus.COMPLETED,
    }
    assert {name: saga.effects_in_force for name, saga in sagas.items()} == {
        "timed_out": ["debit"],
        "aborted": ["credit"],
        "refunded": [],
        "completed": [],
    }
    # The old CompensationRequested (class version 1) planned only completed steps.
    assert sagas["aborted"].compensation_plan == ["debit"]


def test_stuck_finds_the_failed_sagas_with_an_effect_in_force(
    old_log: tuple[str, dict[str, str]],
) -> None:
    url, ids = old_log
    stuck = {item["saga_id"]: item for item in invoke_json("stuck", "--database-url", url)}
    assert set(stuck) == {ids["timed_out"], ids["aborted"]}
    assert stuck[ids["timed_out"]]["reason"] == "EFFECT_IN_FORCE"
    assert "debit possibly in force" in stuck[ids["timed_out"]]["detail"]
    assert f"sagalog compensate {ids['timed_out']}" in stuck[ids["timed_out"]]["detail"]
    assert "credit possibly in force" in stuck[ids["aborted"]]["detail"]


def test_explain_says_the_step_may_be_in_force_and_how_to_compensate_it(
    old_log: tuple[str, dict[str, str]],
) -> None:
    url, ids = old_log
    result = invoke("explain", ids["timed_out"], "--database-url", url)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "debit: outcome unknown at timeout; NOT compensated" in text
    assert f"sagalog compensate {ids['timed_out']}" in text


def test_compensate_rolls_the_step_back_as_an_audited_operator_action(
    old_log: tuple[str, dict[str, str]],
) -> None:
    url, ids = old_log
    saga_id = ids["aborted"]
    result = invoke(
        "compensate", saga_id, "--actor", "ops", "--reason", "credit may have gone through",
        "--database-url", url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert f"compensating saga {saga_id}: now COMPENSATING at credit" in said
    manager = SagaManager([], url)
    try:
        history = manager.history(UUID(saga_id))
        requested, dispatched = history[-2:]
        assert isinstance(requested, Saga.OperatorCompensationRequested)
        assert (requested.steps, requested.actor, requested.reason) == (
            ["credit"],
            "ops",
            "credit may have gone through",
        )
        assert isinstance(dispatched, Saga.CompensationDispatched)
        assert (dispatched.step, dispatched.command_name) == ("credit", "Bank.Reverse")
        manager.handle_compensation_completed(UUID(saga_id), "credit")
        saga = manager.get(UUID(saga_id))
        assert saga.status is SagaStatus.FAILED
        assert saga.effects_in_force == []
    finally:
        manager.close()
    stuck = {item["saga_id"] for item in invoke_json("stuck", "--database-url", url)}
    assert stuck == {ids["timed_out"]}


def test_compensate_refuses_a_saga_with_nothing_in_force(
    old_log: tuple[str, dict[str, str]],
) -> None:
    url, ids = old_log
    for name in ("refunded", "completed"):
        result = invoke(
            "compensate", ids[name], "--actor", "ops", "--reason", "r", "--database-url", url
        )
        assert result.exit_code == 2
        assert "no step whose action may be in force" in result.output
        assert len(result.output.strip().splitlines()) == 1
