"""Retention: ended sagas go to an archive and come back; nothing unresolved is ever touched.

On every backend: a store holds a completed saga, a failed saga whose compensations
ran, a failed saga with a late success still in force, a running and a dead-lettered
saga. Retention must take only what its policy allows, leave the log followable (the
relay and the projections go on across the gaps), and a restore must give back the
very rows, at their own notification ids, replaying to the same sagas.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from support.sagas import HOLD, ORDER, T0
from typer.testing import CliRunner

from sagalog.domain import Command, InvalidPayloadError, SagaStatus
from sagalog.infrastructure import CommandRelay, InProcessTransport
from sagalog.infrastructure.cli import app
from sagalog.infrastructure.retention import (
    RetentionAudit,
    RetentionError,
    RetentionPolicy,
    RetentionReport,
    parse_age,
    restore_sagas,
    retire_sagas,
)
from sagalog.infrastructure.retention.retire import RetiresStreams
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector, SagaViews

MONTH = timedelta(days=31)


class Store:
    """A manager, its views and the ids of one saga in each state that matters."""

    def __init__(self, database_url: str) -> None:
        self.clock = ManualClock(T0)
        self.manager = SagaManager([ORDER, HOLD], database_url, clock=self.clock)
        self.views = SagaViews(self.manager.database_url)
        self.projector = SagaProjector(self.manager, self.views)
        self.ids: dict[str, UUID] = {}
        m = self.manager
        done = m.start("Order", {"order": 1})
        for step in ("reserve", "charge", "ship", "notify"):
            m.handle_step_completed(done, step, {"ok": step})
        self.ids["completed"] = done
        failed = m.start("Order", {"order": 2})
        m.handle_step_failed(failed, "reserve", "no stock")
        self.ids["failed"] = failed
        late = m.start("Hold", {"desk": 3})
        self.clock.advance(timedelta(seconds=31))
        m.tick()
        m.handle_step_completed(late, "hold", {"held": True})  # after the saga ended
        self.ids["late"] = late
        running = m.start("Order", {"order": 4})
        self.ids["running"] = running
        stuck = m.start("Order", {"order": 5})
        for step in ("reserve", "charge", "ship"):
            m.handle_step_completed(stuck, step, None)
        m.handle_step_failed(stuck, "notify", "mail down")
        self.clock.advance(timedelta(seconds=2))
        m.tick()
        m.handle_step_failed(stuck, "notify", "mail down")
        self.ids["dead"] = stuck
        # A last saga, so that none of the above holds the newest event of the log.
        self.ids["newest"] = m.start("Order", {"order": 6})
        self.clock.advance(MONTH)
        self.projector.catch_up()

    def recorder(self) -> RetiresStreams:
        recorder = self.manager.recorder
        assert isinstance(recorder, RetiresStreams)
        return recorder

    def retire(
        self,
        archive: Path,
        policy: RetentionPolicy = RetentionPolicy(timedelta(days=30)),  # noqa: B008
        *,
        actor: str = "ops",
        reason: str = "r",
        dry_run: bool = False,
    ) -> RetentionReport:
        """``retire_sagas`` on this store's manager and views."""
        return retire_sagas(
            self.manager,
            policy,
            archive=archive,
            actor=actor,
            reason=reason,
            dry_run=dry_run,
            views=self.views,
        )

    def rows(self, name: str) -> list[Any]:
        return self.recorder().select_stream_rows([self.ids[name]])

    def close(self) -> None:
        self.views.close()
        self.manager.close()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(database_url)
    yield s
    s.close()


def test_the_scripted_sagas_are_in_the_states_the_tests_need(store: Store) -> None:
    get = store.manager.get
    assert get(store.ids["completed"]).status is SagaStatus.COMPLETED
    assert get(store.ids["failed"]).status is SagaStatus.FAILED
    assert get(store.ids["failed"]).effects_in_force == []
    assert get(store.ids["late"]).status is SagaStatus.FAILED
    assert get(store.ids["late"]).effects_in_force == ["hold"]
    assert get(store.ids["running"]).status is SagaStatus.PENDING
    assert get(store.ids["dead"]).status is SagaStatus.DEAD_LETTERED


