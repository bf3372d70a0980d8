"""``AsyncSagaManager`` under an event loop: many concurrent calls, results as if sequential."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from typing import Any
from uuid import UUID, uuid4

import pytest
from support.sagas import ORDER, T0, finish_compensations

from sagalog.domain import (
    CommandKind,
    Outcome,
    ReplyOutcome,
    Saga,
    SagaNotFoundError,
    SagaStatus,
    command_id_for,
)
from sagalog.process import InvalidReplyError, SagaManager
from sagalog.process.aio import AsyncSagaManager
from sagalog.process.clock import ManualClock

#: The events of an Order saga whose four steps all succeed, in order.
HAPPY_PATH = [
    "SagaStarted",
    "StepDispatched",
    "StepCompleted",
    "StepDispatched",
    "StepCompleted",
    "StepDispatched",
    "StepCompleted",
    "StepDispatched",
    "StepCompleted",
    "SagaCompleted",
]
STEPS = ["reserve", "charge", "ship", "notify"]


def _names(events: list[Saga.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_many_sagas_advance_concurrently_without_losing_a_transition(
    manager: SagaManager,
) -> None:
    async def scenario() -> list[UUID]:
        async with AsyncSagaManager(manager, max_workers=4) as front:
            ids = await asyncio.gather(*(front.start("Order", {"n": i}) for i in range(30)))
            for step in STEPS:
                outcomes = await asyncio.gather(
                    *(
                        front.handle_step_completed(
                            saga_id, step, {"ok": step}, message_id=f"{saga_id}:{step}"
                        )
                        for saga_id in ids
                    )
                )
                assert all(o.applied for o in outcomes)
            return list(ids)

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 30
    for saga_id in ids:
        assert manager.get(saga_id).status is SagaStatus.COMPLETED
        assert _names(manager.history(saga_id)) == HAPPY_PATH


def test_concurrent_copies_of_one_reply_apply_once(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"n": 1})

    async def scenario() -> list[ReplyOutcome]:
        async with AsyncSagaManager(manager, max_workers=8) as front:
            reply = {
                "message_id": "m-1",
                "saga_id": str(saga_id),
                "command_id": str(command_id_for(saga_id, "reserve", CommandKind.ACTION, 1)),
                "step": "reserve",
                "outcome": "completed",
            }
            return list(await asyncio.gather(*(front.handle(reply) for _ in range(16))))

    outcomes = asyncio.run(scenario())
    assert Counter(o.outcome for o in outcomes) == {Outcome.APPLIED: 1, Outcome.DUPLICATE: 15}
    assert _names(manager.history(saga_id)) == HAPPY_PATH[:4]


def test_racing_success_and_failure_of_one_step_apply_exactly_one(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"n": 1})

    async def scenario() -> list[ReplyOutcome]:
        async with AsyncSagaManager(manager, max_workers=8) as front:
            calls: list[Any] = []
            for i in range(6):
                calls.append(front.handle_step_completed(saga_id, "reserve", message_id=f"ok-{i}"))
                calls.append(
                    front.handle_step_failed(saga_id, "reserve", "no stock", message_id=f"ko-{i}")
                )
            return list(await asyncio.gather(*calls))

    outcomes = asyncio.run(scenario())
    assert sum(o.applied for o in outcomes) == 1
    history = manager.history(saga_id)
    outcomes_recorded = [e for e in history if isinstance(e, Saga.StepCompleted | Saga.StepFailed)]
    assert len(outcomes_recorded) == 1
    saga = manager.get(saga_id)
    if isinstance(outcomes_recorded[0], Saga.StepCompleted):  # then the saga went on to charge
        assert saga.status is SagaStatus.PENDING
        assert saga.current_step == "charge"
        assert _names(history) == HAPPY_PATH[:4]
    else:  # the first step failed: nothing to compensate, the saga failed at once
        assert saga.status is SagaStatus.FAILED
        assert _names(history) == [
            "SagaStarted",
            "StepDispatched",
            "StepFailed",
            "CompensationRequested",
            "SagaFailed",
        ]


def test_concurrent_starts_of_one_saga_id_record_one_saga(manager: SagaManager) -> None:
    saga_id = uuid4()

    async def scenario() -> list[UUID]:
        async with AsyncSagaManager(manager, max_workers=8) as front:
            return list(
                await asyncio.gather(
                    *(front.start("Order", {"n": 1}, saga_id=saga_id) for _ in range(10))
                )
            )

    assert asyncio.run(scenario()) == [saga_id] * 10
    assert _names(manager.history(saga_id)) == HAPPY_PATH[:2]


def test_tick_and_operator_actions_are_awaitable(manager: SagaManager) -> None:
    clock = manager.clock
    assert isinstance(clock, ManualClock)

    async def scenario() -> tuple[UUID, UUID]:
        async with AsyncSagaManager(manager) as front:
            late = await front.start("Order", {"n": 1})
            aborted = await front.start("Order", {"n": 2})
            await front.abort(aborted, actor="ops", reason="customer cancelled")
            # The reserve was in flight at the abort: it may have been done, so it is released.
            await front.handle_compensation_completed(aborted, "reserve")
            moved = await front.tick(clock.advance(31))  # reserve of `late` times out
            assert moved == 1
            saga = await front.get(late)
            assert saga.status is SagaStatus.COMPENSATING  # reserve may have been done
            events = await front.history(aborted)
            assert any(isinstance(e, Saga.SagaAborted) for e in events)
            return late, aborted

    late, aborted = asyncio.run(scenario())
    assert finish_compensations(manager, late) == ["reserve"]
    assert manager.get(late).status is SagaStatus.FAILED
    assert manager.get(aborted).status is SagaStatus.FAILED
    assert any(isinstance(e, Saga.StepTimedOut) for e in manager.history(late))


def test_errors_reach_the_awaiting_coroutine(manager: SagaManager) -> None:
    async def scenario() -> None:
        async with AsyncSagaManager(manager) as front:
            with pytest.raises(SagaNotFoundError):
                await front.handle_step_completed(uuid4(), "reserve")
            with pytest.raises(InvalidReplyError):
                await front.handle({"saga_id": "not-a-uuid"})

    asyncio.run(scenario())


class GatedManager(SagaManager):
    """``get`` waits for a gate and counts how many calls run inside it at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self.threads: set[str] = set()
        self._count_lock = threading.Lock()

    def get(self, saga_id: UUID, version: int | None = None) -> Saga:
        with self._count_lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
        try:
            assert self.gate.wait(timeout=20), "the gate was never opened"
            return super().get(saga_id, version)
        finally:
            with self._count_lock:
                self.inside -= 1


