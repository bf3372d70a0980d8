"""What does tracing cost? The throughput benchmark with tracing off, on, and before it existed.

Runs ``bench_sagalog.throughput`` (scenario a: every saga completes; in-process relay,
transport and participants, batched) in a fresh interpreter per run, interleaving three
configurations so that the machine's load hits them alike:

* ``before`` — sagalog as committed at ``--baseline`` (default ``main``), extracted with
  ``git archive``: the code without tracing;
* ``off`` — this tree, tracing off (the default);
* ``on`` — this tree with ``enable_tracing`` on an SDK tracer provider whose batch
  processor hands every span to an exporter that drops it (the cost of making spans,
  not of shipping them).

Prints sagas per second, median and min-max, per configuration and database.

    python benchmarks/tracing_overhead.py [--sagas N] [--runs N] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = "RESULT "

CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
mode = {mode!r}
if mode == "on":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    class Drop:
        def export(self, spans):
            return SpanExportResult.SUCCESS
        def shutdown(self):
            pass
        def force_flush(self, timeout_millis=30000):
            return True

    from sagalog.infrastructure.observability.tracing import enable_tracing
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    enable_tracing(provider)
from bench_sagalog import throughput
result = throughput({{"url": {url!r}, "scenario": "a", "n": {n}}})
loaded = any(m.startswith("opentelemetry") for m in sys.modules)
print("RESULT " + json.dumps({{"rate": result["sagas_per_s"], "otel_loaded": loaded}}))
"""


def baseline_tree(ref: str, into: Path) -> Path:
    """``ref``'s four folders, in an installed-shaped tree to put first on ``PYTHONPATH``."""
    source, tree = into / "src", into / "tree" / "sagalog"
    source.mkdir(parents=True)
    tree.mkdir(parents=True)
    folders = ["domain", "process", "projections", "infrastructure"]
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, *folders], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    for folder in folders:
        (tree / folder).symlink_to(source / folder)
    return tree.parent


def run_once(mode: str, url: str, n: int, pythonpath: Path | None) -> dict[str, object]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    code = CHILD.format(bench=str(ROOT / "benchmarks"), mode=mode, url=url, n=n)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            result: dict[str, object] = json.loads(line[len(RESULT) :])
            return result
    raise RuntimeError(f"{mode} run failed: {done.stderr.strip().splitlines()[-3:]}")


SCHEMAS: list[str] = []


def postgres_url(server: str) -> str:
    """A URL on a new schema of ``server`` (dropped at the end)."""
    schema = f"bench_tracing_{uuid.uuid4().hex[:10]}"
    SCHEMAS.append(schema)
    return f"{server}?schema={schema}"


def drop_schemas(server: str) -> None:
    """Drop the schemas the PostgreSQL runs made."""
    if not SCHEMAS:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(server, autocommit=True) as conn:
        for schema in SCHEMAS:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--baseline", default="main")
    parser.add_argument(
        "--postgres-server", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = baseline_tree(args.baseline, work / "baseline")
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            rates: dict[str, list[float]] = {"before": [], "off": [], "on": []}
            for run in range(args.runs):
                for mode in ("before", "off", "on"):
                    if backend == "sqlite":
                        url = f"sqlite:///{work / f'{mode}-{run}.db'}"
                    else:
                        url = postgres_url(args.postgres_server)
                    result = run_once(
                        "off" if mode == "before" else mode,
                        url,
                        args.sagas,
                        before if mode == "before" else None,
                    )
                    assert result["otel_loaded"] == (mode == "on"), (mode, result)
                    rates[mode].append(float(result["rate"]))  # type: ignore[arg-type]
            print(f"{backend}: {args.sagas} sagas, {args.runs} runs each, interleaved")
            for mode, values in rates.items():
                print(
                    f"  {mode:>6}: median {statistics.median(values):,.0f} sagas/s "
                    f"(min-max {min(values):,.0f}-{max(values):,.0f})"
                )
        drop_schemas(args.postgres_server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
