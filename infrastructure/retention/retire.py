"""Retire ended sagas into an archive, and restore them from it.

:func:`retire_sagas` walks the summary view for candidates (indexed by status and
time, in pages), reads each candidate's whole stream from the store, rebuilds the
saga and applies :func:`~sagalog.infrastructure.retention.policy.why_kept` to it;
the sagas that may go are written to the archive (made durable), then removed from
the store and timer index (only if no event was added meanwhile) and from the views.
Batch after batch, so memory stays bounded whatever the store's size.

The removed events leave gaps in the notification log. Every follower (the relay,
the projector, the observer) reads "the next notifications after my position", so
gaps cost nothing; SQLite would hand the newest row's id out again, so the saga
holding it stays until a newer event exists (see the recorders' ``delete_streams``).

:func:`restore_sagas` writes archived streams back at their own notification ids,
behind every follower's position (no command is sent again), and writes their rows
into the views directly. A saga already in the store with the same events is passed
over, so restoring twice is harmless; one that differs is refused before anything is
written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, IntegrityError, StoredEvent
from eventsourcing.utils import Environment
from sqlalchemy import bindparam, select, tuple_

from sagalog.domain import Saga
from sagalog.domain.errors import first_line
from sagalog.domain.payload import check_text
from sagalog.infrastructure.messaging.relay import COMMAND_TOPICS
from sagalog.infrastructure.persistence.recorders import StreamRow
from sagalog.infrastructure.retention.archive import (
    ArchivedSaga,
    ArchiveReader,
    ArchiveWriter,
    file_sha256,
)
from sagalog.infrastructure.retention.audit import RetentionAudit
from sagalog.infrastructure.retention.policy import RetentionError, RetentionPolicy, why_kept
from sagalog.process import SagaManager
from sagalog.process.manager import fold_events
from sagalog.process.store.encryption import EncryptionKeyMissingError, SagaCipher, is_encrypted
from sagalog.process.store.shredding import unwrap_data_key
from sagalog.projections import SagaProjector, SagaViews
from sagalog.projections.schema import quarantine, saga_summary

__all__ = [
    "RestoreReport",
    "RetentionReport",
    "RetiresStreams",
    "restore_sagas",
    "retire_sagas",
]

logger = logging.getLogger("sagalog.retention")

#: The name under which the command relay tracks its position (its class's ``name``).
_RELAY_NAME = "CommandRelay"


@runtime_checkable
class RetiresStreams(Protocol):
    """A recorder that can hand out, remove and put back whole saga streams."""

    def select_stream_rows(self, saga_ids: Sequence[UUID]) -> list[StreamRow]:
        """Every event of ``saga_ids`` with its notification id, saga by saga, oldest first."""
        ...

    def select_data_keys(self, saga_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The key table's rows of ``saga_ids`` (wrapped keys; ``b""``: forgotten)."""
        ...

    def delete_streams(self, last_versions: dict[UUID, int]) -> list[UUID]:
        """Remove the sagas still at ``last_versions`` (events, timers, data keys); return them."""
        ...

    def restore_rows(
        self, rows: Sequence[StreamRow], data_keys: Mapping[UUID, bytes] | None = None
    ) -> None:
        """Insert archived rows at their own notification ids, with their data keys, all or none."""
        ...


@dataclass
class RetentionReport:
    """What a retention run did (or, on a dry run, would do)."""

    dry_run: bool
    cutoff: datetime
    statuses: list[str]
    sagas: int = 0
    events: int = 0
    #: Candidates of the view that stayed, by reason.
    kept: dict[str, int] = field(default_factory=dict)
    archive: str = ""
    archive_sha256: str = ""
    audit_id: int | None = None
    #: View rows of sagas the log no longer held (a run that stopped halfway), removed.
    stale_rows_removed: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**self.__dict__, "cutoff": self.cutoff.isoformat()}


@dataclass
class RestoreReport:
    """What a restore did."""

    sagas: int = 0
    events: int = 0
    #: Sagas of the archive already in the store with the same events.
    already_present: int = 0
    #: Whether the archive ended early (written by a run that crashed); its whole lines count.
    truncated: bool = False
    archive_sha256: str = ""
    audit_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def _recorder(manager: SagaManager) -> RetiresStreams:
    recorder = manager.recorder
    if not isinstance(recorder, RetiresStreams):
        raise RetentionError(
            f"the recorder {type(recorder).__name__} cannot remove or restore saga streams"
        )
    return recorder


