"""``sagalog show SAGA_ID --plot FILE``: the saga's timeline as a picture, and its errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from test_cli_helpers import ids_by_status, invoke, run_demo, shared_store

from sagalog.process import SagaManager, plot_timeline
from sagalog.process.debugging.timeline import PlotUnavailableError

#: One pytest-xdist worker runs this module: its tests share its demo store (a module fixture).
pytestmark = pytest.mark.xdist_group("test_cli_plot")

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def demo_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shared_store(backend, tmp_path_factory.mktemp("cli-plot")) as url:
        yield run_demo(url)


@pytest.fixture(scope="module")
def failed_saga(demo_url: str) -> str:
    return ids_by_status(demo_url)["FAILED"][0]


def _one_line_error(result: object, fragment: str) -> None:
    assert getattr(result, "exit_code", None) == 2, getattr(result, "output", "")
    stderr = getattr(result, "stderr", "")
    assert stderr.startswith("error: ")
    assert stderr.count("\n") == 1, stderr
    assert fragment in stderr


def test_show_plot_writes_a_png_and_still_shows_the_saga(
    demo_url: str, failed_saga: str, tmp_path: Path
) -> None:
    target = tmp_path / "timeline.png"
    result = invoke("show", failed_saga, "--database-url", demo_url, "--plot", str(target))
    assert result.exit_code == 0, result.output
    assert "SagaFailed" in result.stdout
    assert f"timeline chart written to {target}" in result.stderr
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert 10_000 < len(data) < 500_000
    assert not list(tmp_path.glob(".*partial*"))


def test_show_plot_with_json_keeps_stdout_json_and_writes_svg(
    demo_url: str, failed_saga: str, tmp_path: Path
) -> None:
    target = tmp_path / "timeline.svg"
    result = invoke(
        "show", failed_saga, "--database-url", demo_url, "--plot", str(target), "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["saga_id"] == failed_saga
    assert target.read_text().lstrip().startswith("<?xml")


def test_show_plot_of_an_unknown_saga_writes_nothing(demo_url: str, tmp_path: Path) -> None:
    target = tmp_path / "none.png"
    _one_line_error(
        invoke("show", UNKNOWN, "--database-url", demo_url, "--plot", str(target)),
        f"no saga with id {UNKNOWN}",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("missing-dir/timeline.png", "no directory"),
        ("a-file/timeline.png", "no directory"),
        ("timeline.gif", "give a file ending in .png, .svg, .pdf"),
        (".", "give a file ending in"),
    ],
)
def test_show_plot_refuses_a_path_it_cannot_write(
    demo_url: str, failed_saga: str, tmp_path: Path, name: str, fragment: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    target = tmp_path / name
    result = invoke("show", failed_saga, "--database-url", demo_url, "--plot", str(target))
    _one_line_error(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_show_plot_reports_a_write_the_system_refuses(demo_url: str, failed_saga: str) -> None:
    target = Path("/proc/sagalog-timeline.png")  # /proc takes no new files, not even root's
    result = invoke("show", failed_saga, "--database-url", demo_url, "--plot", str(target))
    _one_line_error(result, "cannot write")
    assert not target.exists()


def test_without_matplotlib_plot_says_which_extra_to_install(
    demo_url: str, failed_saga: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    target = tmp_path / "timeline.png"
    result = invoke("show", failed_saga, "--database-url", demo_url, "--plot", str(target))
    _one_line_error(result, "pip install 'sagalog[plot]'")
    assert not target.exists()
    manager = SagaManager([], demo_url)
    try:
        with pytest.raises(PlotUnavailableError, match=r"sagalog\[plot\]"):
            plot_timeline(manager.history(UUID(failed_saga)))
    finally:
        manager.close()
