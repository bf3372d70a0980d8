"""The wheel installs into a fresh environment as sagalog.<package>, typed, with its script."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

#: Slow (pip builds the wheel, a fresh venv installs it); one pytest-xdist worker runs the
#: module, whose tests share the wheel (a module fixture).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_packaging")]

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("domain", "process", "projections", "infrastructure", "testing")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
    )
    (found,) = out.glob("sagalog-*.whl")
    return found


def test_wheel_maps_each_folder_to_a_typed_sagalog_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        assert f"sagalog/{package}/__init__.py" in names
        assert f"sagalog/{package}/py.typed" in names
    assert not any(name.split("/")[0] in PACKAGES for name in names)
    assert not any(name.startswith("tests/") for name in names)


def test_wheel_imports_and_runs_in_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    """Without extras: the core, and the testing kit's hypothesis-free half (a scenario
    runs; the pytest plugin is registered under ``pytest11``)."""
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
    )
    probe = (
        "from sagalog.domain import SagaDefinition, Step, RetryPolicy, SagaStatus, Saga\n"
        "from sagalog.process import SagaManager\n"
        "from sagalog.testing import ManualClock, scenario, completed\n"
        "from importlib.metadata import entry_points\n"
        "(plugin,) = [e for e in entry_points(group='pytest11') if e.name == 'sagalog']\n"
        "assert plugin.value == 'sagalog.testing.plugin', plugin\n"
        "one_step = SagaDefinition('O', [Step(name='a', action='A.Do')])\n"
        "scenario(one_step).when(completed('a')).then_status(SagaStatus.COMPLETED)\n"
        "import sagalog.domain, pathlib\n"
        "print(pathlib.Path(sagalog.domain.__file__).parent.parent.parent.name)\n"
    )
    shown = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "site-packages"
    helped = subprocess.run(
        [str(env_dir / "bin" / "sagalog"), "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "demo" in helped.stdout
    demo = subprocess.run(
        [str(env_dir / "bin" / "sagalog"), "demo", "--sagas", "4"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert "sqlite:///sagalog.db" in demo.stdout
