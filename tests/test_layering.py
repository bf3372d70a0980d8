"""The package layers import downward only: infrastructure → projections → process → domain.

The testing kit (``testing/``, installed as ``sagalog.testing``) sits on top, beside
infrastructure: it may use the layers below infrastructure, and no other package
imports it, so the kit and its test-only dependencies (pytest, hypothesis) never
load in production code.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["domain", "process", "projections", "infrastructure"]
#: The testing kit and what it may import (itself, and the layers below infrastructure).
TESTING = "testing"
TESTING_MAY_IMPORT = {TESTING, "domain", "process", "projections"}

#: Third-party packages that would mean I/O inside the pure domain.
DOMAIN_FORBIDDEN = {"sqlalchemy", "psycopg", "sqlite3", "socket", "requests", "urllib", "time"}


def _sagalog_offences(folder: str, allowed: set[str]) -> list[str]:
    """Imports of sagalog packages outside ``allowed`` in the modules of ``folder``."""
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "sagalog" and len(parts) > 1 and parts[1] not in allowed:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    return offences


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ORDER)
def test_layer_imports_only_itself_and_the_layers_below(layer: str) -> None:
    """Also: no layer imports the testing kit (it is not in any layer's allowed set)."""
    assert _sagalog_offences(layer, set(ORDER[: ORDER.index(layer) + 1])) == []


def test_the_testing_kit_sits_on_top_beside_infrastructure() -> None:
    assert (ROOT / TESTING / "__init__.py").exists()
    assert _sagalog_offences(TESTING, TESTING_MAY_IMPORT) == []


def test_domain_does_no_io() -> None:
    offences = []
    for path in sorted((ROOT / "domain").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in DOMAIN_FORBIDDEN:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []


#: A module or object named by a string, as eventsourcing names persistence by topic.
_TOPIC = re.compile(
    r"sagalog\.(?:domain|process|projections|infrastructure|testing)"
    r"(?:\.[a-z_]+)*(?::[A-Za-z_][\w.]*)?"
)

#: Strings that name a higher layer, and why each may: the process layer turns a database
#: URL into an eventsourcing environment, which names its recorders by topic (eventsourcing
#: imports them when it builds the application, as it does its own).
UPWARD_TOPICS_ALLOWED = {("process", "infrastructure.persistence")}


def _topics(path: Path) -> set[str]:
    """Every string constant in ``path`` that is wholly a sagalog topic or module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _TOPIC.fullmatch(node.value)
    }


def _all_topics() -> dict[str, set[str]]:
    """The topics each layer's code names as strings (module docstrings never match wholly)."""
    found: dict[str, set[str]] = {}
    for layer in [*ORDER, TESTING]:
        for path in sorted((ROOT / layer).rglob("*.py")):
            for topic in _topics(path):
                found.setdefault(topic, set()).add(layer)
    return found


def test_the_layers_name_their_recorders_by_topic_strings() -> None:
    """The scan sees the recorder topics (it would miss them if the pattern were wrong)."""
    topics = _all_topics()
    assert "sagalog.infrastructure.persistence.recorders" in topics
    assert "process" in topics["sagalog.infrastructure.persistence.recorders"]


def test_every_topic_named_as_a_string_resolves() -> None:
    """A moved module would leave a topic string that no longer imports: caught here."""
    from eventsourcing.utils import resolve_topic

    unresolved = []
    for topic in sorted(_all_topics()):
        try:
            with warnings.catch_warnings():  # old module paths resolve, with a warning
                warnings.simplefilter("ignore", DeprecationWarning)
                resolve_topic(topic)
        except Exception as error:
            unresolved.append(f"{topic}: {error}")
    assert unresolved == []


def test_topic_strings_name_a_higher_layer_only_where_allowed() -> None:
    """Old topics kept as aliases are judged by the module they now resolve to."""
    import sagalog.infrastructure
    import sagalog.process

    moved = {**sagalog.infrastructure.MOVED_MODULES, **sagalog.process.MOVED_MODULES}

    offences = []
    for named_topic, layers in _all_topics().items():
        module, _, attribute = named_topic.partition(":")
        topic = moved.get(module, module) + (f":{attribute}" if attribute else "")
        parts = topic.split(":")[0].split(".")
        named = parts[1]
        for layer in layers:
            if layer == TESTING or named not in ORDER or layer not in ORDER:
                continue
            if ORDER.index(named) <= ORDER.index(layer):
                continue
            room = ".".join(parts[1:3])
            if (layer, room) not in UPWARD_TOPICS_ALLOWED:
                offences.append(f"{layer} names {topic}")
    assert offences == []
