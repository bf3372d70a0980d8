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
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sagalog.process.manager import SagaManager

P = ParamSpec("P")
T = TypeVar("T")


def _awaited(
    method: Callable[Concatenate[SagaManager, P], T],
) -> Callable[Concatenate[AsyncSagaManager, P], Coroutine[Any, Any, T]]:
    """``method`` of the wrapped manager, as a coroutine method run in the pool.

    The manager's own method is looked up on each call, so a subclass's override
    is the one that runs; signature and docstring are the manager's.
    """
    name = method.__name__

    @functools.wraps(method)
    async def awaited(self: AsyncSagaManager, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound = cast("Callable[P, T]", getattr(self.manager, name))
        return await self._call(bound, *args, **kwargs)

    awaited.__qualname__ = f"AsyncSagaManager.{name}"
    return awaited


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

    # -- the manager's calls, awaited ---------------------------------------------------

    start = _awaited(SagaManager.start)
    start_many = _awaited(SagaManager.start_many)
    handle = _awaited(SagaManager.handle)
    handle_many = _awaited(SagaManager.handle_many)
    handle_step_completed = _awaited(SagaManager.handle_step_completed)
    handle_step_failed = _awaited(SagaManager.handle_step_failed)
    handle_compensation_completed = _awaited(SagaManager.handle_compensation_completed)
    handle_compensation_failed = _awaited(SagaManager.handle_compensation_failed)
    tick = _awaited(SagaManager.tick)
    retry = _awaited(SagaManager.retry)
    resolve = _awaited(SagaManager.resolve)
    abort = _awaited(SagaManager.abort)
    # The sagas that get, get_many and history return are the caller's own objects.
    get = _awaited(SagaManager.get)
    get_many = _awaited(SagaManager.get_many)
    history = _awaited(SagaManager.history)

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