def _check_who(actor: str, reason: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise RetentionError("--actor is required: who retires or restores sagas")
    if not isinstance(reason, str) or not reason.strip():
        raise RetentionError("--reason is required: why sagas are retired or restored")
    # the audit row holds them: the bounds and characters of every actor and reason
    check_text(actor, "actor")
    check_text(reason, "reason")


def relay_position(manager: SagaManager) -> int | None:
    """Where the command relay of ``manager``'s store stands (``None``: no relay ever ran)."""
    env = manager.database_url.application_env(_RELAY_NAME)
    factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
        Environment(_RELAY_NAME, env)
    )
    try:
        position = factory.tracking_recorder().max_tracking_id(manager.name)
        return None if position is None else int(position)
    finally:
        factory.close()


def _candidates(
    views: SagaViews, statuses: Sequence[str], cutoff: datetime, page: int
) -> Iterator[list[UUID]]:
    """Saga ids of the summary view with ``statuses`` last updated before ``cutoff``, in pages.

    Keyset pagination on the view's ``(status, updated_at, saga_id)`` index.
    """
    c = saga_summary.c
    for status in statuses:
        after: tuple[datetime, UUID] | None = None
        while True:
            query = select(c.updated_at, c.saga_id).where(c.status == status, c.updated_at < cutoff)
            if after is not None:
                # A row value: both databases seek the index to it (an OR would rescan).
                last = tuple_(
                    bindparam(None, after[0], type_=c.updated_at.type),
                    bindparam(None, after[1], type_=c.saga_id.type),
                )
                query = query.where(tuple_(c.updated_at, c.saga_id) > last)
            query = query.order_by(c.updated_at, c.saga_id).limit(page)
            with views.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                break
            after = (rows[-1][0], rows[-1][1])
            yield [row[1] for row in rows]


def _quarantined(views: SagaViews, saga_ids: Sequence[UUID]) -> set[UUID]:
    with views.engine.connect() as conn:
        rows = conn.execute(
            select(quarantine.c.saga_id).where(quarantine.c.saga_id.in_(list(saga_ids))).distinct()
        ).all()
    return {row[0] for row in rows}


def _streams(rows: Sequence[StreamRow]) -> dict[UUID, list[StreamRow]]:
    streams: dict[UUID, list[StreamRow]] = {}
    for row in rows:
        streams.setdefault(row[1], []).append(row)
    return streams


def _rebuild(manager: SagaManager, rows: Sequence[StreamRow]) -> tuple[Saga | None, list[Any]]:
    to_event = manager.mapper.to_domain_event
    events = [
        to_event(StoredEvent(saga_id, v, topic, state)) for _, saga_id, v, topic, state in rows
    ]
    saga = fold_events(None, events)
    return (saga if isinstance(saga, Saga) else None), events


def retire_sagas(
    manager: SagaManager,
    policy: RetentionPolicy,
    *,
    archive: str | Path | None,
    actor: str,
    reason: str,
    dry_run: bool = False,
    now: datetime | None = None,
    views: SagaViews | None = None,
    batch_size: int = 500,
    progress: Callable[[RetentionReport], None] | None = None,
) -> RetentionReport:
    """Archive then remove the sagas ``policy`` retires; see the module's docstring.

    ``now`` defaults to the manager's clock. A dry run reads and counts, and writes
    no archive, removes nothing and records no audit row. Bad input (no actor or
    reason, no archive, an archive file that exists or cannot be written) raises
    :class:`RetentionError` before anything is written.
    """
    _check_who(actor, reason)
    if batch_size < 1:
        raise RetentionError("batch_size must be at least 1")
    recorder = _recorder(manager)
    cutoff = policy.cutoff(now if now is not None else manager.clock())
    statuses = sorted(str(s) for s in policy.statuses)
    report = RetentionReport(dry_run=dry_run, cutoff=cutoff, statuses=statuses)
    path = None if archive is None else Path(archive)
    if path is None and not dry_run:
        raise RetentionError("--archive FILE is required: retired sagas are archived first")
    if path is not None and not dry_run and path.exists():
        raise RetentionError(f"archive {path} exists already; name a new file")
    own_views = views is None
    views = views if views is not None else SagaViews(manager.database_url)
    writer: ArchiveWriter | None = None
    audit: RetentionAudit | None = None
    run_id: int | None = None
    try:
        if not dry_run:
            assert path is not None
            writer = ArchiveWriter(
                path,
                {
                    "application": manager.name,
                    "created_at": manager.clock().isoformat(),
                    "ended_before": cutoff.isoformat(),
                    "statuses": statuses,
                },
            )
            report.archive = str(path)
        projector = SagaProjector(manager, views)
        projector.catch_up()
        seen_up_to = projector.position()
        relay_at = relay_position(manager)
        if writer is not None:
            audit = RetentionAudit(views.engine)
            run_id = audit.start(
                action="retire",
                application=manager.name,
                actor=actor,
                reason=reason,
                ended_before=cutoff.isoformat(),
                statuses=",".join(statuses),
                archive=str(path),
                dry_run=False,
            )
        for page in _candidates(views, statuses, cutoff, batch_size):
            _retire_page(
                manager, recorder, views, page, policy, cutoff, seen_up_to, relay_at, writer, report
            )
            if progress is not None:
                progress(report)
    except BaseException as exc:
        if audit is not None and run_id is not None:
            logger.error("retention stopped: %s", first_line(exc))
            audit.finish(run_id, "failed", sagas=report.sagas, events=report.events)
        if writer is not None:
            if report.sagas:
                writer.close()  # what was removed stays in the archive
            else:
                writer.discard()
        raise
    finally:
        if own_views:
            views.close()
    if writer is not None and audit is not None and run_id is not None:
        report.archive_sha256 = writer.close()
        audit.finish(
            run_id,
            "done",
            sagas=report.sagas,
            events=report.events,
            kept=sum(report.kept.values()),
            archive_sha256=report.archive_sha256,
        )
        report.audit_id = run_id
    return report


