"""Topics of modules that moved still resolve, in a process that imported nothing else.

An eventsourcing environment names persistence by topic (``PERSISTENCE_MODULE``,
``PROCESS_RECORDER_TOPIC``, ``TRANSCODER_TOPIC``). Environments written before the
persistence and codec modules moved name them by their old topics; a manager opened
with such an environment must still build the same recorders and read the same store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Old topics an environment may hold, and the modules they now resolve to (through the
#: old module paths that ``sagalog.infrastructure`` and ``sagalog.process`` keep importable).
OLD_TOPICS = {
    "sagalog.infrastructure.recorders:SQLiteSagaRecorder": (
        "sagalog.infrastructure.persistence.recorders"
    ),
    "sagalog.infrastructure.recorders:POPOSagaFactory": (
        "sagalog.infrastructure.persistence.recorders"
    ),
    "sagalog.infrastructure.postgres_recorder:PostgresSagaRecorder": (
        "sagalog.infrastructure.persistence.postgres"
    ),
    "sagalog.process.transcoding:FastJSONTranscoder": "sagalog.process.store.codec",
}

OPEN_WITH_OLD_TOPICS = """
import json, sys
from sagalog.domain import SagaDefinition, Step
from sagalog.process import SagaManager
old = "sagalog.infrastructure.recorders"
definition = SagaDefinition(name="Moved", steps=[Step(name="one", action="S.Do")])
env = {
    "SAGAMANAGER_PROCESS_RECORDER_TOPIC": old + ":SQLiteSagaRecorder",
    "SAGAMANAGER_APPLICATION_RECORDER_TOPIC": old + ":SQLiteSagaRecorder",
    "SAGAMANAGER_TRANSCODER_TOPIC": "sagalog.process.transcoding:FastJSONTranscoder",
}
manager = SagaManager([definition], "sqlite:///" + sys.argv[1], env=env)
saga_id = manager.start("Moved", {})
reopened = SagaManager([definition], "sqlite:///" + sys.argv[1], env=env)
print(json.dumps({
    "recorder": type(manager.recorder).__module__ + ":" + type(manager.recorder).__qualname__,
    "transcoder": type(manager.mapper.transcoder).__qualname__,
    "status": reopened.get(saga_id).status.value,
}))
"""


def test_old_recorder_and_codec_topics_open_the_store(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", OPEN_WITH_OLD_TOPICS, str(tmp_path / "sagas.db")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    opened = json.loads(result.stdout)
    assert opened == {
        "recorder": "sagalog.infrastructure.persistence.recorders:SQLiteSagaRecorder",
        "transcoder": "FastJSONTranscoder",
        "status": "PENDING",
    }


@pytest.mark.parametrize("old", sorted(OLD_TOPICS))
def test_each_old_topic_resolves_to_where_it_moved(old: str) -> None:
    script = (
        f"from eventsourcing.utils import resolve_topic\nprint(resolve_topic({old!r}).__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == OLD_TOPICS[old]
