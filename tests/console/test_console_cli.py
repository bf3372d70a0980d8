"""``sagalog console``: it serves the demo's store on loopback, read-only without a token,
and a token file it cannot use is one ``error:`` line, exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sagalog.infrastructure.demo.runner import DemoRates, run_demo

SAGALOG = [sys.executable, "-m", "sagalog.infrastructure.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_command_serves_the_store_read_only_on_loopback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    run_demo(database_url=url, sagas=6, seed=1, rates=DemoRates())
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SAGALOG_CONSOLE_TOKEN"}
    process = subprocess.Popen(
        [*SAGALOG, "console", "--database-url", url, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        assert f"http://127.0.0.1:{port}/ (read-only)" in banner
        for _ in range(100):  # the banner comes just before uvicorn binds
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview") as r:
                    overview = json.loads(r.read())
                break
            except OSError:
                assert process.poll() is None, "the console exited"
                time.sleep(0.1)
        else:
            pytest.fail("the console did not answer")
        total = sum(sum(counts.values()) for counts in overview["by_type"].values())
        assert total == 6
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_token_file_it_cannot_read_is_one_error_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    run_demo(database_url=url, sagas=1, seed=1, rates=DemoRates())
    done = subprocess.run(
        [*SAGALOG, "console", "--database-url", url, "--token-file", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --token-file {tmp_path / 'nope'}: cannot read: No such file or directory"
    ]
