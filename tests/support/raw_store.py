"""Everything a store holds, as bytes, for tests that grep it for saga data or keys."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from sagalog.process import SagaManager, parse_database_url
from sagalog.process.store.shredding import DataKeyTable


def raw_store_bytes(manager: SagaManager, database_url: str) -> bytes:
    """The SQLite files with their WAL, every table of the PostgreSQL schema, or (memory)
    every stored event, every data key and the recorder's own state."""
    url = parse_database_url(database_url)
    if url.kind == "sqlite":
        assert url.path is not None
        files = sorted(Path(url.path).parent.glob(Path(url.path).name + "*"))
        assert files
        return b"".join(path.read_bytes() for path in files)
    if url.kind == "postgresql":
        import psycopg
        from psycopg import sql

        dumped: list[bytes] = []
        with psycopg.connect(url.conninfo(), autocommit=True) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (url.schema,),
            ).fetchall()
            assert len(tables) >= 5, tables  # events, tracking, timers, keys, views
            for (table,) in tables:
                query = sql.SQL("SELECT * FROM {}.{}").format(
                    sql.Identifier(url.schema or "public"), sql.Identifier(table)
                )
                for row in conn.execute(query).fetchall():
                    for value in row:
                        is_bytes = isinstance(value, bytes | memoryview)
                        dumped.append(bytes(value) if is_bytes else str(value).encode("utf-8"))
        return b"\n".join(dumped)
    recorder = manager.recorder
    notifications = recorder.select_notifications(1, 10_000)
    keys: list[bytes] = []
    if isinstance(recorder, DataKeyTable):
        ids = [UUID(str(n.originator_id)) for n in notifications]
        keys = [bytes(k) for k in recorder.select_data_keys(ids).values()]
    return b"".join(n.state for n in notifications) + b"".join(keys) + repr(vars(recorder)).encode()
