"""The public API, in tiers: each package exports a few names, pinned here.

The first tier is each package's ``__all__``: the names the README, docs, notebooks and
examples use. The second tier is the documented modules (``sagalog.process.debugging.replay``,
``sagalog.infrastructure.rabbitmq.topology``, …). A name that left a package's first
tier still resolves from the package, with a ``DeprecationWarning`` naming its home.
Every error sagalog raises on purpose is a ``SagalogError``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import warnings
from pathlib import Path
from types import ModuleType

import pytest

from sagalog.domain import SagalogError

ROOT = Path(__file__).resolve().parent.parent

#: Every package ``__all__``, pinned: a change here is a change of the public API.
FIRST_TIER: dict[str, set[str]] = {
    "sagalog.domain": {
        "Command",
        "CommandKind",
        "InvalidDefinitionError",
        "InvalidPayloadError",
        "InvalidTransitionError",
        "Outcome",
        "ReplyOutcome",
        "RetryPolicy",
        "Saga",
        "SagaDefinition",
        "SagaNotFoundError",
        "SagaStatus",
        "SagalogError",
        "Step",
        "parallel",
        "StepStatus",
        "UnexpectedReplyError",
        "UnknownSagaTypeError",
        "UnknownStepError",
        "command_id_for",
        "idempotency_key_for",
    },
    "sagalog.process": {
        "AbortSaga",
        "AsyncSagaManager",
        "CompleteCompensation",
        "CompleteStep",
        "ConcurrencyConflictError",
        "DatabaseUnavailableError",
        "DatabaseUrlError",
        "EncryptionKeyError",
        "EncryptionKeyMissingError",
        "ErasureError",
        "FailCompensation",
        "FailStep",
        "InvalidReplyError",
        "Reaction",
        "Reply",
        "SagaManager",
        "StartSaga",
        "explain",
        "load_definition",
        "parse_database_url",
        "plot_timeline",
        "replay",
        "saga_id_for",
        "state_at",
        "timeline_chart",
        "what_if",
        "what_if_events",
        "what_if_many",
    },
    "sagalog.projections": {
        "DefinitionVersionUsage",
        "ProjectionIntegrityError",
        "ProjectionStatus",
        "SagaLogReader",
        "SagaProjection",
        "SagaProjector",
        "SagaSummary",
        "SagaViews",
        "StuckPolicy",
        "StuckReason",
        "StuckSaga",
        "TimelineEntry",
        "definition_versions",
        "runner_env",
    },
    "sagalog.infrastructure": {
        "CommandFailed",
        "CommandRelay",
        "Fence",
        "InMemoryProcessedCommands",
        "InProcessTransport",
        "JsonFormatter",
        "Participant",
        "RabbitMQTransport",
        "ReplyConsumer",
        "SQLiteProcessedCommands",
        "SagaEventFollower",
        "SagaMetrics",
        "Topology",
        "Transport",
        "TransportError",
        "Worker",
        "configure_logging",
    },
    "sagalog.infrastructure.rabbitmq": {
        "ConsumerLoop",
        "DeadLetteredMessage",
        "RabbitMQEventBus",
        "RabbitMQEventSubscriber",
        "RabbitMQTransport",
        "ReceivedMessage",
        "ReplyConsumer",
        "Topology",
        "dead_letter_depths",
        "publish_reply",
        "purge_dead_letters",
        "read_dead_letters",
        "replay_dead_letters",
    },
    "sagalog.infrastructure.cli": {"app", "main"},
    "sagalog.testing": {
        "EPOCH",
        "Fencing",
        "LawViolation",
        "ManualClock",
        "Participant",
        "SagaLawsMachine",
        "SagaManagerFactory",
        "Scenario",
        "aborted",
        "check_all",
        "compensated",
        "compensation_failed",
        "completed",
        "definitions",
        "failed",
        "load_profile",
        "reply_schedules",
        "resolved",
        "retried",
        "saga_data",
        "scenario",
        "send_reply",
        "time_passes",
    },
}

LAYERS = ("domain", "process", "projections", "infrastructure", "testing")


def _documentation() -> str:
    """The README, docs, notebooks (their cells) and examples: where the public API is used."""
    texts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.py"))]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        texts += ["".join(cell["source"]) for cell in cells]
    return "\n".join(texts)


def _all_modules() -> list[ModuleType]:
    """Every module of every layer, imported (``__main__`` modules left out)."""
    modules = []
    for layer in LAYERS:
        package = importlib.import_module(f"sagalog.{layer}")
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith("__main__"):
                modules.append(importlib.import_module(info.name))
    return modules


@pytest.mark.parametrize("package", sorted(FIRST_TIER))
def test_each_package_exports_its_first_tier_and_nothing_else(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == FIRST_TIER[package]
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize("package", sorted(FIRST_TIER))
def test_every_exported_name_resolves_without_a_warning(package: str) -> None:
    module = importlib.import_module(package)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in module.__all__:
            assert getattr(module, name) is not None, name


@pytest.mark.parametrize("package", sorted(FIRST_TIER))
def test_every_exported_name_is_documented(package: str) -> None:
    """A first-tier name is one that the README, docs, notebooks or examples use."""
    documentation = _documentation()
    undocumented = [
        name
        for name in importlib.import_module(package).__all__
        if not re.search(rf"\b{re.escape(name)}\b", documentation)
    ]
    assert undocumented == []


@pytest.mark.parametrize("package", sorted(p for p in FIRST_TIER if p.count(".") == 1))
def test_a_name_that_left_the_first_tier_resolves_from_its_home_with_a_warning(
    package: str,
) -> None:
    module = importlib.import_module(package)
    moved: dict[str, str] = getattr(module, "MOVED", {})
    for name, home in moved.items():
        assert name not in module.__all__
        home_module, _, new_name = home.partition(":")
        expected = getattr(importlib.import_module(home_module), new_name or name)
        with pytest.warns(DeprecationWarning, match=re.escape(home_module)):
            assert getattr(module, name) is expected


def test_a_name_no_package_ever_had_is_an_attribute_error() -> None:
    for package in FIRST_TIER:
        with pytest.raises(AttributeError, match="NoSuchName"):
            getattr(importlib.import_module(package), "NoSuchName")  # noqa: B009


def test_every_error_sagalog_defines_is_a_sagalog_error() -> None:
    """Private control-flow exceptions (``_Stopping``) never leave their module."""
    strays = sorted(
        f"{module.__name__}.{name}"
        for module in _all_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and not name.startswith("_")
        and not issubclass(value, SagalogError)
    )
    assert strays == []


def test_every_package_says_what_its_room_is_for() -> None:
    silent = sorted(
        module.__name__
        for module in _all_modules()
        if hasattr(module, "__path__") and len((module.__doc__ or "").strip()) < 40
    )
    assert silent == []


def test_modules_that_moved_import_by_their_old_paths_with_a_warning() -> None:
    """In a fresh process, so that no new path was imported first by another test."""
    import subprocess
    import sys

    script = (
        "import importlib, json, warnings\n"
        "import sagalog.infrastructure as i, sagalog.process as p\n"
        "moved = {**i.MOVED_MODULES, **p.MOVED_MODULES}\n"
        "found = {}\n"
        "for old, new in moved.items():\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    said = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        "    found[old] = [module is importlib.import_module(new), any(new in s for s in said)]\n"
        "print(json.dumps(found))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert len(found) == 25
    assert {old: result for old, result in found.items() if result != [True, True]} == {}


def test_an_old_module_path_that_names_a_function_is_not_shadowed() -> None:
    """``sagalog.process.replay`` stays the function: no old module takes its name."""
    import sagalog.process as process

    assert "sagalog.process.replay" not in process.MOVED_MODULES
    assert callable(process.replay)
    assert callable(process.explain)


def test_a_lazy_name_whose_extra_is_missing_says_which_extra_to_install() -> None:
    """``from sagalog.infrastructure import Participant`` without pika: one clear ImportError."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['pika'] = None\n"
        "import sagalog.infrastructure as infrastructure\n"
        "from sagalog.infrastructure import CommandRelay\n"
        "try:\n"
        "    from sagalog.infrastructure import Participant\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert (
        ran.stdout.strip() == "ImportError Participant needs pika: pip install 'sagalog[rabbitmq]'"
    )
