"""``--definitions`` / ``SAGALOG_DEFINITIONS``: the CLI knows the user's saga definitions.

``versions`` judges the user's types (newest, registered, differs) instead of calling
them "not registered"; ``start`` starts them; ``replay --against newest`` replays a saga
through the newest registered version of its type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli_helpers import CLI_SHOP, cli_url_for, invoke, invoke_json, seed_sagas

from sagalog.domain import SagaDefinition, Step

#: ``CliShop`` changed in the code: one more step, so its fingerprint differs.
CLI_SHOP_CHANGED = SagaDefinition(
    "CliShop",
    [*CLI_SHOP.steps, Step(name="archive", action="Archive.Store", retriable=True)],
)
BOTH = [CLI_SHOP]


@pytest.fixture
def url(backend: str, database_url: str, tmp_path: Path) -> str:
    url = cli_url_for(backend, database_url, tmp_path)
    seed_sagas(url)
    return url


def _shop_row(url: str, *options: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = invoke("versions", "--database-url", url, "--json", *options, env=env)
    assert result.exit_code == 0, result.output
    rows = [row for row in json.loads(result.stdout) if row["fingerprint"] == CLI_SHOP.fingerprint]
    assert len(rows) == 1
    return dict(rows[0])


def test_versions_judges_the_users_definitions(url: str) -> None:
    same = _shop_row(url, "--definitions", "test_cli_helpers:CLI_SHOP")
    assert (same["registered"], same["newest"]) == (True, True)
    by_list = _shop_row(url, "--definitions", "test_cli_user_definitions:BOTH")
    assert by_list["newest"] is True
    by_env = _shop_row(
        url, env={"SAGALOG_DEFINITIONS": "test_cli_user_definitions:CLI_SHOP_CHANGED"}
    )
    assert by_env["registered"] is False
    assert by_env["registered_fingerprint"] == CLI_SHOP_CHANGED.fingerprint
    table = invoke(
        "versions",
        "--database-url",
        url,
        "--definitions",
        "test_cli_user_definitions:CLI_SHOP_CHANGED",
    )
    assert "differs" in table.stdout


def test_start_starts_a_saga_of_the_users_definition(url: str, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"order": 7}')
    started = invoke(
        "start",
        "CliShop",
        "--data",
        f"@{data}",
        "--database-url",
        url,
        "--definitions",
        "test_cli_helpers:CLI_SHOP",
    )
    assert started.exit_code == 0, started.output
    saga_id = started.stdout.strip()
    shown = invoke_json("show", saga_id, "--database-url", url)
    assert shown["summary"]["saga_type"] == "CliShop"
    assert shown["summary"]["status"] == "PENDING"
    again = invoke(
        "start",
        "CliShop",
        "--saga-id",
        saga_id,
        "--database-url",
        url,
        "--definitions",
        "test_cli_helpers:CLI_SHOP",
    )
    assert again.stdout.strip() == saga_id


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("start", "CliShop"), "CliShop"),  # the demo's definitions do not have it
        (("start", "CliShop", "--definitions", "test_cli_helpers"), "module:attribute"),
        (("start", "CliShop", "--definitions", "test_cli_helpers:nope"), "no attribute 'nope'"),
        (("start", "CliShop", "--definitions", "test_cli_helpers:T0"), "not a SagaDefinition"),
        (
            ("start", "CliShop", "--definitions", "test_cli_helpers:CLI_SHOP", "--data", "[1]"),
            "JSON object",
        ),
        (
            ("start", "CliShop", "--definitions", "test_cli_helpers:CLI_SHOP", "--data", "{"),
            "not JSON",
        ),
        (("list", "--app", "json:dumps"), "not a SagaManager subclass"),
        (("list", "--app", "no such"), "module:ManagerClass"),
    ],
)
def test_bad_definitions_are_one_line_errors_that_write_nothing(
    url: str, args: tuple[str, ...], fragment: str
) -> None:
    before = invoke_json("list", "--database-url", url, "--limit", "1000")
    result = invoke(*args, "--database-url", url)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert invoke_json("list", "--database-url", url, "--limit", "1000") == before


def test_replay_against_newest_uses_the_registered_definition(url: str) -> None:
    saga_id = invoke_json("list", "--database-url", url, "--status", "COMPLETED")[0]["saga_id"]
    report = invoke_json(
        "replay",
        saga_id,
        "--against",
        "newest",
        "--database-url",
        url,
        "--definitions",
        "test_cli_user_definitions:CLI_SHOP_CHANGED",
    )
    assert report["other_definition"].startswith("CliShop")
    assert report["diverged"] is True
    missing = invoke("replay", saga_id, "--against", "newest", "--database-url", url)
    assert missing.exit_code == 2
    assert "CliShop" in missing.stderr
