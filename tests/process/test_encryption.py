"""Encryption at rest and crypto-shredding, on every backend.

With store keys set, no saga data, result or error text is written in the clear
anywhere sagalog writes (the raw SQLite files, every PostgreSQL table of the
test's schema, the in-memory recorder), before and after ``forget``; a forgotten
saga still replays with its payloads erased; without the key every command
fails in one line; a rotated key still reads what the old one wrote.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from support.raw_store import raw_store_bytes
from support.sagas import ORDER, T0
from typer.testing import CliRunner

from sagalog.domain import InvalidTransitionError, Saga, SagaStatus
from sagalog.infrastructure.cli import app
from sagalog.process import SagaManager, parse_database_url
from sagalog.process.clock import ManualClock
from sagalog.process.store.encryption import (
    EncryptionKeyError,
    EncryptionKeyMissingError,
    new_key,
)
from sagalog.process.store.shredding import ERASED, ErasureError
from sagalog.projections import SagaLogReader, SagaProjector, runner_env

SECRET_DATA = "DE89370400440532013000"
SECRET_ERROR = "card-4111111111111111-declined"
SECRET_RESULT = "reservation-for-Jane-Roe"
SECRETS = (SECRET_DATA, SECRET_ERROR, SECRET_RESULT)

K1 = new_key("k1")
K2 = new_key("k2")


@contextmanager
def reopened(database_url: str, env: dict[str, str] | None = None) -> Iterator[SagaManager]:
    """A manager of ``ORDER`` on the store, with ``env``, closed afterwards."""
    manager = SagaManager([ORDER], database_url, env=env, clock=ManualClock(T0))
    try:
        yield manager
    finally:
        manager.close()


def keyed(*keys: str) -> dict[str, str]:
    return {"SAGALOG_ENCRYPTION_KEYS": ",".join(keys)}


def run_failed_saga(manager: SagaManager) -> UUID:
    """A saga whose data, a result and an error carry the secrets; it ends FAILED."""
    saga_id = manager.start("Order", {"iban": SECRET_DATA, "items": [1, 2]})
    manager.handle_step_completed(saga_id, "reserve", {"ref": SECRET_RESULT})
    manager.handle_step_failed(saga_id, "charge", SECRET_ERROR)
    assert manager.tick(T0 + timedelta(minutes=1)) == 1  # the retry is sent
    manager.handle_step_failed(saga_id, "charge", SECRET_ERROR, attempt=2)
    saga = manager.get(saga_id)
    while (command := saga.pending_command) is not None:
        manager.handle_compensation_completed(saga_id, command.step)
        saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    return saga_id


def assert_no_secret(blob: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in blob, f"{secret} found in the store"
    assert b"iban" not in blob  # a key of the saga's data is saga data too


def test_a_plain_store_does_hold_the_secrets(database_url: str) -> None:
    """The grep below can fail: without keys the same saga leaves its secrets readable."""
    with reopened(database_url) as manager:
        run_failed_saga(manager)
        projector = SagaProjector(manager)
        projector.catch_up()
        projector.close()
        blob = raw_store_bytes(manager, database_url)
    assert SECRET_DATA.encode() in blob
    assert SECRET_ERROR.encode() in blob


def test_no_saga_data_in_the_clear_before_or_after_forget(database_url: str) -> None:
    with reopened(database_url, keyed(K1)) as manager:
        saga_id = run_failed_saga(manager)
        projector = SagaProjector(manager)
        projector.catch_up()
        assert_no_secret(raw_store_bytes(manager, database_url))

        manager.saga_cache.clear()
        saga = manager.get(saga_id)
        assert saga.data["iban"] == SECRET_DATA
        assert saga.last_error == SECRET_ERROR
        assert saga.results["reserve"] == {"ref": SECRET_RESULT}
        summary = projector.views.get(saga_id)
        assert summary is not None
        assert summary.last_error == "<encrypted>"
        assert all(SECRET_DATA not in e.detail for e in projector.views.timeline(saga_id))

        before = manager.history(saga_id)
        assert manager.forget(saga_id, actor="dpo", reason="erasure request 17") is True
        projector.catch_up()
        assert_no_secret(raw_store_bytes(manager, database_url))

        manager.saga_cache.clear()
        after = manager.get(saga_id)
        assert after.forgotten
        assert after.forgotten_by == "dpo"
        assert after.status is SagaStatus.FAILED
        assert after.data == {ERASED: True}
        assert after.last_error == ERASED
        assert after.failure_reason == ERASED
        history = manager.history(saga_id)
        assert [type(e).__name__ for e in history[:-1]] == [type(e).__name__ for e in before]
        assert type(history[-1]).__name__ == "SagaForgotten"
        assert [(e.timestamp, getattr(e, "step", None)) for e in history[:-1]] == [
            (e.timestamp, getattr(e, "step", None)) for e in before
        ]
        ids = [getattr(e, "command_id", None) for e in history[:-1]]
        assert ids == [getattr(e, "command_id", None) for e in before]
        assert any(ids)
        assert {name: st.status for name, st in after.steps.items()} == {
            name: st.status for name, st in manager.get(saga_id, len(before)).steps.items()
        }
        timeline = projector.views.timeline(saga_id)
        assert timeline[-1].event_type == "SagaForgotten"
        assert "erased by dpo" in timeline[-1].detail
        summary = projector.views.get(saga_id)
        assert summary is not None
        assert summary.last_error == ERASED
        # Forgetting again destroys nothing more and records nothing.
        assert manager.forget(saga_id, actor="dpo", reason="again") is False
        assert len(manager.history(saga_id)) == len(history)
        projector.close()


@pytest.mark.requires_database(reason="two managers share the store")
def test_another_manager_holding_the_key_reads_the_saga_erased_after_forget(
    database_url: str,
) -> None:
    """A manager that looked the key up before the erasure stops decrypting: from its next
    read once it has read the ``SagaForgotten``, and on any read once its key is too old."""
    with reopened(database_url, keyed(K1)) as eraser, reopened(database_url, keyed(K1)) as other:
        saga_id = run_failed_saga(eraser)
        assert other.get(saga_id).data["iban"] == SECRET_DATA  # its key is remembered
        eraser.forget(saga_id, actor="dpo", reason="erasure request 18")
        other.get(saga_id)  # reads the erasure
        assert other.get(saga_id).data == {ERASED: True}
        assert all(SECRET_ERROR not in str(vars(event)) for event in other.history(saga_id))
    with reopened(database_url, keyed(K1)) as other, reopened(database_url, keyed(K1)) as eraser:
        saga_id = run_failed_saga(eraser)
        assert other.get(saga_id).data["iban"] == SECRET_DATA
        keys = other._data_keys
        assert keys is not None
        keys.max_age = 0.0  # as if its key had been looked up longer ago than that
        eraser.forget(saga_id, actor="dpo", reason="erasure request 19")
        assert other.get(saga_id).data == {ERASED: True}


def test_a_running_saga_is_not_forgotten(database_url: str) -> None:
    with reopened(database_url, keyed(K1)) as manager:
        saga_id = manager.start("Order", {"iban": SECRET_DATA})
        with pytest.raises(InvalidTransitionError, match="only an ended saga can be forgotten"):
            manager.forget(saga_id, actor="dpo", reason="too early")
        manager.saga_cache.clear()
        assert manager.get(saga_id).data["iban"] == SECRET_DATA
        assert len(manager.history(saga_id)) == 2


def test_a_dead_lettered_saga_is_not_forgotten_and_told_what_to_do(database_url: str) -> None:
    """Abort refuses a dead-lettered saga, so forget's hint names retry and resolve instead."""
    with reopened(database_url, keyed(K1)) as manager:
        saga_id = manager.start("Order", {"iban": SECRET_DATA})
        for step in ("reserve", "charge", "ship"):
            manager.handle_step_completed(saga_id, step, None)
        manager.handle_step_failed(saga_id, "notify", "mail down")  # past the pivot
        manager.clock.advance(timedelta(seconds=2))  # type: ignore[attr-defined]
        manager.tick()
        manager.handle_step_failed(saga_id, "notify", "mail down")
        assert manager.get(saga_id).status is SagaStatus.DEAD_LETTERED
        with pytest.raises(InvalidTransitionError, match="retry or resolve its failed command"):
            manager.forget(saga_id, actor="dpo", reason="too early")
        assert not manager.get(saga_id).forgotten


