"""A bounded cache of live sagas, so a decision need not reread its saga.

Loading a saga before every decision costs a read and rebuilding it from its
events. The manager keeps the sagas it recorded last in this cache and decides
the next reply on the cached object. That is safe because the cache never
vouches for anything on its own:

* a saga is *taken out* of the cache while a decision runs (:meth:`SagaCache.take`)
  and put back only after its new events were committed (:meth:`SagaCache.put`),
  so two threads never mutate one object, and a saga whose events failed to
  commit (a conflict, a lost connection, a bug) is simply no longer cached;
* a stale cached saga (another manager, a reaction or an operator moved it on)
  cannot record anything: its new events take versions already in the store, and
  the optimistic-concurrency check refuses them; the manager then rereads it;
* a decision on a cached saga that records nothing (a duplicate or stale reply,
  an error, no timer due) is made again on a freshly read saga, because a stale
  copy could misjudge it.

Ended sagas are not kept (replies to them are duplicates or stale, judged on a
fresh read), and at most ``maxsize`` sagas are, least recently used first out,
so the memory of a manager stays bounded however many sagas it runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from uuid import UUID

from sagalog.domain import Saga

__all__ = ["SagaCache"]


class SagaCache:
    """At most ``maxsize`` sagas by id, least recently used evicted first (0: off)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            msg = f"saga cache size must not be negative, got {maxsize}"
            raise ValueError(msg)
        self.maxsize = maxsize
        self._sagas: OrderedDict[UUID, Saga] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sagas)

    def take(self, saga_id: UUID) -> Saga | None:
        """Remove and return the cached saga ``saga_id`` (None when not cached)."""
        with self._lock:
            return self._sagas.pop(saga_id, None)

    def put(self, saga: Saga) -> None:
        """Cache ``saga`` as committed; ended sagas and pending changes are not kept."""
        if self.maxsize == 0 or saga.is_terminal or saga.pending_events:
            return
        with self._lock:
            self._sagas[saga.id] = saga
            self._sagas.move_to_end(saga.id)
            while len(self._sagas) > self.maxsize:
                self._sagas.popitem(last=False)

    def discard(self, saga_id: UUID) -> None:
        """Forget ``saga_id`` (it was changed elsewhere)."""
        with self._lock:
            self._sagas.pop(saga_id, None)

    def clear(self) -> None:
        """Forget every saga."""
        with self._lock:
            self._sagas.clear()
