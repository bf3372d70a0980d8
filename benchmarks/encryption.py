"""Encryption at rest: what it costs to write, decode and rebuild sagas, on and off.

Runs ``--sagas`` sagas of the benchmark definition to completion on a fresh SQLite
file (``start_many``, then every step answered with ``handle_many``), then reads
them back: ``decode`` is ``mapper.to_domain_event`` over the stored events (the
fast decode path), ``get_many`` the bulk rebuild. ``--mode off`` has no keys,
``on`` sets ``SAGALOG_ENCRYPTION_KEYS`` (the store key over every event, each
saga's data key over its payloads). Prints one JSON line per run; the medians
go into docs/performance.md ("Encryption at rest").

    python benchmarks/encryption.py --mode off --sagas 2000 --runs 3
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import BENCH_DEFINITION, saga_data, step_result

from sagalog.domain import CommandKind
from sagalog.process import Reply, SagaManager


def one_run(mode: str, sagas: int) -> dict[str, float]:
    """Write ``sagas`` sagas to completion, then decode and rebuild them; rates per second."""
    env = {}
    if mode == "on":
        from sagalog.process.store.encryption import new_key

        env["SAGALOG_ENCRYPTION_KEYS"] = new_key("bench")
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        manager = SagaManager([BENCH_DEFINITION], url, env=env)
        try:
            gc.collect()
            started = time.perf_counter()
            ids = manager.start_many(BENCH_DEFINITION.name, [saga_data(i) for i in range(sagas)])
            while True:
                replies = []
                for saga in manager.get_many(ids).values():
                    command = saga.pending_command
                    if command is None or command.kind is not CommandKind.ACTION:
                        continue
                    replies.append(Reply.to(command, result=step_result(command.step)))
                if not replies:
                    break
                manager.handle_many(replies)
            written = time.perf_counter() - started
            stored = [event for saga_id in ids for event in manager.recorder.select_events(saga_id)]
            manager.saga_cache.clear()
            fresh = SagaManager([BENCH_DEFINITION], url, env=env)
            try:
                gc.collect()
                started = time.perf_counter()
                to_domain_event = fresh.mapper.to_domain_event
                for event in stored:
                    to_domain_event(event)
                decoded = time.perf_counter() - started
                fresh.close()
                fresh = SagaManager([BENCH_DEFINITION], url, env=env)
                gc.collect()
                started = time.perf_counter()
                rebuilt = fresh.get_many(ids)
                bulk = time.perf_counter() - started
                assert len(rebuilt) == sagas
            finally:
                fresh.close()
        finally:
            manager.close()
    return {
        "sagas_per_s": sagas / written,
        "decode_events_per_s": len(stored) / decoded,
        "get_many_events_per_s": len(stored) / bulk,
        "events": len(stored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mode", choices=("off", "on"), default="off")
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.mode, args.sagas) for _ in range(args.runs)]
    summary: dict[str, Any] = {"mode": args.mode, "sagas": args.sagas, "runs": args.runs}
    for key in ("sagas_per_s", "decode_events_per_s", "get_many_events_per_s"):
        values = [run[key] for run in runs]
        summary[key] = {
            "median": round(statistics.median(values)),
            "min": round(min(values)),
            "max": round(max(values)),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
