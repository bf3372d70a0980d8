"""What-if with corrected data: ``what_if(..., patch=)`` and ``sagalog replay --patch``."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from test_cli_helpers import CLI_SHOP, cli_url_for, invoke, invoke_json, seed_sagas

from sagalog.domain import InvalidPayloadError
from sagalog.process import SagaManager
from sagalog.process.debugging.whatif import what_if


@pytest.fixture
def seeded(backend: str, database_url: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = cli_url_for(backend, database_url, tmp_path)
    return url, seed_sagas(url)


def test_what_if_with_a_patch_replays_on_the_patched_data_and_writes_nothing(
    seeded: tuple[str, dict[str, str]],
) -> None:
    url, ids = seeded
    saga_id = UUID(ids["compensated"])
    manager = SagaManager([CLI_SHOP], url)
    try:
        before = len(manager.history(saga_id))
        report = what_if(manager, saga_id, CLI_SHOP, patch={"n": "fixed", "iban": "DE1"})
        assert report.patch == {"n": "fixed", "iban": "DE1"}
        assert not report.diverged  # the same replies decide the same, on either data
        assert "with the data patched: iban, n" in report.summary()[0]
        assert report.to_json()["patch"] == {"n": "fixed", "iban": "DE1"}
        assert len(manager.history(saga_id)) == before
        unpatched = what_if(manager, saga_id, CLI_SHOP)
        assert unpatched.patch is None
        assert not unpatched.diverged
        for bad in ({}, {"k": float("nan")}, ["n"]):
            with pytest.raises(InvalidPayloadError):
                what_if(manager, saga_id, CLI_SHOP, patch=bad)  # type: ignore[arg-type]
    finally:
        manager.close()


def test_replay_patch_from_the_cli_inline_and_from_a_file(
    seeded: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, ids = seeded
    saga_id = ids["compensated"]
    report = invoke_json("replay", saga_id, "--patch", '{"n": "fixed"}', "--database-url", url)
    assert report["patch"] == {"n": "fixed"}
    assert report["diverged"] is False
    patch_file = tmp_path / "patch.json"
    patch_file.write_text('{"n": "from a file"}', encoding="utf-8")
    shown = invoke("replay", saga_id, "--patch", f"@{patch_file}", "--database-url", url)
    assert shown.exit_code == 0, shown.output
    assert "with the data patched: n" in shown.output


@pytest.mark.parametrize(
    ("patch", "message"),
    [("not json", "--patch: not JSON"), ("[1]", "give a JSON object"), ("{}", "non-empty")],
)
def test_a_bad_replay_patch_is_one_error_line(
    seeded: tuple[str, dict[str, str]], patch: str, message: str
) -> None:
    url, ids = seeded
    result = invoke("replay", ids["compensated"], "--patch", patch, "--database-url", url)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("error:") == 1
