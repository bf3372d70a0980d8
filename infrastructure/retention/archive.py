"""The retention archive: retired sagas' event streams, exactly as the store held them.

A gzip-compressed JSON-lines file. The first line is a header::

    {"sagalog_archive": 1, "application": "SagaManager", "created_at": "…",
     "ended_before": "…", "statuses": ["COMPLETED"]}

then one line per saga::

    {"saga_id": "…", "saga_type": "…", "status": "COMPLETED", "ended_at": "…",
     "events": [[notification_id, version, topic, state_base64], …],
     "data_key": "wrapped_key_base64"}

``state`` is the stored bytes (encrypted or compressed if the store is), so restoring
writes back the very rows that were removed, at their own notification ids.
``data_key`` (with encryption at rest) is the saga's row of the key table as stored:
its data key wrapped by the store key, or ``""`` for a forgotten saga's tombstone;
absent when the saga has no row. Format 1 archives (no ``data_key``) still read. Each batch
is flushed to the disk (``Z_SYNC_FLUSH`` and ``fsync``) before its sagas are deleted,
so a crash leaves every removed saga in a readable archive; a reader takes the lines
up to a truncated end and says so.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import orjson

from sagalog.infrastructure.persistence.recorders import StreamRow
from sagalog.infrastructure.retention.policy import RetentionError
from sagalog.process.store.url import file_mode

__all__ = ["ARCHIVE_FORMAT", "ArchiveReader", "ArchiveWriter", "ArchivedSaga", "file_sha256"]

#: The format version written in the header (2: sagas carry their wrapped data key).
ARCHIVE_FORMAT = 2
#: The versions a reader accepts.
_READABLE = frozenset({1, 2})


@dataclass(frozen=True)
class ArchivedSaga:
    """One saga of an archive: who it was and its stored events."""

    saga_id: UUID
    saga_type: str
    status: str
    ended_at: str
    rows: list[StreamRow]
    #: Its row of the key table: the wrapped data key, ``b""`` (forgotten) or ``None`` (none).
    data_key: bytes | None = None

    def to_line(self) -> bytes:
        """The saga as one JSON line."""
        line: dict[str, Any] = {
            "saga_id": str(self.saga_id),
            "saga_type": self.saga_type,
            "status": self.status,
            "ended_at": self.ended_at,
            "events": [
                [n, version, topic, base64.b64encode(state).decode("ascii")]
                for n, _, version, topic, state in self.rows
            ],
        }
        if self.data_key is not None:
            line["data_key"] = base64.b64encode(self.data_key).decode("ascii")
        return orjson.dumps(line) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> ArchivedSaga:
        """Parse one saga line; :class:`RetentionError` if it is not one."""
        try:
            raw = orjson.loads(line)
            saga_id = UUID(raw["saga_id"])
            rows: list[StreamRow] = [
                (int(n), saga_id, int(v), str(t), base64.b64decode(s, validate=True))
                for n, v, t, s in raw["events"]
            ]
            key = raw.get("data_key")
            return cls(
                saga_id,
                str(raw["saga_type"]),
                str(raw["status"]),
                str(raw["ended_at"]),
                rows,
                None if key is None else base64.b64decode(key, validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RetentionError(f"not a sagalog archive line: {exc}") from None


class ArchiveWriter:
    """Writes an archive to a new file (an existing one is never overwritten)."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            # owner-only like every file sagalog creates: without encryption at rest an
            # archive holds saga data in the clear
            descriptor = os.open(path, flags, file_mode())
        except FileExistsError:
            raise RetentionError(f"archive {path} exists already; name a new file") from None
        except OSError as exc:
            raise RetentionError(f"cannot write the archive {path}: {exc.strerror}") from None
        self._raw: IO[bytes] = os.fdopen(descriptor, "wb")
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb")
        self._gzip.write(orjson.dumps({"sagalog_archive": ARCHIVE_FORMAT, **header}) + b"\n")
        self.sagas = 0
        self.events = 0

    def write(self, sagas: Sequence[ArchivedSaga]) -> None:
        """Append ``sagas`` and make them durable before returning."""
        for saga in sagas:
            self._gzip.write(saga.to_line())
            self.sagas += 1
            self.events += len(saga.rows)
        self._gzip.flush(zlib.Z_SYNC_FLUSH)
        self._raw.flush()
        os.fsync(self._raw.fileno())

    def close(self) -> str:
        """Finish the file; return its SHA-256 (hex)."""
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        return file_sha256(self.path)

    def discard(self) -> None:
        """Close and delete the file (nothing was removed from the store)."""
        self._gzip.close()
        self._raw.close()
        self.path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArchiveReader:
    """Reads an archive: its header, then its sagas in batches (bounded memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Whether the file ended early (a crash while it was written).
        self.truncated = False
        try:
            self._file = gzip.open(path, "rb")  # noqa: SIM115 - closed in close()
            first = self._file.readline()
        except FileNotFoundError:
            raise RetentionError(f"no archive at {path}") from None
        except (OSError, EOFError) as exc:
            raise RetentionError(f"{path} is not a sagalog archive: {exc}") from None
        try:
            header = orjson.loads(first)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("sagalog_archive") not in _READABLE:
            self._file.close()
            raise RetentionError(f"{path} is not a sagalog archive (format 1 or {ARCHIVE_FORMAT})")
        self.header: dict[str, Any] = header

    def batches(self, size: int) -> Iterator[list[ArchivedSaga]]:
        """The sagas, ``size`` at a time."""
        batch: list[ArchivedSaga] = []
        while True:
            try:
                line = self._file.readline()
            except (EOFError, zlib.error, gzip.BadGzipFile):
                self.truncated = True
                break
            if not line:
                break
            if not line.endswith(b"\n"):  # the last line, cut short
                self.truncated = True
                break
            if not line.strip():
                continue
            batch.append(ArchivedSaga.from_line(line))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        """Close the file."""
        self._file.close()