def test_retire_then_restore_round_trips_bit_for_bit(store: Store, tmp_path: Path) -> None:
    ids = store.ids
    before = {name: store.rows(name) for name in ("completed", "failed")}
    history = {name: store.manager.history(ids[name]) for name in ("completed", "failed")}
    summaries = {name: store.views.get(ids[name]) for name in ("completed", "failed")}
    timelines = {name: store.views.timeline(ids[name]) for name in ("completed", "failed")}
    archive = tmp_path / "retired.jsonl.gz"

    report = store.retire(
        archive, RetentionPolicy.parse("30d", ["COMPLETED", "FAILED"]), reason="yearly clean-up"
    )

    assert report.sagas == 2
    assert report.events == sum(len(rows) for rows in before.values())
    assert report.kept["unresolved failure"] == 1
    for name in ("completed", "failed"):
        assert store.rows(name) == []
        assert store.views.get(ids[name]) is None
        assert store.views.timeline(ids[name]) == []
    for name in ("late", "running", "dead", "newest"):
        assert store.rows(name) != []
        assert store.views.get(ids[name]) is not None

    restored = restore_sagas(
        store.manager, archive, actor="ops", reason="audit asks", views=store.views
    )

    assert (restored.sagas, restored.events) == (2, report.events)
    assert restored.archive_sha256 == report.archive_sha256
    for name in ("completed", "failed"):
        assert store.rows(name) == before[name]  # same rows, same notification ids
        assert store.manager.history(ids[name]) == history[name]
        assert store.views.get(ids[name]) == summaries[name]
        assert store.views.timeline(ids[name]) == timelines[name]
    assert store.manager.get(ids["completed"]).status is SagaStatus.COMPLETED

    again = restore_sagas(store.manager, archive, actor="ops", reason="twice", views=store.views)
    assert (again.sagas, again.already_present) == (0, 2)

    audit = RetentionAudit(store.views.engine).records()
    assert [(r.action, r.state, r.sagas) for r in audit] == [
        ("restore", "done", 0),
        ("restore", "done", 2),
        ("retire", "done", 2),
    ]
    assert audit[2].actor == "ops"
    assert audit[2].reason == "yearly clean-up"
    assert audit[2].archive_sha256 == report.archive_sha256


def test_default_policy_retires_completed_sagas_only(store: Store, tmp_path: Path) -> None:
    report = store.retire(tmp_path / "a.jsonl.gz")
    assert report.sagas == 1
    assert store.rows("completed") == []
    for name in ("failed", "late", "running", "dead", "newest"):
        assert store.rows(name) != [], name