def test_forget_needs_encryption(database_url: str) -> None:
    with reopened(database_url) as manager:
        saga_id = run_failed_saga(manager)
        with pytest.raises(ErasureError, match="needs encryption at rest"):
            manager.forget(saga_id, actor="dpo", reason="no keys")
        assert not manager.get(saga_id).forgotten


def test_without_the_key_opening_fails_in_one_line(
    database_url: str, requires_database: None
) -> None:
    with reopened(database_url, keyed(K1)) as manager:
        run_failed_saga(manager)
    with pytest.raises(EncryptionKeyMissingError) as missing:
        SagaManager([ORDER], database_url, env={"SAGALOG_ENCRYPTION_KEYS": ""})
    assert "\n" not in str(missing.value)
    assert "SAGALOG_ENCRYPTION_KEYS" in str(missing.value)
    with pytest.raises(EncryptionKeyError, match="do not include") as unknown:
        SagaManager([ORDER], database_url, env=keyed(K2))
    assert "\n" not in str(unknown.value)
    wrong = "k1=" + K2.split("=", 1)[1]
    with pytest.raises(EncryptionKeyError, match="does not decrypt"):
        SagaManager([ORDER], database_url, env=keyed(wrong))


def test_a_rotated_key_reads_what_the_old_one_wrote(
    database_url: str, requires_database: None
) -> None:
    with reopened(database_url, keyed(K1)) as manager:
        old = run_failed_saga(manager)
    with reopened(database_url, keyed(K2, K1)) as manager:
        assert manager.get(old).data["iban"] == SECRET_DATA
        new = manager.start("Order", {"iban": "second"})
        assert manager.get(new).data == {"iban": "second"}
        assert manager.forget(old, actor="dpo", reason="rotated") is True
    with reopened(database_url, keyed(K2, K1)) as manager:
        assert manager.get(new).data == {"iban": "second"}
        assert manager.get(old).data == {ERASED: True}


