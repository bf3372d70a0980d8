"""A script that ran sagas in an eventsourcing System exits without "Exception ignored" noise.

Managers left open (or held by a stopped runner) are closed before the interpreter
tears its modules down, and their datastores' finalizers stay quiet afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Python subprocess per backend

HERE = Path(__file__).resolve().parent
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {infrastructure_tests!r})
    from eventsourcing.system import MultiThreadedRunner, SingleThreadedRunner, System
    import transfer_app

    url = sys.argv[1]
    for runner_class in (MultiThreadedRunner, SingleThreadedRunner):
        runner = runner_class(
            System(pipes=[[transfer_app.Transfers, transfer_app.TransferSagas]]),
            env={{"SAGALOG_DATABASE_URL": url}},
        )
        runner.start()
        runner.get(transfer_app.Transfers).request(amount=3)
        runner.stop()
    left_open = transfer_app.TransferSagas(database_url=url)  # never closed
    print("done")
    """
)


def test_exit_after_runner_stop_prints_nothing_on_stderr(database_url: str, tmp_path: Path) -> None:
    script = tmp_path / "system_script.py"
    script.write_text(SCRIPT.format(infrastructure_tests=str(HERE.parent / "infrastructure")))
    for _ in range(3):  # the noise came from garbage collection at exit: try more than once
        done = subprocess.run(
            [sys.executable, str(script), database_url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "done"
        assert done.stderr == ""
