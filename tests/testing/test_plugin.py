"""The pytest plugin's fixtures, active here because sagalog is installed (``pytest11``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from shop import ORDER

from sagalog.domain import SagaDefinition, SagaStatus
from sagalog.process import SagaManager
from sagalog.testing import EPOCH, ManualClock, SagaManagerFactory

DATA: dict[str, Any] = {"order_id": "o-1", "items": {"apple": 1}, "amount": 42}


@pytest.fixture
def saga_definitions() -> list[SagaDefinition]:
    """What a user's conftest does: give ``saga_manager`` the definitions."""
    return [ORDER]


def test_the_plugin_is_registered_under_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("sagalog")
    assert plugin is not None
    assert plugin.__name__ == "sagalog.testing.plugin"


def test_saga_manager_runs_the_definitions_on_the_saga_clock(
    saga_manager: SagaManager, saga_clock: ManualClock
) -> None:
    saga_id = saga_manager.start("OrderFulfillment", DATA)
    assert saga_manager.history(saga_id)[0].timestamp == EPOCH
    saga_clock.advance(timedelta(seconds=30))
    assert saga_manager.tick() == 1  # the reservation's 30 s deadline, by the fixture clock
    saga = saga_manager.get(saga_id)
    assert saga.status is SagaStatus.COMPENSATING  # the timed-out reservation is uncertain
    assert saga.pending_command is not None
    assert saga.pending_command.name == "InventoryService.ReleaseItems"


@pytest.mark.parametrize("saga_backend", ["memory", "sqlite"])
def test_saga_backend_chooses_the_store(saga_manager: SagaManager, saga_backend: str) -> None:
    assert saga_manager.database_url.kind == saga_backend


def test_the_factory_reopens_a_sqlite_store_like_a_restart(
    saga_manager_factory: SagaManagerFactory,
) -> None:
    url = saga_manager_factory.url("sqlite")
    first = saga_manager_factory([ORDER], database_url=url)
    saga_id = first.start("OrderFulfillment", DATA)
    first.close()
    again = saga_manager_factory([ORDER], database_url=url)
    assert again.get(saga_id).status is SagaStatus.PENDING
    assert saga_manager_factory.url("sqlite") != url  # every call: a fresh file


def test_the_factory_closes_what_it_made_and_refuses_unknown_backends(tmp_path: Path) -> None:
    factory = SagaManagerFactory(tmp_path, ManualClock())
    factory([ORDER], backend="sqlite")
    factory([ORDER])
    assert len(factory.managers) == 2
    factory.close()
    assert factory.managers == []
    with pytest.raises(ValueError, match="no saga backend 'postgres'"):
        factory.url("postgres")


def test_the_clock_only_moves_forward() -> None:
    clock = ManualClock()
    assert clock.advance(1.5) == EPOCH + timedelta(seconds=1.5)
    assert clock.move_to(EPOCH) == EPOCH + timedelta(seconds=1.5)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(EPOCH.replace(tzinfo=None))


@pytest.mark.slow
def test_loading_the_plugin_imports_neither_hypothesis_nor_the_manager() -> None:
    probe = (
        "import sys, sagalog.testing.plugin, sagalog.testing\n"
        "print(sorted(m for m in ('hypothesis', 'sagalog.process') if m in sys.modules))\n"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[]"


def _pytest_in(directory: Path, profile: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``directory`` in a fresh process with ``SAGALOG_HYPOTHESIS_PROFILE``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)],
        capture_output=True,
        text=True,
        cwd=directory,
        env={**os.environ, "SAGALOG_HYPOTHESIS_PROFILE": profile},
    )


@pytest.mark.slow
def test_the_plugin_loads_the_profile_the_environment_names(tmp_path: Path) -> None:
    (tmp_path / "test_profile.py").write_text(
        "from hypothesis import settings\n\n"
        "def test_the_ci_profile_is_loaded():\n"
        "    assert settings().max_examples == 500\n",
        encoding="utf-8",
    )
    ran = _pytest_in(tmp_path, "ci")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    refused = _pytest_in(tmp_path, "nightly")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR
    assert "SAGALOG_HYPOTHESIS_PROFILE='nightly' names no sagalog profile" in refused.stderr
