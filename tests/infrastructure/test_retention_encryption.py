"""Retention with encryption at rest: the data keys leave and come back with the events.

Retiring a saga removes its key table row in the transaction that removes its events,
and the archive carries the row as stored (wrapped by the store key, so the archive
holds no saga data in the clear). Restoring puts it back: the saga's payloads read
again, and a forgotten saga's tombstone comes back as a tombstone.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import orjson
import pytest
from support.raw_store import raw_store_bytes
from support.sagas import ORDER, T0
from typer.testing import CliRunner

from sagalog.domain import SagaStatus
from sagalog.infrastructure.cli import app
from sagalog.infrastructure.retention import (
    RetentionError,
    RetentionPolicy,
    restore_sagas,
    retire_sagas,
)
from sagalog.infrastructure.retention.retire import RetiresStreams
from sagalog.process import SagaManager, parse_database_url
from sagalog.process.clock import ManualClock
from sagalog.process.store.encryption import EncryptionKeyMissingError, new_key
from sagalog.process.store.shredding import ERASED
from sagalog.projections import SagaProjector, SagaViews

SECRET_DATA = "DE89370400440532013000"
SECRET_RESULT = "reservation-for-Jane-Roe"
K1 = new_key("k1")
K2 = new_key("k2")
MONTH = timedelta(days=31)


def keyed(*keys: str) -> dict[str, str]:
    return {"SAGALOG_ENCRYPTION_KEYS": ",".join(keys)}


@contextmanager
def opened(database_url: str, env: dict[str, str] | None = None) -> Iterator[SagaManager]:
    manager = SagaManager([ORDER], database_url, env=env, clock=ManualClock(T0))
    try:
        yield manager
    finally:
        manager.close()


def recorder(manager: SagaManager) -> RetiresStreams:
    found = manager.recorder
    assert isinstance(found, RetiresStreams)
    return found


def completed(manager: SagaManager, n: int) -> UUID:
    saga_id = manager.start("Order", {"iban": SECRET_DATA, "n": n})
    for step in ("reserve", "charge", "ship", "notify"):
        manager.handle_step_completed(saga_id, step, {"ref": SECRET_RESULT})
    return saga_id


def archive_lines(path: Path) -> tuple[bytes, list[dict[str, object]]]:
    text = gzip.decompress(path.read_bytes())
    lines = [orjson.loads(line) for line in text.splitlines()[1:] if line.strip()]
    return text, lines


def retire(manager: SagaManager, views: SagaViews, archive: Path) -> int:
    manager.clock.advance(MONTH)  # type: ignore[attr-defined]
    SagaProjector(manager, views).catch_up()
    policy = RetentionPolicy.parse("30d", ["COMPLETED"])
    return retire_sagas(
        manager,
        policy,
        archive=archive,
        views=views,
        actor="ops@example.com",
        reason="monthly retention",
    ).sagas


def test_retire_takes_the_key_along_and_restore_brings_it_back(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    archive = tmp_path / "retired.jsonl.gz"
    with opened(database_url, keyed(K1)) as manager:
        views = SagaViews(manager.database_url)
        kept = completed(manager, 1)
        forgotten = completed(manager, 2)
        manager.forget(forgotten, actor="dpo@example.com", reason="erasure request 17")
        manager.start("Order", {"n": 3})  # holds the newest event (SQLite keeps that saga)
        rows = recorder(manager).select_stream_rows([kept, forgotten])
        keys = recorder(manager).select_data_keys([kept, forgotten])
        assert keys[kept]
        assert keys[forgotten] == b""
        history = manager.history(kept)

        assert retire(manager, views, archive) == 2

        assert recorder(manager).select_stream_rows([kept, forgotten]) == []
        assert recorder(manager).select_data_keys([kept, forgotten]) == {}
        blob = raw_store_bytes(manager, database_url)
        assert keys[kept] not in blob, "the retired saga's wrapped key is still in the store"
        for row in rows:
            assert row[4] not in blob, "a retired event is still in the store"

        text, lines = archive_lines(archive)
        assert SECRET_DATA.encode() not in text
        assert SECRET_RESULT.encode() not in text
        assert b"iban" not in text
        by_id = {UUID(str(line["saga_id"])): line for line in lines}
        assert by_id[kept]["data_key"]
        assert by_id[forgotten]["data_key"] == ""

        report = restore_sagas(
            manager, archive, views=views, actor="ops@example.com", reason="monthly retention"
        )
        assert report.sagas == 2
        # the restored view rows hold no saga data either: the views are read keyless
        shown = orjson.dumps(
            [views.get(kept), views.timeline(kept)], default=str, option=orjson.OPT_NON_STR_KEYS
        )
        assert b"<encrypted>" in shown
        assert SECRET_DATA.encode() not in shown
        assert SECRET_RESULT.encode() not in shown
        if backend != "memory":
            blob = raw_store_bytes(manager, database_url)
            assert SECRET_DATA.encode() not in blob, "a restored row holds the saga's data"
            assert SECRET_RESULT.encode() not in blob, "a restored row holds a result"
        views.close()
        assert recorder(manager).select_data_keys([kept, forgotten]) == keys
        assert recorder(manager).select_stream_rows([kept, forgotten]) == rows

    with opened(database_url if backend != "memory" else "memory://", keyed(K1)) as fresh:
        if backend == "memory":
            return  # a memory store lives in its manager; checked above
        saga = fresh.get(kept)
        assert saga.status is SagaStatus.COMPLETED
        assert saga.data["iban"] == SECRET_DATA
        assert saga.results["reserve"] == {"ref": SECRET_RESULT}
        assert [type(e) for e in fresh.history(kept)] == [type(e) for e in history]
        erased = fresh.get(forgotten)
        assert erased.forgotten
        assert erased.forgotten_by == "dpo@example.com"
        assert erased.data == {ERASED: True}
        assert erased.results["reserve"] == ERASED or erased.results["reserve"] == {ERASED: True}


def test_restored_payloads_read_on_memory_too(database_url: str, tmp_path: Path) -> None:
    """The same manager reads the restored saga (the only way on memory://)."""
    archive = tmp_path / "retired.jsonl.gz"
    with opened(database_url, keyed(K1)) as manager:
        views = SagaViews(manager.database_url)
        kept = completed(manager, 1)
        manager.start("Order", {"n": 3})
        assert retire(manager, views, archive) == 1
        restore_sagas(
            manager, archive, views=views, actor="ops@example.com", reason="monthly retention"
        )
        views.close()
        manager.saga_cache.clear()
        assert manager.get(kept).data["iban"] == SECRET_DATA


@contextmanager
def empty_store(backend: str, tmp_path: Path) -> Iterator[str]:
    """Another empty store on the same backend."""
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'other.db'}"
    else:
        import os
        import uuid

        import psycopg
        from psycopg import sql

        server = os.environ.get(
            "SAGALOG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        )
        schema = f"t_{uuid.uuid4().hex}"
        conninfo = parse_database_url(server).conninfo()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield f"{server}{'&' if '?' in server else '?'}schema={schema}"
        finally:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_restore_without_the_keys_fails_in_one_line_and_writes_nothing(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    archive = tmp_path / "retired.jsonl.gz"
    with opened(database_url, keyed(K1)) as manager:
        views = SagaViews(manager.database_url)
        completed(manager, 1)
        manager.start("Order", {"n": 3})
        assert retire(manager, views, archive) == 1
        views.close()
    if backend != "memory":
        # The same store, without its key: refused when it is opened.
        with pytest.raises(EncryptionKeyMissingError):
            SagaManager([ORDER], database_url)
        runner = CliRunner()
        common = ["--database-url", database_url, "--definitions", "support.sagas:DEFINITIONS"]
        result = runner.invoke(
            app, ["restore", *common, str(archive), "--actor", "a", "--reason", "r"]
        )
        assert result.exit_code == 2
        assert result.output.strip().count("\n") == 0
        assert result.output.startswith("error:")
        assert "encrypted" in result.output
    with empty_store(backend, tmp_path) as other:
        for env in (None, keyed(K2)):
            with opened(other, env) as bare:
                views = SagaViews(bare.database_url)
                with pytest.raises(RetentionError) as refused:
                    restore_sagas(
                        bare,
                        archive,
                        views=views,
                        actor="ops@example.com",
                        reason="monthly retention",
                    )
                views.close()
                message = str(refused.value)
                assert "\n" not in message
                if env is None:
                    assert "encrypted" in message
                    assert "SAGALOG_ENCRYPTION_KEYS" in message
                else:
                    assert "does not decode" in message
                assert bare.recorder.max_notification_id() in (None, 0)
