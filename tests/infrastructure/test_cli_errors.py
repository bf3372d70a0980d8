"""Errors a user can cause: one ``error:`` line on stderr and exit code 2, for every command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_cli_helpers import cli_url_for, invoke, seed_sagas

from sagalog.infrastructure import cli

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def url(backend: str, database_url: str, tmp_path: Path) -> str:
    url = cli_url_for(backend, database_url, tmp_path)
    seed_sagas(url)
    return url


def _one_line_error(result: object, *fragments: str) -> None:
    exit_code = getattr(result, "exit_code", None)
    stderr = getattr(result, "stderr", "")
    assert exit_code == 2, getattr(result, "output", "")
    assert stderr.startswith("error: ")
    assert stderr.count("\n") == 1, stderr
    for fragment in fragments:
        assert fragment in stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("show", UNKNOWN), (f"no saga with id {UNKNOWN}",)),
        (("show", "not-a-uuid"), ("'not-a-uuid' is not a saga id",)),
        (("list", "--status", "bogus"), ("unknown status 'bogus'", "DEAD_LETTERED")),
        (("stuck", "--no-progress-after", "soon"), ("--no-progress-after", "invalid duration")),
        (("stuck", "--deadline-grace", "-5s"), ("--deadline-grace",)),
        (("stuck", "--compensation-too-long", "0"), ("compensation_too_long must be positive",)),
        (("stuck", "--no-progress-for", "CliShop"), ("TYPE=DURATION",)),
        (("stuck", "--no-progress-for", "=1h"), ("TYPE=DURATION",)),
        (("stuck", "--no-progress-for", "CliShop=x"), ("--no-progress-for CliShop",)),
        (("stuck", "--at", "yesterday"), ("--at", "ISO-8601")),
    ],
)
def test_bad_values_and_unknown_sagas(
    url: str, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    _one_line_error(invoke(*args, "--database-url", url), *fragments)


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("stuck",),
        ("show", UNKNOWN),
        ("projections", "status"),
        ("projections", "rebuild"),
        ("retry", UNKNOWN, "--reason", "r", "--actor", "a"),
    ],
)
def test_a_missing_sqlite_file_is_not_created(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "typo.db"
    result = invoke(*args, "--database-url", f"sqlite:///{missing}")
    _one_line_error(result, f"no saga database at {missing}")
    assert not missing.exists()


@pytest.mark.parametrize(
    ("database_url", "fragment"),
    [
        ("mysql://localhost/x", "unsupported scheme 'mysql'"),
        ("sqlite://host/x.db", "SQLite URLs have no host"),
        ("postgresql://u@127.0.0.1:5432/db?bogus=1", "unknown query parameter 'bogus'"),
    ],
)
def test_a_bad_database_url_is_one_line(database_url: str, fragment: str) -> None:
    _one_line_error(invoke("list", "--database-url", database_url), fragment)


def test_an_unreachable_database_is_one_line() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    result = invoke("list", "--database-url", url)
    _one_line_error(result, "cannot reach database")
    assert "password" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--transport", "rabbit"), "unknown transport 'rabbit'"),
        (("--participants", "x:y"), "--participants needs --transport in-process"),
        (("--transport", "in-process"), "needs --participants MODULE:FUNCTION"),
        (("--transport", "in-process", "--participants", "nocolon"), "as module:attribute"),
        (("--transport", "in-process", "--participants", "no_such_mod:f"), "cannot import"),
        (("--transport", "in-process", "--participants", "json:nope"), "has no attribute 'nope'"),
    ],
)
def test_worker_configuration_errors(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    _one_line_error(invoke("worker", "--database-url", url, *args), fragment)


@pytest.mark.parametrize(
    "command",
    [
        (),
        ("list",),
        ("stuck",),
        ("show",),
        ("retry",),
        ("resolve",),
        ("abort",),
        ("worker",),
        ("projections",),
        ("projections", "status"),
        ("projections", "rebuild"),
        ("demo",),
        ("retention",),
        ("restore",),
    ],
)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list", "--bogus"], "error: No such option: --bogus (see sagalog list --help)\n"),
        (
            ["list", "--limit", "many"],
            "error: Invalid value for '--limit': Input should be a valid integer, unable to "
            "parse string as an integer (see sagalog list --help)\n",
        ),
        (["show"], "error: Missing argument 'SAGA_ID'. (see sagalog show --help)\n"),
        (["frobnicate"], "error: No such command 'frobnicate'. (see sagalog --help)\n"),
    ],
)
def test_the_console_script_reports_usage_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
) -> None:
    monkeypatch.setattr(sys, "argv", ["sagalog", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == expected
    assert captured.out == ""


def test_the_console_script_exits_0_on_success(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["sagalog", "list", "--json", "--database-url", url])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("[")


def test_the_console_script_passes_command_errors_through(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["sagalog", "show", UNKNOWN, "--database-url", url])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: no saga with id {UNKNOWN}\n"
