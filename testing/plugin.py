"""The sagalog pytest plugin: fixtures for testing your sagas.

Installed with sagalog and registered through the ``pytest11`` entry point, so the
fixtures are there in every test session where sagalog is installed, with nothing
to import:

``saga_clock``
    A :class:`~sagalog.testing.clock.ManualClock` at :data:`~sagalog.testing.clock.EPOCH`,
    shared by the managers the fixtures below make.
``saga_definitions``
    The definitions ``saga_manager`` knows: none. Override it in your
    ``conftest.py`` to return yours.
``saga_backend``
    Where ``saga_manager`` stores sagas: ``"memory"``. Override it, or
    ``@pytest.mark.parametrize("saga_backend", ["memory", "sqlite"])``.
``saga_manager``
    A ready ``SagaManager`` with ``saga_definitions`` on ``saga_backend`` and
    ``saga_clock``, closed after the test.
``saga_manager_factory``
    A :class:`SagaManagerFactory`: ``saga_manager_factory([definition], backend="sqlite")``
    makes more managers (a fresh SQLite file under ``tmp_path`` each), all closed after
    the test; ``saga_manager_factory.url("sqlite")`` gives a fresh URL to open twice
    (a restart).

When ``SAGALOG_HYPOTHESIS_PROFILE`` is set the plugin loads that hypothesis profile
(see :mod:`sagalog.testing.profiles`). The plugin imports neither hypothesis nor
the process manager when pytest loads it, so it costs nothing in a session that
does not use it and works where hypothesis is not installed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sagalog.domain import SagaDefinition
    from sagalog.process import SagaManager
    from sagalog.process.clock import ManualClock

__all__ = [
    "BACKENDS",
    "SagaManagerFactory",
    "saga_backend",
    "saga_clock",
    "saga_definitions",
    "saga_manager",
    "saga_manager_factory",
]

#: The backends the fixtures make managers on by name.
BACKENDS = ("memory", "sqlite")


class SagaManagerFactory:
    """Makes ``SagaManager`` objects for one test and closes them all afterwards."""

    def __init__(self, directory: Path, clock: ManualClock) -> None:
        self.directory = directory
        self.clock = clock
        self.managers: list[SagaManager] = []
        self._files = itertools.count(1)

    def url(self, backend: str = "memory") -> str:
        """A URL of a fresh, empty store on ``backend`` (``memory`` or ``sqlite``)."""
        if backend == "memory":
            return "memory://"
        if backend == "sqlite":
            return f"sqlite:///{self.directory / f'sagalog-{next(self._files)}.db'}"
        raise ValueError(f"no saga backend {backend!r}; use one of {', '.join(BACKENDS)}")

    def __call__(
        self,
        definitions: Iterable[SagaDefinition] = (),
        *,
        backend: str = "memory",
        database_url: str | None = None,
        clock: ManualClock | None = None,
    ) -> SagaManager:
        """A manager knowing ``definitions``, on a fresh store of ``backend`` unless
        ``database_url`` names one, reading ``clock`` (by default ``saga_clock``)."""
        from sagalog.process import SagaManager

        manager = SagaManager(
            list(definitions), database_url or self.url(backend), clock=clock or self.clock
        )
        self.managers.append(manager)
        return manager

    def close(self) -> None:
        """Close every manager made, newest first."""
        while self.managers:
            self.managers.pop().close()


def pytest_configure(config: pytest.Config) -> None:
    """Load the hypothesis profile that ``SAGALOG_HYPOTHESIS_PROFILE`` names, if any."""
    if os.environ.get("SAGALOG_HYPOTHESIS_PROFILE", "").strip():
        try:
            from sagalog.testing.profiles import load_profile
        except ImportError:  # hypothesis not installed: no profile to load
            return
        try:
            load_profile()
        except ValueError as unknown:
            raise pytest.UsageError(str(unknown)) from None


@pytest.fixture
def saga_clock() -> ManualClock:
    """A clock standing at ``EPOCH`` until the test moves it (imported here: loading the
    plugin must not import the process manager)."""
    from sagalog.process.clock import ManualClock

    return ManualClock()


@pytest.fixture
def saga_definitions() -> list[SagaDefinition]:
    """The definitions ``saga_manager`` knows; override to return yours."""
    return []


@pytest.fixture
def saga_backend() -> str:
    """Where ``saga_manager`` stores sagas (``memory`` or ``sqlite``); override or parametrize."""
    return "memory"


@pytest.fixture
def saga_manager_factory(tmp_path: Path, saga_clock: ManualClock) -> Iterator[SagaManagerFactory]:
    """Makes managers on fresh stores; closes them after the test."""
    factory = SagaManagerFactory(tmp_path, saga_clock)
    yield factory
    factory.close()


@pytest.fixture
def saga_manager(
    saga_manager_factory: SagaManagerFactory,
    saga_definitions: list[SagaDefinition],
    saga_backend: str,
) -> SagaManager:
    """A ready manager with ``saga_definitions`` on ``saga_backend``, reading ``saga_clock``."""
    return saga_manager_factory(saga_definitions, backend=saga_backend)
