"""The peers, running the same saga: DBOS Transact and sagaz.

Both are optional (the ``bench`` extra); they are imported with ``importlib``
inside the workers so that this module loads, and type-checks, without them.

DBOS Transact: the saga is one ``@DBOS.workflow``; every action and every
compensation is a ``@DBOS.step`` (DBOS checkpoints each step's output in its
system database, in its own transaction); the workflow catches the failure
and runs the compensations of the completed steps, newest first. Workflows
are called directly, one after another, in one thread.

sagaz: the saga is built with ``Saga.add_step(name, action, compensation,
depends_on=[previous])`` so the steps run in order, and runs under a
``SagaConfig`` with its PostgreSQL (asyncpg) or SQLite (aiosqlite) storage and
no metrics/logging listeners. sagaz persists a saga's state only when it
starts and when it ends (``save_saga_state`` twice per saga), not per step, so
a crash in the middle loses the progress of the running saga. Sagas run one
after another on one event loop.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_common import (
    COMPENSATABLE,
    FAILING_STEP,
    STEPS,
    saga_data,
    step_result,
)


class StepDeclined(RuntimeError):
    """A participant said no (module-level, so that DBOS can pickle it)."""


def peer_available(package: str) -> str | None:
    """``None`` if ``package`` imports, else why not (one line)."""
    try:
        importlib.import_module(package)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


# -- DBOS Transact ----------------------------------------------------------------

_dbos_saga: Callable[[dict[str, Any], str | None], str] | None = None


def _dbos_workflow() -> Callable[[dict[str, Any], str | None], str]:
    """Register the saga workflow and its steps with DBOS (once per process)."""
    global _dbos_saga
    if _dbos_saga is not None:
        return _dbos_saga
    dbos: Any = importlib.import_module("dbos").DBOS

    def action(step: str, data: dict[str, Any], fail: bool) -> dict[str, Any]:
        if fail:
            raise StepDeclined("declined")
        return step_result(f"{data['order_id']}-{step}")

    def compensation(step: str, data: dict[str, Any]) -> None:
        return None

    act: Callable[[str, dict[str, Any], bool], dict[str, Any]] = dbos.step(name="bench_action")(
        action
    )
    undo: Callable[[str, dict[str, Any]], None] = dbos.step(name="bench_compensation")(compensation)

    def saga(data: dict[str, Any], fail_step: str | None) -> str:
        done: list[str] = []
        try:
            for step in STEPS:
                act(step, data, step == fail_step)
                done.append(step)
        except StepDeclined:
            for step in reversed(done):
                if step in COMPENSATABLE:
                    undo(step, data)
            return "FAILED"
        return "COMPLETED"

    registered: Callable[[dict[str, Any], str | None], str] = dbos.workflow(name="bench_saga")(saga)
    _dbos_saga = registered
    return registered


def dbos_throughput(params: dict[str, Any]) -> dict[str, Any]:
    """Scenario ``params['scenario']``: ``n`` saga workflows on ``params['url']``."""
    url: str = params["url"]
    scenario: str = params["scenario"]
    n: int = params["n"]
    dbos: Any = importlib.import_module("dbos").DBOS
    saga = _dbos_workflow()
    fail_step = FAILING_STEP if scenario == "b" else None
    expected = "FAILED" if scenario == "b" else "COMPLETED"
    dbos(config={"name": "sagalog_bench", "system_database_url": url, "log_level": "WARNING"})
    dbos.launch()
    ok = 0
    try:
        gc.collect()
        started = time.perf_counter()
        cpu_started = time.process_time()
        for i in range(n):
            if saga(saga_data(i), fail_step) == expected:
                ok += 1
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    finally:
        dbos.destroy(destroy_registry=False)
    return {
        "n": n,
        "seconds": seconds,
        "sagas_per_s": n / seconds if n and seconds else None,
        "cpu_seconds": cpu_seconds,
        "ended_as_expected": ok,
    }


# -- sagaz ------------------------------------------------------------------------


def _sagaz_storage(url: str) -> Any:
    if url.startswith("postgresql://"):
        module: Any = importlib.import_module("sagaz.core.storage.backends.postgresql.saga")
        return module.PostgreSQLSagaStorage(url, pool_min_size=1, pool_max_size=2)
    module = importlib.import_module("sagaz.core.storage.backends.sqlite.saga")
    return module.SQLiteSagaStorage(url.removeprefix("sqlite:///"))


async def _sagaz_run(url: str, scenario: str, n: int) -> dict[str, Any]:
    sagaz: Any = importlib.import_module("sagaz")
    storage = _sagaz_storage(url)
    config = sagaz.SagaConfig(storage=storage, metrics=False, logging=False, tracing=False)
    fail_step = FAILING_STEP if scenario == "b" else None

    def action_for(step: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        async def action(context: dict[str, Any]) -> dict[str, Any]:
            if step == fail_step:
                raise StepDeclined("declined")
            return {f"{step}_result": step_result(f"{context['order_id']}-{step}")}

        return action

    async def compensation(context: dict[str, Any]) -> None:
        return None

    actions = {step: action_for(step) for step in STEPS}
    # Open the pool (and create the tables) before the clock starts.
    if hasattr(storage, "_get_pool"):
        await storage._get_pool()
    elif hasattr(storage, "_get_connection"):
        await storage._get_connection()
    ok = 0
    gc.collect()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for i in range(n):
        saga = sagaz.Saga(name="BenchOrder", config=config)
        previous: str | None = None
        for step in STEPS:
            saga.add_step(
                step,
                actions[step],
                compensation if step in COMPENSATABLE else None,
                depends_on=[previous] if previous else None,
            )
            previous = step
        try:
            await saga.run(saga_data(i))
        except StepDeclined:
            ok += scenario == "b"
        else:
            ok += scenario == "a"
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    await _sagaz_close(storage)
    return {
        "n": n,
        "seconds": seconds,
        "sagas_per_s": n / seconds if n and seconds else None,
        "cpu_seconds": cpu_seconds,
        "ended_as_expected": ok,
    }


async def _sagaz_close(storage: Any) -> None:
    """Close the store's connections (the PostgreSQL store has no ``close()``)."""
    close = getattr(storage, "close", None)
    if close is not None:
        await close()
        return
    pool = getattr(storage, "_pool", None)
    if pool is not None:
        await pool.close()


def sagaz_throughput(params: dict[str, Any]) -> dict[str, Any]:
    """Scenario ``params['scenario']``: ``n`` sagaz sagas with its store at ``params['url']``."""
    return asyncio.run(_sagaz_run(params["url"], params["scenario"], params["n"]))


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "dbos.throughput": dbos_throughput,
    "sagaz.throughput": sagaz_throughput,
}