def test_calls_run_off_the_event_loop_in_a_bounded_pool(database_url: str) -> None:
    manager = GatedManager([ORDER], database_url, clock=ManualClock(T0))
    saga_id = manager.start("Order", {"n": 1})

    async def scenario() -> list[SagaStatus]:
        async with AsyncSagaManager(manager, max_workers=3) as front:
            reads = [asyncio.create_task(front.get(saga_id)) for _ in range(9)]
            # The loop is free while the reads block in their threads: this coroutine
            # runs, and it is the one that opens the gate (were the reads on the loop's
            # thread, the gate would never open and the reads would fail after 20 s).
            for _ in range(200):
                if manager.inside == 3:
                    break
                await asyncio.sleep(0.01)
            manager.gate.set()
            return [saga.status for saga in await asyncio.gather(*reads)]

    try:
        statuses = asyncio.run(scenario())
    finally:
        manager.close()
    assert statuses == [SagaStatus.PENDING] * 9
    assert manager.most_inside == 3  # never more than max_workers at once
    assert threading.main_thread().name not in manager.threads
    assert all(name.startswith("sagalog-async") for name in manager.threads)


def test_a_closed_front_refuses_calls(manager: SagaManager) -> None:
    async def scenario() -> None:
        front = AsyncSagaManager(manager)
        await front.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await front.start("Order", {"n": 1})

    asyncio.run(scenario())


def test_bad_pool_sizes_are_refused(manager: SagaManager) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        AsyncSagaManager(manager, max_workers=0)
    with pytest.raises(ValueError, match="max_pending"):
        AsyncSagaManager(manager, max_workers=4, max_pending=2)


def test_batches_through_the_async_front_give_one_result_per_reply(
    manager: SagaManager,
) -> None:
    async def scenario() -> tuple[list[Any], dict[UUID, Saga]]:
        async with AsyncSagaManager(manager) as front:
            ids = await front.start_many("Order", [{"order": i} for i in range(3)])
            replies: list[Any] = [
                {
                    "message_id": f"{saga_id}:r",
                    "saga_id": str(saga_id),
                    "command_id": str(command_id_for(saga_id, "reserve", CommandKind.ACTION, 1)),
                    "step": "reserve",
                    "outcome": "completed",
                }
                for saga_id in ids
            ]
            results = await front.handle_many([*replies, {"message_id": "x"}])
            return results, await front.get_many(ids)

    results, sagas = asyncio.run(scenario())
    assert results[:3] == [ReplyOutcome(Outcome.APPLIED)] * 3
    assert isinstance(results[3], InvalidReplyError)
    assert [saga.current_step for saga in sagas.values()] == ["charge"] * 3


def test_each_awaited_call_has_the_managers_signature(manager: SagaManager) -> None:
    front = AsyncSagaManager(manager)
    names = ["start", "start_many", "handle", "handle_many", "handle_step_completed"]
    names += ["handle_step_failed", "handle_compensation_completed"]
    names += ["handle_compensation_failed", "tick", "retry", "resolve", "abort"]
    names += ["get", "get_many", "history"]
    for name in names:
        awaited = getattr(front, name)
        assert inspect.iscoroutinefunction(awaited), name
        assert inspect.signature(awaited) == inspect.signature(getattr(manager, name)), name


def test_an_awaited_call_runs_the_managers_own_override(database_url: str) -> None:
    class Counting(SagaManager):
        starts = 0

        def start(self, saga_type: str, data: dict[str, Any], **kwargs: Any) -> UUID:
            type(self).starts += 1
            return super().start(saga_type, data, **kwargs)

    counting = Counting([ORDER], database_url, clock=ManualClock(T0))

    async def scenario() -> UUID:
        async with AsyncSagaManager(counting) as front:
            return await front.start("Order", {"n": 1})

    try:
        saga_id = asyncio.run(scenario())
        assert Counting.starts == 1
        assert counting.get(saga_id).saga_type == "Order"
    finally:
        counting.close()
