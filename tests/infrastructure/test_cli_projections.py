"""``sagalog projections status | rebuild``."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_helpers import cli_url_for, invoke, invoke_json, seed_sagas

from sagalog.infrastructure.cli.output import console


@pytest.fixture
def url(backend: str, database_url: str, tmp_path: Path) -> str:
    url = cli_url_for(backend, database_url, tmp_path)
    seed_sagas(url)
    return url


def test_status_reports_position_head_and_lag_without_catching_up(url: str) -> None:
    before = invoke_json("projections", "status", "--database-url", url)
    assert before["name"] == "saga_views_v4"
    assert before["schema_version"] == 4
    assert before["application"] == "SagaManager"
    assert before["position"] == 0
    assert before["lag"] == before["head"] > 0
    assert before["stale_tables"] == []
    invoke_json("list", "--database-url", url)  # listings catch up
    after = invoke_json("projections", "status", "--database-url", url)
    assert after["position"] == after["head"] == after["events"] == before["head"]
    assert after["lag"] == 0
    assert after["sagas"] == 7
    assert after["by_status"] == {
        "COMPLETED": 1,
        "FAILED": 1,
        "DEAD_LETTERED": 2,
        "COMPENSATING": 1,
        "PENDING": 2,
    }


def test_status_table(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 120)
    result = invoke("projections", "status", "--database-url", url)
    assert result.exit_code == 0, result.output
    for text in ("projections", "saga_views_v4", "position", "lag", "SagaManager"):
        assert text in result.stdout


def test_rebuild_builds_the_same_views_again(url: str) -> None:
    listed = invoke_json("list", "--database-url", url)
    head = invoke_json("projections", "status", "--database-url", url)["head"]
    result = invoke("projections", "rebuild", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert f"rebuilt saga_views_v4: {head} events, 7 sagas in " in result.stdout
    assert invoke_json("projections", "status", "--database-url", url)["lag"] == 0
    assert invoke_json("list", "--database-url", url) == listed


def test_rebuild_of_an_empty_log(backend: str, database_url: str, tmp_path: Path) -> None:
    url = cli_url_for(backend, database_url, tmp_path)
    from sagalog.process import SagaManager

    SagaManager([], url).close()  # an empty store
    result = invoke("projections", "rebuild", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "rebuilt saga_views_v4: 0 events, 0 sagas" in result.stdout
