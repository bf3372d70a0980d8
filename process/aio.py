"""``AsyncSagaManager``: the process manager, awaitable from asyncio code.

``SagaManager`` does blocking I/O (SQLite, PostgreSQL). Called directly from a
coroutine — an asyncio web handler — it would stall the event loop for every
request. :class:`AsyncSagaManager` runs each call in a *bounded* thread pool and
awaits the result, so the loop keeps serving while the database works::

    front = AsyncSagaManager(SagaManager(definitions, "postgresql://…"), max_workers=8)

    async def on_order(request):
        saga_id = await front.start("OrderFulfillment", await request.json())
        ...

    async def on_reply(request):
        outcome = await front.handle(await request.body())   # validated, then applied

Thread safety — why this is sound:

* ``SagaManager`` keeps no per-call mutable state of its own; every transition
  loads the saga, decides, and commits with optimistic concurrency (the events'
  version). Two threads moving the *same* saga at once conflict at commit, and the
  loser reloads and decides again, so concurrent calls give the same results as
  some sequential order of them (the laws hold: duplicates and stale replies
  change nothing). Calls on different sagas do not interact at all.
* eventsourcing's recorders are safe to share between threads: PostgreSQL hands
  each thread a connection from a pool (size it with ``POSTGRES_POOL_SIZE`` /
  ``POSTGRES_MAX_OVERFLOW`` at least as large as ``max_workers``, or threads queue
  for connections), SQLite keeps a connection per thread (file databases; WAL mode
  lets readers run beside the one writer), and the in-memory recorder uses a lock.
* The pool bounds how many threads touch the database at once; calls beyond it
  wait in the pool's queue (``max_pending`` also bounds how many may wait).

Cancelling an awaiting coroutine does not stop its thread: the call runs to its
end and may still commit. That is safe because every input is idempotent — send
the same reply again (same ``message_id``) or start the same ``saga_id`` again and
nothing changes twice.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from sagalog.domain import ReplyOutcome, Saga
from sagalog.process.manager import ReplyResult, SagaManager
from sagalog.process.messages import Reply

P = ParamSpec("P")
T = TypeVar("T")


class AsyncSagaManager:
    """Awaitable front of a :class:`SagaManager`: each call runs in a bounded thread pool.

    ``max_workers`` threads at most run manager calls at once; ``max_pending``
    (default: unbounded) caps how many calls may wait for a thread, beyond which
    callers wait on the event loop without queuing work. ``close_manager`` makes
    :meth:`aclose` close the wrapped manager too.
    """

    def __init__(
        self,
        manager: SagaManager,
        *,
        max_workers: int = 8,
        max_pending: int | None = None,
        close_manager: bool = False,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_pending is not None and max_pending < max_workers:
            raise ValueError("max_pending must be at least max_workers")
        self.manager = manager
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="sagalog-async")
        self._slots = asyncio.Semaphore(max_pending) if max_pending is not None else None
        self._close_manager = close_manager
        self._closed = False

    async def _call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("the AsyncSagaManager is closed")
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        if self._slots is None:
            return await loop.run_in_executor(self._executor, call)
        async with self._slots:
            return await loop.run_in_executor(self._executor, call)

    # -- starting and replies -------------------------------------------------------

    async def start(
        self,
        saga_type: str,
        data: dict[str, Any],
        *,
        saga_id: UUID | None = None,
        version: int | None = None,
        message_id: str | None = None,
    ) -> UUID:
        """:meth:`SagaManager.start`, awaited (idempotent for a given ``saga_id``)."""
        return await self._call(
            self.manager.start,
            saga_type,
            data,
            saga_id=saga_id,
            version=version,
            message_id=message_id,
        )

    async def handle(self, reply: Reply | dict[str, Any] | str | bytes) -> ReplyOutcome:
        """:meth:`SagaManager.handle`, awaited: validate a reply message and apply it."""
        return await self._call(self.manager.handle, reply)

    async def start_many(
        self, saga_type: str, datas: list[dict[str, Any]], *, version: int | None = None
    ) -> list[UUID]:
        """:meth:`SagaManager.start_many`, awaited: many new sagas, few commits."""
        return await self._call(self.manager.start_many, saga_type, datas, version=version)

    async def handle_many(
        self, replies: list[Reply | dict[str, Any] | str | bytes]
    ) -> list[ReplyResult]:
        """:meth:`SagaManager.handle_many`, awaited: an outcome or a typed error per reply."""
        return await self._call(self.manager.handle_many, replies)

    async def handle_step_completed(
        self,
        saga_id: UUID,
        step_name: str,
        result: Any = None,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """:meth:`SagaManager.handle_step_completed`, awaited."""
        return await self._call(
            self.manager.handle_step_completed,
            saga_id,
            step_name,
            result,
            message_id=message_id,
            attempt=attempt,
        )

    async def handle_step_failed(
        self,
        saga_id: UUID,
        step_name: str,
        error: str,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """:meth:`SagaManager.handle_step_failed`, awaited."""
        return await self._call(
            self.manager.handle_step_failed,
            saga_id,
            step_name,
            error,
            message_id=message_id,
            attempt=attempt,
        )

    async def handle_compensation_completed(
        self,
        saga_id: UUID,
        step_name: str,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """:meth:`SagaManager.handle_compensation_completed`, awaited."""
        return await self._call(
            self.manager.handle_compensation_completed,
            saga_id,
            step_name,
            message_id=message_id,
            attempt=attempt,
        )

    async def handle_compensation_failed(
        self,
        saga_id: UUID,
        step_name: str,
        error: str,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """:meth:`SagaManager.handle_compensation_failed`, awaited."""
        return await self._call(
            self.manager.handle_compensation_failed,
            saga_id,
            step_name,
            error,
            message_id=message_id,
            attempt=attempt,
        )

    # -- the clock and operators --------------------------------------------------------

    async def tick(self, now: datetime | None = None, *, limit: int = 1000) -> int:
        """:meth:`SagaManager.tick`, awaited: fire due timeouts and retries."""
        return await self._call(self.manager.tick, now, limit=limit)

    async def retry(self, saga_id: UUID, *, actor: str, reason: str) -> None:
        """:meth:`SagaManager.retry`, awaited."""
        await self._call(self.manager.retry, saga_id, actor=actor, reason=reason)

    async def resolve(self, saga_id: UUID, *, actor: str, reason: str) -> None:
        """:meth:`SagaManager.resolve`, awaited."""
        await self._call(self.manager.resolve, saga_id, actor=actor, reason=reason)

    async def abort(self, saga_id: UUID, *, actor: str, reason: str) -> None:
        """:meth:`SagaManager.abort`, awaited."""
        await self._call(self.manager.abort, saga_id, actor=actor, reason=reason)

    # -- reading ------------------------------------------------------------------------

    async def get(self, saga_id: UUID, version: int | None = None) -> Saga:
        """:meth:`SagaManager.get`, awaited (the saga object is the caller's own copy)."""
        return await self._call(self.manager.get, saga_id, version)

    async def get_many(self, saga_ids: list[UUID]) -> dict[UUID, Saga]:
        """:meth:`SagaManager.get_many`, awaited: many sagas read in bulk."""
        return await self._call(self.manager.get_many, saga_ids)

    async def history(self, saga_id: UUID) -> list[Saga.Event]:
        """:meth:`SagaManager.history`, awaited."""
        return await self._call(self.manager.history, saga_id)

    # -- lifetime -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait for running calls, stop the pool (and close the manager if asked)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(self._executor.shutdown, wait=True))
        if self._close_manager:
            self.manager.close()

    async def __aenter__(self) -> AsyncSagaManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
