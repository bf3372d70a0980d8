"""The broker path end to end: sagas/s through RabbitMQ for 1, 2 and 3 workers.

Each measurement runs, as separate processes on this machine: ``W`` ``sagalog worker
--transport rabbitmq`` on one store (a fresh SQLite file or a fresh PostgreSQL schema;
eight reply partitions shared by the workers), and two participant processes (the
``Participant`` helper, publisher confirms, acks after the reply is confirmed) that
answer the four steps of a saga alternately. The driver starts ``--sagas`` sagas at
once (``start_many``) and times the first start to the last ``SagaCompleted``, read
from the log. It also reports:

* latency from a participant's answer (its handler returning) to the next command of
  that saga arriving at a participant, p50 and p99 — the reply's trip through the broker,
  the reply consumer's commit, the relay, the publish and confirm and the delivery;
* CPU seconds per saga of each kind of process: the workers, the participants, the
  PostgreSQL server processes and RabbitMQ's ``beam.smp`` (both are shared with whatever
  else runs on the machine: on a loaded machine they over-count).

Run::

    python benchmarks/broker.py                       # SQLite and PostgreSQL, 1-3 workers
    python benchmarks/broker.py --sagas 300 --workers 1,2 --backends sqlite

It prints one line per measurement and writes ``benchmarks/results/broker.json``
(``broker-rate.json`` with ``--rate``: sagas started at that rate rather than all at
once, so the latency is the path's own rather than a backlog's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "broker.json"
PG_URL = os.environ.get("SAGALOG_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("SAGALOG_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PARTITIONS = 8
TICKS = os.sysconf("SC_CLK_TCK")


def definitions() -> Any:
    """The benchmark's saga: four steps, alternating between two services."""
    from sagalog.domain import SagaDefinition, Step

    return SagaDefinition(
        "BrokerBench",
        [Step(name=f"s{n}", action=f"{'Left' if n % 2 else 'Right'}.Do{n}") for n in range(1, 5)],
    )


#: ``--definitions broker:SAGA`` for the worker processes.
SAGA = definitions()


# -- the participant process ------------------------------------------------------------


