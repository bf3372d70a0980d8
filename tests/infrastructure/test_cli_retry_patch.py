"""``sagalog retry --patch``: the retried command carries corrected data, the log keeps the diff."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from test_cli_helpers import CLI_SHOP, cli_url_for, invoke, invoke_json, seed_sagas

from sagalog.domain import Saga
from sagalog.process import SagaManager


@pytest.fixture
def seeded(backend: str, database_url: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = cli_url_for(backend, database_url, tmp_path)
    return url, seed_sagas(url)


def test_retry_with_a_patch_records_the_diff_and_sends_the_patched_data(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    saga_id = ids["dead_compensation"]
    args = ("--reason", "new site", "--actor", "alice", "--database-url", url)
    result = invoke("retry", saga_id, "--patch", '{"site": "B"}', *args)
    assert result.exit_code == 0, result.output
    timeline = invoke_json("show", saga_id, "--database-url", url)["timeline"]
    assert (timeline[-2]["event_type"], timeline[-2]["detail"]) == (
        "OperatorRetried",
        'compensation by alice with data {"site":"B"}: new site',
    )
    manager = SagaManager([CLI_SHOP], url)
    try:
        events = manager.history(UUID(saga_id))
        retried, dispatched = events[-2], events[-1]
        assert isinstance(retried, Saga.OperatorRetried)
        assert retried.changes == {"site": {"new": "B"}}
        assert isinstance(dispatched, Saga.CompensationDispatched)
        assert dispatched.payload["data"]["site"] == "B"
    finally:
        manager.close()


@pytest.mark.parametrize(
    ("patch", "message"),
    [("not json", "not JSON"), ("[1]", "give a JSON object"), ('{"k": "\\u0000"}', "U+0000")],
)
def test_a_bad_patch_is_refused_in_one_line_and_nothing_is_recorded(
    seeded: tuple[str, dict[str, str]], patch: str, message: str
) -> None:
    url, ids = seeded
    saga_id = ids["dead_compensation"]
    before = invoke_json("show", saga_id, "--database-url", url)["timeline"]
    result = invoke(
        "retry", saga_id, "--patch", patch, "--reason", "r", "--actor", "a", "--database-url", url
    )
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert invoke_json("show", saga_id, "--database-url", url)["timeline"] == before