def _retire_page(
    manager: SagaManager,
    recorder: RetiresStreams,
    views: SagaViews,
    page: list[UUID],
    policy: RetentionPolicy,
    cutoff: datetime,
    seen_up_to: int,
    relay_at: int | None,
    writer: ArchiveWriter | None,
    report: RetentionReport,
) -> None:
    """Judge one page of candidates; archive and remove those that may go."""

    def keep(why: str) -> None:
        report.kept[why] = report.kept.get(why, 0) + 1

    held = _quarantined(views, page)
    streams = _streams(recorder.select_stream_rows(page))
    leaving: list[ArchivedSaga] = []
    stale: list[UUID] = []
    for saga_id in page:
        rows = streams.get(saga_id)
        if not rows:
            # Rows of a saga the log no longer holds (a run stopped between the store
            # and the views): the views follow the log.
            stale.append(saga_id)
            continue
        if saga_id in held:
            keep("quarantined events")
            continue
        newest = max(row[0] for row in rows)
        if newest > seen_up_to:
            keep("not yet projected")
            continue
        # The relay's position is that of the last command it sent: events after it that
        # carry no command (SagaCompleted, SagaFailed, SagaForgotten) have nothing to send.
        last_command = max((row[0] for row in rows if row[3] in COMMAND_TOPICS), default=0)
        if relay_at is not None and last_command > relay_at:
            keep("commands not yet relayed")
            continue
        saga, events = _rebuild(manager, rows)
        if saga is None:
            keep("not a saga")
            continue
        ended_at: datetime = events[-1].timestamp
        why = why_kept(saga, ended_at, policy, cutoff)
        if why:
            keep(why)
            continue
        leaving.append(
            ArchivedSaga(saga_id, saga.saga_type, str(saga.status), ended_at.isoformat(), rows)
        )
    if stale and writer is not None:
        report.stale_rows_removed += views.remove_sagas(stale)
    if not leaving:
        return
    # The wrapped data keys go with the events (wrapped by the store key, so the
    # archive stays as protected as the store); the delete below removes the rows.
    keys = recorder.select_data_keys([s.saga_id for s in leaving])
    leaving = [dataclasses.replace(s, data_key=keys.get(s.saga_id)) for s in leaving]
    if writer is None:  # a dry run
        report.sagas += len(leaving)
        report.events += sum(len(s.rows) for s in leaving)
        return
    writer.write(leaving)
    removed = set(recorder.delete_streams({s.saga_id: s.rows[-1][2] for s in leaving}))
    for gone in leaving:
        if gone.saga_id in removed:
            report.sagas += 1
            report.events += len(gone.rows)
        else:
            keep("changed meanwhile, or holds the newest event")
    views.remove_sagas(sorted(removed))