def participant(service: str, prefix: str, log: str) -> None:
    """Answer every command of ``service``; log (saga, step, arrived, answered) per command."""
    import signal

    from sagalog.infrastructure.rabbitmq import Topology
    from sagalog.infrastructure.services.participant import Participant

    names = [f"{service}.Do{n}" for n in range(1, 5) if (n % 2 == 1) == (service == "Left")]
    rows: list[str] = []

    def handle(command: Any) -> str:
        arrived = time.time()
        rows.append(f"{command.saga_id} {command.step} {arrived:.6f} {time.time():.6f}")
        return "ok"

    worker = Participant(
        service, dict.fromkeys(names, handle), url=BROKER, topology=Topology(prefix)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.run(stop)
    Path(log).write_text("\n".join(rows) + "\n")


# -- the driver -------------------------------------------------------------------------


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, or 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _pids(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: _cpu(pid) for pid in pids}


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots (a process new in ``after`` counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def measure(backend: str, workers: int, sagas: int, rate: float = 0.0) -> dict[str, Any]:
    """One measurement: ``workers`` workers on a fresh ``backend`` store, ``sagas`` sagas,
    all at once (``rate`` 0) or ``rate`` a second (latency without a backlog)."""
    from eventsourcing.utils import get_topic

    from sagalog.domain import Saga
    from sagalog.infrastructure.persistence.heartbeats import WorkerRegistry
    from sagalog.infrastructure.persistence.lease import StoreLease
    from sagalog.infrastructure.rabbitmq import Topology
    from sagalog.infrastructure.rabbitmq.topology import channel_to
    from sagalog.process import SagaManager

    run = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix="sagalog-broker-bench-"))
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/store.db"
    else:
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema=bench_{run}"
    prefix = f"sagalog-bench-{run}"
    topology = Topology(prefix, reply_partitions=PARTITIONS)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    env["SAGALOG_SIGNING_KEYS"] = ""
    manager = SagaManager([definitions()], url)
    children: list[subprocess.Popen[bytes]] = []
    worker_pids: list[int] = []
    participant_pids: list[int] = []
    logs = {service: tmp / f"{service}.log" for service in ("Left", "Right")}
    try:
        with channel_to(BROKER) as channel:
            topology.declare(channel)
        for service, log in logs.items():
            child = subprocess.Popen(
                [sys.executable, __file__, "participant", service, prefix, str(log)],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            children.append(child)
            participant_pids.append(child.pid)
        for _ in range(workers):
            child = subprocess.Popen(
                [
                    sys.executable, "-m", "sagalog.infrastructure.cli", "worker",
                    "--database-url", url, "--definitions", "broker:SAGA",
                    "--transport", "rabbitmq", "--rabbitmq-url", BROKER,
                    "--rabbitmq-prefix", prefix, "--reply-partitions", str(PARTITIONS),
                    "--poll-interval", "0.05",
                ],
                env=env,
                stderr=(tmp / f"worker-{len(worker_pids)}.err").open("wb"),
            )  # fmt: skip
            children.append(child)
            worker_pids.append(child.pid)
        lease = StoreLease(manager.database_url)
        registry = WorkerRegistry(lease)
        deadline = time.monotonic() + 90
        while True:  # every worker up, the partitions split, someone active
            live = registry.live()
            held = sorted(k for w in live for k in w.partitions)
            if (
                len(live) == workers
                and held == list(range(PARTITIONS))
                and any(w.role == "active" for w in live)
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready (logs in {tmp}): {live}")
            time.sleep(0.1)
        time.sleep(1.0)  # participants' queues bound (they declare them at start)
        lease.close()
        completed_topic = get_topic(Saga.SagaCompleted)
        position = manager.recorder.max_notification_id() or 0
        before = {
            "workers": _cpu_of(worker_pids),
            "participants": _cpu_of(participant_pids),
            "postgresql": _cpu_of(_pids("postgres")),
            "rabbitmq": _cpu_of(_pids("beam.smp")),
        }
        started = time.monotonic()
        if rate <= 0:
            manager.start_many("BrokerBench", [{"n": n} for n in range(sagas)])
        else:
            threading.Thread(target=_start_at_rate, args=(url, sagas, rate), daemon=True).start()
        done = 0
        while done < sagas:
            batch = manager.recorder.select_notifications(
                start=position + 1, limit=1000, topics=[completed_topic]
            )
            if batch:
                done += len(batch)
                position = batch[-1].id
            else:
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"only {done} of {sagas} sagas completed")
                time.sleep(0.01)
        elapsed = time.monotonic() - started
        after = {
            "workers": _cpu_of(worker_pids),
            "participants": _cpu_of(participant_pids),
            "postgresql": _cpu_of(_pids("postgres")),
            "rabbitmq": _cpu_of(_pids("beam.smp")),
        }
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        manager.close()
        try:
            with channel_to(BROKER) as channel:
                topology.delete(channel, services=["Left", "Right"])
        except Exception as exc:  # cleanup is best effort
            print(f"cleanup: {exc}", file=sys.stderr)
        if backend == "postgresql":
            import psycopg

            with psycopg.connect(PG_URL.split("?")[0], autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "bench_{run}" CASCADE')
    latencies = _latencies(logs)
    return {
        "sagas_per_s": sagas / elapsed,
        "elapsed_s": elapsed,
        "latency_ms": latencies,
        "cpu_ms_per_saga": {k: _spent(before[k], after[k]) * 1000 / sagas for k in before},
    }


def _start_at_rate(url: str, sagas: int, rate: float) -> None:
    """Start ``sagas`` sagas, ``rate`` a second, from a manager of its own."""
    from sagalog.process import SagaManager

    starter = SagaManager([definitions()], url)
    try:
        begin = time.monotonic()
        for n in range(sagas):
            delay = begin + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            starter.start("BrokerBench", {"n": n})
    finally:
        starter.close()


def _latencies(logs: dict[str, Path]) -> dict[str, float]:
    """p50/p99 from one step's answer to the next step's command arriving (ms)."""
    steps: dict[str, dict[int, tuple[float, float]]] = {}
    for log in logs.values():
        if not log.exists():
            continue
        for line in log.read_text().splitlines():
            if not line.strip():
                continue
            saga_id, step, arrived, answered = line.split()
            steps.setdefault(saga_id, {})[int(step[1:])] = (float(arrived), float(answered))
    gaps = sorted(
        (by_step[n + 1][0] - by_step[n][1]) * 1000
        for by_step in steps.values()
        for n in range(1, 4)
        if n in by_step and n + 1 in by_step
    )
    if not gaps:
        return {}
    return {
        "p50": statistics.median(gaps),
        "p99": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))],
        "n": len(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="sagas started a second (0: all at once)"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "meta": {
            "sagas": args.sagas,
            "rate": args.rate,
            "runs": args.runs,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg_before": os.getloadavg(),
            "nproc": os.cpu_count(),
        }
    }
    for backend in args.backends.split(","):
        for count in (int(w) for w in args.workers.split(",")):
            runs = [measure(backend, count, args.sagas, args.rate) for _ in range(args.runs)]
            key = f"{backend}/{count}" + (f"@{args.rate:g}/s" if args.rate > 0 else "")
            results[key] = runs
            rates = [r["sagas_per_s"] for r in runs]
            latency = runs[0]["latency_ms"]
            cpu = runs[0]["cpu_ms_per_saga"]
            print(
                f"{backend:10} {count} worker(s): {statistics.median(rates):7.0f} sagas/s "
                f"({min(rates):.0f}-{max(rates):.0f}); reply->next command "
                f"p50 {latency.get('p50', 0):.1f} ms p99 {latency.get('p99', 0):.1f} ms; "
                "CPU ms/saga " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()),
                flush=True,
            )
    results["meta"]["loadavg_after"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    target = RESULTS if args.rate <= 0 else RESULTS.with_name("broker-rate.json")
    target.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "participant":
        participant(*sys.argv[2:5])
    else:
        main()
