"""A signal sent while the worker is still starting stops it cleanly once started.

A worker started from a script runs as a background job, where SIGINT arrives
ignored; before, a SIGINT in the first seconds (while the store was opened) was
lost and a SIGTERM killed the worker (exit 143). Now the handlers go in first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # worker subprocesses

HERE = Path(__file__).resolve().parent


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the worker exited during startup"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_startup_stops_the_worker_cleanly(tmp_path: Path, signum: int) -> None:
    env = {
        **os.environ,
        "SLOW_PARTICIPANTS_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p),
    }
    stderr_path = tmp_path / "worker.err"
    with stderr_path.open("w") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagalog.infrastructure.cli",
                "worker",
                "--database-url",
                f"sqlite:///{tmp_path / 'w.db'}",
                "--transport",
                "in-process",
                "--participants",
                "slow_participants:setup",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            # as in a script's background job: SIGINT arrives ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        _wait_for(tmp_path / "ready", process)
        process.send_signal(signum)
        (tmp_path / "go").write_text("go")
        deadline = time.monotonic() + 60
        while process.poll() is None:
            assert "sagalog worker on " not in stderr_path.read_text(), "it started running"
            assert time.monotonic() < deadline, "the worker did not stop"
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    stderr = stderr_path.read_text()
    assert process.returncode == 0, stderr
    assert f"sagalog worker stopped on signal {int(signum)}" in stderr
    assert "sagalog worker on " not in stderr