def restore_sagas(
    manager: SagaManager,
    archive: str | Path,
    *,
    actor: str,
    reason: str,
    views: SagaViews | None = None,
    batch_size: int = 500,
) -> RestoreReport:
    """Bring the sagas of ``archive`` back into the store and the views; audited.

    Idempotent: sagas already present with the same events are passed over. A saga
    present with other events, or one that does not decode, is refused
    (:class:`RetentionError`) before anything is written — the whole archive is
    checked first, then written batch by batch. An event whose notification id is
    taken (an archive of another store) stops the restore at its batch, also with
    :class:`RetentionError`; the batches before stay restored, and a second run
    passes over them.
    """
    _check_who(actor, reason)
    recorder = _recorder(manager)
    path = Path(archive)
    own_views = views is None
    views = views if views is not None else SagaViews(manager.database_url)
    report = RestoreReport()
    try:
        projector = SagaProjector(manager, views)
        projector.catch_up()  # the restored ids lie behind the position afterwards
        followers = _Followers(projector.position(), relay_position(manager))
        _check_archive(manager, recorder, path, batch_size, followers)
        audit = RetentionAudit(views.engine)
        report.archive_sha256 = file_sha256(path)
        run_id = audit.start(
            action="restore",
            application=manager.name,
            actor=actor,
            reason=reason,
            archive=str(path),
            archive_sha256=report.archive_sha256,
            dry_run=False,
        )
        reader = ArchiveReader(path)
        try:
            for batch in reader.batches(batch_size):
                present = _streams(recorder.select_stream_rows([s.saga_id for s in batch]))
                fresh = [s for s in batch if s.saga_id not in present]
                report.already_present += len(batch) - len(fresh)
                rows = [row for saga in fresh for row in saga.rows]
                keys = {s.saga_id: s.data_key for s in fresh if s.data_key is not None}
                try:
                    recorder.restore_rows(rows, keys)
                except IntegrityError as exc:
                    raise RetentionError(
                        f"cannot restore from {path}: a notification id is taken "
                        f"({first_line(exc)})"
                    ) from None
                # decoded as the projector decodes them: with encryption at rest the
                # views get <encrypted> where the payloads are, never the payloads
                to_event = projector.mapper.to_domain_event
                events: list[Any] = [
                    to_event(StoredEvent(saga_id, version, topic, state))
                    for saga in fresh
                    for _, saga_id, version, topic, state in saga.rows
                ]
                views.restore_sagas(events)
                report.sagas += len(fresh)
                report.events += len(rows)
            report.truncated = reader.truncated
        finally:
            reader.close()
        audit.finish(run_id, "done", sagas=report.sagas, events=report.events)
        report.audit_id = run_id
    finally:
        if own_views:
            views.close()
    return report


@dataclass(frozen=True)
class _Followers:
    """Where the projections and the relay (``None``: never ran) of a store stand."""

    projected: int
    relayed: int | None


def _check_archive(
    manager: SagaManager,
    recorder: RetiresStreams,
    path: Path,
    batch_size: int,
    followers: _Followers,
) -> None:
    """Refuse an archive whose sagas clash with the store, before anything is written.

    Restored rows go back at their own notification ids, which must lie behind the
    followers: ids past them (an archive of another store, a new store) would be
    projected a second time and their commands sent again.
    """
    reader = ArchiveReader(path)
    try:
        if reader.header.get("application", manager.name) != manager.name:
            raise RetentionError(
                f"{path} holds sagas of {reader.header.get('application')!r}, "
                f"not of {manager.name!r}"
            )
        for batch in reader.batches(batch_size):
            present = _streams(recorder.select_stream_rows([s.saga_id for s in batch]))
            for saga in batch:
                stored = present.get(saga.saga_id)
                if stored is not None and stored != saga.rows:
                    raise RetentionError(
                        f"saga {saga.saga_id} exists in the store with other events; "
                        "restore never overwrites a saga"
                    )
                _, saga_id, version, topic, state = saga.rows[0]
                sealed = is_encrypted(state) or bool(saga.data_key)
                if sealed and not manager.encrypted:
                    raise RetentionError(
                        f"{path} holds encrypted sagas: set SAGALOG_ENCRYPTION_KEYS or "
                        "SAGALOG_ENCRYPTION_KEY_FILE to the store keys that wrote it"
                    )
                try:
                    manager.mapper.to_domain_event(StoredEvent(saga_id, version, topic, state))
                    if saga.data_key:
                        _check_data_key(manager, saga_id, saga.data_key)
                except Exception as exc:
                    raise RetentionError(
                        f"saga {saga_id} of {path} does not decode: {first_line(exc)}"
                    ) from None
                if stored is None:
                    _check_behind_followers(path, saga, followers)
    finally:
        reader.close()


def _check_behind_followers(path: Path, saga: ArchivedSaga, followers: _Followers) -> None:
    newest = max(row[0] for row in saga.rows)
    last_command = max((row[0] for row in saga.rows if row[3] in COMMAND_TOPICS), default=0)
    if newest > followers.projected or (
        followers.relayed is not None and last_command > followers.relayed
    ):
        raise RetentionError(
            f"{path} is not an archive of this store: saga {saga.saga_id}'s events lie past "
            f"its log (notification id {newest}; projected up to {followers.projected}), "
            "so they would be projected and their commands sent again"
        )


def _check_data_key(manager: SagaManager, saga_id: UUID, wrapped: bytes) -> None:
    """Unwrap an archived data key with the manager's store keys (raises if they cannot)."""
    cipher = manager.mapper.cipher
    if not isinstance(cipher, SagaCipher):
        raise EncryptionKeyMissingError("the archive's data keys need sagalog's store keys")
    unwrap_data_key(cipher.keyring, saga_id, wrapped)