def test_the_archive_is_created_owner_only(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive holds saga data (in the clear without encryption at rest): mode 0600."""
    monkeypatch.delenv("SAGALOG_FILE_MODE", raising=False)
    archive = tmp_path / "private.jsonl.gz"
    store.retire(archive, actor="o")
    assert archive.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SAGALOG_FILE_MODE", "640")
    shared = tmp_path / "shared.jsonl.gz"
    store.retire(shared, actor="o")
    assert shared.stat().st_mode & 0o777 == 0o640


def test_nothing_unresolved_running_or_dead_lettered_is_touched_at_any_age(
    store: Store, tmp_path: Path
) -> None:
    store.clock.advance(timedelta(days=3650))
    keep = {name: store.rows(name) for name in ("late", "running", "dead")}
    store.retire(
        tmp_path / "a.jsonl.gz",
        RetentionPolicy(timedelta(seconds=1), frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED})),
    )
    for name, rows in keep.items():
        assert store.rows(name) == rows, name
        assert store.views.get(store.ids[name]) is not None
    assert store.manager.get(store.ids["dead"]).status is SagaStatus.DEAD_LETTERED


def test_sagas_that_ended_recently_stay(store: Store, tmp_path: Path) -> None:
    report = store.retire(tmp_path / "a.jsonl.gz", RetentionPolicy(timedelta(days=40)))
    assert report.sagas == 0
    assert store.rows("completed") != []


def test_a_dry_run_writes_nothing(store: Store, tmp_path: Path) -> None:
    archive = tmp_path / "a.jsonl.gz"
    before = store.recorder().select_stream_rows(list(store.ids.values()))
    report = store.retire(
        archive, RetentionPolicy.parse("30d", ["COMPLETED", "FAILED"]), dry_run=True
    )
    assert report.sagas == 2
    assert not archive.exists()
    assert store.recorder().select_stream_rows(list(store.ids.values())) == before
    assert store.views.get(store.ids["completed"]) is not None
    assert RetentionAudit(store.views.engine).records() == []


def test_the_relay_and_the_projections_go_on_across_the_gaps(store: Store, tmp_path: Path) -> None:
    transport = InProcessTransport()
    sent: list[Command] = []
    transport.subscribe_all(sent.append)
    relay = CommandRelay(store.manager, transport)
    relay.drain()
    transport.deliver()
    sent.clear()
    store.retire(tmp_path / "a.jsonl.gz", RetentionPolicy.parse("30d", ["COMPLETED", "FAILED"]))
    new = store.manager.start("Order", {"order": 7})
    relay.drain()
    transport.deliver()
    assert [(c.saga_id, c.step) for c in sent] == [(new, "reserve")]
    store.projector.catch_up()
    assert store.views.get(new) is not None
    assert store.projector.lag() == 0
    store.clock.advance(timedelta(seconds=31))
    assert store.manager.tick() >= 1  # the timer index still fires the running sagas
    relay.close()


@pytest.mark.requires_database(reason="memory:// keeps the relay's position in the relay only")
def test_the_relay_position_keeps_unsent_commands_only(store: Store, tmp_path: Path) -> None:
    """A saga whose commands were all sent goes, though it ended after the relay's last command."""
    m = store.manager
    transport = InProcessTransport()
    transport.subscribe_all(lambda command: None)
    relay = CommandRelay(m, transport)
    sent = m.start("Order", {"order": 9})
    for step in ("reserve", "charge", "ship"):
        m.handle_step_completed(sent, step, None)
    other = m.start("Order", {"order": 10})
    relay.drain()  # its position: the other saga's first command
    m.handle_step_completed(sent, "notify", None)  # COMPLETED: events past it, no command
    unsent = m.start("Order", {"order": 11})
    m.handle_step_failed(unsent, "reserve", "gone")  # FAILED, its command never sent
    m.handle_step_failed(other, "reserve", "gone")  # holds the newest event now
    store.clock.advance(MONTH)
    store.projector.catch_up()
    report = retire_sagas(
        m,
        RetentionPolicy.parse("30d", ["COMPLETED", "FAILED"]),
        archive=tmp_path / "a.jsonl.gz",
        actor="ops",
        reason="r",
        views=store.views,
    )
    recorder = store.recorder()
    assert recorder.select_stream_rows([sent]) == []
    assert recorder.select_stream_rows([unsent]) != []
    assert report.kept["commands not yet relayed"] == 1
    relay.close()


@pytest.mark.requires_database(reason="SQLite would reuse the newest event's notification id")
def test_the_saga_holding_the_newest_event_stays_on_sqlite(
    store: Store, tmp_path: Path, backend: str
) -> None:
    newest = store.ids["newest"]
    store.manager.handle_step_failed(newest, "reserve", "gone")  # now FAILED, newest event
    store.clock.advance(MONTH)
    store.projector.catch_up()
    report = store.retire(
        tmp_path / "a.jsonl.gz", RetentionPolicy.parse("30d", ["COMPLETED", "FAILED"])
    )
    if backend == "sqlite":
        assert store.rows("newest") != []
        assert report.kept["changed meanwhile, or holds the newest event"] == 1
    else:
        assert store.rows("newest") == []
    # Either way, a new event gets a notification id past every follower's position.
    position = store.projector.position()
    later = store.manager.start("Order", {"order": 8})
    assert min(row[0] for row in store.recorder().select_stream_rows([later])) > position


@pytest.mark.parametrize("age", ["30", "0d", "-3d", "thirty days", "3y", ""])
def test_a_bad_age_is_a_typed_error(age: str) -> None:
    with pytest.raises(RetentionError, match="--ended-before"):
        parse_age(age)


@pytest.mark.parametrize("statuses", [["RUNNING"], ["PENDING"], ["DEAD_LETTERED"]])
def test_only_ended_statuses_may_be_retired(statuses: list[str]) -> None:
    with pytest.raises(RetentionError):
        RetentionPolicy.parse("30d", statuses)


def test_an_unwritable_archive_writes_nothing(store: Store, tmp_path: Path) -> None:
    before = store.recorder().select_stream_rows(list(store.ids.values()))
    for archive in (tmp_path / "missing" / "a.jsonl.gz", tmp_path):
        with pytest.raises(RetentionError):
            store.retire(archive)
    assert store.recorder().select_stream_rows(list(store.ids.values())) == before
    assert RetentionAudit(store.views.engine).records() == []


@pytest.mark.parametrize(
    ("actor", "reason"),
    [("o\x00ps", "r"), ("ops", "r\x00"), ("o" * 5000, "r"), ("ops", "r" * 5000)],
    ids=["nul-actor", "nul-reason", "huge-actor", "huge-reason"],
)
def test_an_actor_or_reason_the_audit_cannot_hold_writes_nothing(
    store: Store, tmp_path: Path, actor: str, reason: str
) -> None:
    """NUL characters and unbounded texts are refused in one line, before any file or row."""
    before = store.recorder().select_stream_rows(list(store.ids.values()))
    archive = tmp_path / "a.jsonl.gz"
    with pytest.raises(InvalidPayloadError):
        store.retire(archive, actor=actor, reason=reason)
    with pytest.raises(InvalidPayloadError):
        restore_sagas(store.manager, archive, actor=actor, reason=reason, views=store.views)
    assert not archive.exists()
    assert store.recorder().select_stream_rows(list(store.ids.values())) == before
    assert RetentionAudit(store.views.engine).records() == []


def test_restore_refuses_a_saga_that_exists_with_other_events(store: Store, tmp_path: Path) -> None:
    archive = tmp_path / "a.jsonl.gz"
    store.retire(archive)
    # A saga of the same id started again since.
    store.manager.start("Order", {"order": 9}, saga_id=store.ids["completed"])
    head = store.manager.recorder.max_notification_id()
    with pytest.raises(RetentionError, match="exists in the store with other events"):
        restore_sagas(store.manager, archive, actor="ops", reason="r", views=store.views)
    assert store.manager.recorder.max_notification_id() == head


def test_restore_refuses_an_archive_past_the_stores_followers(tmp_path: Path) -> None:
    """An archive of another store, into a new one: its rows would be projected and sent again."""
    source = Store(f"sqlite:///{tmp_path / 'source.db'}")
    archive = tmp_path / "a.jsonl.gz"
    try:
        report = source.retire(archive)
        assert report.sagas == 1
    finally:
        source.close()
    target = SagaManager([ORDER, HOLD], f"sqlite:///{tmp_path / 'target.db'}")
    views = SagaViews(target.database_url)
    try:
        with pytest.raises(RetentionError, match="is not an archive of this store"):
            restore_sagas(target, archive, actor="ops", reason="r", views=views)
        assert target.recorder.select_notifications(1, 10) == []
        assert views.count_sagas() == 0
        assert RetentionAudit(views.engine).records() == []
    finally:
        views.close()
        target.close()


def test_restore_refuses_what_is_not_an_archive(store: Store, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsonl.gz"
    with gzip.open(bogus, "wb") as file:
        file.write(b'{"hello": 1}\n')
    with pytest.raises(RetentionError, match="not a sagalog archive"):
        restore_sagas(store.manager, bogus, actor="ops", reason="r", views=store.views)
    with pytest.raises(RetentionError, match="no archive"):
        restore_sagas(store.manager, tmp_path / "none.gz", actor="ops", reason="r")


@pytest.mark.requires_database(reason="the CLI opens the store again")
def test_the_cli_retires_and_restores_with_one_line_errors(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    runner = CliRunner()
    archive = tmp_path / "cli.jsonl.gz"
    common = ["--database-url", database_url, "--definitions", "support.sagas:DEFINITIONS"]
    who = ["--actor", "ops", "--reason", "r"]
    bad = runner.invoke(
        app,
        ["retention", *common, "--ended-before", "soon", "--archive", str(archive), *who],
    )
    assert bad.exit_code == 2
    assert "error:" in bad.output
    assert "--ended-before" in bad.output
    assert not archive.exists()
    nowhere = str(tmp_path / "no" / "a.gz")
    unwritable = runner.invoke(
        app, ["retention", *common, "--ended-before", "30d", "--archive", nowhere, *who]
    )
    assert unwritable.exit_code == 2
    assert "error: cannot write the archive" in unwritable.output
    assert store.rows("completed") != []
    dry = runner.invoke(app, ["retention", *common, "--ended-before", "30d", "--dry-run", *who])
    assert dry.exit_code == 0, dry.output
    assert "would retire 1 sagas" in dry.output
    assert store.rows("completed") != []
    done = runner.invoke(
        app,
        ["retention", *common, "--ended-before", "30d", "--archive", str(archive), *who, "--json"],
    )
    assert done.exit_code == 0, done.output
    assert '"sagas": 1' in done.output
    assert store.rows("completed") == []
    back = runner.invoke(
        app, ["restore", *common, str(archive), "--actor", "ops", "--reason", "r", "--json"]
    )
    assert back.exit_code == 0, back.output
    assert '"sagas": 1' in back.output
    assert store.rows("completed") != []


def test_view_rows_of_sagas_the_log_no_longer_holds_are_removed(
    store: Store, tmp_path: Path
) -> None:
    completed = store.ids["completed"]
    last = store.rows("completed")[-1][2]
    assert store.recorder().delete_streams({completed: last}) == [completed]  # a run cut short
    assert store.views.get(completed) is not None
    report = store.retire(tmp_path / "a.jsonl.gz")
    assert report.stale_rows_removed == 1
    assert store.views.get(completed) is None
    assert store.views.timeline(completed) == []
