"""``sagalog replay`` and ``sagalog explain``: debugging a saga from its log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from test_cli_helpers import CLI_SHOP, invoke, invoke_json, seed_sagas, shared_store

from sagalog.domain import RetryPolicy, SagaDefinition

#: One pytest-xdist worker runs this module: its tests share its store (a module fixture).
pytestmark = pytest.mark.xdist_group("test_cli_replay")

#: ``CLI_SHOP`` with a second, immediate attempt at charging (for ``--against``).
SHOP_RETRYING_CHARGE = SagaDefinition(
    "CliShop",
    [
        CLI_SHOP.steps[0],
        CLI_SHOP.steps[1].model_copy(
            update={"retry": RetryPolicy(max_attempts=2, initial_delay=timedelta(0))}
        ),
        *CLI_SHOP.steps[2:],
    ],
    version=2,
)
NOT_A_DEFINITION = "CliShop"
#: ``CLI_SHOP``'s steps under another saga type: a what-if with it is refused.
OTHER_TYPE = SagaDefinition("CliWarehouse", list(CLI_SHOP.steps), version=1)


@pytest.fixture(scope="module")
def seeded(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    with shared_store(backend, tmp_path_factory.mktemp("replay")) as url:
        yield url, seed_sagas(url)


def test_replay_prints_the_state_after_each_event(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    result = invoke("replay", ids["compensated"], "--database-url", url)
    assert result.exit_code == 0, result.output
    for text in ("SagaStarted", "CompensationDispatched", "SagaFailed", "FAILED"):
        assert text in result.stdout


def test_replay_json_lists_every_version(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    steps = invoke_json("replay", ids["compensated"], "--database-url", url)
    assert [s["version"] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0]["event_type"] == "SagaStarted"
    assert steps[-1]["state"]["status"] == "FAILED"
    charge = next(s for s in steps[-1]["state"]["steps"] if s["name"] == "charge")
    assert (charge["status"], charge["attempt"]) == ("FAILED", 1)


def test_replay_at_a_version_prints_that_state(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    state = invoke_json("replay", ids["compensated"], "--at", "2", "--database-url", url)
    assert state["version"] == 2
    assert state["status"] == "PENDING"
    assert state["pending"]["name"] == "Inventory.Reserve"
    result = invoke("replay", ids["compensated"], "--at", "2", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "Inventory.Reserve" in result.stdout
    assert "steps at version 2" in result.stdout


@pytest.mark.parametrize("version", ["0", "999"])
def test_replay_at_a_version_out_of_range_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]], version: str
) -> None:
    url, ids = seeded
    result = invoke("replay", ids["completed"], "--at", version, "--database-url", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error:" in result.stderr
    assert f"no version {version}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_of_an_unknown_saga_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, _ = seeded
    missing = str(uuid4())
    result = invoke("replay", missing, "--database-url", url)
    assert result.exit_code == 2
    assert f"no saga with id {missing}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_of_a_malformed_id_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, _ = seeded
    result = invoke("replay", "not-a-uuid", "--database-url", url)
    assert result.exit_code == 2
    assert "is not a saga id" in result.stderr


def test_replay_without_a_database_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    result = invoke("replay", str(uuid4()), "--database-url", url)
    assert result.exit_code == 2
    assert "no saga database" in result.stderr


def test_explain_a_dead_lettered_saga_points_to_the_operator_actions(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    saga_id = ids["dead_compensation"]
    result = invoke("explain", saga_id, "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "is DEAD_LETTERED" in result.stdout
    assert "warehouse offline" in result.stdout
    assert f"sagalog retry {saga_id}" in result.stdout
    assert f"sagalog resolve {saga_id}" in result.stdout


def test_explain_an_overdue_saga_asks_whether_the_worker_runs(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    data = invoke_json("explain", ids["waiting"], "--database-url", url)
    assert data["saga_id"] == ids["waiting"]
    assert data["status"] == "PENDING"
    assert any("is the worker running" in line for line in data["sentences"])


def test_explain_a_failed_saga_names_the_step_and_the_compensations(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    data = invoke_json("explain", ids["compensated"], "--database-url", url)
    text = "\n".join(data["sentences"])
    assert "Step 'charge' failed on attempt 1 of 1 allowed, with error: card declined." in text
    assert "Compensated: 'reserve' (1 attempt)." in text


def test_explain_an_unknown_saga_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, _ = seeded
    missing = str(uuid4())
    result = invoke("explain", missing, "--database-url", url)
    assert result.exit_code == 2
    assert f"no saga with id {missing}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_against_a_definition_shows_where_decisions_diverge(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    saga_id = ids["compensated"]
    spec = "test_cli_replay:SHOP_RETRYING_CHARGE"
    result = invoke("replay", saga_id, "--against", spec, "--database-url", url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "First difference at command 3" in out
    assert "Inventory.Release" in out
    assert "Payment.Charge" in out
    assert "ends differently" in out
    assert "recorded inputs that did not apply" in out
    data = invoke_json("replay", saga_id, "--against", spec, "--database-url", url)
    assert data["diverged"] is True
    assert data["ends_differently"] is True
    assert data["first_difference"]["original"]["name"] == "Inventory.Release"
    assert data["first_difference"]["other"] == {
        "step": "charge",
        "kind": "action",
        "attempt": 2,
        "name": "Payment.Charge",
    }
    assert (data["original_end"]["status"], data["other_end"]["status"]) == ("FAILED", "PENDING")


def test_replay_against_a_definition_that_changes_nothing_says_so(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    spec = "test_cli_replay:SHOP_RETRYING_CHARGE"
    data = invoke_json("replay", ids["completed"], "--against", spec, "--database-url", url)
    assert (data["diverged"], data["ends_differently"], data["skipped"]) == (False, False, [])
    result = invoke("replay", ids["completed"], "--against", spec, "--database-url", url)
    assert "Same decisions" in result.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("test_cli_replay", "module:attribute"),
        ("no_such_module_xyz:SHOP", "cannot import module 'no_such_module_xyz'"),
        ("test_cli_replay:MISSING", "has no attribute 'MISSING'"),
        ("test_cli_replay:NOT_A_DEFINITION", "is a str, not a SagaDefinition"),
    ],
)
def test_replay_against_a_bad_definition_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]], spec: str, message: str
) -> None:
    url, ids = seeded
    result = invoke("replay", ids["completed"], "--against", spec, "--database-url", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_against_a_definition_of_another_saga_type_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    spec = "test_cli_replay:OTHER_TYPE"
    result = invoke("replay", ids["completed"], "--against", spec, "--database-url", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "is a 'CliShop' saga" in result.stderr
    assert "defines 'CliWarehouse' sagas" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_against_an_unknown_saga_is_one_line_and_exit_2(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, _ = seeded
    missing = str(uuid4())
    spec = "test_cli_replay:SHOP_RETRYING_CHARGE"
    result = invoke("replay", missing, "--against", spec, "--database-url", url)
    assert result.exit_code == 2
    assert f"no saga with id {missing}" in result.stderr


def test_replay_at_and_against_together_is_an_error(seeded: tuple[str, dict[str, str]]) -> None:
    url, ids = seeded
    spec = "test_cli_replay:SHOP_RETRYING_CHARGE"
    result = invoke(
        "replay", ids["completed"], "--at", "2", "--against", spec, "--database-url", url
    )
    assert result.exit_code == 2
    assert "do not go together" in result.stderr
