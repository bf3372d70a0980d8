"""``sagalog retry | resolve | abort``: operator actions, recorded with who and why."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from test_cli_helpers import cli_url_for, invoke, invoke_json, seed_sagas

from sagalog.process import SagaManager


@pytest.fixture
def seeded(backend: str, database_url: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = cli_url_for(backend, database_url, tmp_path)
    return url, seed_sagas(url)


def _timeline(url: str, saga_id: str) -> list[dict[str, object]]:
    data = invoke_json("show", saga_id, "--database-url", url)
    timeline: list[dict[str, object]] = data["timeline"]
    return timeline


def test_retry_sends_the_dead_lettered_compensation_again(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    saga_id = ids["dead_compensation"]
    result = invoke(
        "retry", saga_id, "--reason", "warehouse back", "--actor", "alice", "--database-url", url
    )
    assert result.exit_code == 0, result.output
    assert f"retried saga {saga_id}: now COMPENSATING at reserve" in result.stdout
    last = _timeline(url, saga_id)[-2:]
    assert (last[0]["event_type"], last[0]["detail"]) == (
        "OperatorRetried",
        "compensation by alice: warehouse back",
    )
    assert (last[1]["event_type"], last[1]["step"], last[1]["attempt"]) == (
        "CompensationDispatched",
        "reserve",
        3,
    )


def test_resolve_moves_a_dead_lettered_saga_on(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    saga_id = ids["dead_action"]
    result = invoke(
        "resolve", saga_id, "--reason", "mailed by hand", "--actor", "bob", "--database-url", url
    )
    assert result.exit_code == 0, result.output
    assert f"resolved saga {saga_id}: now COMPLETED" in result.stdout
    events = [(e["event_type"], e["detail"]) for e in _timeline(url, saga_id)[-2:]]
    assert events == [("OperatorResolved", "action by bob: mailed by hand"), ("SagaCompleted", "")]
    stuck = invoke_json("stuck", "--database-url", url)
    assert saga_id not in {item["saga_id"] for item in stuck}


def test_abort_compensates_a_running_saga(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    saga_id = ids["running"]
    result = invoke(
        "abort",
        saga_id,
        "--reason",
        "customer cancelled",
        "--database-url",
        url,
        env={"SAGALOG_ACTOR": "carol"},
    )
    assert result.exit_code == 0, result.output
    # The step in flight may have been done: it is compensated first.
    assert f"aborted saga {saga_id}: now COMPENSATING at charge" in result.stdout
    events = [(e["event_type"], e["detail"]) for e in _timeline(url, saga_id)[-3:]]
    assert events[0] == ("SagaAborted", "by carol: customer cancelled")
    assert events[1][0] == "CompensationRequested"
    assert events[2][0] == "CompensationDispatched"


@pytest.mark.parametrize(
    ("command", "situation", "message"),
    [
        ("retry", "completed", "only a dead-lettered saga can be retried"),
        ("resolve", "running", "only a dead-lettered saga can be resolved"),
        ("abort", "compensated", "only a running saga can be aborted"),
        ("abort", "dead_action", "only a running saga can be aborted"),
    ],
)
def test_an_action_the_saga_refuses_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]], command: str, situation: str, message: str
) -> None:
    url, ids = seeded
    result = invoke(command, ids[situation], "--reason", "r", "--actor", "a", "--database-url", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: saga ")
    assert message in result.stderr


@pytest.mark.parametrize("command", ["retry", "resolve", "abort"])
def test_an_unknown_saga_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]], command: str
) -> None:
    url, _ = seeded
    unknown = "00000000-0000-4000-8000-000000000000"
    result = invoke(command, unknown, "--reason", "r", "--actor", "a", "--database-url", url)
    assert result.exit_code == 2
    assert result.stderr == f"error: no saga with id {unknown}\n"


def test_a_malformed_saga_id_is_refused_before_opening_anything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    result = invoke("retry", "42", "--reason", "r", "--actor", "a", "--database-url", url)
    assert result.exit_code == 2
    assert result.stderr == "error: '42' is not a saga id (saga ids are UUIDs)\n"
    assert not (tmp_path / "never.db").exists()


def test_actor_and_reason_are_required(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    no_actor = invoke("retry", ids["dead_action"], "--reason", "r", "--database-url", url)
    assert no_actor.exit_code == 2
    assert "--actor" in no_actor.output
    no_reason = invoke("retry", ids["dead_action"], "--actor", "a", "--database-url", url)
    assert no_reason.exit_code == 2
    assert "--reason" in no_reason.output
    blank = invoke(
        "retry", ids["dead_action"], "--actor", " ", "--reason", "r", "--database-url", url
    )
    assert blank.exit_code == 2
    assert blank.stderr.startswith("error: ")


def test_operator_actions_need_no_registered_definitions(
    seeded: tuple[str, dict[str, str]],
) -> None:
    """Each saga stores the definition it runs: a manager knowing none can still act."""
    url, ids = seeded
    manager = SagaManager([], url)
    try:
        assert len(manager.registry) == 0
        manager.retry(UUID(ids["dead_compensation"]), actor="ops", reason="again")
        manager.handle_compensation_completed(UUID(ids["dead_compensation"]), "reserve")
        manager.resolve(UUID(ids["dead_action"]), actor="ops", reason="by hand")
        manager.abort(UUID(ids["running"]), actor="ops", reason="stop")
        assert manager.get(UUID(ids["dead_compensation"])).status.value == "FAILED"
        assert manager.get(UUID(ids["dead_action"])).status.value == "COMPLETED"
    finally:
        manager.close()