def test_every_command_without_the_key_fails_in_one_line(
    database_url: str, requires_database: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with reopened(database_url, keyed(K1)) as manager:
        saga_id = str(run_failed_saga(manager))
    runner = CliRunner()
    monkeypatch.delenv("SAGALOG_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("SAGALOG_ENCRYPTION_KEY_FILE", raising=False)
    commands = [
        ["list"],
        ["show", saga_id],
        ["explain", saga_id],
        ["replay", saga_id],
        ["stuck"],
        ["forget", saga_id, "--actor", "a", "--reason", "b"],
        ["projections", "status"],
        ["versions"],
        ["worker", "--transport", "none"],
    ]
    for command in commands:
        result = runner.invoke(app, [*command, "--database-url", database_url])
        assert result.exit_code == 2, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, (command, result.output)
        assert lines[0].startswith("error: the saga store is encrypted"), command
    key_file = Path(parse_database_url(database_url).path or "/nonexistent").parent / "keys"
    if parse_database_url(database_url).kind == "sqlite":
        key_file.write_text(f"# the store keys\n{K1}\n", encoding="utf-8")
        monkeypatch.setenv("SAGALOG_ENCRYPTION_KEY_FILE", str(key_file))
        shown = runner.invoke(app, ["explain", saga_id, "--database-url", database_url])
        assert shown.exit_code == 0, shown.output
        assert SECRET_ERROR in shown.output
        forgot = runner.invoke(
            app,
            ["forget", saga_id, "--actor", "dpo", "--reason", "r", "--database-url", database_url],
        )
        assert forgot.exit_code == 0, forgot.output
        shown = runner.invoke(app, ["show", saga_id, "--database-url", database_url])
        assert "its data was erased by dpo" in shown.output
        assert SECRET_ERROR not in shown.output


def test_the_projection_runner_reads_the_log_redacted(
    database_url: str, requires_database: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eventsourcing's runner opens the log as ``SagaLogReader``: keys from the environment."""
    with reopened(database_url, keyed(K1)) as manager:
        saga_id = run_failed_saga(manager)
    monkeypatch.setenv("SAGALOG_ENCRYPTION_KEYS", K1)
    reader = SagaLogReader(runner_env(database_url))
    try:
        events = [
            reader.mapper.to_domain_event(n) for n in reader.recorder.select_notifications(1, 100)
        ]
    finally:
        reader.close()
    started = [e for e in events if isinstance(e, Saga.SagaStarted)]
    assert started[0].originator_id == saga_id
    assert started[0].data == {"<encrypted>": True}
    assert all(getattr(e, "error", "<encrypted>") == "<encrypted>" for e in events)


def test_forget_leaves_no_copy_of_the_key_in_the_sqlite_files(tmp_path: Path) -> None:
    """``secure_delete`` and the WAL checkpoint: the wrapped key's bytes are gone from disk."""
    database_url = f"sqlite:///{tmp_path / 'shred.db'}"
    with reopened(database_url, keyed(K1)) as manager:
        saga_id = run_failed_saga(manager)
        keys = manager.recorder.select_data_keys([saga_id])  # type: ignore[attr-defined]
        wrapped = keys[saga_id]
        assert len(wrapped) > 32
        assert wrapped in raw_store_bytes(manager, database_url)
        manager.forget(saga_id, actor="dpo", reason="erasure")
        assert manager.recorder.select_data_keys([saga_id]) == {saga_id: b""}  # type: ignore[attr-defined]
        assert wrapped not in raw_store_bytes(manager, database_url)


def test_keys_new_prints_a_key_line_and_refuses_a_bad_id() -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "new", "k3"])
    assert made.exit_code == 0, made.output
    key_id, _, encoded = made.output.strip().partition("=")
    assert key_id == "k3"
    assert len(base64.b64decode(encoded)) == 32
    bad = runner.invoke(app, ["keys", "new", "bad id!"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == [
        "error: a key id is 1 to 64 letters, digits, '-', '_' or '.', not 'bad id!'"
    ]
